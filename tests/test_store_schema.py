"""Opening the database: fresh files, migrations, downgrade refusal, corrupt files."""

from __future__ import annotations

import logging
import os
import sqlite3
from pathlib import Path

import pytest

from deviceagentd.store import (
    NewEvent,
    SchemaTooNewError,
    SessionMessage,
    Store,
    StoreSettings,
    VoiceTokenRecord,
)
from deviceagentd.store.records import McpCallRecord, ScheduleRecord
from deviceagentd.store.rows import event_row, message_row
from deviceagentd.store.schema import MIGRATIONS, migrate

NOW_MS = 1_700_000_000_000
SETTINGS = StoreSettings(batch_interval_s=30.0)


def clock_ms() -> int:
    return NOW_MS


def new_event(n: int = 0) -> NewEvent:
    return NewEvent("dev-1", "thermo", "alarm", "info", True, {"n": n}, NOW_MS, NOW_MS)


def schema_objects(path: Path) -> set[tuple[str, str]]:
    with sqlite3.connect(path) as conn:
        rows = conn.execute(
            "SELECT type, name FROM sqlite_master WHERE name NOT LIKE 'sqlite_%'"
        ).fetchall()
    return set(rows)


def pragma(path: Path, name: str) -> object:
    with sqlite3.connect(path) as conn:
        return conn.execute(f"PRAGMA {name}").fetchone()[0]


async def write_events(path: Path, count: int) -> None:
    store = Store(path, SETTINGS, clock_ms)
    store.open()
    try:
        for i in range(count):
            store.add_event(new_event(i))
        await store.flush()
    finally:
        store.close()


async def test_fresh_database_gets_schema_and_settings(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "state.db"

    await write_events(path, 1)

    assert pragma(path, "user_version") == len(MIGRATIONS) == 8
    assert pragma(path, "journal_mode") == "wal"
    assert pragma(path, "auto_vacuum") == 2  # incremental
    assert schema_objects(path) == {
        ("table", "devices"),
        ("table", "events"),
        ("table", "commands"),
        ("index", "commands_by_device"),
        ("index", "events_by_device"),
        ("index", "events_by_received_at"),
        ("index", "commands_by_sent_at"),
        ("table", "sessions"),
        ("table", "session_messages"),
        ("index", "sessions_by_updated"),
        ("index", "session_messages_by_session"),
        ("table", "voice_tokens"),
        ("table", "schedules"),
        ("table", "mcp_calls"),
        ("index", "mcp_calls_by_ts"),
        ("table", "store_meta"),
        ("table", "uplink_outbox"),
        ("index", "uplink_outbox_droppable"),
    }
    with sqlite3.connect(path) as conn:
        columns = [row[2] for row in conn.execute("PRAGMA index_info(events_by_device)")]
        assert columns == ["device_id", "id"]
        assert conn.execute("SELECT data FROM events").fetchall() == [('{"n":0}',)]
        token_columns = [(row[1], row[2], row[3], row[5]) for row in conn.execute("PRAGMA table_info(voice_tokens)")]
        assert token_columns == [
            ("voice_id", "TEXT", 0, 1),
            ("access_hash", "TEXT", 1, 0),
            ("refresh_hash", "TEXT", 1, 0),
            ("issued_at_ms", "INTEGER", 1, 0),
            ("expires_at_ms", "INTEGER", 1, 0),
            ("pending_access_hash", "TEXT", 0, 0),
            ("pending_refresh_hash", "TEXT", 0, 0),
            ("pending_issued_at_ms", "INTEGER", 0, 0),
            ("pending_expires_at_ms", "INTEGER", 0, 0),
        ]


async def test_newer_schema_is_refused_and_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    await write_events(path, 2)
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA user_version = 99")

    store = Store(path, SETTINGS, clock_ms)
    with pytest.raises(SchemaTooNewError) as caught:
        store.open()

    assert (caught.value.found, caught.value.known) == (99, len(MIGRATIONS))
    assert "version 99" in str(caught.value)
    assert not store.healthy
    assert pragma(path, "user_version") == 99
    assert list(tmp_path.glob("*.corrupt-*")) == []
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT COUNT(*) FROM events").fetchone() == (2,)


def test_a_new_migration_is_one_more_list_entry(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "m.db", isolation_level=None)
    migrate(conn, "m.db")
    conn.execute("INSERT INTO devices VALUES ('d', 'p', 1, '{}', '{}', 1, 2, 'json')")

    def add_next_table(c: sqlite3.Connection) -> None:
        c.execute("CREATE TABLE next_table (key TEXT PRIMARY KEY)")

    migrate(conn, "m.db", [*MIGRATIONS, add_next_table])

    assert conn.execute("PRAGMA user_version").fetchone() == (len(MIGRATIONS) + 1,)
    assert conn.execute("SELECT name FROM sqlite_master WHERE name = 'next_table'").fetchone()
    assert conn.execute("SELECT device_id FROM devices").fetchall() == [("d",)]
    conn.close()


def test_a_failing_migration_rolls_back_whole(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "m.db", isolation_level=None)

    def half_done(c: sqlite3.Connection) -> None:
        c.execute("CREATE TABLE next_table (key TEXT PRIMARY KEY)")
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        migrate(conn, "m.db", [*MIGRATIONS, half_done])

    assert conn.execute("PRAGMA user_version").fetchone() == (len(MIGRATIONS),)
    assert conn.execute("SELECT name FROM sqlite_master WHERE name = 'next_table'").fetchone() is None
    assert not conn.in_transaction
    conn.close()


async def test_version_2_database_upgrades_to_the_latest_and_keeps_its_data(tmp_path: Path) -> None:
    # A database as the version-2 code left it: its two schema steps and rows in every table.
    path = tmp_path / "state.db"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    migrate(conn, str(path), MIGRATIONS[:2])
    conn.execute("INSERT INTO devices VALUES ('dev-1', 'thermo', 1, '{\"t\":21}', '{}', 1, 2, 'json')")
    conn.executemany("INSERT INTO events VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", [event_row(7, new_event(7))])
    conn.execute("INSERT INTO sessions VALUES ('s1', ?, ?, NULL, NULL, '{}')", (NOW_MS, NOW_MS))
    conn.executemany(
        "INSERT INTO session_messages VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        [message_row(3, "s1", SessionMessage("user", "hello", NOW_MS))],
    )
    conn.close()
    assert pragma(path, "user_version") == 2

    store = Store(path, SETTINGS, clock_ms)
    store.open()
    try:
        assert pragma(path, "user_version") == len(MIGRATIONS)
        [device] = store.load_devices()
        assert (device.device_id, device.state) == ("dev-1", {"t": 21})
        assert [e.data for e in await store.query_events("dev-1", limit=5)] == [{"n": 7}]
        assert [m.text for m in await store.session_messages("s1", limit=5)] == ["hello"]
        assert store.add_event(new_event(8)).id == 8
        assert store.load_voice_tokens() == []
        token = VoiceTokenRecord("spk-1", "a" * 64, "b" * 64, NOW_MS, NOW_MS + 7_200_000)
        store.save_voice_token(token)
        await store.flush()
        assert store.load_voice_tokens() == [token]
    finally:
        store.close()
    with sqlite3.connect(path) as check:
        assert check.execute("SELECT voice_id, access_hash FROM voice_tokens").fetchall() == [("spk-1", "a" * 64)]
        assert check.execute("SELECT COUNT(*) FROM events").fetchone() == (2,)
        assert check.execute("PRAGMA integrity_check").fetchone() == ("ok",)


async def test_a_version_3_speaker_keeps_its_tokens_and_gets_no_pending_pair(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    migrate(conn, str(path), MIGRATIONS[:3])
    conn.execute("INSERT INTO voice_tokens VALUES ('spk-1', ?, ?, ?, ?)", ("a" * 64, "b" * 64, NOW_MS, NOW_MS + 1))
    conn.close()

    store = Store(path, SETTINGS, clock_ms)
    store.open()
    try:
        assert store.load_voice_tokens() == [VoiceTokenRecord("spk-1", "a" * 64, "b" * 64, NOW_MS, NOW_MS + 1)]
        with_pending = VoiceTokenRecord("spk-1", "a" * 64, "b" * 64, NOW_MS, NOW_MS + 1, "c" * 64, "d" * 64,
                                        NOW_MS + 5, NOW_MS + 6)
        store.save_voice_token(with_pending)
        await store.flush()
        assert store.load_voice_tokens() == [with_pending]
    finally:
        store.close()


async def test_an_empty_database_file_is_not_taken_silently(tmp_path: Path,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    # After a first start the file never is empty: 0 bytes means it was cut short (a power cut,
    # a bad card), so it is moved aside and reported like a corrupt one, not used as new.
    path = tmp_path / "state.db"
    path.touch()
    with caplog.at_level(logging.ERROR, logger="deviceagentd.store"):
        await write_events(path, 2)
    moved = tmp_path / f"state.db.corrupt-{NOW_MS}"
    assert moved.exists() and moved.stat().st_size == 0
    assert any("empty (0 bytes)" in r.getMessage() for r in caplog.records)
    store = Store(path, SETTINGS, clock_ms)
    assert store.recovered_from() == [moved.name]
    assert pragma(path, "user_version") == len(MIGRATIONS)


async def test_garbage_file_is_moved_aside(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "state.db"
    garbage = b"this is not an SQLite database " * 500
    path.write_bytes(garbage)
    Path(f"{path}-wal").write_bytes(b"stale wal")

    with caplog.at_level(logging.WARNING, logger="deviceagentd.store"):
        await write_events(path, 3)

    moved = tmp_path / f"state.db.corrupt-{NOW_MS}"
    assert moved.read_bytes() == garbage
    # The old WAL must never be replayed into the new file.
    wal = Path(f"{path}-wal")
    assert not wal.exists() or wal.read_bytes() != b"stale wal"
    assert any(str(moved) in r.getMessage() for r in caplog.records)
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert conn.execute("SELECT COUNT(*) FROM events").fetchone() == (3,)


async def test_damaged_pages_are_detected_and_moved_aside(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    await write_events(path, 3000)
    page_size = int(str(pragma(path, "page_size")))
    assert path.stat().st_size > 20 * page_size
    with path.open("r+b") as f:
        f.seek(5 * page_size)
        f.write(os.urandom(10 * page_size))

    await write_events(path, 1)

    [moved] = tmp_path.glob("state.db.corrupt-*")
    assert moved.stat().st_size > 20 * page_size
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT id FROM events").fetchall() == [(1,)]


async def test_version_3_database_gains_schedules_and_the_mcp_call_log(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    migrate(conn, str(path), MIGRATIONS[:3])
    conn.execute("INSERT INTO voice_tokens VALUES ('spk-1', 'a', 'b', 1, 2)")
    conn.close()

    store = Store(path, SETTINGS, clock_ms)
    store.open()
    try:
        assert pragma(path, "user_version") == len(MIGRATIONS)
        assert [t.voice_id for t in store.load_voice_tokens()] == ["spk-1"]
        assert store.load_schedules() == []
        record = ScheduleRecord("sch-1", {"name": "lights out"}, NOW_MS, NOW_MS + 60_000)
        store.save_schedule(record)
        store.add_mcp_call(McpCallRecord(NOW_MS, "claude", "get_state", {"deviceId": "d"}, "ok", "", 1.5))
        await store.flush()
        assert store.load_schedules() == [record]
        [call] = await store.recent_mcp_calls(limit=5)
        assert (call.client, call.tool, call.arguments) == ("claude", "get_state", {"deviceId": "d"})
        store.delete_schedule("sch-1")
        await store.flush()
        assert store.load_schedules() == []
    finally:
        store.close()
