"""`deviceagentd restore FILE`: put a backup in place of the live database, daemon stopped.

Is the daemon running? Two independent signals; either one refuses the restore:

1. The database lock. The daemon keeps its writer and reader connections open for its whole
   life, and in WAL mode every open connection holds a shared lock on the file. We open the
   live database in EXCLUSIVE locking mode and take the exclusive lock without waiting: that
   fails while any other process has the file open (the daemon, a `deviceagentd events`
   running at that moment, an sqlite3 shell). Unlike a pid file it cannot go stale (the
   kernel drops the locks of a process that dies, even by kill -9) and needs nothing from
   the daemon. We keep the lock until the restore is done, so a daemon started meanwhile
   fails to open the database (systemd retries it) instead of seeing a half-restored file.
2. The HTTP port: something accepting connections on `http.listen` is almost certainly the
   daemon, e.g. one whose database file was moved or deleted under it, which the lock on
   the path cannot see.

The backup is checked first (integrity, a deviceagentd schema, not newer than this build).
The current database is kept as `<name>.before-restore-<ms>`, copied with the backup API
through the locked connection, so whatever was still in its -wal is in that one file. Then
the backup's pages are written into the live file by the backup API in one transaction:
if anything fails, the live database stays as it was. Its inode, owner and mode are kept.
"""

from __future__ import annotations

import contextlib
import os
import socket
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from deviceagentd.config import Endpoint
from deviceagentd.ops.backup import copy_database
from deviceagentd.ops.database import (
    DatabaseSummary,
    check_schema,
    integrity_problems,
    open_read_only,
    row_counts,
)
from deviceagentd.ops.errors import OpsError
from deviceagentd.store.database import side_file
from deviceagentd.store.schema import schema_version
from deviceagentd.systemd import managed_by_systemd

PROBE_TIMEOUT_S = 1.0
_ANY_ADDRESS = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}


def stop_hint() -> str:
    return "stop it first (systemctl stop deviceagentd)" if managed_by_systemd() else "stop it first"


@dataclass(frozen=True)
class RestoreReport:
    restored: DatabaseSummary
    """The live database after the restore."""
    backup: Path
    kept_aside: Path | None
    """The previous database, or None when there was none."""


def restore_database(backup: Path, live: Path, http: Endpoint, now_ms: int) -> RestoreReport:
    """Replace the database at `live` with the backup file. Raises OpsError with the reason."""
    backup = backup.absolute()
    live = live.absolute()
    if not backup.is_file():
        raise OpsError(f"no backup file at {backup}")
    if live.exists() and os.path.samefile(backup, live):
        raise OpsError(f"{backup} is the live database itself")
    source = open_read_only(backup)
    try:
        problems = integrity_problems(source)
        if problems is not None:
            raise OpsError(f"{backup} fails SQLite's integrity check: {problems}")
        check_schema(source, backup)
        return _restore_checked(source, backup, live, http, now_ms)
    except sqlite3.Error as exc:
        raise OpsError(f"restoring {backup} failed: {exc}") from exc
    finally:
        source.close()


def _restore_checked(
    source: sqlite3.Connection, backup: Path, live: Path, http: Endpoint, now_ms: int
) -> RestoreReport:
    existed = live.exists() and live.stat().st_size > 0
    wal = side_file(live, "-wal")
    if not live.exists() and wal.exists() and wal.stat().st_size > 0:
        # SQLite would replay a WAL left without its database onto the restored file.
        raise OpsError(f"{wal} is there without its database; move it away first")
    try:
        live.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OpsError(f"cannot create {live.parent}: {exc.strerror or exc}") from exc
    conn = _lock_exclusively(live)
    try:
        _refuse_if_listening(http)
        aside = None
        if existed:
            aside = _keep_aside(conn, live, now_ms)
        _write_pages(source, conn, backup)
        problems = integrity_problems(conn, quick=True)
        if problems is not None:
            raise OpsError(f"the restored database fails SQLite's check ({problems}); the previous one is {aside}")
        version, rows = schema_version(conn), row_counts(conn)
    finally:
        conn.close()
    if not existed:
        _give_to_directory_owner(live)
    return RestoreReport(DatabaseSummary(live, live.stat().st_size, version, rows), backup, aside)


def _lock_exclusively(live: Path) -> sqlite3.Connection:
    """A connection holding the exclusive lock on `live` until it is closed (see the module doc)."""
    try:
        conn = sqlite3.connect(live, timeout=0, isolation_level=None)
    except sqlite3.Error as exc:
        raise OpsError(f"cannot open {live}: {exc}") from exc
    try:
        conn.execute("PRAGMA locking_mode = EXCLUSIVE")
        conn.execute("BEGIN EXCLUSIVE")
        conn.execute("COMMIT")
    except sqlite3.Error as exc:
        conn.close()
        if getattr(exc, "sqlite_errorcode", 0) & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
            raise OpsError(
                f"{live} is open in another process: the daemon is running ({stop_hint()}), "
                f"or another program has the database open"
            ) from exc
        raise OpsError(
            f"cannot use the current database ({exc}), nothing restored; "
            f"move {live} and its -wal/-shm away yourself, then restore again"
        ) from exc
    return conn


def _keep_aside(conn: sqlite3.Connection, live: Path, now_ms: int) -> Path:
    try:
        return copy_database(conn, live.with_name(f"{live.name}.before-restore-{now_ms}"), overwrite=False).path
    except OpsError as exc:
        raise OpsError(
            f"cannot keep the current database aside, nothing restored ({exc}); "
            f"move {live} and its -wal/-shm away yourself, then restore again"
        ) from exc


def _refuse_if_listening(http: Endpoint) -> None:
    host = _ANY_ADDRESS.get(http.host, http.host)
    try:
        with socket.create_connection((host, http.port), timeout=PROBE_TIMEOUT_S):
            pass
    except OSError:
        return
    raise OpsError(
        f"something accepts connections on {host}:{http.port} (http.listen): the daemon seems to be running; "
        f"{stop_hint()}"
    )


def _write_pages(source: sqlite3.Connection, conn: sqlite3.Connection, backup: Path) -> None:
    try:
        # The backup API cannot write into a WAL database whose page size differs, and a
        # rollback journal keeps the copy one transaction just the same.
        conn.execute("PRAGMA journal_mode = DELETE")
    except sqlite3.Error as exc:
        raise OpsError(f"cannot prepare the current database for the restore: {exc}") from exc
    try:
        source.backup(conn)
    except sqlite3.Error as exc:
        raise OpsError(f"restoring {backup} failed, the current database is unchanged: {exc}") from exc
    # The daemon switches to WAL itself when it opens the file; do it now so the file on disk
    # is in the mode it runs in.
    with contextlib.suppress(sqlite3.Error):
        conn.execute("PRAGMA journal_mode = WAL")


def _give_to_directory_owner(live: Path) -> None:
    """A database root creates for the daemon must belong to the daemon's user, who owns
    storage.dir; otherwise the daemon could not write to it."""
    if os.geteuid() != 0:
        return
    owner = live.parent.stat()
    if owner.st_uid != 0:
        os.chown(live, owner.st_uid, owner.st_gid)
