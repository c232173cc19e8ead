"""The uplink outbox in the store: order, deletes after PUBACK, bounds, restarts."""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

import pytest

from deviceagentd.store import Store, StoreSettings

NOW_MS = 1_700_000_000_000


class Clock:
    def __init__(self) -> None:
        self.now = NOW_MS

    def __call__(self) -> int:
        return self.now


def disk_rows(path: Path) -> list[tuple[int, str, int]]:
    with sqlite3.connect(path) as conn:
        return conn.execute("SELECT id, kind, lifecycle FROM uplink_outbox ORDER BY id").fetchall()


def open_store(path: Path, clock: Clock, **settings: float) -> Store:
    store = Store(path, StoreSettings(batch_interval_s=30.0, **settings), clock)  # type: ignore[arg-type]
    store.open()
    return store


async def test_rows_come_back_in_id_order_committed_or_not_and_survive_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    clock = Clock()
    store = open_store(path, clock)
    try:
        ids = [store.add_outbox("event", f"dev-{i % 3}", f"t/{i}", b'{"n":%d}' % i) for i in range(5)]
        assert ids == sorted(ids)
        await store.flush()
        ids += [store.add_outbox("state", "dev-0", "t/5", b"{}", correlation_data=b"c")]  # waiting, not on disk
        rows = await store.outbox_after(0, limit=100)
        assert [row.id for row in rows] == ids
        assert rows[-1].correlation_data == b"c"
        assert [row.id for row in await store.outbox_after(ids[2], limit=2)] == ids[3:5]
        assert store.outbox_stats().rows == 6
    finally:
        store.close()
    assert [row[0] for row in disk_rows(path)] == ids
    store = open_store(path, clock)
    try:
        again = await store.outbox_after(0, limit=100)
        assert [(row.id, row.payload) for row in again] == [(row.id, row.payload) for row in rows]
        assert store.add_outbox("event", "dev-0", "t/6", b"{}") == ids[-1] + 1
    finally:
        store.close()


async def test_an_acknowledged_row_is_deleted_and_one_acked_before_its_commit_never_written(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    clock = Clock()
    store = open_store(path, clock)
    try:
        first = store.add_outbox("event", "dev-1", "t", b"a")
        await store.flush()
        second = store.add_outbox("event", "dev-1", "t", b"b")
        store.ack_outbox(first)  # on disk: deleted by the next batch
        store.ack_outbox(second)  # still waiting: never written
        assert await store.outbox_after(0, limit=10) == []
        await store.flush()
        assert disk_rows(path) == []
        stats = store.outbox_stats()
        assert (stats.rows, stats.bytes, stats.oldest_ms) == (0, 0, None)
    finally:
        store.close()


async def test_over_the_row_bound_the_oldest_non_lifecycle_rows_go_counted_and_logged_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "state.db"
    clock = Clock()
    store = open_store(path, clock, outbox_max_rows=100)
    caplog.set_level(logging.WARNING, "deviceagentd.store")
    try:
        online = store.add_outbox("lifecycle", "dev-1", "t/l", b"online", lifecycle=True)
        for i in range(150):
            store.add_outbox("event", "dev-1", "t/e", b"%d" % i)
            if i % 20 == 0:
                await store.flush()
        await store.flush()
        rows = disk_rows(path)
        assert len(rows) == 100
        assert rows[0] == (online, "lifecycle", 1)  # the oldest row, kept
        with sqlite3.connect(path) as conn:
            payloads = [p for (p,) in conn.execute("SELECT payload FROM uplink_outbox WHERE lifecycle = 0 ORDER BY id")]
        assert payloads == [b"%d" % i for i in range(51, 150)]  # the newest kept
        assert store.outbox_stats().dropped == 51
        assert store.outbox_stats().rows == 100
        full = [r for r in caplog.records if "uplink outbox over its bounds" in r.getMessage()]
        assert len(full) == 1
        # Drained below half: the episode ends, said once.
        for row in await store.outbox_after(0, limit=1000):
            store.ack_outbox(row.id)
        await store.flush()
        assert disk_rows(path) == []
        assert len([r for r in caplog.records if "back under half" in r.getMessage()]) == 1
    finally:
        store.close()


async def test_byte_and_age_bounds_and_lifecycle_rows_only_go_when_they_alone_are_over(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    clock = Clock()
    store = open_store(path, clock, outbox_max_bytes=10_000, outbox_max_age_s=60, outbox_max_rows=100)
    try:
        for i in range(30):
            store.add_outbox("event", "dev-1", "t", b"x" * 999)  # 1000 bytes with the topic
            store.add_outbox("lifecycle", "dev-1", "t", b"", lifecycle=True)  # 1 byte
            if i % 5 == 0:
                await store.flush()
        await store.flush()
        stats = store.outbox_stats()
        assert stats.bytes <= 10_000
        rows = disk_rows(path)
        assert sum(1 for _, kind, _ in rows if kind == "lifecycle") == 30
        assert sum(1 for _, kind, _ in rows if kind == "event") == 9  # 9 × 1000 + 30 ≤ 10,000
        # Age: the events are over a minute old at the next commit; lifecycle rows stay.
        clock.now += 61_000
        store.add_outbox("state", "dev-1", "t", b"new")
        await store.flush()
        kinds = [kind for _, kind, _ in disk_rows(path)]
        assert kinds.count("event") == 0 and kinds.count("state") == 1 and kinds.count("lifecycle") == 30
        # Lifecycle rows alone over the row bound: the oldest of them go too, never the disk filled.
        for _ in range(100):
            store.add_outbox("lifecycle", "dev-1", "t", b"", lifecycle=True)
        await store.flush()
        assert [kind for _, kind, _ in disk_rows(path)] == ["lifecycle"] * 100  # the state row went first
        assert store.outbox_stats().dropped == 21 + 9 + 1 + 30
    finally:
        store.close()
