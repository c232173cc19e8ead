"""Opening the database file: pragmas, the start-up check, quarantine of a corrupt file."""

from __future__ import annotations

import logging
import os
import sqlite3
from pathlib import Path

from deviceagentd.store.schema import migrate

_log = logging.getLogger("deviceagentd.store")

# The database's file name inside storage.dir: the daemon opens it, the operator commands
# (deviceagentd.ops) find it there without loading the daemon.
DB_FILENAME = "deviceagentd.db"
# A corrupt database is moved aside as <name>.corrupt-<ms>; health reports it until removed.
QUARANTINE_INFIX = ".corrupt-"

# Per-connection settings (the header-level ones, auto_vacuum and WAL, are applied first).
_CONNECTION_PRAGMAS = (
    "PRAGMA synchronous = NORMAL",
    "PRAGMA temp_store = MEMORY",
    "PRAGMA cache_size = -2000",
    "PRAGMA journal_size_limit = 4194304",
    "PRAGMA foreign_keys = ON",
)
_BUSY_TIMEOUT_MS = 5000
_CORRUPTION_CODES = (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB)


class _Corrupt(Exception):
    pass


def is_corruption(exc: sqlite3.Error) -> bool:
    """True when SQLite says the file is damaged or not a database at all."""
    return getattr(exc, "sqlite_errorcode", 0) & 0xFF in _CORRUPTION_CODES


def side_file(path: Path, suffix: str) -> Path:
    """SQLite's companion file of `path`: `-wal`, `-shm`, `-journal`."""
    return path.with_name(path.name + suffix)


def open_writer(path: Path, now_ms: int) -> sqlite3.Connection:
    """Connect for writing, check the file, move it aside if corrupt, migrate.

    Autocommit mode: the writer issues BEGIN/COMMIT itself. The connection is handed to
    the writer thread afterwards, hence check_same_thread=False; only one thread uses it.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        if path.exists() and path.stat().st_size == 0:
            # SQLite would take an empty file as a new database, silently: after a first start
            # it never is one, so the file was cut short (a power cut, a bad SD card).
            raise _Corrupt("the file is empty (0 bytes)")
        conn = _connect_checked(path)
    except _Corrupt as exc:
        moved = quarantine(path, now_ms)
        _log.error(
            "database %s is corrupt (%s); moved it aside as %s and starting empty. Health stays "
            "degraded until %s is removed from %s (look at it first: sqlite3 %s .recover)",
            path, exc, moved, moved.name, moved.parent, moved,
        )
        conn = _connect_checked(path)
    try:
        migrate(conn, str(path))
    except BaseException:
        conn.close()
        raise
    return conn


def open_reader(path: Path) -> sqlite3.Connection:
    """A read-only connection; WAL lets it read while the writer writes."""
    conn = sqlite3.connect(
        f"{path.resolve().as_uri()}?mode=ro",
        uri=True,
        isolation_level=None,
        check_same_thread=False,
    )
    conn.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")
    conn.execute("PRAGMA temp_store = MEMORY")
    return conn


def quarantined_files(path: Path) -> list[Path]:
    """Databases that `quarantine` moved aside next to `path` and an operator has not removed
    yet (their -wal/-shm not counted), oldest first."""
    prefix = f"{path.name}{QUARANTINE_INFIX}"
    try:
        names = [entry.name for entry in os.scandir(path.parent)]
    except OSError:
        return []
    found = [name for name in names if name.startswith(prefix) and name[len(prefix):].isdigit()]
    return [path.with_name(name) for name in sorted(found)]


def quarantine(path: Path, now_ms: int) -> Path:
    """Move the database and its -wal/-shm aside as `<name>.corrupt-<ms>[-wal|-shm]`.

    The side files keep SQLite's naming relative to the moved file, so the quarantined
    copy can still be opened with its WAL for a post-mortem.
    """
    moved = path.with_name(f"{path.name}{QUARANTINE_INFIX}{now_ms}")
    for suffix in ("-wal", "-shm", ""):
        source = side_file(path, suffix)
        if source.exists():
            source.rename(side_file(moved, suffix))
    return moved


def _connect_checked(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        conn.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")
        result = conn.execute("PRAGMA quick_check").fetchall()
        if result != [("ok",)]:
            raise _Corrupt("; ".join(str(row[0]) for row in result[:5]))
        # auto_vacuum only takes effect before the first table exists, so it goes first;
        # on an existing database it is a no-op.
        conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            _log.warning("database %s could not switch to WAL (journal_mode=%s)", path, mode)
        for pragma in _CONNECTION_PRAGMAS:
            conn.execute(pragma)
    except sqlite3.DatabaseError as exc:
        conn.close()
        if is_corruption(exc):
            raise _Corrupt(str(exc)) from exc
        raise
    except BaseException:
        conn.close()
        raise
    return conn
