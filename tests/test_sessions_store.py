"""Session history: the store's sessions tables and the agent's SessionStore, on real SQLite files."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from deviceagentd.agent.sessions import SessionStore
from deviceagentd.agent.types import ChatMessage, ToolCall, ToolResult
from deviceagentd.store import (
    NewEvent,
    SessionMessage,
    SessionRecord,
    Store,
    StoreSettings,
)
from deviceagentd.store.database import open_writer
from deviceagentd.store.retention import prune
from deviceagentd.store.rows import event_row
from deviceagentd.store.schema import MIGRATIONS, migrate

DAY_MS = 86_400_000
START_MS = 1_700_000_000_000
# Long enough that nothing commits on its own during a test; flush()/close() commit.
HOLD = StoreSettings(batch_interval_s=30.0)


class FakeClock:
    def __init__(self) -> None:
        self.now_ms = START_MS

    def __call__(self) -> int:
        return self.now_ms


def user(text: str, ts_ms: int = START_MS) -> ChatMessage:
    return ChatMessage("user", text, ts_ms)


def texts(messages: list[ChatMessage]) -> list[str]:
    return [m.text for m in messages]


def db_rows(path: Path, sql: str, *args: object) -> list[tuple[object, ...]]:
    with sqlite3.connect(path) as conn:
        return conn.execute(sql, args).fetchall()


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
def open_store(db_path: Path) -> Iterator[Callable[..., Store]]:
    opened: list[Store] = []

    def factory(settings: StoreSettings = HOLD, clock: Callable[[], int] | None = None) -> Store:
        store = Store(db_path, settings, clock or FakeClock())
        store.open()
        opened.append(store)
        return store

    yield factory
    for store in opened:
        store.close()


async def test_history_is_oldest_first_and_the_newest_limit(open_store: Callable[..., Store]) -> None:
    sessions = SessionStore(open_store(), max_messages=50)
    for i in range(5):
        sessions.append("s1", user(f"m{i}", START_MS + i))
    sessions.append("s2", user("other session"))

    # Not committed yet: reads see the waiting messages.
    assert texts(await sessions.history("s1", 10)) == ["m0", "m1", "m2", "m3", "m4"]
    assert texts(await sessions.history("s1", 2)) == ["m3", "m4"]
    assert await sessions.history("s1", 0) == []
    await sessions.store.flush()
    assert texts(await sessions.history("s1", 2)) == ["m3", "m4"]

    # A page that spans stored and waiting messages.
    sessions.append("s1", user("m5"))
    assert texts(await sessions.history("s1", 3)) == ["m3", "m4", "m5"]
    assert texts(await sessions.history("s2", 10)) == ["other session"]


@pytest.mark.parametrize("committed_first", [0, 30, 50])
async def test_a_session_keeps_only_its_newest_messages(
    open_store: Callable[..., Store], db_path: Path, committed_first: int
) -> None:
    store = open_store()
    sessions = SessionStore(store, max_messages=50)
    for i in range(committed_first):
        sessions.append("s1", user(f"m{i}"))
    await store.flush()
    for i in range(committed_first, 51):
        sessions.append("s1", user(f"m{i}"))

    expected = [f"m{i}" for i in range(1, 51)]
    # What waits for the commit is bounded as well (the session's messages, nothing else waits).
    assert store.stats().pending_rows == min(51 - committed_first, 50)
    # Before the commit, the read is bounded too (m0 may still be in the database).
    assert texts(await sessions.history("s1", 1000)) == expected
    assert [m.text for m in await store.session_messages("s1", limit=1000)] == expected
    await store.flush()
    assert texts(await sessions.history("s1", 1000)) == expected
    stored = db_rows(db_path, "SELECT text FROM session_messages WHERE session_id = 's1' ORDER BY id")
    assert [row[0] for row in stored] == expected


async def test_bound_is_per_session_and_other_sessions_are_untouched(
    open_store: Callable[..., Store], db_path: Path
) -> None:
    store = open_store()
    sessions = SessionStore(store, max_messages=3)
    for i in range(4):
        sessions.append("a", user(f"a{i}"))
        sessions.append("b", user(f"b{i}"))
    sessions.append("c", user("c0"))
    await store.flush()

    assert texts(await sessions.history("a", 50)) == ["a1", "a2", "a3"]
    assert texts(await sessions.history("b", 50)) == ["b1", "b2", "b3"]
    assert texts(await sessions.history("c", 50)) == ["c0"]
    assert db_rows(db_path, "SELECT session_id, COUNT(*) FROM session_messages GROUP BY session_id") == [
        ("a", 3),
        ("b", 3),
        ("c", 1),
    ]


async def test_tool_calls_and_results_round_trip(open_store: Callable[..., Store], db_path: Path) -> None:
    store = open_store()
    sessions = SessionStore(store)
    reply = ChatMessage(
        "assistant",
        "Il fait 21,5 °C; 目标温度已设为 24。",
        START_MS + 7,
        tool_calls=[
            ToolCall("call-1", "read_state", {"deviceId": "thermo-1", "fields": ["temp"]}),
            ToolCall("call-2", "send_command", {"deviceId": "thermo-1", "command": "set", "params": {"t": 24}}),
        ],
        tool_results=[
            ToolResult("call-1", "read_state", True, result={"temp": 21.5, "ok": None}),
            ToolResult("call-2", "send_command", False, error="the thermostat did not answer"),
        ],
        interrupted=True,
    )
    sessions.append("s1", user("how warm is it?"))
    sessions.append("s1", reply)

    assert (await sessions.history("s1", 10))[1] == reply
    await store.flush()
    [stored_user, stored_reply] = await sessions.history("s1", 10)
    assert stored_reply == reply
    assert stored_user == user("how warm is it?")
    [(calls, results, interrupted)] = db_rows(
        db_path, "SELECT tool_calls, tool_results, interrupted FROM session_messages WHERE role = 'assistant'"
    )
    assert '"send_command"' in str(calls) and "did not answer" in str(results) and interrupted == 1


async def test_unstorable_values_do_not_break_a_turn(open_store: Callable[..., Store]) -> None:
    store = open_store()
    sessions = SessionStore(store)
    sessions.append("s1", user("lone \ud800 surrogate"))
    sessions.append(
        "s1",
        ChatMessage("assistant", "done", START_MS, tool_results=[ToolResult("c", "snap", True, result=b"\x00")]),
    )
    await store.flush()

    first, second = await sessions.history("s1", 10)
    assert first.text == "lone ? surrogate"
    assert second.tool_results == [ToolResult("c", "snap", True, result="b'\\x00'")]


async def test_delete_a_stored_session(open_store: Callable[..., Store], db_path: Path) -> None:
    store = open_store()
    sessions = SessionStore(store)
    sessions.append("s1", user("keep?"))
    sessions.remember_device("s1", "thermo", "thermo-1")
    sessions.append("s2", user("unrelated"))
    await store.flush()

    assert await sessions.delete("s1") is True
    # Gone at once, though the delete is not committed yet.
    assert await sessions.history("s1", 10) == []
    assert not await sessions.exists("s1")
    assert await sessions.default_device("s1") == (None, None)
    assert await sessions.delete("s1") is False
    await store.flush()
    assert db_rows(db_path, "SELECT session_id FROM sessions") == [("s2",)]
    assert db_rows(db_path, "SELECT session_id FROM session_messages") == [("s2",)]


async def test_delete_a_session_that_was_never_committed(open_store: Callable[..., Store], db_path: Path) -> None:
    store = open_store()
    sessions = SessionStore(store)
    sessions.append("s1", user("one"))
    sessions.append("s1", user("two"))
    assert await sessions.exists("s1")

    assert await sessions.delete("s1") is True
    assert await sessions.history("s1", 10) == []
    assert await store.get_session("s1") is None
    await store.flush()
    assert db_rows(db_path, "SELECT COUNT(*) FROM sessions") == [(0,)]
    assert db_rows(db_path, "SELECT COUNT(*) FROM session_messages") == [(0,)]


async def test_messages_after_a_delete_start_a_new_history(open_store: Callable[..., Store], db_path: Path) -> None:
    store = open_store()
    sessions = SessionStore(store)
    sessions.append("s1", user("old stored"))
    await store.flush()
    sessions.append("s1", user("old waiting"))

    assert await sessions.delete("s1")
    sessions.append("s1", user("new"))  # same batch as the delete

    assert texts(await sessions.history("s1", 10)) == ["new"]
    await store.flush()
    assert texts(await sessions.history("s1", 10)) == ["new"]
    assert db_rows(db_path, "SELECT text FROM session_messages") == [("new",)]


async def test_unknown_session(open_store: Callable[..., Store]) -> None:
    sessions = SessionStore(open_store())
    assert await sessions.history("nobody", 10) == []
    assert not await sessions.exists("nobody")
    assert await sessions.default_device("nobody") == (None, None)
    assert await sessions.delete("nobody") is False


async def test_default_device_and_header(open_store: Callable[..., Store]) -> None:
    clock = FakeClock()
    store = open_store(HOLD, clock)
    sessions = SessionStore(store)
    store.save_session(SessionRecord("s1", START_MS, START_MS, metadata={"channel": "voice"}))
    await store.flush()

    clock.now_ms += 1000
    sessions.remember_device("s1", "thermo", "thermo-1")
    assert await sessions.default_device("s1") == ("thermo", "thermo-1")
    await store.flush()
    assert await store.get_session("s1") == SessionRecord(
        "s1", START_MS, START_MS + 1000, "thermo", "thermo-1", {"channel": "voice"}
    )

    # Writing the whole header again keeps when the session began.
    store.save_session(SessionRecord("s1", START_MS + 5000, START_MS + 5000, None, "lamp-2", {}))
    assert await store.get_session("s1") == SessionRecord("s1", START_MS, START_MS + 5000, None, "lamp-2", {})
    await store.flush()
    assert await store.get_session("s1") == SessionRecord("s1", START_MS, START_MS + 5000, None, "lamp-2", {})

    # A device remembered for a new session creates it.
    sessions.remember_device("s2", None, "lamp-9")
    assert await sessions.exists("s2")
    assert await sessions.default_device("s2") == (None, "lamp-9")


async def test_history_survives_close_and_reopen(db_path: Path) -> None:
    clock = FakeClock()
    first = Store(db_path, HOLD, clock)
    first.open()
    sessions = SessionStore(first)
    sessions.append("s1", user("before restart"))
    sessions.append("s1", ChatMessage("assistant", "ok", START_MS, [ToolCall("c1", "list_devices", {})]))
    sessions.remember_device("s1", "thermo", "thermo-1")
    first.close()  # commits what was waiting

    second = Store(db_path, HOLD, clock)
    second.open()
    try:
        sessions = SessionStore(second)
        history = await sessions.history("s1", 10)
        assert texts(history) == ["before restart", "ok"]
        assert history[1].tool_calls == [ToolCall("c1", "list_devices", {})]
        assert await sessions.default_device("s1") == ("thermo", "thermo-1")
        # New messages sort after the stored ones: ids continue.
        sessions.append("s1", user("after restart"))
        assert texts(await sessions.history("s1", 10)) == ["before restart", "ok", "after restart"]
        await second.flush()
        assert texts(await sessions.history("s1", 2)) == ["ok", "after restart"]
    finally:
        second.close()


async def test_version_1_database_is_migrated_and_keeps_its_events(db_path: Path) -> None:
    # A database as the version-1 code wrote it: its schema step, its event rows.
    conn = open_writer_v1(db_path)
    events = [
        NewEvent("dev-1", "thermo", "alarm", "warning", True, {"n": n}, START_MS, START_MS + n) for n in range(3)
    ]
    conn.executemany(
        "INSERT INTO events VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [event_row(i + 1, event) for i, event in enumerate(events)],
    )
    conn.close()
    assert db_rows(db_path, "PRAGMA user_version") == [(1,)]

    store = Store(db_path, HOLD, FakeClock())
    store.open()
    try:
        assert db_rows(db_path, "PRAGMA user_version") == [(len(MIGRATIONS),)]
        stored = await store.query_events("dev-1", limit=10)
        assert [(e.id, e.data) for e in stored] == [(3, {"n": 2}), (2, {"n": 1}), (1, {"n": 0})]
        assert store.add_event(events[0]).id == 4
        sessions = SessionStore(store)
        sessions.append("s1", user("hello"))
        await store.flush()
        assert texts(await sessions.history("s1", 5)) == ["hello"]
    finally:
        store.close()
    indexes = db_rows(db_path, "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name LIKE 'session%' "
                     "AND name NOT LIKE 'sqlite_%'")
    assert sorted(indexes) == [("session_messages_by_session",), ("sessions_by_updated",)]
    with sqlite3.connect(db_path) as check:
        columns = [row[2] for row in check.execute("PRAGMA index_info(session_messages_by_session)")]
        assert columns == ["session_id", "id"]
        assert check.execute("PRAGMA integrity_check").fetchone() == ("ok",)


def open_writer_v1(path: Path) -> sqlite3.Connection:
    """Like open_writer, but only the migrations that existed at version 1."""
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    migrate(conn, str(path), MIGRATIONS[:1])
    return conn


async def test_sessions_not_used_for_too_long_are_deleted(open_store: Callable[..., Store], db_path: Path) -> None:
    clock = FakeClock()
    settings = StoreSettings(batch_interval_s=0.05, retention_interval_s=0.05, sessions_max_age_days=30)
    store = open_store(settings, clock)
    sessions = SessionStore(store)
    sessions.append("old", user("from long ago"))
    sessions.append("revived", user("also long ago"))
    await store.flush()

    clock.now_ms += 20 * DAY_MS
    sessions.remember_device("revived", "thermo", "thermo-1")  # a write keeps a session alive
    sessions.append("fresh", user("recent"))
    await store.flush()
    clock.now_ms += 11 * DAY_MS  # "old" is 31 days unused, "revived" 11, "fresh" 11

    await eventually(lambda: db_rows(db_path, "SELECT session_id FROM sessions ORDER BY session_id")
                     == [("fresh",), ("revived",)])
    assert db_rows(db_path, "SELECT DISTINCT session_id FROM session_messages ORDER BY session_id") == [
        ("fresh",),
        ("revived",),
    ]
    assert not await sessions.exists("old")
    assert await sessions.history("old", 10) == []
    assert texts(await sessions.history("revived", 10)) == ["also long ago"]
    assert store.healthy


def test_prune_deletes_old_sessions_with_their_messages(db_path: Path) -> None:
    conn = open_writer(db_path, START_MS)
    conn.executemany(
        "INSERT INTO sessions VALUES (?, ?, ?, NULL, NULL, '{}')",
        [("old", 0, START_MS - 31 * DAY_MS), ("new", 0, START_MS - 29 * DAY_MS)],
    )
    conn.executemany(
        "INSERT INTO session_messages (session_id, role, text, ts_ms, tool_calls, tool_results, interrupted) "
        "VALUES (?, 'user', 'x', 0, '[]', '[]', 0)",
        [("old",)] * 7 + [("new",)] * 2,
    )
    result = prune(conn, StoreSettings(sessions_max_age_days=30), START_MS, chunk_rows=3)

    assert (result.sessions, result.session_messages, result.finished) == (1, 7, True)
    assert conn.execute("SELECT session_id FROM sessions").fetchall() == [("new",)]
    assert conn.execute("SELECT session_id, COUNT(*) FROM session_messages GROUP BY 1").fetchall() == [("new", 2)]
    conn.close()


@pytest.mark.slow
async def test_reads_stay_right_while_a_batch_waits_for_a_locked_database(
    open_store: Callable[..., Store], db_path: Path
) -> None:
    store = open_store(StoreSettings(batch_interval_s=0.05))
    sessions = SessionStore(store, max_messages=5)
    for i in range(5):
        sessions.append("s1", user(f"m{i}"))
    sessions.append("gone", user("to be deleted"))
    await store.flush()
    # The writer prunes once at start, at the latest right after its first commit; once a
    # second commit is done that is over, so only the batches below meet the lock.
    sessions.append("warm-up", user("x"))
    await store.flush()
    blocker = sqlite3.connect(db_path, isolation_level=None, check_same_thread=False)
    blocker.execute("BEGIN EXCLUSIVE")
    try:
        sessions.append("s1", user("m5"))
        sessions.append("s1", user("m6"))
        assert await sessions.delete("gone")
        sessions.append("late", user("doomed"))
        # That batch is now the writer's (in flight, failing); the next ones wait behind it.
        await eventually(lambda: not store.healthy, timeout=30)
        for i in range(7, 10):
            sessions.append("s1", user(f"m{i}"))
        sessions.append("gone", user("new life"))
        assert await sessions.delete("late")  # hides a message the writer holds in flight
        sessions.append("late", user("reborn"))

        assert texts(await sessions.history("s1", 100)) == ["m5", "m6", "m7", "m8", "m9"]
        assert texts(await sessions.history("gone", 100)) == ["new life"]
        assert texts(await sessions.history("late", 100)) == ["reborn"]
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    await asyncio.wait_for(store.flush(), 30)
    assert store.healthy
    assert texts(await sessions.history("s1", 100)) == ["m5", "m6", "m7", "m8", "m9"]
    assert db_rows(db_path, "SELECT text FROM session_messages WHERE session_id = 's1' ORDER BY id") == [
        (f"m{i}",) for i in range(5, 10)
    ]
    assert db_rows(db_path, "SELECT text FROM session_messages WHERE session_id = 'gone'") == [("new life",)]
    assert db_rows(db_path, "SELECT text FROM session_messages WHERE session_id = 'late'") == [("reborn",)]


async def test_store_refuses_a_bound_below_one(open_store: Callable[..., Store]) -> None:
    store = open_store()
    with pytest.raises(ValueError):
        store.add_session_message("s1", SessionMessage("user", "x", 0), max_messages=0)
    with pytest.raises(ValueError):
        SessionStore(store, max_messages=0)
    assert await store.session_messages("s1", limit=5) == []
