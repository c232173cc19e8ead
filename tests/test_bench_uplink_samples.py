"""The arithmetic of the benchmark's uplink section (scripts/bench_lib/uplink_samples.py): no timing."""

from __future__ import annotations

import math

from bench_lib.uplink_samples import (
    Point,
    drained_at,
    first_connected,
    growth_ratio,
    ideal_drain_s,
    per_hour,
    per_rows,
    rate,
    window,
)


def point(t: float, rows: float = 0, connected: bool = True, acked: float = 0, rss: int = 1000) -> Point:
    return Point(t=t, connected=connected, rows=rows, payload_bytes=rows * 100, acked=acked, telemetry_in=0,
                 rss_kib=rss, anon_kib=rss // 2, write_bytes=int(t * 10), db_bytes=0, wal_bytes=0)


def test_drained_at_is_the_first_connected_reading_at_or_below_the_threshold_after_the_reconnect() -> None:
    points = [point(0, 50), point(1, 900, connected=False), point(2, 80, connected=False), point(3, 700),
              point(4, 300), point(5, 90), point(6, 40)]
    assert drained_at(points, after=3, threshold=100) == 5
    # A low reading while still disconnected does not count, nor one before `after`.
    assert drained_at(points, after=0.5, threshold=100) == 5
    assert drained_at(points, after=0, threshold=100) == 0
    assert drained_at(points, after=3, threshold=10) is None


def test_first_connected_skips_the_outage() -> None:
    points = [point(0), point(1, connected=False), point(2, connected=False), point(3)]
    assert first_connected(points, after=1) == 3
    assert first_connected(points[:3], after=1) is None


def test_window_keeps_both_ends_in_order() -> None:
    points = [point(t) for t in range(6)]
    assert [p.t for p in window(points, 1, 3)] == [1, 2, 3]
    assert window(points, 7, 9) == []


def test_rate_is_the_counter_change_per_second_and_nan_over_no_time() -> None:
    assert rate(point(10, acked=100), point(14, acked=1100), "acked") == 250
    assert rate(point(2, rows=10), point(4, rows=4), "rows") == -3
    assert math.isnan(rate(point(3), point(3), "acked"))


def test_scaling_per_hour_and_per_100000_rows() -> None:
    assert per_hour(5_000_000, 60) == 300_000_000
    assert math.isnan(per_hour(1, 0))
    assert per_rows(2_500_000, 10_000) == 25_000_000
    assert per_rows(300, 3, per=1) == 100
    assert math.isnan(per_rows(1_000, 0))


def test_growth_ratio_is_last_over_first() -> None:
    assert growth_ratio([50_000, 51_000, 50_500]) == 1.01
    assert growth_ratio([40.0]) == 1.0
    assert math.isnan(growth_ratio([]))
    assert math.isnan(growth_ratio([0, 5]))


def test_ideal_drain_counts_the_rows_that_keep_coming() -> None:
    assert ideal_drain_s(6_000, 500, 100) == 15
    assert ideal_drain_s(0, 500, 100) == 0
    assert ideal_drain_s(10, 100, 100) == math.inf
    assert ideal_drain_s(10, 100, 150) == math.inf
