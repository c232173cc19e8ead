"""Retention: by age and by row count, driven by an injected clock instead of sleeps."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from deviceagentd.store import CommandRecord, NewEvent, Store, StoreSettings
from deviceagentd.store.database import open_writer
from deviceagentd.store.retention import PruneResult, prune

DAY_MS = 86_400_000
START_MS = 1_700_000_000_000


class FakeClock:
    def __init__(self) -> None:
        self.now_ms = START_MS

    def __call__(self) -> int:
        return self.now_ms


def new_event(received_at_ms: int, data: object = None) -> NewEvent:
    return NewEvent("dev-1", "thermo", "alarm", "info", True, {"x": data}, 0, received_at_ms)


def command(request_id: str, sent_at_ms: int) -> CommandRecord:
    return CommandRecord(request_id, "dev-1", "thermo", "reboot", {}, sent_at_ms, 1000)


def ids(path: Path, sql: str) -> list[object]:
    with sqlite3.connect(path) as conn:
        return [row[0] for row in conn.execute(sql)]


async def eventually(check: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "state.db"


@pytest.fixture
def run_store(db_path: Path) -> Iterator[Callable[[StoreSettings, FakeClock], Store]]:
    opened: list[Store] = []

    def factory(settings: StoreSettings, clock: FakeClock) -> Store:
        store = Store(db_path, settings, clock)
        store.open()
        opened.append(store)
        return store

    yield factory
    for store in opened:
        store.close()


async def test_old_rows_go_by_age(
    run_store: Callable[[StoreSettings, FakeClock], Store], db_path: Path
) -> None:
    clock = FakeClock()
    settings = StoreSettings(
        batch_interval_s=0.05,
        retention_interval_s=0.05,
        events_max_age_days=30,
        commands_max_age_days=10,
    )
    store = run_store(settings, clock)
    now = clock.now_ms
    for age_days in (31, 40, 29, 1):  # ids 1..4
        store.add_event(new_event(now - age_days * DAY_MS))
    for name, age_days in (("c-old", 11), ("c-new", 9)):
        store.add_command(command(name, now - age_days * DAY_MS))
    await store.flush()

    await eventually(lambda: ids(db_path, "SELECT id FROM events ORDER BY id") == [3, 4])
    await eventually(lambda: ids(db_path, "SELECT request_id FROM commands") == ["c-new"])

    clock.now_ms += 30 * DAY_MS  # the clock, not the wall time, decides what is old
    await eventually(lambda: ids(db_path, "SELECT request_id FROM commands") == [])
    # Every event is old now, but the newest stays so ids never start over.
    await eventually(lambda: ids(db_path, "SELECT id FROM events ORDER BY id") == [4])
    assert store.healthy


async def test_ids_do_not_restart_when_every_event_is_old(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    clock = FakeClock()
    settings = StoreSettings(batch_interval_s=0.05, retention_interval_s=0.05)
    store = Store(path, settings, clock)
    store.open()
    for _ in range(5):
        store.add_event(new_event(clock.now_ms - 40 * DAY_MS))
    await store.flush()
    await eventually(lambda: ids(path, "SELECT id FROM events") == [5])
    store.close()

    reopened = Store(path, settings, clock)
    reopened.open()
    try:
        assert reopened.add_event(new_event(clock.now_ms)).id == 6
    finally:
        reopened.close()


async def test_rows_beyond_the_newest_n_go(
    run_store: Callable[[StoreSettings, FakeClock], Store], db_path: Path
) -> None:
    clock = FakeClock()
    settings = StoreSettings(
        batch_interval_s=0.05,
        retention_interval_s=0.05,
        events_max_rows=10,
        commands_max_rows=3,
    )
    store = run_store(settings, clock)
    for _ in range(25):
        store.add_event(new_event(clock.now_ms))
    for i in range(6):
        store.add_command(command(f"c{i}", clock.now_ms + i))
    await store.flush()

    await eventually(
        lambda: ids(db_path, "SELECT id FROM events ORDER BY id") == list(range(16, 26))
    )
    await eventually(
        lambda: (
            ids(db_path, "SELECT request_id FROM commands ORDER BY request_id")
            == ["c3", "c4", "c5"]
        )
    )
    # Ids keep counting up after pruning.
    assert store.add_event(new_event(clock.now_ms)).id == 26


def test_prune_works_in_bounded_chunks_and_gives_pages_back(db_path: Path) -> None:
    conn = open_writer(db_path, START_MS)
    old = START_MS - 100 * DAY_MS
    conn.execute("BEGIN")
    conn.executemany(
        "INSERT INTO events (device_id, product_id, event, level, declared, data, ts_ms, "
        "received_at_ms, source) VALUES ('d', 'p', 'e', 'info', 1, ?, 0, ?, 'device')",
        [("x" * 2000, old)] * 1000 + [("{}", START_MS)],
    )
    conn.execute("COMMIT")
    pages_before = conn.execute("PRAGMA page_count").fetchone()[0]
    settings = StoreSettings()

    runs: list[PruneResult] = []
    while not runs or not runs[-1].finished:
        runs.append(prune(conn, settings, START_MS, chunk_rows=300, max_chunks=2))
        assert len(runs) < 10

    assert [run.events for run in runs[:2]] == [600, 400]
    assert sum(run.events for run in runs) == 1000

    assert conn.execute("SELECT received_at_ms FROM events").fetchall() == [(START_MS,)]
    assert conn.execute("PRAGMA freelist_count").fetchone() == (0,)
    assert conn.execute("PRAGMA page_count").fetchone()[0] < pages_before / 10
    assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    conn.close()


def test_prune_by_count_keeps_exactly_the_newest(db_path: Path) -> None:
    conn = open_writer(db_path, START_MS)
    conn.executemany(
        "INSERT INTO commands (request_id, device_id, product_id, command, params, sent_at_ms, "
        "timeout_ms, status, late, extra) VALUES (?, 'd', 'p', 'c', '{}', ?, 1, 'ok', 0, '{}')",
        [(f"r{i}", START_MS - i) for i in range(7)],
    )
    result = prune(conn, StoreSettings(commands_max_rows=4), START_MS, chunk_rows=2)

    assert (result.commands, result.finished) == (3, True)
    kept = conn.execute("SELECT request_id FROM commands ORDER BY sent_at_ms DESC").fetchall()
    assert kept == [("r0",), ("r1",), ("r2",), ("r3",)]
    conn.close()


def test_the_mcp_call_log_is_pruned_like_the_command_log(db_path: Path) -> None:
    conn = open_writer(db_path, START_MS)
    old = START_MS - 100 * DAY_MS
    conn.execute("BEGIN")
    conn.executemany(
        "INSERT INTO mcp_calls (ts_ms, client, tool, arguments, outcome, detail, latency_ms) "
        "VALUES (?, 'claude', 'get_state', '{}', 'ok', '', 1.0)",
        [(old,)] * 5 + [(START_MS,)] * 150,
    )
    conn.execute("COMMIT")
    result = prune(conn, StoreSettings(commands_max_rows=100), START_MS)
    assert (result.mcp_calls, result.finished) == (55, True)
    assert conn.execute("SELECT COUNT(*), MIN(ts_ms) FROM mcp_calls").fetchone() == (100, START_MS)
    assert prune(conn, StoreSettings(commands_max_rows=100), START_MS).mcp_calls == 0
    conn.close()
