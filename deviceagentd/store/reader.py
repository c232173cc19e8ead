"""The read side: one thread with its own read-only connection.

WAL lets it read while the writer writes; a dedicated thread (not the loop's default
executor) keeps reads from queueing behind unrelated blocking work, and keeps the
connection on one thread.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

from deviceagentd.store.errors import StoreError
from deviceagentd.store.rows import (
    CommandRow,
    DeviceRow,
    EventRow,
    McpCallRow,
    MessageRow,
    OutboxRow,
    ScheduleRow,
    SessionRow,
    VoiceTokenRow,
)

T = TypeVar("T")

_EVENT_COLUMNS = ", ".join(EventRow._fields)
_DEVICE_COLUMNS = ", ".join(DeviceRow._fields)
_COMMAND_COLUMNS = ", ".join(CommandRow._fields)
_SESSION_COLUMNS = ", ".join(SessionRow._fields)
_MESSAGE_COLUMNS = ", ".join(MessageRow._fields)
_VOICE_TOKEN_COLUMNS = ", ".join(VoiceTokenRow._fields)
_SCHEDULE_COLUMNS = ", ".join(ScheduleRow._fields)
_MCP_CALL_COLUMNS = ", ".join(McpCallRow._fields)
_OUTBOX_COLUMNS = ", ".join(OutboxRow._fields)


class Reader:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="store-reader")

    async def call(self, query: Callable[[sqlite3.Connection], T]) -> T:
        return await asyncio.wrap_future(self._submit(query))

    def call_sync(self, query: Callable[[sqlite3.Connection], T]) -> T:
        return self._submit(query).result()

    def _submit(self, query: Callable[[sqlite3.Connection], T]) -> Future[T]:
        try:
            return self._executor.submit(query, self._conn)
        except RuntimeError as exc:  # shut down by a close() on another thread
            raise StoreError("store is closed") from exc

    def close(self) -> None:
        self._executor.shutdown(wait=True)
        self._conn.close()


def select_events(
    conn: sqlite3.Connection,
    device_id: str | None,
    *,
    limit: int,
    before: int | None,
    event: str | None,
    since_ms: int | None = None,
    levels: frozenset[str] | None = None,
) -> list[EventRow]:
    """Newest first; `device_id=None` means every device."""
    clauses: list[str] = []
    args: list[object] = []
    if device_id is not None:
        clauses.append("device_id = ?")
        args.append(device_id)
    if before is not None:
        clauses.append("id < ?")
        args.append(before)
    if event is not None:
        clauses.append("event = ?")
        args.append(event)
    if since_ms is not None:
        clauses.append("received_at_ms >= ?")
        args.append(since_ms)
    if levels is not None:
        clauses.append(f"level IN ({', '.join('?' for _ in levels)})")
        args.extend(sorted(levels))
    where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
    args.append(limit)
    sql = f"SELECT {_EVENT_COLUMNS} FROM events{where} ORDER BY id DESC LIMIT ?"
    return [EventRow._make(row) for row in conn.execute(sql, args)]


def select_events_after(
    conn: sqlite3.Connection,
    after: int,
    *,
    limit: int,
    device_ids: frozenset[str] | None = None,
    product_ids: frozenset[str] | None = None,
) -> list[EventRow]:
    """Events with an id above `after`, oldest first (a live stream resuming)."""
    clauses = ["id > ?"]
    args: list[object] = [after]
    for column, values in (("device_id", device_ids), ("product_id", product_ids)):
        if values is not None:
            clauses.append(f"{column} IN ({', '.join('?' for _ in values)})")
            args.extend(sorted(values))
    args.append(limit)
    sql = f"SELECT {_EVENT_COLUMNS} FROM events WHERE {' AND '.join(clauses)} ORDER BY id LIMIT ?"
    return [EventRow._make(row) for row in conn.execute(sql, args)]


def select_device_commands(
    conn: sqlite3.Connection, device_id: str, *, limit: int, before: tuple[int, str] | None
) -> list[CommandRow]:
    """A device's commands, newest first: by time sent, then request id; `before` is the
    (sent_at_ms, request_id) of the last one already shown."""
    where = "device_id = ?"
    args: list[object] = [device_id]
    if before is not None:
        where += " AND (sent_at_ms < ? OR (sent_at_ms = ? AND request_id < ?))"
        args.extend([before[0], before[0], before[1]])
    args.append(limit)
    sql = (f"SELECT {_COMMAND_COLUMNS} FROM commands WHERE {where} "
           "ORDER BY sent_at_ms DESC, request_id DESC LIMIT ?")
    return [CommandRow._make(row) for row in conn.execute(sql, args)]


def select_command(conn: sqlite3.Connection, request_id: str) -> CommandRow | None:
    row = conn.execute(
        f"SELECT {_COMMAND_COLUMNS} FROM commands WHERE request_id = ?", (request_id,)
    ).fetchone()
    return None if row is None else CommandRow._make(row)


def select_devices(conn: sqlite3.Connection) -> list[DeviceRow]:
    return [
        DeviceRow._make(row)
        for row in conn.execute(f"SELECT {_DEVICE_COLUMNS} FROM devices ORDER BY device_id")
    ]


def select_session(conn: sqlite3.Connection, session_id: str) -> SessionRow | None:
    row = conn.execute(
        f"SELECT {_SESSION_COLUMNS} FROM sessions WHERE session_id = ?", (session_id,)
    ).fetchone()
    return None if row is None else SessionRow._make(row)


def select_session_messages(conn: sqlite3.Connection, session_id: str, *, limit: int) -> list[MessageRow]:
    """The newest `limit` messages of the session, newest first."""
    return [
        MessageRow._make(row)
        for row in conn.execute(
            f"SELECT {_MESSAGE_COLUMNS} FROM session_messages WHERE session_id = ? ORDER BY id DESC LIMIT ?",
            (session_id, limit),
        )
    ]


def select_voice_tokens(conn: sqlite3.Connection) -> list[VoiceTokenRow]:
    return [
        VoiceTokenRow._make(row)
        for row in conn.execute(f"SELECT {_VOICE_TOKEN_COLUMNS} FROM voice_tokens ORDER BY voice_id")
    ]


def select_schedules(conn: sqlite3.Connection, after: str = "", limit: int = -1) -> list[ScheduleRow]:
    """Schedules by id, those after `after`, at most `limit` (-1: all)."""
    return [
        ScheduleRow._make(row)
        for row in conn.execute(
            f"SELECT {_SCHEDULE_COLUMNS} FROM schedules WHERE schedule_id > ? ORDER BY schedule_id LIMIT ?",
            (after, limit),
        )
    ]


def select_any_schedule(conn: sqlite3.Connection) -> bool:
    return conn.execute("SELECT 1 FROM schedules LIMIT 1").fetchone() is not None


def select_mcp_calls(conn: sqlite3.Connection, *, limit: int) -> list[McpCallRow]:
    """The newest `limit` calls, newest first."""
    return [
        McpCallRow._make(row)
        for row in conn.execute(f"SELECT {_MCP_CALL_COLUMNS} FROM mcp_calls ORDER BY id DESC LIMIT ?", (limit,))
    ]


def select_outbox(conn: sqlite3.Connection, *, after: int, limit: int) -> list[OutboxRow]:
    rows = conn.execute(
        f"SELECT {_OUTBOX_COLUMNS} FROM uplink_outbox WHERE id > ? ORDER BY id LIMIT ?", (after, limit)
    ).fetchall()
    return [OutboxRow(*row) for row in rows]
