"""The store's reads for the console and the live stream: a device's command log (paged,
waiting and stored rows merged) and the events after an id (what a resuming stream missed)."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
from test_store import HOLD, NOW_MS, clock_ms, commit_right_after_each_read, new_event

from deviceagentd.store import CommandRecord, Store, StoreSettings


def sent(request_id: str, device_id: str = "dev-1", at_ms: int = NOW_MS) -> CommandRecord:
    return CommandRecord(request_id=request_id, device_id=device_id, product_id="thermo", command="set_temp",
                         params={"target": 21}, sent_at_ms=at_ms, timeout_ms=3000)


@pytest.fixture
def open_store(tmp_path: Path) -> Iterator[Callable[[StoreSettings], Store]]:
    opened: list[Store] = []

    def factory(settings: StoreSettings) -> Store:
        store = Store(tmp_path / "state.db", settings, clock_ms)
        store.open()
        opened.append(store)
        return store

    yield factory
    for store in opened:
        store.close()


@pytest.fixture
async def store(open_store: Callable[[StoreSettings], Store]) -> AsyncIterator[Store]:
    yield open_store(HOLD)


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


def test_the_command_log_is_read_through_its_index(store: Store, tmp_path: Path) -> None:
    with sqlite3.connect(tmp_path / "state.db") as conn:
        plan = " ".join(str(row) for row in conn.execute(
            "EXPLAIN QUERY PLAN SELECT * FROM commands WHERE device_id = ? "
            "ORDER BY sent_at_ms DESC, request_id DESC LIMIT 5", ("dev-1",)))
    assert "commands_by_device" in plan and "TEMP B-TREE" not in plan, plan
