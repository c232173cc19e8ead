"""Readings of the uplink daemon over time, and what section `uplink` derives from them: when the
outbox drained, rates over a window, bytes per 100,000 rows, per hour, and how flat memory stayed."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

HOUR_S = 3600.0
PER_ROWS = 100_000


@dataclass(frozen=True)
class Point:
    """One reading: cumulative counters (since the daemon started) and sizes at monotonic `t`."""

    t: float
    connected: bool
    rows: float  # outbox rows on disk
    payload_bytes: float  # the outbox's payload + topic bytes (its own count)
    acked: float  # PUBACKs received since the daemon started
    telemetry_in: float
    rss_kib: int
    anon_kib: int
    write_bytes: int  # /proc/<pid>/io: page-cache bytes the daemon dirtied
    db_bytes: int
    wal_bytes: int


def window(points: Sequence[Point], start: float, end: float) -> list[Point]:
    """The points with start <= t <= end, in time order."""
    return [p for p in points if start <= p.t <= end]


def drained_at(points: Sequence[Point], after: float, threshold: float) -> float | None:
    """The first time at or after `after` when the uplink was connected and the outbox held at most
    `threshold` rows (its steady level: what one batch window and the PUBACKs in flight leave)."""
    for p in points:
        if p.t >= after and p.connected and p.rows <= threshold:
            return p.t
    return None


def first_connected(points: Sequence[Point], after: float) -> float | None:
    for p in points:
        if p.t >= after and p.connected:
            return p.t
    return None


def rate(first: Point, last: Point, field: str) -> float:
    """Per second of counter `field` between two points; NaN over no time."""
    seconds = last.t - first.t
    if seconds <= 0:
        return math.nan
    return (float(getattr(last, field)) - float(getattr(first, field))) / seconds


def per_hour(amount: float, seconds: float) -> float:
    return amount / seconds * HOUR_S if seconds > 0 else math.nan


def per_rows(amount: float, rows: float, per: int = PER_ROWS) -> float:
    """`amount` (bytes) scaled to `per` rows; NaN when no rows were counted."""
    return amount / rows * per if rows > 0 else math.nan


def growth_ratio(values: Sequence[float]) -> float:
    """last / first: 1.0 is flat."""
    if not values or values[0] <= 0:
        return math.nan
    return values[-1] / values[0]


def ideal_drain_s(backlog: float, max_rate: float, inflow: float) -> float:
    """How long a backlog takes at the configured cap while new rows keep coming at `inflow`/s."""
    net = max_rate - inflow
    return backlog / net if net > 0 else math.inf
