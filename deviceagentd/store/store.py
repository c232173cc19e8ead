"""The store facade: what the rest of the daemon calls.

Durability contract
-------------------
Writes are accepted in memory on the event loop and committed by one writer thread in
batches (one transaction per `batch_interval_s`, sooner at `batch_max_rows`, on `flush()`
and on `close()`). The database runs in WAL mode with synchronous=NORMAL, so:

* `close()` (the SIGTERM path) commits everything accepted before it returns.
* A crash of the process (kill -9, OOM kill) loses only rows not yet committed: at most
  the last batch window, plus whatever was waiting while commits were failing.
* A power cut or OS crash may additionally roll back the last few committed
  transactions (NORMAL does not fsync the WAL on every commit), again a few seconds.
* Neither ever corrupts the file. If it is corrupt anyway (bad SD card), `open()` moves
  it aside as `<name>.corrupt-<ms>` and starts with an empty database.

* Closing while commits keep failing (a full disk), the writer retries for
  `close_timeout_s`; rows it still cannot write are counted in `stats().lost_rows` and
  `close()` says so (the daemon then exits non-zero), never "all stored".

Rows that JSON cannot encode are refused when handed in (TypeError/ValueError from the
call), never later.

Back-pressure: a producer that can wait asks `has_room` (or awaits `wait_for_room()`) before
adding rows. There is room while fewer than `max_backlog_rows` wait for a commit and the last
commit did not fail; the MQTT ingest holds a device message's acknowledgement meanwhile, so
the broker keeps it queued and nothing is dropped. Anything else past `max_pending_rows`
(commits failing for long) drops the oldest waiting events, counted in
`stats().dropped_rows`. A backlog is committed in transactions of at most `batch_max_rows`.

Session history follows the same path: messages are accepted in memory, committed in
batches, and reads merge the waiting ones. A session keeps at most `max_messages` (given
with each message); the oldest beyond it are deleted in the same transaction that adds new
ones, and reads never return more than that bound, committed or not.

Voice platform tokens (one row per speaker, hashes only) take the same path too. A caller
that hands a token to someone must `await flush()` first: only then is it on disk, and only
then is the token it replaced gone from the disk as well. The same goes for schedules: the API
answers "created" only after a flush. MCP tool calls are logged like commands.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import sqlite3
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from deviceagentd.store.database import open_reader, open_writer, quarantined_files
from deviceagentd.store.errors import StoreError
from deviceagentd.store.pending import PendingWrites, SessionChange
from deviceagentd.store.reader import (
    Reader,
    select_any_schedule,
    select_command,
    select_device_commands,
    select_devices,
    select_events,
    select_events_after,
    select_mcp_calls,
    select_outbox,
    select_schedules,
    select_session,
    select_session_messages,
    select_voice_tokens,
)
from deviceagentd.store.records import (
    CommandRecord,
    DeviceRecord,
    EventRecord,
    McpCallRecord,
    NewEvent,
    ScheduleRecord,
    SessionMessage,
    SessionRecord,
    VoiceTokenRecord,
)
from deviceagentd.store.rows import (
    MessageRow,
    OutboxRow,
    SessionRow,
    bindable_text,
    command_outcome,
    command_record,
    command_row,
    device_record,
    event_record,
    event_row,
    mcp_call_row,
    message_record,
    message_row,
    schedule_record,
    schedule_row,
    session_record,
    session_row,
    voice_token_record,
    voice_token_row,
    with_outcome,
)
from deviceagentd.store.settings import StoreSettings
from deviceagentd.store.writer import Writer

DEFAULT_SESSION_MAX_MESSAGES = 50
ROOM_RECHECK_S = 1.0
# Event ids reserved on disk ahead of use (see Store._take_event_id): after a crash, ids jump
# by up to this much.
EVENT_ID_BLOCK = 1_000_000
_EVENT_IDS_RESERVED = "event_ids_reserved"


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(frozen=True)
class StoreStats:
    commits: int
    rows_written: int
    pending_rows: int
    dropped_rows: int
    """Accepted rows dropped or rejected while running (each one lost)."""
    last_commit_ms: int | None
    last_error: str | None
    db_path: str
    db_bytes: int
    lost_rows: int = 0
    """Accepted rows given up at close because commits kept failing."""


@dataclass(frozen=True)
class OutboxStats:
    rows: int
    """On disk plus waiting for a commit (acknowledged ones not yet deleted included)."""
    bytes: int
    """Payload and topic bytes on disk."""
    oldest_ms: int | None
    """created_ms of the oldest row on disk (None: none on disk)."""
    dropped: int
    """Rows dropped for the bounds since start."""


@dataclass
class _Running:
    pending: PendingWrites
    writer: Writer
    reader: Reader


class Store:
    """SQLite storage for devices, events, commands, session history and voice platform tokens.

    The add/save/update/delete methods and the async reads are for the event loop thread
    only: they never wait on I/O.
    """

    def __init__(
        self,
        path: Path,
        settings: StoreSettings,
        clock_ms: Callable[[], int] = wall_clock_ms,
    ) -> None:
        self._path = path
        self._settings = settings
        self._clock_ms = clock_ms
        self._running: _Running | None = None
        self._closed = False
        self._next_event_id = 1
        self._event_ids_safe = 0
        self._event_ids_wanted = 0
        self._event_ids_seq = 0
        self._next_message_id = 1
        self._next_mcp_call_id = 1
        self._next_outbox_id = 1

    # --- lifecycle ---

    def open(self) -> None:
        """Check, repair or create the database and start the writer. Blocking; call once."""
        if self._running is not None or self._closed:
            raise StoreError("Store.open() may be called only once")
        conn = open_writer(self._path, self._clock_ms())
        try:
            max_id = conn.execute("SELECT MAX(id) FROM events").fetchone()[0]
            # Message ids are given here, like event ids, so waiting and stored messages
            # merge by id and a session's order is its id order.
            max_message_id = conn.execute("SELECT MAX(id) FROM session_messages").fetchone()[0]
            max_mcp_call_id = conn.execute("SELECT MAX(id) FROM mcp_calls").fetchone()[0]
            reader = Reader(open_reader(self._path))
        except BaseException:
            conn.close()
            raise
        self._next_message_id = (max_message_id or 0) + 1
        try:
            self._reserve_event_ids(conn, max_id or 0)
        except BaseException:
            reader.close()
            conn.close()
            raise
        self._next_mcp_call_id = (max_mcp_call_id or 0) + 1
        pending = PendingWrites(
            batch_max_rows=self._settings.batch_max_rows,
            max_rows=self._settings.max_pending_rows,
            backlog_rows=self._settings.max_backlog_rows,
        )
        writer = Writer(conn, pending, self._settings, self._clock_ms)
        # Uplink ids only grow: an id handed out but lost in a crash was never acknowledged.
        self._next_outbox_id = writer.outbox.max_id + 1
        writer.start()
        self._running = _Running(pending, writer, reader)

    def _reserve_event_ids(self, conn: sqlite3.Connection, max_id: int) -> None:
        """Start event ids above every id that may have been handed out before (committed or
        not), and reserve the next EVENT_ID_BLOCK on disk before handing any out."""
        row = conn.execute("SELECT value FROM store_meta WHERE key = ?", (_EVENT_IDS_RESERVED,)).fetchone()
        self._next_event_id = max(max_id, row[0] if row else 0) + 1
        self._event_ids_safe = self._next_event_id - 1 + EVENT_ID_BLOCK
        conn.execute("INSERT OR REPLACE INTO store_meta (key, value) VALUES (?, ?)",
                     (_EVENT_IDS_RESERVED, self._event_ids_safe))
        self._event_ids_wanted = self._event_ids_safe
        self._event_ids_seq = 0

    def _take_event_id(self, pending: PendingWrites) -> int:
        """The next event id. Ids are served before their rows are committed, so an id is only
        handed out below a reservation already on disk: a crash never makes one name another
        event. The reservation moves on in the background, half a block ahead."""
        event_id = self._next_event_id
        if self._event_ids_seq and pending.committed_seq >= self._event_ids_seq:
            self._event_ids_safe, self._event_ids_seq = self._event_ids_wanted, 0
        if event_id > self._event_ids_safe:
            raise StoreError("no event id is reserved on disk yet (commits are failing); event not stored")
        if not self._event_ids_seq and event_id > self._event_ids_safe - EVENT_ID_BLOCK // 2:
            self._event_ids_wanted = self._event_ids_safe + EVENT_ID_BLOCK
            self._event_ids_seq = pending.put_meta(_EVENT_IDS_RESERVED, self._event_ids_wanted)
        self._next_event_id += 1
        return event_id

    def close(self) -> None:
        """Commit everything accepted, stop the writer, close connections. Blocking."""
        if self._closed:
            return
        self._closed = True
        if self._running is not None:
            # A clean stop gives back the unused reservation: the next start goes on from here.
            with contextlib.suppress(StoreError):
                self._running.pending.put_meta(_EVENT_IDS_RESERVED, self._next_event_id - 1)
            self._running.writer.stop()
            self._running.reader.close()

    # --- writes: enqueue only ---

    def save_device(self, record: DeviceRecord) -> None:
        self._live().pending.put_device(record.device_id, record)

    def delete_device(self, device_id: str) -> None:
        self._live().pending.put_device(device_id, None)

    def add_event(self, event: NewEvent) -> EventRecord:
        pending = self._live().pending
        row = event_row(self._next_event_id, event)  # refuses what JSON cannot encode, first
        event_id = self._take_event_id(pending)
        pending.put_event(row)
        return EventRecord(**vars(event), id=event_id)

    def add_command(self, record: CommandRecord) -> None:
        self._live().pending.put_command(command_row(record))

    def update_command(self, record: CommandRecord) -> None:
        self._live().pending.put_command_outcome(record.request_id, command_outcome(record))

    def save_session(self, record: SessionRecord) -> None:
        """Write a session's header (default device, metadata). A session that exists keeps
        its created_ms; updated_ms never moves back."""
        self._live().pending.put_session_header(session_row(record))

    def set_session_device(self, session_id: str, product_id: str | None, device_id: str | None) -> None:
        """Set the session's default device, creating the session if needed; other header
        fields stay as they are."""
        bindable_text(session_id, product_id, device_id)
        self._live().pending.put_session_device(session_id, product_id, device_id, self._clock_ms())

    def add_session_message(
        self, session_id: str, message: SessionMessage, *, max_messages: int = DEFAULT_SESSION_MAX_MESSAGES
    ) -> None:
        """Append to the session's history (creating the session if needed), keeping only
        its newest `max_messages`."""
        if max_messages < 1:
            raise ValueError(f"max_messages must be at least 1, got {max_messages}")
        pending = self._live().pending
        row = message_row(self._next_message_id, session_id, message)
        pending.put_session_message(row, self._clock_ms(), max_messages)
        self._next_message_id += 1

    def delete_session(self, session_id: str) -> None:
        """Delete the header and every message, stored or still waiting."""
        self._live().pending.put_session_delete(session_id)

    def save_voice_token(self, record: VoiceTokenRecord) -> None:
        """Replace the speaker's live token pair (a speaker has at most one)."""
        self._live().pending.put_voice_token(record.voice_id, voice_token_row(record))

    def delete_voice_token(self, voice_id: str) -> None:
        self._live().pending.put_voice_token(voice_id, None)

    def save_schedule(self, record: ScheduleRecord) -> None:
        """Insert or replace a schedule (its row is written whole)."""
        self._live().pending.put_schedule(record.schedule_id, schedule_row(record))

    def delete_schedule(self, schedule_id: str) -> None:
        self._live().pending.put_schedule(schedule_id, None)

    def add_mcp_call(self, record: McpCallRecord) -> None:
        pending = self._live().pending
        pending.put_mcp_call(mcp_call_row(self._next_mcp_call_id, record))
        self._next_mcp_call_id += 1

    def add_outbox(
        self,
        kind: str,
        device_id: str,
        topic: str,
        payload: bytes,
        *,
        content_type: str = "application/json",
        correlation_data: bytes | None = None,
        lifecycle: bool = False,
    ) -> int:
        """Queue a message for the uplink, committed with the next batch; returns its id (ids
        grow, and the uplink publishes in id order)."""
        pending = self._live().pending
        row = OutboxRow(self._next_outbox_id, kind, device_id, topic, payload, content_type, correlation_data,
                        self._clock_ms(), int(lifecycle))
        pending.put_outbox(row)
        self._next_outbox_id += 1
        return row.id

    def ack_outbox(self, row_id: int) -> None:
        """The cloud broker acknowledged the row: delete it (with the next batch)."""
        self._live().pending.ack_outbox(row_id)

    async def outbox_after(self, after: int, *, limit: int) -> list[OutboxRow]:
        """Uplink rows with an id above `after`, oldest first, committed or not, without the
        acknowledged ones."""
        running = self._live()
        if limit <= 0:
            return []
        # Waiting rows first, then the disk: a commit in between shows a row twice (deduplicated),
        # never not at all. Batches commit in id order, so every row on disk is older than every
        # waiting one, and past the highest committed id the disk has nothing to add.
        waiting, acked, _ = running.pending.outbox_after(after, limit=limit)
        by_id = {row.id: row for row in waiting if row.id not in acked}
        if after < running.writer.outbox.max_id:
            query = functools.partial(select_outbox, after=after, limit=limit + len(acked))
            for row in await running.reader.call(query):
                if row.id not in acked:
                    by_id.setdefault(row.id, row)
        return [by_id[key] for key in sorted(by_id)[:limit]]

    def outbox_stats(self) -> OutboxStats:
        running = self._running
        if running is None:
            return OutboxStats(0, 0, None, 0)
        book = running.writer.outbox
        _, _, waiting = running.pending.outbox_after(2**62, limit=0)
        return OutboxStats(book.rows + waiting, book.bytes, book.oldest_ms, book.dropped)

    # --- reads ---

    def load_devices(self) -> list[DeviceRecord]:
        """Every stored device. Blocking; meant for start-up."""
        running = self._live()
        waiting = running.pending.devices()
        stored = running.reader.call_sync(select_devices)
        by_id: dict[str, DeviceRecord | None] = {row.device_id: device_record(row) for row in stored}
        by_id.update(waiting)
        return [record for _, record in sorted(by_id.items(), key=lambda item: item[0]) if record is not None]

    def load_voice_tokens(self) -> list[VoiceTokenRecord]:
        """Every speaker's live token pair, waiting writes included. Blocking; meant for start-up.

        Blocking on purpose, like load_devices: while the loop waits here nothing new is
        accepted, so the waiting rows read first are at least as new as anything the writer
        commits before the database is read.
        """
        running = self._live()
        waiting = running.pending.voice_tokens()
        stored = running.reader.call_sync(select_voice_tokens)
        by_id: dict[str, VoiceTokenRecord | None] = {row.voice_id: voice_token_record(row) for row in stored}
        by_id.update(
            (voice_id, None if row is None else voice_token_record(row)) for voice_id, row in waiting.items()
        )
        return [record for _, record in sorted(by_id.items(), key=lambda item: item[0]) if record is not None]

    def load_schedules(self) -> list[ScheduleRecord]:
        """Every stored schedule, waiting writes included. Blocking; meant for start-up."""
        return [record for page in self.schedule_pages() for record in page]

    def has_schedules(self) -> bool:
        """Whether any schedule is stored (or waiting to be). Blocking; meant for start-up."""
        running = self._live()
        if any(row is not None for row in running.pending.schedules().values()):
            return True
        return running.reader.call_sync(select_any_schedule)

    def schedule_pages(self, size: int = 500) -> Iterator[list[ScheduleRecord]]:
        """Every stored schedule, waiting writes included, a page at a time (blocking; meant for
        start-up, as load_voice_tokens, and for the same reason).

        Pages, so that loading ten thousand schedules never holds all their rows and parsed JSON
        at once: what a page leaves behind is reused by the next, instead of fragmenting the heap
        around the schedules that are kept (it tripled their resident cost)."""
        running = self._live()
        waiting = running.pending.schedules()
        after = ""
        while True:
            rows = running.reader.call_sync(functools.partial(select_schedules, after=after, limit=size))
            if not rows:
                break
            after = rows[-1].schedule_id
            yield [schedule_record(row) for row in rows if row.schedule_id not in waiting]
        yield [schedule_record(row) for row in waiting.values() if row is not None]

    async def recent_mcp_calls(self, *, limit: int) -> list[McpCallRecord]:
        """The newest committed MCP calls, newest first (the last batch window may be missing)."""
        rows = await self._live().reader.call(functools.partial(select_mcp_calls, limit=limit))
        return [McpCallRecord(row.ts_ms, row.client, row.tool, json.loads(row.arguments), row.outcome, row.detail,
                              row.latency_ms) for row in rows]

    async def query_events(
        self,
        device_id: str | None,
        *,
        limit: int,
        before: int | None = None,
        event: str | None = None,
        since_ms: int | None = None,
        levels: frozenset[str] | None = None,
    ) -> list[EventRecord]:
        """Events of one device (or all with None), newest first, including ones not committed yet."""
        running = self._live()
        if limit <= 0:
            return []
        # Waiting rows first: a commit between the two reads then shows a row twice
        # (deduplicated by id) instead of not at all.
        waiting = running.pending.events(
            device_id, limit=limit, before=before, event=event, since_ms=since_ms, levels=levels
        )
        by_id = {row.id: row for row in waiting}
        # Batches commit in id order, so a stored row missing from `waiting` is older than
        # all of it; with `limit` waiting rows the database cannot add anything.
        if len(waiting) < limit:
            query = functools.partial(
                select_events, device_id=device_id, limit=limit, before=before, event=event,
                since_ms=since_ms, levels=levels,
            )
            for row in await running.reader.call(query):
                by_id.setdefault(row.id, row)
        return [event_record(by_id[key]) for key in sorted(by_id, reverse=True)[:limit]]

    async def events_after(
        self,
        after: int,
        *,
        limit: int,
        device_ids: frozenset[str] | None = None,
        product_ids: frozenset[str] | None = None,
    ) -> list[EventRecord]:
        """Events with an id above `after` (of these devices / products), oldest first,
        including ones not committed yet: what a live stream missed while it was away."""
        running = self._live()
        if limit <= 0:
            return []
        # Waiting rows first: a commit between the two reads then shows a row twice
        # (deduplicated by id) instead of not at all. Batches commit in id order, so every
        # stored row is older than every waiting one.
        waiting = running.pending.events_after(after, limit=limit, device_ids=device_ids, product_ids=product_ids)
        query = functools.partial(select_events_after, after=after, limit=limit, device_ids=device_ids,
                                  product_ids=product_ids)
        by_id = {row.id: row for row in await running.reader.call(query)}
        for row in waiting:
            by_id.setdefault(row.id, row)
        return [event_record(by_id[key]) for key in sorted(by_id)[:limit]]

    async def device_commands(
        self, device_id: str, *, limit: int, before: tuple[int, str] | None = None
    ) -> list[CommandRecord]:
        """A device's command log, newest first (time sent, then request id), including
        commands and outcomes not committed yet. `before`: the (sent_at_ms, request_id) of
        the last command of the previous page."""
        running = self._live()
        if limit <= 0:
            return []
        # Waiting rows first, then the database: a commit in between shows a row in both
        # (the waiting copy, which is as new or newer, wins), never in neither.
        inserts, updates = running.pending.device_commands(device_id)
        query = functools.partial(select_device_commands, device_id=device_id, limit=limit, before=before)
        stored = await running.reader.call(query)
        by_id = {row.request_id: with_outcome(row, updates[row.request_id]) if row.request_id in updates else row
                 for row in stored}
        for row in inserts:
            if before is None or (row.sent_at_ms, row.request_id) < before:
                by_id[row.request_id] = row
        rows = sorted(by_id.values(), key=lambda row: (row.sent_at_ms, row.request_id), reverse=True)
        return [command_record(row) for row in rows[:limit]]

    async def get_command(self, request_id: str) -> CommandRecord | None:
        running = self._live()
        inserted, outcome = running.pending.command(request_id)
        if inserted is not None:
            return command_record(inserted)
        stored = await running.reader.call(functools.partial(select_command, request_id=request_id))
        if stored is None:
            return None
        return command_record(stored if outcome is None else with_outcome(stored, outcome))

    async def get_session(self, session_id: str) -> SessionRecord | None:
        running = self._live()
        # Waiting changes first, then the database: a commit in between is applied twice,
        # which the changes allow (each is idempotent, as the writer's SQL is).
        changes = running.pending.session(session_id)
        row: SessionRow | None = None
        if not any(change.deleted for change in changes):
            row = await running.reader.call(functools.partial(select_session, session_id=session_id))
        for change in changes:
            row = _apply_session_change(session_id, change, row)
        return None if row is None else session_record(row)

    async def session_messages(self, session_id: str, *, limit: int) -> list[SessionMessage]:
        """The session's newest `limit` messages, oldest first, including ones not committed yet.

        Never more than the bound given with the session's waiting messages, even while the
        older ones it pushes out are still in the database.
        """
        running = self._live()
        changes = running.pending.session(session_id)
        bound = next((change.max_messages for change in reversed(changes) if change.messages), None)
        if bound is not None:
            limit = min(limit, bound)
        if limit <= 0:
            return []
        deleted_at = max((i for i, change in enumerate(changes) if change.deleted), default=None)
        visible = changes if deleted_at is None else changes[deleted_at:]
        by_id: dict[int, MessageRow] = {row.id: row for change in visible for row in change.messages}
        # Batches commit in id order, so every stored message is older than every waiting
        # one; with `limit` waiting, or a delete waiting, the database adds nothing.
        if deleted_at is None and len(by_id) < limit:
            query = functools.partial(select_session_messages, session_id=session_id, limit=limit)
            for row in await running.reader.call(query):
                by_id.setdefault(row.id, row)
        return [message_record(by_id[key]) for key in sorted(by_id)[-limit:]]

    async def flush(self) -> None:
        """Resolve once everything accepted before this call is committed.

        Raises StoreError if the writer stopped before that (closing with a failed disk).
        """
        running = self._running
        if running is None:
            raise StoreError("store is not open")
        target = running.pending.request_flush()
        await running.writer.when_committed(target, asyncio.get_running_loop())

    # --- back-pressure ---

    @property
    def has_room(self) -> bool:
        """True when a producer that can wait may add rows now: fewer than max_backlog_rows
        wait and commits work. False when the store is not open."""
        running = self._running
        if running is None or self._closed:
            return False
        return running.writer.healthy and running.pending.has_room()

    async def wait_for_room(self) -> bool:
        """Wait until `has_room`; False (at once) if the store is closed or its writer ended."""
        loop = asyncio.get_running_loop()
        while not self.has_room:
            running = self._running
            if running is None or self._closed or not running.writer.alive:
                return False
            # Woken by every commit; the timeout covers a room that opens without one
            # (a failed commit's rows dropped, another producer's rows committed first).
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(running.writer.next_commit(loop), ROOM_RECHECK_S)
        return True

    # --- health ---

    @property
    def healthy(self) -> bool:
        """False if the writer thread is gone or the last commit failed."""
        return self._running is not None and self._running.writer.healthy

    @property
    def writer_alive(self) -> bool:
        """False once the writer thread is gone (crashed or closed); a failing disk is not
        enough, so a watchdog can tell "stuck for good" from "retrying"."""
        return self._running is not None and self._running.writer.alive

    def recovered_from(self) -> list[str]:
        """File names of corrupt databases moved aside at a start (now or earlier) that an
        operator has not removed yet: health reports them until then."""
        return [moved.name for moved in quarantined_files(self._path)]

    def stats(self) -> StoreStats:
        running = self._running
        db_bytes = 0
        for suffix in ("", "-wal"):
            with contextlib.suppress(OSError):  # not created yet, or moved aside
                db_bytes += os.stat(f"{self._path}{suffix}").st_size
        if running is None:
            return StoreStats(0, 0, 0, 0, None, None, str(self._path), db_bytes)
        writer = running.writer
        return StoreStats(
            commits=writer.commits,
            rows_written=writer.rows_written,
            pending_rows=running.pending.rows(),
            dropped_rows=running.pending.dropped_rows + writer.rejected_rows,
            last_commit_ms=writer.last_commit_ms,
            last_error=writer.last_error,
            db_path=str(self._path),
            db_bytes=db_bytes,
            lost_rows=writer.lost_rows,
        )

    def _live(self) -> _Running:
        if self._running is None or self._closed:
            raise StoreError("store is not open" if not self._closed else "store is closed")
        return self._running


def _apply_session_change(session_id: str, change: SessionChange, row: SessionRow | None) -> SessionRow | None:
    """The header after the writer applies `change` to `row` (mirrors its SQL)."""
    if change.deleted:
        row = None
    if change.header is not None:
        header = change.header
        if row is not None:
            header = header._replace(created_ms=row.created_ms, updated_ms=max(row.updated_ms, header.updated_ms))
        row = header
    if change.touched_ms is not None:
        touched = change.touched_ms
        if row is None:
            row = SessionRow(session_id, touched, touched, None, None, "{}")
        else:
            row = row._replace(updated_ms=max(row.updated_ms, touched))
    if change.device is not None and row is not None:
        row = row._replace(product_id=change.device[0], device_id=change.device[1])
    return row
