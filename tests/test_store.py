"""Store behaviour through its public API, on real SQLite files."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import deviceagentd.store.store as store_module
from deviceagentd.store import (
    CommandRecord,
    DeviceRecord,
    NewEvent,
    Store,
    StoreError,
    StoreSettings,
)

# Long enough that nothing commits on its own during a test; flush()/close() commit.
HOLD = StoreSettings(batch_interval_s=30.0)
NOW_MS = 1_700_000_000_000


def clock_ms() -> int:
    # Fixed, so the rows below (received "now") are never old enough for retention.
    return NOW_MS


def new_event(device_id: str = "dev-1", event: str = "alarm", **data: object) -> NewEvent:
    return NewEvent(
        device_id=device_id,
        product_id="thermo",
        event=event,
        level="warning",
        declared=True,
        data=dict(data),
        ts_ms=NOW_MS - 5,
        received_at_ms=NOW_MS,
    )


def device(device_id: str = "dev-1", **state: object) -> DeviceRecord:
    return DeviceRecord(
        device_id=device_id,
        product_id="thermo",
        online=True,
        state=dict(state),
        metadata={"fw": "1.2"},
        first_seen_ms=1000,
        last_seen_ms=2000,
    )


def command(request_id: str = "req-1") -> CommandRecord:
    return CommandRecord(
        request_id=request_id,
        device_id="dev-1",
        product_id="thermo",
        command="set_temp",
        params={"target": 21.5},
        sent_at_ms=NOW_MS,
        timeout_ms=3000,
    )


def db_event_ids(path: Path) -> list[int]:
    with sqlite3.connect(path) as conn:
        return [row[0] for row in conn.execute("SELECT id FROM events ORDER BY id")]


async def eventually(check: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "state" / "deviceagentd.db"


@pytest.fixture
def open_store(db_path: Path) -> Iterator[Callable[[StoreSettings], Store]]:
    opened: list[Store] = []

    def factory(settings: StoreSettings) -> Store:
        store = Store(db_path, settings, clock_ms)
        store.open()
        opened.append(store)
        return store

    yield factory
    for store in opened:
        store.close()


@pytest.fixture
async def store(open_store: Callable[[StoreSettings], Store]) -> AsyncIterator[Store]:
    yield open_store(HOLD)


async def test_many_events_share_few_commits(
    open_store: Callable[[StoreSettings], Store], db_path: Path
) -> None:
    store = open_store(StoreSettings(batch_interval_s=0.5))
    records = [store.add_event(new_event(n=i)) for i in range(5000)]

    assert [r.id for r in records] == list(range(1, 5001))
    assert store.stats().commits <= 2
    await store.flush()
    stats = store.stats()
    assert 1 <= stats.commits <= 2
    assert stats.rows_written == 5000
    assert stats.pending_rows == 0
    assert db_event_ids(db_path) == list(range(1, 5001))


async def test_lone_event_commits_without_flush(
    open_store: Callable[[StoreSettings], Store], db_path: Path
) -> None:
    store = open_store(StoreSettings(batch_interval_s=0.2))
    store.add_event(new_event())

    await eventually(lambda: store.stats().commits == 1)
    assert db_event_ids(db_path) == [1]
    assert store.stats().last_commit_ms is not None


async def test_event_ids_continue_after_reopen(db_path: Path) -> None:
    first = Store(db_path, HOLD, clock_ms)
    first.open()
    assert [first.add_event(new_event()).id for _ in range(3)] == [1, 2, 3]
    first.close()

    second = Store(db_path, HOLD, clock_ms)
    second.open()
    try:
        assert second.add_event(new_event()).id == 4
        events = await second.query_events("dev-1", limit=10)
        assert [e.id for e in events] == [4, 3, 2, 1]
    finally:
        second.close()


async def test_close_commits_everything_accepted(db_path: Path) -> None:
    store = Store(db_path, HOLD, clock_ms)
    store.open()
    for i in range(1000):
        store.add_event(new_event(n=i))
    store.save_device(device(temp=20))
    store.add_command(command())
    store.close()
    store.close()  # idempotent

    with pytest.raises(StoreError):
        store.add_event(new_event())
    reopened = Store(db_path, HOLD, clock_ms)
    reopened.open()
    try:
        assert db_event_ids(db_path) == list(range(1, 1001))
        assert [d.state for d in reopened.load_devices()] == [{"temp": 20}]
        stored = await reopened.get_command("req-1")
        assert stored is not None and stored.params == {"target": 21.5}
    finally:
        reopened.close()


async def test_device_saves_in_one_batch_coalesce(store: Store, db_path: Path) -> None:
    store.save_device(device(temp=1))
    store.save_device(device(temp=2))
    store.save_device(device(temp=3))
    store.save_device(device("dev-2", temp=9))

    # Not committed yet, but load_devices already sees the last save.
    assert [(d.device_id, d.state) for d in store.load_devices()] == [
        ("dev-1", {"temp": 3}),
        ("dev-2", {"temp": 9}),
    ]
    await store.flush()
    stats = store.stats()
    assert (stats.commits, stats.rows_written) == (1, 2)
    with sqlite3.connect(db_path) as conn:
        rows = conn.execute("SELECT device_id, state, metadata, online FROM devices").fetchall()
    assert sorted(rows) == [
        ("dev-1", '{"temp":3}', '{"fw":"1.2"}', 1),
        ("dev-2", '{"temp":9}', '{"fw":"1.2"}', 1),
    ]


async def test_saving_a_device_again_updates_its_row_in_place(store: Store, db_path: Path) -> None:
    # A delete + insert (INSERT OR REPLACE) would move the row to a new rowid and rewrite more
    # pages on every periodic save of every device.
    store.save_device(device(temp=1))
    store.save_device(device("dev-2", temp=9))
    await store.flush()
    with sqlite3.connect(db_path) as conn:
        before = dict(conn.execute("SELECT device_id, rowid FROM devices").fetchall())
    store.save_device(device(temp=2))
    await store.flush()
    with sqlite3.connect(db_path) as conn:
        after = dict(conn.execute("SELECT device_id, rowid FROM devices").fetchall())
        state = conn.execute("SELECT state FROM devices WHERE device_id = 'dev-1'").fetchone()[0]
    assert after == before and state == '{"temp":2}'


async def test_device_round_trip_and_delete_keeps_events(store: Store) -> None:
    saved = device(temp=21.5, mode="eco")
    saved.encoding = "cbor"
    store.save_device(saved)
    store.add_event(new_event())
    await store.flush()
    assert store.load_devices() == [saved]

    store.delete_device("dev-1")
    assert store.load_devices() == []
    await store.flush()
    assert store.load_devices() == []
    assert [e.id for e in await store.query_events("dev-1", limit=5)] == [1]


async def test_query_pages_through_stored_and_waiting_events(store: Store) -> None:
    for i in range(10):
        store.add_event(new_event(event="a" if i % 2 == 0 else "b", n=i))
    store.add_event(new_event("dev-2"))
    await store.flush()
    for i in range(10, 15):
        store.add_event(new_event(event="a" if i % 2 == 0 else "b", n=i))
    assert store.stats().pending_rows == 5  # ids 12..16 are not committed

    newest = await store.query_events("dev-1", limit=3)
    assert [e.id for e in newest] == [16, 15, 14]
    assert [e.data for e in newest] == [{"n": 14}, {"n": 13}, {"n": 12}]

    # One page spans waiting rows and stored rows.
    page = await store.query_events("dev-1", limit=4, before=13)
    assert [e.id for e in page] == [12, 10, 9, 8]

    seen: list[int] = []
    before: int | None = None
    while page := await store.query_events("dev-1", limit=4, before=before):
        seen += [e.id for e in page]
        before = page[-1].id
    assert seen == [16, 15, 14, 13, 12, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1]

    only_a = await store.query_events("dev-1", limit=100, event="a")
    assert [e.id for e in only_a] == [16, 14, 12, 9, 7, 5, 3, 1]
    assert {e.event for e in only_a} == {"a"}
    assert [e.id for e in await store.query_events("dev-1", limit=2, event="b", before=13)] == [
        10,
        8,
    ]
    assert [e.device_id for e in await store.query_events("dev-2", limit=5)] == ["dev-2"]
    assert await store.query_events("dev-1", limit=0) == []
    assert await store.query_events("nobody", limit=5) == []


async def test_event_record_round_trips(store: Store) -> None:
    added = store.add_event(
        NewEvent(
            device_id="dev-1",
            product_id="thermo",
            event="überhitzt",
            level="critical",
            declared=False,
            data={"t": 98.5, "list": [1, None, "zwölf"], "odd": "\ud800"},
            ts_ms=11,
            received_at_ms=NOW_MS,
            source="gateway",
        )
    )
    [waiting] = await store.query_events("dev-1", limit=1)
    await store.flush()
    [stored] = await store.query_events("dev-1", limit=1)
    assert waiting == stored == added


def commit_right_after_each_read(monkeypatch: pytest.MonkeyPatch, store: Store, name: str) -> None:
    """Make a commit land between the database read and the merge with waiting rows: the
    interleaving that loses rows if the waiting rows are taken after the read."""
    read = getattr(store_module, name)

    def read_then_wait_for_commit(*args: Any, **kwargs: Any) -> Any:
        result = read(*args, **kwargs)
        deadline = time.monotonic() + 15
        while store.stats().pending_rows and time.monotonic() < deadline:
            time.sleep(0.005)
        return result

    monkeypatch.setattr(store_module, name, read_then_wait_for_commit)


async def test_query_sees_rows_committed_during_the_read(
    open_store: Callable[[StoreSettings], Store], monkeypatch: pytest.MonkeyPatch
) -> None:
    store = open_store(StoreSettings(batch_interval_s=0.05))
    commit_right_after_each_read(monkeypatch, store, "select_events")
    store.add_event(new_event())
    await store.flush()
    store.add_event(new_event())
    store.add_event(new_event())

    events = await store.query_events("dev-1", limit=10)

    assert store.stats().pending_rows == 0  # the waiting rows did commit mid-query
    assert [e.id for e in events] == [3, 2, 1]


async def test_command_read_sees_update_committed_during_the_read(
    open_store: Callable[[StoreSettings], Store], monkeypatch: pytest.MonkeyPatch
) -> None:
    store = open_store(StoreSettings(batch_interval_s=0.05))
    commit_right_after_each_read(monkeypatch, store, "select_command")
    store.add_command(command())
    await store.flush()
    answered = command()
    answered.status, answered.code = "ok", 0
    store.update_command(answered)

    got = await store.get_command("req-1")

    assert store.stats().pending_rows == 0
    assert got is not None and (got.status, got.code) == ("ok", 0)


async def test_command_insert_then_late_update(store: Store, db_path: Path) -> None:
    store.add_command(command())
    waiting = await store.get_command("req-1")
    assert waiting is not None and waiting.status == "pending"

    timed_out = command()
    timed_out.status = "timeout"
    timed_out.command = "ignored: only outcome fields are updated"
    store.update_command(timed_out)
    got = await store.get_command("req-1")
    assert got is not None and (got.status, got.command) == ("timeout", "set_temp")
    await store.flush()
    assert store.stats().rows_written == 1  # insert and update went out as one row

    late = command()
    late.status, late.late, late.code, late.msg = "timeout", True, 0, "done"
    late.data, late.answered_at_ms, late.extra = {"temp": 21.5}, 9100, {"rtt_ms": 4100}
    store.update_command(late)
    got = await store.get_command("req-1")  # update waiting, insert stored
    assert got is not None and (got.late, got.code, got.data) == (True, 0, {"temp": 21.5})
    await store.flush()

    got = await store.get_command("req-1")
    expected = command()
    expected.status, expected.late, expected.code, expected.msg = "timeout", True, 0, "done"
    expected.data, expected.answered_at_ms, expected.extra = {"temp": 21.5}, 9100, {"rtt_ms": 4100}
    assert got == expected
    with sqlite3.connect(db_path) as conn:
        assert conn.execute("SELECT COUNT(*) FROM commands").fetchone() == (1,)
    assert await store.get_command("nope") is None


async def test_update_of_unknown_command_stays_unknown(store: Store) -> None:
    store.update_command(command("ghost"))
    assert await store.get_command("ghost") is None
    await store.flush()
    assert await store.get_command("ghost") is None


async def test_unencodable_event_is_refused_at_the_call(store: Store) -> None:
    store.add_event(new_event())
    with pytest.raises(TypeError):
        store.add_event(new_event(raw=b"\x00\x01"))

    assert store.stats().pending_rows == 1
    assert store.add_event(new_event()).id == 2  # the refused event used no id


async def test_unencodable_device_state_skips_only_that_device(store: Store, db_path: Path) -> None:
    # Device rows are encoded by the writer (once per batch), so a bad one is dropped there.
    store.save_device(device("bad", when={1, 2}))
    store.save_device(device("good"))
    store.add_event(new_event())
    await asyncio.wait_for(store.flush(), 15)

    with sqlite3.connect(db_path) as conn:
        assert conn.execute("SELECT device_id FROM devices").fetchall() == [("good",)]
        assert conn.execute("SELECT COUNT(*) FROM events").fetchone() == (1,)
    assert store.healthy


async def test_row_sqlite_cannot_take_is_dropped_not_retried(store: Store, db_path: Path) -> None:
    store.add_event(new_event())
    bad = device("bad")
    bad.last_seen_ms = 2**70  # beyond SQLite's 64-bit integers
    store.save_device(bad)
    store.save_device(device("good"))
    store.add_event(new_event())

    await asyncio.wait_for(store.flush(), 15)
    stats = store.stats()
    assert stats.dropped_rows == 1
    assert stats.rows_written == 3
    assert stats.last_error is not None and "rejected 1 row" in stats.last_error
    assert store.healthy
    assert db_event_ids(db_path) == [1, 2]
    assert [d.device_id for d in store.load_devices()] == ["good"]


async def test_waiting_rows_are_bounded_by_dropping_oldest_events(
    open_store: Callable[[StoreSettings], Store], db_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = open_store(
        StoreSettings(batch_interval_s=30.0, batch_max_rows=1000, max_pending_rows=100)
    )
    with caplog.at_level(logging.WARNING, logger="deviceagentd.store"):
        for _ in range(150):
            store.add_event(new_event())

    stats = store.stats()
    assert (stats.pending_rows, stats.dropped_rows) == (100, 50)
    assert len([r for r in caplog.records if "dropping the oldest" in r.message]) == 1
    events = await store.query_events("dev-1", limit=1000)
    assert [e.id for e in events] == list(range(150, 50, -1))
    await store.flush()
    assert db_event_ids(db_path) == list(range(51, 151))


@pytest.mark.slow
async def test_failed_commit_keeps_rows_and_recovers(
    open_store: Callable[[StoreSettings], Store], db_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = open_store(StoreSettings(batch_interval_s=0.05))
    # The writer prunes once at start, at the latest right after its first commit; once a
    # second commit is done that is over, so only the batch below meets the lock.
    for n in (1, 2):
        store.add_event(new_event(n=n))
        await store.flush()
    blocker = sqlite3.connect(db_path, isolation_level=None, check_same_thread=False)
    blocker.execute("BEGIN EXCLUSIVE")  # the writer now waits out busy_timeout and fails
    try:
        with caplog.at_level(logging.WARNING, logger="deviceagentd.store"):
            store.add_event(new_event(n=3))
            await eventually(lambda: not store.healthy, timeout=30)
            stats = store.stats()
            assert stats.last_error is not None and "locked" in stats.last_error
            assert stats.pending_rows == 1
            assert store.writer_alive
            assert [e.data for e in await store.query_events("dev-1", limit=1)] == [{"n": 3}]
            store.add_event(new_event(n=4))
            blocker.execute("ROLLBACK")
            await asyncio.wait_for(store.flush(), 30)
    finally:
        blocker.close()

    assert store.healthy
    assert db_event_ids(db_path) == [1, 2, 3, 4]
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "commit failed" in errors[0].message
    assert any("work again" in r.message for r in caplog.records)


async def test_health_and_lifecycle(db_path: Path) -> None:
    store = Store(db_path, HOLD, clock_ms)
    assert not store.healthy
    assert store.stats().commits == 0
    with pytest.raises(StoreError):
        store.add_event(new_event())
    store.open()
    assert store.healthy and store.writer_alive
    with pytest.raises(StoreError):
        store.open()
    store.add_event(new_event())
    await store.flush()
    stats = store.stats()
    assert stats.db_path == str(db_path)
    assert stats.db_bytes > 0
    store.close()
    assert not store.healthy and not store.writer_alive
    await store.flush()  # everything was committed by close(): nothing to wait for
    with pytest.raises(StoreError):
        await store.query_events("dev-1", limit=1)


# ------------------------------------------------ reads for the console and the live stream
# A device's command log (paged, waiting and stored rows merged) and the events after an id
# (what a resuming stream missed).


def sent(request_id: str, device_id: str = "dev-1", at_ms: int = NOW_MS) -> CommandRecord:
    return CommandRecord(request_id=request_id, device_id=device_id, product_id="thermo", command="set_temp",
                         params={"target": 21}, sent_at_ms=at_ms, timeout_ms=3000)


async def test_command_log_pages_newest_first_across_stored_and_waiting_rows(store: Store) -> None:
    for i in range(6):
        store.add_command(sent(f"req-{i}", at_ms=NOW_MS + i * 10))
    store.add_command(sent("other", device_id="dev-2", at_ms=NOW_MS + 1000))
    await store.flush()
    # Two more waiting, one of them at the same millisecond as a stored one (the id breaks the tie).
    store.add_command(sent("req-6", at_ms=NOW_MS + 60))
    store.add_command(sent("req-5b", at_ms=NOW_MS + 50))
    answered = sent("req-2", at_ms=NOW_MS + 20)
    answered.status, answered.code, answered.msg = "ok", 0, "done"
    store.update_command(answered)  # an outcome waiting for a stored row

    seen: list[str] = []
    before: tuple[int, str] | None = None
    while page := await store.device_commands("dev-1", limit=3, before=before):
        seen += [c.request_id for c in page]
        before = (page[-1].sent_at_ms, page[-1].request_id)
        assert len(page) <= 3
    assert seen == ["req-6", "req-5b", "req-5", "req-4", "req-3", "req-2", "req-1", "req-0"]
    [second] = [c for c in await store.device_commands("dev-1", limit=10) if c.request_id == "req-2"]
    assert (second.status, second.code, second.msg) == ("ok", 0, "done")
    assert [c.request_id for c in await store.device_commands("dev-2", limit=10)] == ["other"]
    assert await store.device_commands("nobody", limit=10) == []
    assert await store.device_commands("dev-1", limit=0) == []

    await store.flush()
    assert [c.request_id for c in await store.device_commands("dev-1", limit=3)] == ["req-6", "req-5b", "req-5"]


async def test_command_log_sees_rows_committed_during_the_read(
    open_store: Callable[[StoreSettings], Store], monkeypatch: pytest.MonkeyPatch
) -> None:
    store = open_store(StoreSettings(batch_interval_s=0.05))
    commit_right_after_each_read(monkeypatch, store, "select_device_commands")
    store.add_command(sent("req-1"))
    await store.flush()
    store.add_command(sent("req-2", at_ms=NOW_MS + 1))
    done = sent("req-1")
    done.status = "timeout"
    store.update_command(done)

    log = await store.device_commands("dev-1", limit=10)

    assert store.stats().pending_rows == 0  # the waiting rows did commit mid-read
    assert [(c.request_id, c.status) for c in log] == [("req-2", "pending"), ("req-1", "timeout")]


async def test_events_after_an_id_oldest_first_with_filters(store: Store) -> None:
    for i in range(6):
        store.add_event(new_event("dev-1" if i % 2 == 0 else "dev-2", n=i))
    await store.flush()
    for i in range(6, 9):
        store.add_event(new_event("dev-1", n=i))  # ids 7..9 waiting

    assert [e.id for e in await store.events_after(0, limit=100)] == list(range(1, 10))
    assert [e.id for e in await store.events_after(4, limit=3)] == [5, 6, 7]
    assert [e.id for e in await store.events_after(4, limit=100, device_ids=frozenset({"dev-2"}))] == [6]
    assert [e.id for e in await store.events_after(0, limit=100, product_ids=frozenset({"other"}))] == []
    assert [e.data["n"] for e in await store.events_after(8, limit=5)] == [8]
    assert await store.events_after(9, limit=5) == []
    assert await store.events_after(0, limit=0) == []


async def test_events_after_sees_rows_committed_during_the_read(
    open_store: Callable[[StoreSettings], Store], monkeypatch: pytest.MonkeyPatch
) -> None:
    store = open_store(StoreSettings(batch_interval_s=0.05))
    commit_right_after_each_read(monkeypatch, store, "select_events_after")
    store.add_event(new_event())
    await store.flush()
    store.add_event(new_event())
    store.add_event(new_event())

    events = await store.events_after(0, limit=10)

    assert store.stats().pending_rows == 0
    assert [e.id for e in events] == [1, 2, 3]


def test_the_command_log_is_read_through_its_index(store: Store, db_path: Path) -> None:
    with sqlite3.connect(db_path) as conn:
        plan = " ".join(str(row) for row in conn.execute(
            "EXPLAIN QUERY PLAN SELECT * FROM commands WHERE device_id = ? "
            "ORDER BY sent_at_ms DESC, request_id DESC LIMIT 5", ("dev-1",)))
    assert "commands_by_device" in plan and "TEMP B-TREE" not in plan, plan
