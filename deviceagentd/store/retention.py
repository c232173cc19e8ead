"""Deleting old rows: by age and by row count, in small transactions, then giving pages back.

Runs on the writer thread. Each chunk is its own short transaction, and one run does at
most `max_chunks` of them, so a large backlog is worked off over several runs with batch
commits in between instead of stalling the writer.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

from deviceagentd.store.settings import StoreSettings

CHUNK_ROWS = 2000
MAX_CHUNKS_PER_RUN = 25
VACUUM_PAGES = 2048
_DAY_MS = 86_400_000


@dataclass
class PruneResult:
    events: int = 0
    commands: int = 0
    sessions: int = 0
    session_messages: int = 0
    mcp_calls: int = 0
    finished: bool = True
    """False when the chunk budget ran out before every rule was satisfied."""


def prune(
    conn: sqlite3.Connection,
    settings: StoreSettings,
    now_ms: int,
    *,
    chunk_rows: int = CHUNK_ROWS,
    max_chunks: int = MAX_CHUNKS_PER_RUN,
) -> PruneResult:
    """Apply the retention rules once; `conn` must be in autocommit mode."""
    run = _ChunkedDelete(conn, chunk_rows, max_chunks)
    result = PruneResult()
    # The newest event always stays: the next id is MAX(id) + 1 at open, and reusing ids
    # would confuse clients that page with `before` or resume from a last-seen id.
    result.events += run.delete(
        "DELETE FROM events WHERE id IN (SELECT id FROM events WHERE received_at_ms < ? "
        "AND id < (SELECT MAX(id) FROM events) LIMIT ?)",
        (now_ms - int(settings.events_max_age_days * _DAY_MS),),
    )
    result.events += run.delete(
        "DELETE FROM events WHERE id IN (SELECT id FROM events ORDER BY id LIMIT ?)",
        (),
        total=_events_over(conn, settings.events_max_rows),
    )
    result.commands += run.delete(
        "DELETE FROM commands WHERE rowid IN "
        "(SELECT rowid FROM commands WHERE sent_at_ms < ? LIMIT ?)",
        (now_ms - int(settings.commands_max_age_days * _DAY_MS),),
    )
    result.commands += run.delete(
        "DELETE FROM commands WHERE rowid IN "
        "(SELECT rowid FROM commands ORDER BY sent_at_ms LIMIT ?)",
        (),
        total=_count(conn, "commands") - settings.commands_max_rows,
    )
    # The MCP call log follows the command log's rules. It is usually empty or young: a read through
    # its index spares the usual run a transaction and a chunk of its budget.
    calls_cutoff = (now_ms - int(settings.commands_max_age_days * _DAY_MS),)
    if conn.execute("SELECT 1 FROM mcp_calls WHERE ts_ms < ? LIMIT 1", calls_cutoff).fetchone():
        result.mcp_calls += run.delete(
            "DELETE FROM mcp_calls WHERE id IN (SELECT id FROM mcp_calls WHERE ts_ms < ? LIMIT ?)", calls_cutoff,
        )
    result.mcp_calls += run.delete(
        "DELETE FROM mcp_calls WHERE id IN (SELECT id FROM mcp_calls ORDER BY id LIMIT ?)",
        (),
        total=_count(conn, "mcp_calls") - settings.commands_max_rows,
    )
    sessions_cutoff = (now_ms - int(settings.sessions_max_age_days * _DAY_MS),)
    # Old sessions are rare: a read through the index spares the usual run two
    # transactions and two chunks of its budget.
    if conn.execute("SELECT 1 FROM sessions WHERE updated_ms < ? LIMIT 1", sessions_cutoff).fetchone():
        # Messages before their header: if the chunk budget runs out in between, the header
        # is still there for the next run to find the rest by.
        result.session_messages += run.delete(
            "DELETE FROM session_messages WHERE id IN (SELECT id FROM session_messages WHERE session_id IN "
            "(SELECT session_id FROM sessions WHERE updated_ms < ?) LIMIT ?)",
            sessions_cutoff,
        )
        result.sessions += run.delete(
            "DELETE FROM sessions WHERE rowid IN (SELECT rowid FROM sessions WHERE updated_ms < ? LIMIT ?)",
            sessions_cutoff,
        )
    result.finished = not run.exhausted
    if result.events or result.commands or result.sessions or result.session_messages or result.mcp_calls:
        # Python's execute() steps a statement once, which frees a single page here;
        # executescript() runs it to the end.
        conn.executescript(f"PRAGMA incremental_vacuum({VACUUM_PAGES})")
    return result


class _ChunkedDelete:
    def __init__(self, conn: sqlite3.Connection, chunk_rows: int, max_chunks: int) -> None:
        self._conn = conn
        self._chunk_rows = chunk_rows
        self._chunks_left = max_chunks
        self.exhausted = False

    def delete(self, sql: str, args: tuple[int, ...], *, total: int | None = None) -> int:
        """Run `sql` (its last parameter is the chunk size) until it deletes fewer rows than
        asked, or `total` rows are gone, or the run's chunk budget is spent."""
        deleted = 0
        while True:
            want = self._chunk_rows if total is None else min(self._chunk_rows, total - deleted)
            if want <= 0:
                return deleted
            if self._chunks_left <= 0:
                self.exhausted = True
                return deleted
            self._chunks_left -= 1
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                got = self._conn.execute(sql, (*args, want)).rowcount
                self._conn.execute("COMMIT")
            except BaseException:
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                raise
            deleted += got
            if got < want:
                return deleted


def _events_over(conn: sqlite3.Connection, max_rows: int) -> int:
    # Ids only grow and only the oldest are deleted, so MAX - MIN + 1 bounds the count from
    # above in O(log n); the full COUNT(*) is needed only near the limit.
    low, high = conn.execute("SELECT MIN(id), MAX(id) FROM events").fetchone()
    if low is None or high - low + 1 <= max_rows:
        return 0
    return _count(conn, "events") - max_rows


def _count(conn: sqlite3.Connection, table: str) -> int:
    count: int = conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
    return count
