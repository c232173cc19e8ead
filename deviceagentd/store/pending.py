"""Rows accepted but not yet committed: filled by the event loop, drained by the writer.

Generations, oldest first: `inflight` is the batch the writer is writing (and retrying, if a
commit failed); `sealed` are full batches waiting their turn; `open` collects new rows. A
batch is sealed when it holds `batch_max_rows`, so every commit is bounded: a backlog that
built up while the disk was full is written back in transactions of that size, not in one
that could fill the disk again. The loop only ever changes `open`, so the writer reads
`inflight` without holding the lock. Every accepted operation gets a sequence number so
`flush()` can wait for "everything accepted up to now".

Back-pressure: producers that can wait (device messages, whose acknowledgement can be held)
ask `has_room()` before adding rows and wait for a commit while more than `backlog_rows` are
waiting, so the backlog, and the memory it takes, stays bounded without dropping anything.
Producers that cannot wait are bounded by `max_rows`: past it the oldest waiting events are
dropped and counted in `dropped_rows` (each one is a loss, shown by health and logged).

The lock is only held for dict/deque operations, never for I/O, so taking it from the loop
cannot stall it behind a slow commit.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field

from deviceagentd.store.errors import StoreError
from deviceagentd.store.records import DeviceRecord
from deviceagentd.store.rows import (
    CommandOutcome,
    CommandRow,
    EventRow,
    McpCallRow,
    MessageRow,
    OutboxRow,
    ScheduleRow,
    SessionRow,
    VoiceTokenRow,
    with_outcome,
)

_log = logging.getLogger("deviceagentd.store")


@dataclass
class SessionChange:
    """What one batch does to one session, applied in this order: delete, header, touch,
    device, messages (then the oldest messages beyond `max_messages` go).

    A delete clears what the batch held for the session before it, so everything else in
    a change always comes after its delete.
    """

    deleted: bool = False
    header: SessionRow | None = None
    """A whole header written by save_session (the stored created_ms is kept)."""
    touched_ms: int | None = None
    """Latest write time of a message or device: creates the header if missing and moves
    updated_ms forward."""
    device: tuple[str | None, str | None] | None = None
    """(product_id, device_id) set after the header."""
    messages: deque[MessageRow] = field(default_factory=deque)
    max_messages: int = 0
    """The bound given with the newest message; the writer trims the session to it."""

    def __len__(self) -> int:
        # Rows as counted for batch_max_rows and stats; the touch rides with a message or device.
        return int(self.deleted) + int(self.header is not None) + int(self.device is not None) + len(self.messages)

    def copy(self) -> SessionChange:
        return SessionChange(
            self.deleted, self.header, self.touched_ms, self.device, deque(self.messages), self.max_messages
        )


@dataclass
class Batch:
    events: deque[EventRow] = field(default_factory=deque)
    # Device records stay objects until the writer encodes them: a device reporting 50 times
    # per batch window is encoded once, off the event loop.
    devices: dict[str, DeviceRecord | None] = field(default_factory=dict)
    """Last write per device wins; None deletes the row."""
    command_inserts: dict[str, CommandRow] = field(default_factory=dict)
    command_updates: dict[str, CommandOutcome] = field(default_factory=dict)
    """Outcomes for commands inserted by an earlier batch (never also in command_inserts)."""
    sessions: dict[str, SessionChange] = field(default_factory=dict)
    session_rows: int = 0
    """Sum of len() over `sessions`, kept up to date so len(batch) stays O(1) per event."""
    voice_tokens: dict[str, VoiceTokenRow | None] = field(default_factory=dict)
    """A speaker's live token pair: last write per voice_id wins; None deletes the row."""
    meta: dict[str, int] = field(default_factory=dict)
    """store_meta values: last write per key wins."""
    schedules: dict[str, ScheduleRow | None] = field(default_factory=dict)
    """Last write per schedule wins; None deletes the row."""
    mcp_calls: deque[McpCallRow] = field(default_factory=deque)
    outbox: dict[int, OutboxRow] = field(default_factory=dict)
    """Uplink rows by id, in id order."""
    outbox_acks: list[int] = field(default_factory=list)
    """Ids of uplink rows the cloud broker acknowledged that an earlier batch wrote: deleted."""
    first_at: float = 0.0
    """time.monotonic() when the first row arrived; the batch window starts there."""
    last_seq: int = 0

    def __len__(self) -> int:
        return (
            len(self.events)
            + len(self.devices)
            + len(self.command_inserts)
            + len(self.command_updates)
            + self.session_rows
            + len(self.voice_tokens)
            + len(self.meta)
            + len(self.schedules)
            + len(self.mcp_calls)
            + len(self.outbox)
            + len(self.outbox_acks)
        )


class PendingWrites:
    def __init__(self, *, batch_max_rows: int, max_rows: int, backlog_rows: int | None = None) -> None:
        self._cond = threading.Condition()
        self._batch_max_rows = batch_max_rows
        self._max_rows = max_rows
        self._backlog_rows = min(max_rows, backlog_rows if backlog_rows is not None else max_rows)
        self._open = Batch()
        self._sealed: deque[Batch] = deque()
        self._sealed_rows = 0
        self._inflight: Batch | None = None
        self._accepted_seq = 0
        self._taken_seq = 0
        self._committed_seq = 0
        self._flush_upto = 0
        self._closing = False
        self._dropping = False
        self.dropped_rows = 0

    # --- producer side (the event loop) ---

    def put_event(self, row: EventRow) -> None:
        with self._cond:
            batch = self._accept()
            batch.events.append(row)
            if self._rows() > self._max_rows and self._drop_oldest_event() and not self._dropping:
                self._dropping = True
                _log.error(
                    "more than %d rows wait for a commit (commits failing or too slow); dropping the "
                    "oldest waiting events until a commit succeeds: they are lost (counted in "
                    "deviceagentd_store_lost_rows_total)",
                    self._max_rows,
                )
            self._accepted()

    def put_device(self, device_id: str, row: DeviceRecord | None) -> None:
        with self._cond:
            self._accept().devices[device_id] = row
            self._accepted()

    def put_command(self, row: CommandRow) -> None:
        with self._cond:
            batch = self._accept()
            batch.command_inserts[row.request_id] = row
            batch.command_updates.pop(row.request_id, None)
            self._accepted()

    def put_command_outcome(self, request_id: str, outcome: CommandOutcome) -> None:
        with self._cond:
            batch = self._accept()
            inserted = batch.command_inserts.get(request_id)
            if inserted is not None:
                batch.command_inserts[request_id] = with_outcome(inserted, outcome)
            else:
                batch.command_updates[request_id] = outcome
            self._accepted()

    def put_session_delete(self, session_id: str) -> None:
        with self._cond:
            batch = self._accept()
            # What the open batch held for the session was accepted before the delete: gone.
            old = batch.sessions.get(session_id)
            batch.session_rows -= 0 if old is None else len(old)
            batch.sessions[session_id] = SessionChange(deleted=True)
            batch.session_rows += 1
            self._accepted()

    def put_session_header(self, row: SessionRow) -> None:
        with self._cond:
            batch = self._accept()
            change = batch.sessions.setdefault(row.session_id, SessionChange())
            before = len(change)
            change.header = row
            change.device = None  # the header carries its own device, written later
            batch.session_rows += len(change) - before
            self._accepted()

    def put_session_device(
        self, session_id: str, product_id: str | None, device_id: str | None, now_ms: int
    ) -> None:
        with self._cond:
            batch = self._accept()
            change = batch.sessions.setdefault(session_id, SessionChange())
            before = len(change)
            change.device = (product_id, device_id)
            change.touched_ms = max(now_ms, change.touched_ms or now_ms)
            batch.session_rows += len(change) - before
            self._accepted()

    def put_session_message(self, row: MessageRow, now_ms: int, max_messages: int) -> None:
        with self._cond:
            batch = self._accept()
            change = batch.sessions.setdefault(row.session_id, SessionChange())
            before = len(change)
            change.messages.append(row)
            # Older ones would be trimmed at the commit anyway; dropping them now keeps a
            # chatty session from growing the batch while commits fail.
            while len(change.messages) > max_messages:
                change.messages.popleft()
            change.max_messages = max_messages
            change.touched_ms = max(now_ms, change.touched_ms or now_ms)
            batch.session_rows += len(change) - before
            self._accepted()

    def put_voice_token(self, voice_id: str, row: VoiceTokenRow | None) -> None:
        with self._cond:
            self._accept().voice_tokens[voice_id] = row
            self._accepted()

    def put_meta(self, key: str, value: int) -> int:
        """Set a store_meta value; returns the operation's sequence number (compare with
        `committed_seq` to know when it is on disk)."""
        with self._cond:
            self._accept().meta[key] = value
            self._accepted()
            return self._accepted_seq

    def put_schedule(self, schedule_id: str, row: ScheduleRow | None) -> None:
        with self._cond:
            self._accept().schedules[schedule_id] = row
            self._accepted()

    def put_mcp_call(self, row: McpCallRow) -> None:
        with self._cond:
            self._accept().mcp_calls.append(row)
            self._accepted()

    def put_outbox(self, row: OutboxRow) -> None:
        with self._cond:
            self._accept().outbox[row.id] = row
            self._accepted()

    def ack_outbox(self, row_id: int) -> None:
        """The cloud broker has the row: forget it. A row no commit has taken yet is simply
        dropped from its batch (it never reaches the disk: the SD card is spared while the
        uplink keeps up); one already written, or being written, is deleted by a later batch."""
        with self._cond:
            for batch in (*self._sealed, self._open):
                if batch.outbox.pop(row_id, None) is not None:
                    if batch is not self._open:
                        self._sealed_rows -= 1
                    return
            self._accept().outbox_acks.append(row_id)
            self._accepted()

    def request_flush(self) -> int:
        """Ask the writer to commit without waiting out the batch window; returns the target."""
        with self._cond:
            self._flush_upto = self._accepted_seq
            if self._flush_upto > self._taken_seq:
                self._cond.notify_all()
            return self._flush_upto

    def close(self) -> None:
        """Refuse new rows and tell the writer to commit what is left and stop."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()

    def _drop_oldest_event(self) -> bool:
        """Drop the oldest waiting event the writer is not writing. Devices and commands are
        few and never dropped; the newest event is never dropped."""
        for batch in (*self._sealed, self._open):
            if batch.events and (batch is not self._open or len(batch.events) > 1):
                batch.events.popleft()
                if batch is not self._open:
                    self._sealed_rows -= 1
                self.dropped_rows += 1
                return True
        return False

    def _accept(self) -> Batch:
        if self._closing:
            raise StoreError("store is closed")
        if len(self._open) >= self._batch_max_rows:
            # Full: it waits for the writer as it is, and is committed in one bounded transaction.
            self._sealed.append(self._open)
            self._sealed_rows += len(self._open)
            self._open = Batch()
            self._cond.notify_all()
        if not self._open:
            self._open.first_at = time.monotonic()
        return self._open

    def _accepted(self) -> None:
        self._accepted_seq += 1
        self._open.last_seq = self._accepted_seq
        # Wake the writer only when it has a reason to act, not on every row.
        n = len(self._open)
        if n == 1 or n == self._batch_max_rows:
            self._cond.notify_all()

    # --- reads (any thread) ---

    @property
    def committed_seq(self) -> int:
        return self._committed_seq

    def rows(self) -> int:
        with self._cond:
            return self._rows()

    def has_room(self) -> bool:
        """True while fewer than `backlog_rows` wait for a commit. Read without the lock: it is
        asked for every device message, and a count a moment old is as good for admission."""
        return self._rows() < self._backlog_rows

    def _rows(self) -> int:
        inflight = len(self._inflight) if self._inflight is not None else 0
        return len(self._open) + self._sealed_rows + inflight

    def _generations(self) -> list[Batch]:
        """Oldest first."""
        waiting = [*self._sealed, self._open]
        return waiting if self._inflight is None else [self._inflight, *waiting]

    def events(
        self,
        device_id: str | None,
        *,
        limit: int,
        before: int | None,
        event: str | None,
        since_ms: int | None = None,
        levels: frozenset[str] | None = None,
    ) -> list[EventRow]:
        """Matching waiting events, newest first; `device_id=None` means every device."""
        found: list[EventRow] = []
        with self._cond:
            for batch in reversed(self._generations()):
                for row in reversed(batch.events):
                    if len(found) >= limit:
                        return found
                    if (
                        (device_id is None or row.device_id == device_id)
                        and (before is None or row.id < before)
                        and (event is None or row.event == event)
                        and (since_ms is None or row.received_at_ms >= since_ms)
                        and (levels is None or row.level in levels)
                    ):
                        found.append(row)
        return found

    def events_after(
        self,
        after: int,
        *,
        limit: int,
        device_ids: frozenset[str] | None = None,
        product_ids: frozenset[str] | None = None,
    ) -> list[EventRow]:
        """Matching waiting events with an id above `after`, oldest first."""
        found: list[EventRow] = []
        with self._cond:
            for batch in self._generations():
                for row in batch.events:
                    if len(found) >= limit:
                        return found
                    if (
                        row.id > after
                        and (device_ids is None or row.device_id in device_ids)
                        and (product_ids is None or row.product_id in product_ids)
                    ):
                        found.append(row)
        return found

    def outbox_after(self, after: int, *, limit: int) -> tuple[list[OutboxRow], set[int], int]:
        """Waiting uplink rows with an id above `after` (oldest first, at most `limit`), the ids
        acknowledged but not deleted on disk yet, and how many uplink rows wait in all."""
        found: list[OutboxRow] = []
        acked: set[int] = set()
        waiting = 0
        with self._cond:
            for batch in self._generations():
                acked.update(batch.outbox_acks)
                waiting += len(batch.outbox)
                if len(found) < limit:
                    found.extend(row for row_id, row in batch.outbox.items() if row_id > after)
        return found[:limit], acked, waiting

    def device_commands(self, device_id: str) -> tuple[list[CommandRow], dict[str, CommandOutcome]]:
        """The device's waiting command inserts (outcomes folded in), and waiting outcomes of
        any command, to lay over rows read from the database."""
        inserts: dict[str, CommandRow] = {}
        updates: dict[str, CommandOutcome] = {}
        with self._cond:
            for batch in self._generations():
                for request_id, row in batch.command_inserts.items():
                    if row.device_id == device_id:
                        inserts[request_id] = row
                for request_id, outcome in batch.command_updates.items():
                    if request_id in inserts:
                        inserts[request_id] = with_outcome(inserts[request_id], outcome)
                    else:
                        updates[request_id] = outcome
        return list(inserts.values()), updates

    def command(self, request_id: str) -> tuple[CommandRow | None, CommandOutcome | None]:
        """The newest waiting insert of the command, and an outcome to lay over it.

        With an insert the outcome is already folded in; without one, the outcome applies to
        the row in the database.
        """
        inserted: CommandRow | None = None
        outcome: CommandOutcome | None = None
        with self._cond:
            for batch in self._generations():
                if request_id in batch.command_inserts:
                    inserted, outcome = batch.command_inserts[request_id], None
                if request_id in batch.command_updates:
                    outcome = batch.command_updates[request_id]
        if inserted is not None and outcome is not None:
            inserted, outcome = with_outcome(inserted, outcome), None
        return inserted, outcome

    def session(self, session_id: str) -> list[SessionChange]:
        """Copies of the session's waiting changes, oldest first."""
        with self._cond:
            return [
                batch.sessions[session_id].copy()
                for batch in self._generations()
                if session_id in batch.sessions
            ]

    def devices(self) -> dict[str, DeviceRecord | None]:
        merged: dict[str, DeviceRecord | None] = {}
        with self._cond:
            for batch in self._generations():
                merged.update(batch.devices)
        return merged

    def voice_tokens(self) -> dict[str, VoiceTokenRow | None]:
        merged: dict[str, VoiceTokenRow | None] = {}
        with self._cond:
            for batch in self._generations():
                merged.update(batch.voice_tokens)
        return merged

    def schedules(self) -> dict[str, ScheduleRow | None]:
        merged: dict[str, ScheduleRow | None] = {}
        with self._cond:
            for batch in self._generations():
                merged.update(batch.schedules)
        return merged

    # --- consumer side (the writer thread) ---

    @property
    def closing(self) -> bool:
        return self._closing

    def wait_ready(self, *, interval_s: float, until: float) -> bool:
        """Block until a batch is due (True), or until `until` (monotonic) passes or the
        store closes with nothing left to write (False)."""
        with self._cond:
            while True:
                if self._inflight is not None or self._sealed:
                    return True
                now = time.monotonic()
                n = len(self._open)
                if n:
                    due = self._open.first_at + interval_s
                    if (
                        self._closing
                        or now >= due
                        or n >= self._batch_max_rows
                        or self._flush_upto > self._taken_seq
                    ):
                        return True
                    wake_at = min(due, until)
                elif self._closing:
                    return False
                else:
                    wake_at = until
                if now >= until:
                    return False
                self._cond.wait(wake_at - now)

    def take(self) -> Batch | None:
        """The batch to write: the one that failed last time, else the oldest sealed one, else
        everything open."""
        with self._cond:
            if self._inflight is None:
                if self._sealed:
                    self._inflight = self._sealed.popleft()
                    self._sealed_rows -= len(self._inflight)
                elif self._open:
                    self._inflight, self._open = self._open, Batch()
                if self._inflight is not None:
                    self._taken_seq = self._inflight.last_seq
            return self._inflight

    def committed(self, batch: Batch) -> None:
        with self._cond:
            assert batch is self._inflight
            self._inflight = None
            self._committed_seq = batch.last_seq
            self._dropping = False

    def abandon(self) -> int:
        """Forget everything waiting (the store is closing and commits keep failing)."""
        with self._cond:
            lost = self._rows()
            self._inflight, self._open = None, Batch()
            self._sealed.clear()
            self._sealed_rows = 0
            return lost

    def sleep(self, seconds: float) -> None:
        """Back off after a failed commit; returns early when the store starts closing."""
        with self._cond:
            self._cond.wait_for(lambda: self._closing, seconds)
