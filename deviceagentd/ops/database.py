"""Finding, opening and checking the daemon's database file from another process."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path

from deviceagentd.config import Config
from deviceagentd.ops.errors import OpsError
from deviceagentd.store.database import DB_FILENAME, open_reader
from deviceagentd.store.schema import MIGRATIONS, migrate, schema_version

# How many problems an integrity check reports at most in its one line.
_PROBLEMS_SHOWN = 3


@dataclass(frozen=True)
class DatabaseSummary:
    path: Path
    bytes: int
    schema_version: int
    rows: dict[str, int]


def database_path(config: Config) -> Path:
    """Where the daemon run with `config` keeps its database."""
    return Path(config.storage.dir) / DB_FILENAME


def known_schema_version() -> int:
    """The newest schema this build can open (migrations applied = PRAGMA user_version)."""
    return len(MIGRATIONS)


def open_read_only(path: Path) -> sqlite3.Connection:
    """A read-only connection (URI mode=ro) that has been checked to be a database.

    WAL lets it read a consistent snapshot while the daemon writes. Raises OpsError.
    """
    if not path.is_file():
        raise OpsError(f"no database at {path}")
    try:
        conn = open_reader(path)
    except sqlite3.Error as exc:
        raise OpsError(f"cannot open {path}: {exc}") from exc
    try:
        conn.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
    except sqlite3.Error as exc:
        conn.close()
        raise OpsError(f"cannot read {path}: {exc}") from exc
    return conn


def integrity_problems(conn: sqlite3.Connection, *, quick: bool = False) -> str | None:
    """None when SQLite's integrity check passes, else its first few findings on one line."""
    pragma = "quick_check" if quick else "integrity_check"
    try:
        rows = conn.execute(f"PRAGMA {pragma}({_PROBLEMS_SHOWN + 1})").fetchall()
    except sqlite3.DatabaseError as exc:  # damaged beyond what the check can walk
        return str(exc)
    if rows == [("ok",)]:
        return None
    shown = "; ".join(str(row[0]) for row in rows[:_PROBLEMS_SHOWN])
    return shown + ("; …" if len(rows) > _PROBLEMS_SHOWN else "")


def table_names(conn: sqlite3.Connection) -> list[str]:
    return [
        row[0]
        for row in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name"
        )
    ]


def row_counts(conn: sqlite3.Connection) -> dict[str, int]:
    counts: dict[str, int] = {}
    for name in table_names(conn):
        quoted = '"' + name.replace('"', '""') + '"'
        counts[name] = conn.execute(f"SELECT COUNT(*) FROM {quoted}").fetchone()[0]
    return counts


def table_columns(conn: sqlite3.Connection) -> dict[str, frozenset[str]]:
    return {
        name: frozenset(row[1] for row in conn.execute("SELECT * FROM pragma_table_info(?)", (name,)))
        for name in table_names(conn)
    }


def expected_columns(version: int) -> dict[str, frozenset[str]]:
    """The tables and columns a database at `version` has: the migrations run on an empty
    in-memory database, so this can never drift from store/schema.py."""
    conn = sqlite3.connect(":memory:", isolation_level=None)
    try:
        migrate(conn, ":memory:", MIGRATIONS[:version])
        return table_columns(conn)
    finally:
        conn.close()


def check_schema(conn: sqlite3.Connection, path: Path) -> int:
    """The schema version of a deviceagentd database this build can open; OpsError otherwise."""
    version = schema_version(conn)
    known = known_schema_version()
    if version > known:
        raise OpsError(
            f"{path} has schema version {version}, but this deviceagentd knows versions up to {known} "
            f"(it was written by a newer deviceagentd; restore it with that version)"
        )
    if version < 1:
        raise OpsError(f"{path} is not a deviceagentd database (no schema version)")
    present = table_columns(conn)
    for table, columns in sorted(expected_columns(version).items()):
        if table not in present:
            raise OpsError(f"{path} is not a deviceagentd database (schema version {version} but no table {table})")
        missing = sorted(columns - present[table])
        if missing:
            raise OpsError(
                f"{path} is not a deviceagentd database (table {table} lacks {', '.join(missing)})"
            )
    return version


def summarize(conn: sqlite3.Connection, path: Path) -> DatabaseSummary:
    return DatabaseSummary(path, path.stat().st_size, schema_version(conn), row_counts(conn))


def format_bytes(count: int) -> str:
    if count < 1024:
        return f"{count} bytes"
    size = count / 1024
    for unit in ("KiB", "MiB"):
        if size < 1024:
            return f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"


def format_rows(rows: dict[str, int]) -> list[str]:
    """`  table   count` lines, aligned, for a summary printed to the operator."""
    if not rows:
        return ["  (no tables)"]
    width = max(len(name) for name in rows)
    digits = max(len(str(count)) for count in rows.values())
    return [f"  {name:<{width}}  {count:>{digits}}" for name, count in rows.items()]
