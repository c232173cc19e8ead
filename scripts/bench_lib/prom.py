"""Reading the daemon's `/metrics` (Prometheus text format 0.0.4)."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)$")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')

SampleKey = tuple[str, frozenset[tuple[str, str]]]


@dataclass(frozen=True)
class Scrape:
    samples: dict[SampleKey, float]

    @classmethod
    def parse(cls, text: str) -> Scrape:
        samples: dict[SampleKey, float] = {}
        for line in text.splitlines():
            if not line or line.startswith("#"):
                continue
            match = _SAMPLE.match(line)
            if match is None:
                continue
            name, labels, value = match.groups()
            pairs = frozenset(_LABEL.findall(labels or ""))
            samples[(name, pairs)] = float(value)
        return cls(samples)

    def value(self, name: str, **labels: str) -> float:
        """One sample; 0 when absent (a counter is not rendered before its first increment)."""
        return self.samples.get((name, frozenset(labels.items())), 0.0)

    def total(self, name: str) -> float:
        """Sum over every label set of `name`."""
        return sum(v for (n, _), v in self.samples.items() if n == name)

    def histogram(self, name: str) -> Histogram:
        buckets = []
        for (sample, labels), value in self.samples.items():
            if sample == f"{name}_bucket":
                le = dict(labels)["le"]
                buckets.append((math.inf if le == "+Inf" else float(le), value))
        buckets.sort()
        return Histogram(tuple(buckets), self.value(f"{name}_sum"), self.value(f"{name}_count"))


@dataclass(frozen=True)
class Histogram:
    buckets: tuple[tuple[float, float], ...]  # (upper bound, cumulative count), ascending
    sum: float
    count: float

    def minus(self, before: Histogram) -> Histogram:
        """The observations made between two scrapes."""
        old = dict(before.buckets)
        return Histogram(
            tuple((le, n - old.get(le, 0.0)) for le, n in self.buckets),
            self.sum - before.sum,
            self.count - before.count,
        )

    def quantile(self, q: float) -> float:
        """Linear interpolation inside the bucket, as PromQL's histogram_quantile does."""
        if self.count <= 0:
            return math.nan
        rank = q * self.count
        lower_bound, lower_count = 0.0, 0.0
        for le, cumulative in self.buckets:
            if cumulative >= rank:
                if math.isinf(le):
                    return lower_bound  # above the last finite bucket: its bound is all we know
                inside = cumulative - lower_count
                fraction = (rank - lower_count) / inside if inside else 1.0
                return lower_bound + (le - lower_bound) * fraction
            lower_bound, lower_count = le, cumulative
        return lower_bound

    def fraction_at_most(self, bound: float) -> float:
        """Share of observations in buckets up to `bound` (which must be a bucket bound)."""
        if self.count <= 0:
            return math.nan
        for le, cumulative in self.buckets:
            if le == bound:
                return cumulative / self.count
        raise ValueError(f"{bound} is not a bucket bound")

    @property
    def mean(self) -> float:
        return self.sum / self.count if self.count else math.nan
