"""Schema versions: `PRAGMA user_version` counts the migrations applied.

To change the schema, append a migration to MIGRATIONS; never edit one that has shipped,
since databases in the field already ran it.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence

from deviceagentd.store.errors import SchemaTooNewError

Migration = Callable[[sqlite3.Connection], None]


def _statements(*sql: str) -> Migration:
    def run(conn: sqlite3.Connection) -> None:
        # One statement at a time: executescript() would COMMIT the surrounding transaction.
        for statement in sql:
            conn.execute(statement)

    return run


_V1_DEVICES_EVENTS_COMMANDS = _statements(
    """
    CREATE TABLE devices (
        device_id     TEXT PRIMARY KEY,
        product_id    TEXT NOT NULL,
        online        INTEGER NOT NULL,
        state         TEXT NOT NULL,
        metadata      TEXT NOT NULL,
        first_seen_ms INTEGER NOT NULL,
        last_seen_ms  INTEGER NOT NULL,
        encoding      TEXT NOT NULL
    )
    """,
    """
    CREATE TABLE events (
        id             INTEGER PRIMARY KEY,
        device_id      TEXT NOT NULL,
        product_id     TEXT NOT NULL,
        event          TEXT NOT NULL,
        level          TEXT NOT NULL,
        declared       INTEGER NOT NULL,
        data           TEXT NOT NULL,
        ts_ms          INTEGER NOT NULL,
        received_at_ms INTEGER NOT NULL,
        source         TEXT NOT NULL
    )
    """,
    "CREATE INDEX events_by_device ON events (device_id, id)",
    "CREATE INDEX events_by_received_at ON events (received_at_ms)",
    """
    CREATE TABLE commands (
        request_id     TEXT PRIMARY KEY,
        device_id      TEXT NOT NULL,
        product_id     TEXT NOT NULL,
        command        TEXT NOT NULL,
        params         TEXT NOT NULL,
        sent_at_ms     INTEGER NOT NULL,
        timeout_ms     INTEGER NOT NULL,
        status         TEXT NOT NULL,
        code           INTEGER,
        msg            TEXT,
        data           TEXT,
        answered_at_ms INTEGER,
        late           INTEGER NOT NULL,
        extra          TEXT NOT NULL
    )
    """,
    "CREATE INDEX commands_by_sent_at ON commands (sent_at_ms)",
)

# Conversation history. No foreign key: the writer creates the header in the same
# transaction as a session's first message, and deletes messages before their header, so
# the constraint would only add a way for a batch to fail.
_V2_SESSIONS = _statements(
    """
    CREATE TABLE sessions (
        session_id TEXT PRIMARY KEY,
        created_ms INTEGER NOT NULL,
        updated_ms INTEGER NOT NULL,
        product_id TEXT,
        device_id  TEXT,
        metadata   TEXT NOT NULL
    )
    """,
    "CREATE INDEX sessions_by_updated ON sessions (updated_ms)",
    """
    CREATE TABLE session_messages (
        id           INTEGER PRIMARY KEY,
        session_id   TEXT NOT NULL,
        role         TEXT NOT NULL,
        text         TEXT NOT NULL,
        ts_ms        INTEGER NOT NULL,
        tool_calls   TEXT NOT NULL,
        tool_results TEXT NOT NULL,
        interrupted  INTEGER NOT NULL
    )
    """,
    "CREATE INDEX session_messages_by_session ON session_messages (session_id, id)",
)

# Voice platform tokens: the live pair of each speaker, as SHA-256 hashes (the tokens
# themselves are never stored). Only the primary key is indexed: tokens are checked against
# an in-memory copy read once at start, and the table is written by voice_id.
_V3_VOICE_TOKENS = _statements(
    """
    CREATE TABLE voice_tokens (
        voice_id      TEXT PRIMARY KEY,
        access_hash   TEXT NOT NULL,
        refresh_hash  TEXT NOT NULL,
        issued_at_ms  INTEGER NOT NULL,
        expires_at_ms INTEGER NOT NULL
    )
    """,
)

# Schedules: read whole at start (the timer keeps them in memory), written by id. The spec
# column is the schedule as JSON (name, action, when, origin); next_run_ms is NULL once a
# one-off schedule has run (the row is deleted then). The MCP call log: every tool call an
# assistant made, like the command log, pruned with it.
_V4_SCHEDULES_MCP_CALLS = _statements(
    """
    CREATE TABLE schedules (
        schedule_id TEXT PRIMARY KEY,
        spec        TEXT NOT NULL,
        created_ms  INTEGER NOT NULL,
        next_run_ms INTEGER,
        last_run    TEXT
    )
    """,
    """
    CREATE TABLE mcp_calls (
        id         INTEGER PRIMARY KEY,
        ts_ms      INTEGER NOT NULL,
        client     TEXT NOT NULL,
        tool       TEXT NOT NULL,
        arguments  TEXT NOT NULL,
        outcome    TEXT NOT NULL,
        detail     TEXT NOT NULL,
        latency_ms REAL NOT NULL
    )
    """,
    "CREATE INDEX mcp_calls_by_ts ON mcp_calls (ts_ms)",
)

# A device's command log (the console's device page, GET /api/devices/{id}/commands), newest
# first, without scanning every device's commands.
_V5_COMMANDS_BY_DEVICE = _statements(
    "CREATE INDEX commands_by_device ON commands (device_id, sent_at_ms, request_id)",
)

# A speaker's second pair: obtained but not used yet. The live pair keeps working until the
# new one is first used, so an obtain call (even one with a guessed brand code, or a replay)
# cannot cut off the speaker holding the live pair. NULL when there is none.
_V6_VOICE_PENDING_PAIRS = _statements(
    "ALTER TABLE voice_tokens ADD COLUMN pending_access_hash TEXT",
    "ALTER TABLE voice_tokens ADD COLUMN pending_refresh_hash TEXT",
    "ALTER TABLE voice_tokens ADD COLUMN pending_issued_at_ms INTEGER",
    "ALTER TABLE voice_tokens ADD COLUMN pending_expires_at_ms INTEGER",
)

# Small facts of the store itself. `event_ids_reserved`: event ids up to it may have been
# handed out (and served) before their rows were committed; after a crash, new events start
# above it, so an id a client saw never names another event.
_V7_STORE_META = _statements(
    "CREATE TABLE store_meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL)",
)

# The uplink's outbox (store-and-forward to a central broker): what waits for the cloud broker's
# PUBACK, in id order. `lifecycle` rows (online/offline) are the last to go when the outbox is
# over its bounds; the index serves "the oldest droppable rows" without a scan.
_V8_UPLINK_OUTBOX = _statements(
    """
    CREATE TABLE uplink_outbox (
        id               INTEGER PRIMARY KEY,
        kind             TEXT NOT NULL,
        device_id        TEXT NOT NULL,
        topic            TEXT NOT NULL,
        payload          BLOB NOT NULL,
        content_type     TEXT NOT NULL,
        correlation_data BLOB,
        created_ms       INTEGER NOT NULL,
        lifecycle        INTEGER NOT NULL
    )
    """,
    "CREATE INDEX uplink_outbox_droppable ON uplink_outbox (lifecycle, id)",
)

# Index i holds the step from version i to version i + 1.
MIGRATIONS: tuple[Migration, ...] = (
    _V1_DEVICES_EVENTS_COMMANDS, _V2_SESSIONS, _V3_VOICE_TOKENS, _V4_SCHEDULES_MCP_CALLS, _V5_COMMANDS_BY_DEVICE,
    _V6_VOICE_PENDING_PAIRS, _V7_STORE_META, _V8_UPLINK_OUTBOX,
)


def schema_version(conn: sqlite3.Connection) -> int:
    version: int = conn.execute("PRAGMA user_version").fetchone()[0]
    return version


def migrate(
    conn: sqlite3.Connection, path: str, migrations: Sequence[Migration] = MIGRATIONS
) -> None:
    """Bring the database up to len(migrations); each step commits on its own.

    `conn` must be in autocommit mode (isolation_level=None) so the transactions here are
    the only ones. A step that fails rolls back whole, user_version included.
    """
    current = schema_version(conn)
    if current > len(migrations):
        raise SchemaTooNewError(path, current, len(migrations))
    for version in range(current, len(migrations)):
        conn.execute("BEGIN IMMEDIATE")
        try:
            migrations[version](conn)
            conn.execute(f"PRAGMA user_version = {version + 1}")
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
