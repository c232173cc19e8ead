"""`deviceagentd backup FILE`: a consistent copy of the live database, safe while the daemon runs.

SQLite's online backup API copies every page in one step, inside one read transaction of a
read-only connection: in WAL mode that is a snapshot at one instant which the daemon's
writer never waits for. (Copying in several steps would restart whenever the daemon
commits, which under load is every second, so it might never finish.)

The copy is written to a hidden temporary file next to FILE, switched to a self-contained
single file (no -wal), checked with PRAGMA integrity_check, and only then renamed to FILE:
an interrupted or failed backup never leaves a half-written FILE.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import tempfile
from pathlib import Path

from deviceagentd.ops.database import (
    DatabaseSummary,
    integrity_problems,
    open_read_only,
    row_counts,
)
from deviceagentd.ops.errors import OpsError
from deviceagentd.store.database import is_corruption, side_file
from deviceagentd.store.schema import schema_version


def backup_database(live: Path, target: Path, *, force: bool) -> DatabaseSummary:
    """Copy the database at `live` to `target`. Raises OpsError with the reason."""
    if not live.is_file():
        raise OpsError(f"no database at {live} yet (the daemon creates it when it first starts; is storage.dir right?)")
    target = target.absolute()
    if _is_live_file(target, live):
        raise OpsError(f"{target} is the live database itself; choose another file")
    if target.is_dir():
        raise OpsError(f"{target} is a directory; give the backup's file name")
    if target.exists() and not force:
        raise OpsError(f"{target} exists; add --force to overwrite it")
    conn = open_read_only(live)
    try:
        return copy_database(conn, target, overwrite=force)
    except sqlite3.Error as exc:
        raise OpsError(f"backup of {live} failed: {exc}") from exc
    finally:
        conn.close()


def copy_database(source: sqlite3.Connection, target: Path, *, overwrite: bool) -> DatabaseSummary:
    """Copy everything `source` sees into the single file `target`, checked, via a temp file."""
    target = target.absolute()
    try:
        fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    except OSError as exc:
        raise OpsError(f"cannot write {target}: {exc.strerror or exc}") from exc
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        version, rows = _fill(source, tmp)
        if not overwrite and target.exists():
            raise OpsError(f"{target} appeared while copying; not overwriting it")
        os.replace(tmp, target)
        _sync_directory(target.parent)
        return DatabaseSummary(target, target.stat().st_size, version, rows)
    except OSError as exc:
        raise OpsError(f"cannot write {target}: {exc.strerror or exc}") from exc
    finally:
        for leftover in (tmp, side_file(tmp, "-journal"), side_file(tmp, "-wal"), side_file(tmp, "-shm")):
            with contextlib.suppress(OSError):
                leftover.unlink()


def _fill(source: sqlite3.Connection, tmp: Path) -> tuple[int, dict[str, int]]:
    dest = sqlite3.connect(tmp, isolation_level=None)
    try:
        source.backup(dest)
        # The copied header says WAL (the daemon's mode); a backup should be one file that can
        # be moved around on its own.
        dest.execute("PRAGMA journal_mode = DELETE")
        problems = integrity_problems(dest)
        if problems is not None:
            raise OpsError(f"the database is damaged, no copy written (SQLite's integrity check: {problems})")
        return schema_version(dest), row_counts(dest)
    except sqlite3.Error as exc:
        if is_corruption(exc):
            raise OpsError(f"the database is damaged, no copy written: {exc}") from exc
        raise OpsError(f"copying the database failed: {exc}") from exc
    finally:
        dest.close()


def _is_live_file(target: Path, live: Path) -> bool:
    candidates = [live, *(side_file(live, suffix) for suffix in ("-wal", "-shm", "-journal"))]
    if any(target.resolve() == candidate.resolve() for candidate in candidates):
        return True
    with contextlib.suppress(OSError):
        return target.exists() and os.path.samefile(target, live)
    return False


def _sync_directory(directory: Path) -> None:
    """Make the rename itself durable (a power cut right after must not lose the new name)."""
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        with contextlib.suppress(OSError):  # some file systems cannot sync a directory
            os.fsync(fd)
    finally:
        os.close(fd)
