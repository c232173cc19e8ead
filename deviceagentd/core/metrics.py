"""Counters, gauges and histograms rendered as Prometheus text (`GET /metrics`).

Small on purpose: a few dozen series, updated on hot paths with a dict lookup and an add.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

LabelKey = tuple[tuple[str, str], ...]


def _labels(labels: dict[str, str] | None) -> LabelKey:
    return tuple(sorted(labels.items())) if labels else ()


def _fmt_labels(key: LabelKey, extra: tuple[tuple[str, str], ...] = ()) -> str:
    items = key + extra
    if not items:
        return ""
    inner = ",".join(f'{k}="{_escape(v)}"' for k, v in items)
    return "{" + inner + "}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _num(value: float) -> str:
    if value == float("inf"):
        return "+Inf"
    return repr(float(value)) if not float(value).is_integer() else str(int(value))


@dataclass
class BoundCounter:
    values: dict[LabelKey, float]
    key: LabelKey

    def inc(self, amount: float = 1.0) -> None:
        self.values[self.key] += amount


@dataclass
class Counter:
    name: str
    help: str
    values: dict[LabelKey, float] = field(default_factory=dict)

    def inc(self, labels: dict[str, str] | None = None, amount: float = 1.0) -> None:
        key = _labels(labels)
        self.values[key] = self.values.get(key, 0.0) + amount

    def get(self, labels: dict[str, str] | None = None) -> float:
        return self.values.get(_labels(labels), 0.0)

    def labels(self, **labels: str) -> BoundCounter:
        """A child with fixed labels, for hot paths (no per-call label sorting)."""
        key = _labels(labels)
        self.values.setdefault(key, 0.0)
        return BoundCounter(self.values, key)

    def render(self) -> Iterable[str]:
        yield f"# HELP {self.name} {self.help}"
        yield f"# TYPE {self.name} counter"
        for key, value in sorted(self.values.items()):
            yield f"{self.name}{_fmt_labels(key)} {_num(value)}"


@dataclass
class Gauge:
    """A value read when scraped, so it can never go stale. `kind` "counter" for totals kept
    elsewhere (e.g. the store's commit count)."""

    name: str
    help: str
    read: Callable[[], float]
    kind: str = "gauge"

    def render(self) -> Iterable[str]:
        yield f"# HELP {self.name} {self.help}"
        yield f"# TYPE {self.name} {self.kind}"
        yield f"{self.name} {_num(self.read())}"


@dataclass
class Histogram:
    name: str
    help: str
    buckets: tuple[float, ...]
    counts: list[int] = field(default_factory=list)
    total: float = 0.0
    count: int = 0

    def __post_init__(self) -> None:
        self.counts = [0] * len(self.buckets)

    def observe(self, value: float) -> None:
        index = bisect.bisect_left(self.buckets, value)
        if index < len(self.counts):
            self.counts[index] += 1
        self.total += value
        self.count += 1

    def render(self) -> Iterable[str]:
        yield f"# HELP {self.name} {self.help}"
        yield f"# TYPE {self.name} histogram"
        running = 0
        for bound, count in zip(self.buckets, self.counts, strict=True):
            running += count
            yield f'{self.name}_bucket{{le="{_num(bound)}"}} {running}'
        yield f'{self.name}_bucket{{le="+Inf"}} {self.count}'
        yield f"{self.name}_sum {_num(self.total)}"
        yield f"{self.name}_count {self.count}"


LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
FAST_BUCKETS_S = (0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.1)


@dataclass
class Metrics:
    """Every metric the daemon exports; adapters get this object passed in."""

    messages_in: Counter = field(
        default_factory=lambda: Counter("deviceagentd_mqtt_messages_in_total", "MQTT messages received, by kind")
    )
    messages_out: Counter = field(
        default_factory=lambda: Counter("deviceagentd_mqtt_messages_out_total", "MQTT messages published, by kind")
    )
    rejects: Counter = field(
        default_factory=lambda: Counter(
            "deviceagentd_mqtt_rejects_total", "MQTT messages rejected or dropped, by kind and reason"
        )
    )
    validation_warnings: Counter = field(
        default_factory=lambda: Counter(
            "deviceagentd_validation_warnings_total", "Telemetry fields dropped for a wrong type, by product"
        )
    )
    commands: Counter = field(
        default_factory=lambda: Counter("deviceagentd_commands_total", "Commands sent to devices, by outcome")
    )
    http_requests: Counter = field(
        default_factory=lambda: Counter("deviceagentd_http_requests_total", "HTTP requests, by route and status")
    )
    voiceplatform_requests: Counter = field(
        default_factory=lambda: Counter(
            "deviceagentd_voiceplatform_requests_total",
            "Voice platform API calls, by api and Tuya result code (0 = success)",
        )
    )
    command_latency: Histogram = field(
        default_factory=lambda: Histogram(
            "deviceagentd_command_latency_seconds", "Command round trip to the device's answer", LATENCY_BUCKETS_S
        )
    )
    ntp_turnaround: Histogram = field(
        default_factory=lambda: Histogram(
            "deviceagentd_ntp_turnaround_seconds",
            "NTP serverSendTime - serverRecvTime inside the daemon",
            FAST_BUCKETS_S,
        )
    )
    loop_lag: Histogram = field(
        default_factory=lambda: Histogram(
            "deviceagentd_event_loop_lag_seconds", "Delay of a periodic loop tick behind its schedule", FAST_BUCKETS_S
        )
    )
    schedule_runs: Counter = field(
        default_factory=lambda: Counter(
            "deviceagentd_schedule_runs_total",
            "Schedule runs, by outcome (ok, failed, device_gone, no_speaker, missed)",
        )
    )
    schedule_lateness: Histogram = field(
        default_factory=lambda: Histogram(
            "deviceagentd_schedule_lateness_seconds", "How long after its time a schedule's action started",
            LATENCY_BUCKETS_S,
        )
    )
    mcp_calls: Counter = field(
        default_factory=lambda: Counter(
            "deviceagentd_mcp_calls_total", "MCP tool calls, by tool and outcome (ok, error, refused)"
        )
    )
    mcp_latency: Histogram = field(
        default_factory=lambda: Histogram(
            "deviceagentd_mcp_call_seconds", "MCP tool call time inside the gateway", LATENCY_BUCKETS_S
        )
    )
    gauges: list[Gauge] = field(default_factory=list)
    # Counters of parts that exist only when configured (the uplink's).
    counters: list[Counter] = field(default_factory=list)

    def gauge(self, name: str, help_text: str, read: Callable[[], float], kind: str = "gauge") -> None:
        self.gauges.append(Gauge(name, help_text, read, kind))

    def counter(self, name: str, help_text: str) -> Counter:
        counter = Counter(name, help_text)
        self.counters.append(counter)
        return counter

    def render(self) -> str:
        lines: list[str] = []
        metrics: tuple[Counter | Histogram | Gauge, ...] = (
            self.messages_in,
            self.messages_out,
            self.rejects,
            self.validation_warnings,
            self.commands,
            self.http_requests,
            self.voiceplatform_requests,
            self.command_latency,
            self.ntp_turnaround,
            self.loop_lag,
            self.schedule_runs,
            self.schedule_lateness,
            self.mcp_calls,
            self.mcp_latency,
            *self.counters,
            *self.gauges,
        )
        for metric in metrics:
            lines.extend(metric.render())
        return "\n".join(lines) + "\n"
