"""The uplink outbox on the writer thread: inserts, deletes after PUBACK, and the bounds.

Everything happens inside the batch's own transaction, so the outbox on disk is never over its
bounds, not even between two commits, and a rolled-back batch leaves the counts as they were
(`write` returns the change, `settle` applies it after COMMIT).

Bounds (rows, bytes, age): past any of them the oldest rows that are not online/offline
(`lifecycle` = 0) are deleted, through the index on (lifecycle, id), a chunk at a time; only if
lifecycle rows alone are over the row or byte bound do the oldest of those go too, so the disk
can never fill. Every dropped row is counted (`dropped`); the writer logs once per episode:
when dropping starts, and when the outbox is back under half its bounds.
"""

from __future__ import annotations

import logging
import sqlite3
from dataclasses import dataclass

from deviceagentd.store.pending import Batch
from deviceagentd.store.rows import OutboxRow

_log = logging.getLogger("deviceagentd.store")

# Bytes counted per row: the payload and the topic (the rest of a row is a few dozen bytes).
_SIZE = "length(payload) + length(CAST(topic AS BLOB))"
_INSERT = f"INSERT OR REPLACE INTO uplink_outbox ({', '.join(OutboxRow._fields)}) VALUES ({', '.join('?' * 9)})"
_CHUNK = 500


@dataclass(frozen=True)
class OutboxBounds:
    max_rows: int = 500_000
    max_bytes: int = 256 * 1024 * 1024
    max_age_ms: int = 7 * 86_400_000


@dataclass
class OutboxChange:
    rows: int = 0
    bytes: int = 0
    dropped: int = 0
    max_id: int = 0


class OutboxBook:
    """Counts of what is on disk, kept by the writer thread; read by the loop for health."""

    def __init__(self, conn: sqlite3.Connection, bounds: OutboxBounds) -> None:
        self._bounds = bounds
        # Read once at open: the outbox is bounded, so this is a bounded scan.
        rows, size, max_id, oldest = conn.execute(
            f"SELECT COUNT(*), COALESCE(SUM({_SIZE}), 0), COALESCE(MAX(id), 0), MIN(created_ms) FROM uplink_outbox"
        ).fetchone()
        self.rows: int = rows
        self.bytes: int = size
        self.max_id: int = max_id
        """The highest id ever committed: a reader after it finds nothing on disk."""
        self.oldest_ms: int | None = oldest
        self.dropped = 0
        self._dropping = False
        self._episode_dropped = 0

    def write(self, conn: sqlite3.Connection, batch: Batch, now_ms: int) -> OutboxChange:
        """Insert, delete and trim inside the caller's transaction; returns what changed."""
        change = OutboxChange()
        if batch.outbox:
            conn.executemany(_INSERT, batch.outbox.values())
            change.rows += len(batch.outbox)
            change.bytes += sum(row.size for row in batch.outbox.values())
            change.max_id = max(batch.outbox)
        acks = batch.outbox_acks
        for start in range(0, len(acks), _CHUNK):
            ids = acks[start:start + _CHUNK]
            marks = ", ".join("?" * len(ids))
            count, size = conn.execute(
                f"SELECT COUNT(*), COALESCE(SUM({_SIZE}), 0) FROM uplink_outbox WHERE id IN ({marks})", ids
            ).fetchone()
            conn.execute(f"DELETE FROM uplink_outbox WHERE id IN ({marks})", ids)
            change.rows -= count
            change.bytes -= size
        too_old = self.oldest_ms is not None and self.oldest_ms < now_ms - self._bounds.max_age_ms
        if change.rows > 0 or self._dropping or too_old or self._over(self.rows + change.rows,
                                                                      self.bytes + change.bytes):
            self._trim(conn, change, now_ms)
        return change

    def settle(self, conn: sqlite3.Connection, change: OutboxChange) -> None:
        """Apply a committed change to the counts (and end a dropping episode)."""
        self.rows += change.rows
        self.bytes += change.bytes
        self.max_id = max(self.max_id, change.max_id)
        self.dropped += change.dropped
        self._episode_dropped += change.dropped
        if change.rows or change.dropped or self.oldest_ms is None:
            row = conn.execute("SELECT created_ms FROM uplink_outbox ORDER BY id LIMIT 1").fetchone()
            self.oldest_ms = row[0] if row else None
        if change.dropped and not self._dropping:
            self._dropping = True
            _log.error(
                "uplink outbox over its bounds (%d rows, %d bytes, oldest %s): dropping the oldest rows "
                "that are not online/offline until it holds at most half of them; counted in "
                "deviceagentd_uplink_dropped_total",
                self.rows, self.bytes,
                "-" if self.oldest_ms is None else f"{self.oldest_ms} ms epoch",
            )
        elif self._dropping and not change.dropped and self._under_half():
            _log.warning("uplink outbox back under half its bounds (%d rows); %d rows were dropped in all",
                         self.rows, self._episode_dropped)
            self._dropping = False
            self._episode_dropped = 0

    def _over(self, rows: int, size: int) -> bool:
        return rows > self._bounds.max_rows or size > self._bounds.max_bytes

    def _under_half(self) -> bool:
        return self.rows <= self._bounds.max_rows // 2 and self.bytes <= self._bounds.max_bytes // 2

    def _trim(self, conn: sqlite3.Connection, change: OutboxChange, now_ms: int) -> None:
        cutoff = now_ms - self._bounds.max_age_ms
        for lifecycle in (0, 1):
            while True:
                rows, size = self.rows + change.rows, self.bytes + change.bytes
                over_rows = rows - self._bounds.max_rows
                head = conn.execute(
                    f"SELECT id, created_ms, {_SIZE} FROM uplink_outbox WHERE lifecycle = ? ORDER BY id LIMIT 1",
                    (lifecycle,),
                ).fetchone()
                if head is None:
                    break
                too_old = lifecycle == 0 and head[1] < cutoff
                if over_rows <= 0 and size <= self._bounds.max_bytes and not too_old:
                    break
                want = max(1, min(_CHUNK, over_rows)) if not too_old else _CHUNK
                picked = conn.execute(
                    f"SELECT id, created_ms, {_SIZE} FROM uplink_outbox WHERE lifecycle = ? ORDER BY id LIMIT ?",
                    (lifecycle, want),
                ).fetchall()
                # Take rows while a bound is still broken: the count, the bytes, or the age.
                last_id, count, freed = 0, 0, 0
                for row_id, created_ms, row_size in picked:
                    if rows - count <= self._bounds.max_rows and size - freed <= self._bounds.max_bytes and not (
                        lifecycle == 0 and created_ms < cutoff
                    ):
                        break
                    last_id, count, freed = row_id, count + 1, freed + row_size
                if not count:
                    break
                conn.execute("DELETE FROM uplink_outbox WHERE lifecycle = ? AND id <= ?", (lifecycle, last_id))
                change.rows -= count
                change.bytes -= freed
                change.dropped += count
