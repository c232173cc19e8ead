"""The writer thread: owns the write connection, commits batches, runs retention.

It waits for the first waiting row, lets rows gather for `batch_interval_s` (or until
`batch_max_rows`, a flush, or close), then writes them in one transaction; a backlog is
written one sealed batch (at most `batch_max_rows`) per transaction. A failed commit keeps
the batch and retries it with backoff (at most `_BACKOFF_MAX_S` apart, so a disk that has
room again is used within seconds); the thread itself never gives up until the store
closes. Closing, it keeps retrying for `close_timeout_s`; what it still cannot write then
is counted in `lost_rows` and reported, never passed off as stored.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Sequence

from deviceagentd.store.errors import StoreError
from deviceagentd.store.outbox import OutboxBook, OutboxChange
from deviceagentd.store.pending import Batch, PendingWrites
from deviceagentd.store.retention import prune
from deviceagentd.store.rows import (
    CommandOutcome,
    CommandRow,
    DeviceRow,
    EventRow,
    McpCallRow,
    MessageRow,
    ScheduleRow,
    SessionRow,
    VoiceTokenRow,
    device_row,
)
from deviceagentd.store.settings import StoreSettings

_log = logging.getLogger("deviceagentd.store")

_BACKOFF_FIRST_S = 0.5
_BACKOFF_MAX_S = 5.0
# Closing with a failing disk: retry this often until close_timeout_s has passed.
_CLOSE_RETRY_S = 0.5

# Errors that come from one row's values (too-large int, unbindable type, constraint), not
# from the disk: retrying the batch would fail forever, so the rows are written one by one
# and the offending ones dropped.
_ROW_ERRORS = (
    sqlite3.IntegrityError,
    sqlite3.InterfaceError,
    sqlite3.ProgrammingError,
    OverflowError,
    ValueError,
    TypeError,
)


def _insert(table: str, fields: Sequence[str]) -> str:
    marks = ", ".join("?" for _ in fields)
    return f"INSERT OR REPLACE INTO {table} ({', '.join(fields)}) VALUES ({marks})"


def _upsert(table: str, fields: Sequence[str], key: str) -> str:
    """Update the row in place when the key exists. INSERT OR REPLACE would delete it and insert
    it again under a new rowid, rewriting pages of the table and of the key's index: for the
    periodic save of every device, ~25 % more pages per save."""
    marks = ", ".join("?" for _ in fields)
    updates = ", ".join(f"{name} = excluded.{name}" for name in fields if name != key)
    return (f"INSERT INTO {table} ({', '.join(fields)}) VALUES ({marks}) "
            f"ON CONFLICT ({key}) DO UPDATE SET {updates}")


_INSERT_EVENT = _insert("events", EventRow._fields)
_UPSERT_DEVICE = _upsert("devices", DeviceRow._fields, "device_id")
_DELETE_DEVICE = "DELETE FROM devices WHERE device_id = ?"
_INSERT_COMMAND = _insert("commands", CommandRow._fields)
_UPDATE_COMMAND = (
    f"UPDATE commands SET {', '.join(f'{name} = ?' for name in CommandOutcome._fields)} "
    "WHERE request_id = ?"
)
_DELETE_SESSION_MESSAGES = "DELETE FROM session_messages WHERE session_id = ?"
_DELETE_SESSION = "DELETE FROM sessions WHERE session_id = ?"
# A header written again keeps the session's first created_ms; updated_ms never goes back.
_UPSERT_SESSION = (
    f"INSERT INTO sessions ({', '.join(SessionRow._fields)}) VALUES (?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (session_id) DO UPDATE SET updated_ms = MAX(updated_ms, excluded.updated_ms), "
    "product_id = excluded.product_id, device_id = excluded.device_id, metadata = excluded.metadata"
)
_TOUCH_SESSION = (
    f"INSERT INTO sessions ({', '.join(SessionRow._fields)}) VALUES (?, ?, ?, NULL, NULL, '{{}}') "
    "ON CONFLICT (session_id) DO UPDATE SET updated_ms = MAX(updated_ms, excluded.updated_ms)"
)
_SET_SESSION_DEVICE = "UPDATE sessions SET product_id = ?, device_id = ? WHERE session_id = ?"
_INSERT_MESSAGE = _insert("session_messages", MessageRow._fields)
_UPSERT_VOICE_TOKEN = _insert("voice_tokens", VoiceTokenRow._fields)
_DELETE_VOICE_TOKEN = "DELETE FROM voice_tokens WHERE voice_id = ?"
_SET_META = "INSERT OR REPLACE INTO store_meta (key, value) VALUES (?, ?)"
_UPSERT_SCHEDULE = _upsert("schedules", ScheduleRow._fields, "schedule_id")
_DELETE_SCHEDULE = "DELETE FROM schedules WHERE schedule_id = ?"
_INSERT_MCP_CALL = _insert("mcp_calls", McpCallRow._fields)
# Everything older than the newest N (no row at OFFSET N: the subquery is NULL, nothing goes).
_TRIM_SESSION = (
    "DELETE FROM session_messages WHERE session_id = ? AND id <= "
    "(SELECT id FROM session_messages WHERE session_id = ? ORDER BY id DESC LIMIT 1 OFFSET ?)"
)


def _device_rows(batch: Batch) -> list[DeviceRow]:
    rows = []
    for record in batch.devices.values():
        if record is None:
            continue
        try:
            rows.append(device_row(record))
        except (TypeError, ValueError) as exc:
            # Device values come through the payload codec, which admits only JSON values;
            # should one slip through, that device's row is skipped, not the whole batch.
            _log.error("device %s not saved: its state cannot be stored as JSON (%s)", record.device_id, exc)
    return rows


def _session_statements(batch: Batch) -> list[tuple[str, Iterable[Sequence[object]]]]:
    # Grouped by kind across sessions; within one session the order is SessionChange's.
    changes = batch.sessions.items()
    deleted = [(key,) for key, change in changes if change.deleted]
    return [
        (_DELETE_SESSION_MESSAGES, deleted),
        (_DELETE_SESSION, deleted),
        (_UPSERT_SESSION, [change.header for _, change in changes if change.header is not None]),
        (
            _TOUCH_SESSION,
            [(key, change.touched_ms, change.touched_ms) for key, change in changes if change.touched_ms is not None],
        ),
        (_SET_SESSION_DEVICE, [(*change.device, key) for key, change in changes if change.device is not None]),
        (_INSERT_MESSAGE, [row for _, change in changes for row in change.messages]),
        (_TRIM_SESSION, [(key, key, change.max_messages) for key, change in changes if change.messages]),
    ]


def _statements(batch: Batch) -> list[tuple[str, Iterable[Sequence[object]]]]:
    return [
        (_INSERT_EVENT, batch.events),
        (_DELETE_DEVICE, [(key,) for key, row in batch.devices.items() if row is None]),
        (_UPSERT_DEVICE, _device_rows(batch)),
        (_INSERT_COMMAND, batch.command_inserts.values()),
        (_UPDATE_COMMAND, [(*outcome, key) for key, outcome in batch.command_updates.items()]),
        *_session_statements(batch),
        (_DELETE_VOICE_TOKEN, [(key,) for key, row in batch.voice_tokens.items() if row is None]),
        (_UPSERT_VOICE_TOKEN, [row for row in batch.voice_tokens.values() if row is not None]),
        (_SET_META, batch.meta.items()),
        (_DELETE_SCHEDULE, [(key,) for key, row in batch.schedules.items() if row is None]),
        (_UPSERT_SCHEDULE, [row for row in batch.schedules.values() if row is not None]),
        (_INSERT_MCP_CALL, batch.mcp_calls),
    ]


class Writer:
    def __init__(
        self,
        conn: sqlite3.Connection,
        pending: PendingWrites,
        settings: StoreSettings,
        clock_ms: Callable[[], int],
    ) -> None:
        self._conn = conn
        self._pending = pending
        self._settings = settings
        self._clock_ms = clock_ms
        self.outbox = OutboxBook(conn, settings.outbox_bounds())
        # daemon: a caller that forgets close() must not hang interpreter exit; it loses
        # at most the open batch window, the same as a crash.
        self._thread = threading.Thread(target=self._run, name="store-writer", daemon=True)
        self._waiters_lock = threading.Lock()
        self._waiters: list[tuple[int, asyncio.AbstractEventLoop, asyncio.Future[None]]] = []
        # Resolved at the next commit (or when the thread ends): producers waiting for room.
        self._commit_waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []
        self._started = False
        self._finished = False
        self._failing = False
        # Read by the loop for stats; single int/str assignments, so no lock.
        self.commits = 0
        self.rows_written = 0
        self.rejected_rows = 0
        self.lost_rows = 0
        """Rows accepted but given up when the store closed while commits kept failing."""
        self.last_commit_ms: int | None = None
        self.last_error: str | None = None

    def start(self) -> None:
        self._thread.start()
        self._started = True

    def stop(self) -> None:
        """Commit what is waiting, then end the thread and close the connection."""
        self._pending.close()
        if self._thread.is_alive():
            self._thread.join()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    @property
    def healthy(self) -> bool:
        # Flags, not Thread.is_alive(): asked for every device message (Store.has_room).
        return self._started and not self._finished and not self._failing

    def when_committed(self, target: int, loop: asyncio.AbstractEventLoop) -> asyncio.Future[None]:
        """A future resolved (on `loop`) once operation number `target` is committed."""
        future: asyncio.Future[None] = loop.create_future()
        with self._waiters_lock:
            if self._pending.committed_seq >= target:
                future.set_result(None)
            elif self._finished:
                future.set_exception(StoreError("store writer has stopped; rows were not saved"))
            else:
                self._waiters.append((target, loop, future))
        return future

    def next_commit(self, loop: asyncio.AbstractEventLoop) -> asyncio.Future[None]:
        """A future resolved (on `loop`) after the next successful commit, or when the thread
        ends; it never fails."""
        future: asyncio.Future[None] = loop.create_future()
        with self._waiters_lock:
            if self._finished:
                future.set_result(None)
            else:
                self._commit_waiters.append((loop, future))
        return future

    # --- the thread ---

    def _run(self) -> None:
        try:
            self._serve()
        except BaseException as exc:
            self.last_error = f"writer thread died: {exc!r}"
            _log.exception("store writer thread died; nothing more will be saved")
        finally:
            with self._waiters_lock:
                self._finished = True
                waiters, self._waiters = self._waiters, []
                commit_waiters, self._commit_waiters = self._commit_waiters, []
            for _, loop, future in waiters:
                _call_soon(loop, _fail, future)
            for loop, future in commit_waiters:
                _call_soon(loop, _resolve, future)
            self._close_connection()

    def _serve(self) -> None:
        settings = self._settings
        retention_at = time.monotonic()  # once at start, so frequent restarts still prune
        failures = 0
        give_up_at: float | None = None
        while True:
            if self._pending.wait_ready(interval_s=settings.batch_interval_s, until=retention_at):
                batch = self._pending.take()
                assert batch is not None
                if not self._commit(batch):
                    failures += 1
                    if self._pending.closing:
                        now = time.monotonic()
                        give_up_at = give_up_at or now + settings.close_timeout_s
                        if now >= give_up_at:
                            self.lost_rows += self._pending.abandon()
                            _log.error(
                                "store closing: %d accepted rows could not be written within %g s (%s); "
                                "they are LOST", self.lost_rows, settings.close_timeout_s, self.last_error)
                            return
                        time.sleep(_CLOSE_RETRY_S)
                        continue
                    backoff = _BACKOFF_FIRST_S * 2 ** min(failures - 1, 10)
                    self._pending.sleep(min(_BACKOFF_MAX_S, backoff))
                    continue
                failures = 0
            elif self._pending.closing:
                return
            if not self._pending.closing and time.monotonic() >= retention_at:
                finished = self._prune()
                retention_at = time.monotonic() + (
                    settings.retention_interval_s if finished else 0.0
                )

    def _commit(self, batch: Batch) -> bool:
        rejected = 0
        try:
            try:
                self._write(batch, one_by_one=False)
            except _ROW_ERRORS as exc:
                rejected = self._write(batch, one_by_one=True)
                self.rejected_rows += rejected
                self.last_error = f"rejected {rejected} row(s): {exc}"
                _log.error("store rejected %d row(s) it cannot save: %s", rejected, exc)
        except sqlite3.Error as exc:
            self.last_error = f"commit failed: {exc}"
            if not self._failing:
                self._failing = True
                _log.error("store commit failed, keeping the rows and retrying: %s", exc)
            return False
        if self._failing:
            self._failing = False
            _log.warning("store commits work again")
        self.commits += 1
        self.rows_written += len(batch) - rejected
        self.last_commit_ms = self._clock_ms()
        self._pending.committed(batch)
        self._notify(batch.last_seq)
        return True

    def _write(self, batch: Batch, *, one_by_one: bool) -> int:
        """Write the batch in one transaction; returns how many rows were rejected."""
        rejected = 0
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            for sql, rows in _statements(batch):
                if not one_by_one:
                    conn.executemany(sql, rows)
                    continue
                for row in rows:
                    try:
                        conn.execute(sql, row)
                    except _ROW_ERRORS as exc:
                        rejected += 1
                        _log.debug("store rejected row %r: %s", row, exc)
            # Uplink rows are built by us (bytes and ints), so they take the batch path either way.
            outbox: OutboxChange | None = None
            if batch.outbox or batch.outbox_acks or self.outbox.rows:
                outbox = self.outbox.write(conn, batch, self._clock_ms())
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        if outbox is not None:
            self.outbox.settle(conn, outbox)
        return rejected

    def _prune(self) -> bool:
        try:
            result = prune(self._conn, self._settings, self._clock_ms())
        except sqlite3.Error as exc:
            self.last_error = f"retention failed: {exc}"
            _log.warning("store retention failed, will try again later: %s", exc)
            return True
        if result.events or result.commands or result.sessions or result.session_messages or result.mcp_calls:
            _log.info(
                "store retention deleted %d events, %d commands, %d sessions, %d session messages "
                "and %d MCP calls",
                result.events,
                result.commands,
                result.sessions,
                result.session_messages,
                result.mcp_calls,
            )
        return result.finished

    def _notify(self, committed_seq: int) -> None:
        with self._waiters_lock:
            done = [w for w in self._waiters if w[0] <= committed_seq]
            self._waiters = [w for w in self._waiters if w[0] > committed_seq]
            commit_waiters, self._commit_waiters = self._commit_waiters, []
        for _, loop, future in done:
            _call_soon(loop, _resolve, future)
        for loop, future in commit_waiters:
            _call_soon(loop, _resolve, future)

    def _close_connection(self) -> None:
        try:
            # Leave a small WAL behind; the reader may still hold the file open, so the
            # automatic checkpoint-on-close would not happen.
            self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.Error as exc:
            _log.debug("store checkpoint at close failed: %s", exc)
        self._conn.close()


def _call_soon(
    loop: asyncio.AbstractEventLoop,
    callback: Callable[[asyncio.Future[None]], None],
    future: asyncio.Future[None],
) -> None:
    with contextlib.suppress(RuntimeError):  # that loop is closed; nobody is waiting any more
        loop.call_soon_threadsafe(callback, future)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _fail(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_exception(StoreError("store writer has stopped; rows were not saved"))
