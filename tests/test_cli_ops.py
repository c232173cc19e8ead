"""Operator commands run as the real CLI (`python -m deviceagentd ...`) against real SQLite files:
backup while another process writes, restore only with the daemon stopped, the read-only
`devices`/`events` views, stable exit codes; and docs/operations.md kept true to the code."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from daemon_harness import PRODUCTS_DIR, REPO, DaemonProcess, spawn_daemon
from mosquitto_broker import MosquittoBroker, free_port
from test_mqtt_support import unique

from deviceagentd.cli import build_parser
from deviceagentd.config import CONFIG_PATH_ENV, config_keys, env_name, load_config
from deviceagentd.core.catalog import load_catalog
from deviceagentd.core.spec import load_spec_file
from deviceagentd.daemon import Daemon
from deviceagentd.ops.database import known_schema_version
from deviceagentd.simulator import SimulatedDevice, SimulatorOptions
from deviceagentd.store import DeviceRecord, NewEvent, Store, StoreSettings
from deviceagentd.store.database import DB_FILENAME
from deviceagentd.store.schema import MIGRATIONS, migrate
from deviceagentd.systemd import managed_by_systemd

OPERATIONS_DOC = REPO / "docs" / "operations.md"
WAIT_S = 15.0
T0_MS = 1_770_000_000_000


# --------------------------------------------------------------------------------- helpers


def test_systemctl_is_named_only_where_systemd_runs_the_unit(tmp_path: Path) -> None:
    booted, units = tmp_path / "run-systemd-system", tmp_path / "lib-systemd-system"
    units.mkdir()
    assert not managed_by_systemd(booted, (units,))  # a container or a checkout: no systemd
    booted.mkdir()
    assert not managed_by_systemd(booted, (units,))  # systemd, but the package is not installed
    (units / "deviceagentd.service").write_text("[Service]\n")
    assert managed_by_systemd(booted, (units,))


@pytest.mark.parametrize("systemd", [True, False])
def test_restore_refusal_names_systemctl_only_under_systemd(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], systemd: bool) -> None:
    from deviceagentd import cli
    from deviceagentd.ops import restore

    monkeypatch.setattr(restore, "managed_by_systemd", lambda: systemd)
    with socket.socket() as listener:  # "the daemon" holds the HTTP port
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        config = write_config(tmp_path, tmp_path / "state", http_port=listener.getsockname()[1])
        backup = tmp_path / "b.db"
        populate(backup, [device("x")], [])
        assert cli.main(["restore", str(backup), "--config", str(config)]) == 1
    error = capsys.readouterr().err
    assert "the daemon seems to be running" in error
    assert ("systemctl stop deviceagentd" in error) == systemd


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """The CLI as an operator runs it; DEVICEAGENTD_* from the test's own environment are dropped."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("DEVICEAGENTD_")}
    return subprocess.run([sys.executable, "-m", "deviceagentd", *args], capture_output=True, text=True,
                          env={**base, **(env or {})}, cwd=REPO, timeout=timeout)


def write_config(tmp_path: Path, state: Path, http_port: int | None = None, name: str = "gw.toml") -> Path:
    port = http_port if http_port is not None else free_port()
    path = tmp_path / name
    path.write_text(
        f'[storage]\ndir = "{state}"\n\n[products]\ndir = "{PRODUCTS_DIR}"\n\n'
        f'[http]\nlisten = "127.0.0.1:{port}"\n'
    )
    return path


def populate(db: Path, devices: list[DeviceRecord], events: list[NewEvent]) -> None:
    """A database as the daemon writes it, through the Store API."""
    store = Store(db, StoreSettings())
    store.open()
    try:
        for record in devices:
            store.save_device(record)
        for event in events:
            store.add_event(event)
    finally:
        store.close()


def device(device_id: str, product_id: str = "thermostat", online: bool = True, last_seen_ms: int = T0_MS,
           state: dict[str, Any] | None = None) -> DeviceRecord:
    return DeviceRecord(device_id, product_id, online, state or {"temperature": 21}, {}, T0_MS - 60_000, last_seen_ms)


def event(device_id: str, name: str, level: str = "info", at_ms: int = T0_MS, **data: Any) -> NewEvent:
    return NewEvent(device_id, "thermostat", name, level, True, data, at_ms, at_ms)


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def query(db: Path, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True, timeout=10)
    try:
        return conn.execute(sql, args).fetchall()
    finally:
        conn.close()


def aside_files(state: Path) -> list[Path]:
    return sorted(state.glob(f"{DB_FILENAME}.before-restore-*"))


def leftovers(directory: Path) -> list[str]:
    """Temporary files a command may have left behind."""
    return sorted(p.name for p in directory.iterdir() if p.name.startswith(".") or p.name.endswith(".tmp"))


@pytest.fixture
def live(tmp_path: Path) -> tuple[Path, Path]:
    """(config file, database) of a stopped gateway with two devices and three events."""
    state = tmp_path / "state"
    db = state / DB_FILENAME
    populate(db, [device("thermo-1"), device("lamp-1", "light", online=False)],
             [event("thermo-1", "temperature_alert", "warning", T0_MS + i, temperature=38.5 + i) for i in range(3)])
    return write_config(tmp_path, state), db


# ----------------------------------------------------------------------------- exit codes


def test_check_config_exit_codes(tmp_path: Path) -> None:
    good = write_config(tmp_path, tmp_path / "state")
    assert run_cli("check-config", "--config", str(good)).returncode == 0

    bad = tmp_path / "bad.toml"
    bad.write_text('[storage]\ndir = "/tmp/x"\nbatch_interval_s = "soon"\n')
    result = run_cli("check-config", "--config", str(bad))
    assert result.returncode == 1
    assert "storage.batch_interval_s: must be a number" in result.stderr

    products = tmp_path / "products"
    products.mkdir()
    (products / "broken.json").write_text("{")
    result = run_cli("check-config", "--config", str(good), env={"DEVICEAGENTD_PRODUCTS_DIR": str(products)})
    assert result.returncode == 1
    assert "broken.json" in result.stderr

    result = run_cli("check-config", "--no-such-option")
    assert result.returncode == 2
    assert "unrecognized arguments" in result.stderr
    result = run_cli("frobnicate")
    assert result.returncode == 2
    assert "invalid choice" in result.stderr


def test_usage_errors_of_the_operator_commands_exit_2(live: tuple[Path, Path]) -> None:
    config, _ = live
    for args, message in (
        (["backup"], "the following arguments are required: FILE"),
        (["restore"], "the following arguments are required: FILE"),
        (["events", "--limit", "0"], "must be between 1 and 10000"),
        (["events", "--limit", "many"], "is not a whole number"),
        (["events", "--level", "catastrophic"], "invalid choice"),
        (["devices", "--color"], "unrecognized arguments"),
    ):
        result = run_cli(*args, "--config", str(config))
        assert result.returncode == 2, args
        assert message in result.stderr, args


def test_a_bad_configuration_fails_the_operator_commands_with_its_problems(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[storage]\ndirr = 'x'\n")
    for args in (["backup", str(tmp_path / "b.db")], ["restore", str(tmp_path / "b.db")], ["devices"], ["events"]):
        result = run_cli(*args, "--config", str(bad))
        assert result.returncode == 1, args
        assert "storage.dirr: unknown key" in result.stderr, args


# ------------------------------------------------------------------------------------ backup


WRITER = r"""
import json, sqlite3, sys
from pathlib import Path
db, stop, batch = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
conn = sqlite3.connect(db, isolation_level=None, timeout=30)
n = 0
while not stop.exists():
    conn.execute("BEGIN IMMEDIATE")
    conn.executemany(
        "INSERT INTO events (device_id, product_id, event, level, declared, data, ts_ms, received_at_ms, source)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [("busy-1", "thermostat", "tick", "info", 0, json.dumps({"batch": n, "i": i, "pad": "x" * 200}),
          1770000000000 + n, 1770000000000 + n, "device") for i in range(batch)])
    conn.execute("COMMIT")
    n += 1
    if n == 1:
        print("writing", flush=True)
conn.close()
"""
WRITER_BATCH = 200


def committed_batches(db: Path) -> int:
    rows = query(db, "SELECT MAX(json_extract(data, '$.batch')) FROM events WHERE event = 'tick'")
    return -1 if rows[0][0] is None else int(rows[0][0])


def check_consistent(db: Path) -> int:
    """Every batch the writer committed is in the copy whole; returns how many batches."""
    assert query(db, "PRAGMA integrity_check") == [("ok",)]
    partial = query(db, "SELECT json_extract(data, '$.batch') AS b, COUNT(*) FROM events WHERE event = 'tick' "
                        "GROUP BY b HAVING COUNT(*) != ?", WRITER_BATCH)
    assert partial == []
    (batches, highest), = query(db, "SELECT COUNT(DISTINCT json_extract(data, '$.batch')), "
                                    "MAX(json_extract(data, '$.batch')) FROM events WHERE event = 'tick'")
    assert batches == highest + 1  # no batch missing in the middle either
    return int(batches)


def wait_for(predicate: Any, timeout: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(0.02)


def test_backup_while_another_process_writes_is_consistent_and_restorable(
    tmp_path: Path, live: tuple[Path, Path]
) -> None:
    config, db = live
    stop = tmp_path / "stop-writer"
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(db), str(stop), str(WRITER_BATCH)],
                              stdout=subprocess.PIPE, text=True)
    backups = [tmp_path / f"backup-{i}.db" for i in range(3)]
    try:
        assert writer.stdout is not None and writer.stdout.readline().strip() == "writing"
        copied: list[int] = []
        for target in backups:
            result = run_cli("backup", str(target), "--config", str(config))
            assert result.returncode == 0, result.stderr
            assert f"written to {target}" in result.stdout
            assert "integrity ok" in result.stdout
            copied.append(check_consistent(target))
            # The writer goes on committing past what this copy holds, so the next backup is
            # taken at a later moment of a database that is being written.
            wait_for(lambda: committed_batches(db) >= copied[-1])
        assert copied == sorted(set(copied))
    finally:
        stop.touch()
        assert writer.wait(WAIT_S) == 0

    # A backup is one self-contained file: no -wal next to it, rollback-journal mode.
    for target in backups:
        assert not Path(f"{target}-wal").exists()
        assert query(target, "PRAGMA journal_mode") == [("delete",)]
        assert target.stat().st_mode & 0o077 == 0  # device data: readable by its owner only
    assert leftovers(tmp_path) == []

    # The copy lists the rows of every table it holds.
    events_in_copy = query(backups[1], "SELECT COUNT(*) FROM events")[0][0]
    result = run_cli("backup", str(tmp_path / "again.db"), "--config", str(config))
    assert re.search(r"^\s+devices\s+2$", result.stdout, re.M)
    assert re.search(r"^\s+events\s+\d+$", result.stdout, re.M)

    # Restorable: the live database becomes exactly the chosen backup.
    result = run_cli("restore", str(backups[1]), "--config", str(config))
    assert result.returncode == 0, result.stderr
    assert query(db, "SELECT COUNT(*) FROM events")[0][0] == events_in_copy
    assert check_consistent(db) == check_consistent(backups[1])
    assert query(db, "PRAGMA journal_mode") == [("wal",)]


def test_backup_refuses_to_overwrite_unless_forced(tmp_path: Path, live: tuple[Path, Path]) -> None:
    config, _ = live
    target = tmp_path / "precious.db"
    target.write_text("an older backup the operator wants to keep")
    result = run_cli("backup", str(target), "--config", str(config))
    assert result.returncode == 1
    assert result.stderr.strip() == f"deviceagentd: {target} exists; add --force to overwrite it"
    assert target.read_text() == "an older backup the operator wants to keep"

    result = run_cli("backup", str(target), "--force", "--config", str(config))
    assert result.returncode == 0, result.stderr
    assert query(target, "SELECT device_id FROM devices ORDER BY device_id") == [("lamp-1",), ("thermo-1",)]
    assert leftovers(tmp_path) == []


def test_backup_without_a_database_fails_and_writes_nothing(tmp_path: Path) -> None:
    config = write_config(tmp_path, tmp_path / "never-started")
    target = tmp_path / "out" / "b.db"
    target.parent.mkdir()
    result = run_cli("backup", str(target), "--config", str(config))
    assert result.returncode == 1
    assert "no database at" in result.stderr and "never-started" in result.stderr
    assert result.stderr.count("\n") == 1  # one line
    assert list(target.parent.iterdir()) == []


@pytest.mark.parametrize("where", ["missing-dir", "directory", "live-db"])
def test_backup_to_a_place_it_cannot_write_fails(tmp_path: Path, live: tuple[Path, Path], where: str) -> None:
    config, db = live
    target = {"missing-dir": tmp_path / "no" / "such" / "dir" / "b.db", "directory": tmp_path,
              "live-db": db}[where]
    before = digest(db)
    result = run_cli("backup", str(target), "--force", "--config", str(config))
    assert result.returncode == 1
    expected = {"missing-dir": "cannot write", "directory": "is a directory", "live-db": "is the live database"}
    assert expected[where] in result.stderr
    assert digest(db) == before
    assert leftovers(tmp_path) == []


def damage(db: Path) -> None:
    """Overwrite one b-tree page in the middle of the file with garbage."""
    page = query(db, "PRAGMA page_size")[0][0]
    pages = db.stat().st_size // page
    with db.open("r+b") as fh:
        fh.seek(page * (pages // 2))
        fh.write(b"\xa5" * page)


def test_a_backup_of_a_damaged_database_fails_its_check_and_leaves_no_file(tmp_path: Path) -> None:
    state = tmp_path / "state"
    db = state / DB_FILENAME
    populate(db, [device(f"dev-{i}") for i in range(50)],
             [event("dev-1", "tick", at_ms=T0_MS + i, pad="y" * 300) for i in range(400)])
    damage(db)
    config = write_config(tmp_path, state)
    target = tmp_path / "b.db"
    result = run_cli("backup", str(target), "--config", str(config))
    assert result.returncode == 1
    assert "the database is damaged, no copy written" in result.stderr
    assert not target.exists()
    assert leftovers(tmp_path) == []


# ----------------------------------------------------------------------------------- restore


def test_restore_refuses_while_another_process_has_the_database_open(
    tmp_path: Path, live: tuple[Path, Path]
) -> None:
    config, db = live
    backup = tmp_path / "b.db"
    assert run_cli("backup", str(backup), "--config", str(config)).returncode == 0
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sqlite3, sys; c = sqlite3.connect(sys.argv[1]); "
         "c.execute('SELECT COUNT(*) FROM devices').fetchone(); print('open', flush=True); sys.stdin.read()", str(db)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "open"
        before = digest(db)
        result = run_cli("restore", str(backup), "--config", str(config))
        assert result.returncode == 1
        assert "is open in another process: the daemon is running" in result.stderr
        assert digest(db) == before
        assert aside_files(db.parent) == []
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(WAIT_S)
    assert run_cli("restore", str(backup), "--config", str(config)).returncode == 0


def test_restore_refuses_while_something_serves_the_http_port(tmp_path: Path) -> None:
    state = tmp_path / "state"
    db = state / DB_FILENAME
    populate(db, [device("thermo-1")], [])
    with socket.create_server(("127.0.0.1", 0)) as listener:
        config = write_config(tmp_path, state, http_port=listener.getsockname()[1])
        backup = tmp_path / "b.db"
        assert run_cli("backup", str(backup), "--config", str(config)).returncode == 0
        before = digest(db)
        result = run_cli("restore", str(backup), "--config", str(config))
        assert result.returncode == 1
        assert "accepts connections on 127.0.0.1" in result.stderr
        assert "the daemon seems to be running" in result.stderr
        assert digest(db) == before
        assert aside_files(state) == []


def newer_schema(path: Path) -> None:
    populate(path, [device("from-the-future")], [])
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {known_schema_version() + 1}")
    conn.commit()
    conn.close()


def foreign_database(path: Path) -> None:
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE recipes (name TEXT)")
    conn.commit()
    conn.close()


def lacking_a_table(path: Path) -> None:
    populate(path, [device("x")], [])
    conn = sqlite3.connect(path)
    conn.execute("DROP TABLE events")
    conn.commit()
    conn.close()


def damaged(path: Path) -> None:
    populate(path, [device(f"dev-{i}") for i in range(50)],
             [event("dev-1", "tick", at_ms=T0_MS + i, pad="z" * 300) for i in range(400)])
    damage(path)


@pytest.mark.parametrize(("make", "reason"), [
    (lambda p: p.write_text("deviceagentd backup? no, a shopping list\n" * 200), "file is not a database"),
    (lambda p: p.write_bytes(b""), "not a deviceagentd database (no schema version)"),
    (foreign_database, "not a deviceagentd database (no schema version)"),
    (newer_schema, f"has schema version {known_schema_version() + 1}, but this deviceagentd knows versions up to"),
    (lacking_a_table, "not a deviceagentd database (schema version"),
    (damaged, "fails SQLite's integrity check"),
    (None, "no backup file at"),
], ids=["text", "empty", "foreign", "newer-schema", "lacking-table", "damaged", "missing"])
def test_restore_refuses_a_file_that_is_not_a_usable_backup(
    tmp_path: Path, live: tuple[Path, Path], make: Any, reason: str
) -> None:
    config, db = live
    candidate = tmp_path / "candidate.db"
    if make is not None:
        make(candidate)
    before = digest(db)
    result = run_cli("restore", str(candidate), "--config", str(config))
    assert result.returncode == 1
    assert reason in result.stderr
    assert result.stderr.count("\n") == 1
    assert digest(db) == before
    assert aside_files(db.parent) == []
    assert query(db, "SELECT COUNT(*) FROM devices") == [(2,)]


def test_restore_keeps_the_current_database_aside(tmp_path: Path, live: tuple[Path, Path]) -> None:
    config, db = live
    other_state = tmp_path / "other"
    populate(other_state / DB_FILENAME, [device("only-in-backup")], [event("only-in-backup", "hello")])
    backup = tmp_path / "b.db"
    other_config = write_config(tmp_path, other_state, name="other.toml")
    assert run_cli("backup", str(backup), "--config", str(other_config)).returncode == 0

    result = run_cli("restore", str(backup), "--config", str(config))
    assert result.returncode == 0, result.stderr
    [aside] = aside_files(db.parent)
    assert f"the previous database is kept as {aside}" in result.stdout
    # systemctl only where systemd runs the installed unit; else the command that starts it here.
    start = "systemctl start deviceagentd" if managed_by_systemd() else f"deviceagentd run --config {config}"
    assert f"start the daemon again: {start}\n" in result.stdout
    assert ("systemctl" in result.stdout) == managed_by_systemd()
    assert query(aside, "SELECT device_id FROM devices ORDER BY device_id") == [("lamp-1",), ("thermo-1",)]
    assert query(aside, "PRAGMA integrity_check") == [("ok",)]
    assert not Path(f"{aside}-wal").exists()
    assert query(db, "SELECT device_id FROM devices") == [("only-in-backup",)]
    assert leftovers(db.parent) == []


def test_restore_without_a_current_database_creates_it(tmp_path: Path, live: tuple[Path, Path]) -> None:
    config, _ = live
    backup = tmp_path / "b.db"
    assert run_cli("backup", str(backup), "--config", str(config)).returncode == 0
    fresh_state = tmp_path / "new-gateway" / "state"
    fresh_config = write_config(tmp_path, fresh_state, name="new.toml")
    result = run_cli("restore", str(backup), "--config", str(fresh_config))
    assert result.returncode == 0, result.stderr
    assert "kept as" not in result.stdout
    store = Store(fresh_state / DB_FILENAME, StoreSettings())
    store.open()
    try:
        assert [d.device_id for d in store.load_devices()] == ["lamp-1", "thermo-1"]
    finally:
        store.close()


def test_restore_refuses_a_wal_left_without_its_database(tmp_path: Path, live: tuple[Path, Path]) -> None:
    config, _ = live
    backup = tmp_path / "b.db"
    assert run_cli("backup", str(backup), "--config", str(config)).returncode == 0
    state = tmp_path / "s2"
    state.mkdir()
    (state / f"{DB_FILENAME}-wal").write_bytes(b"\x37\x7f\x06\x82" + b"\0" * 28)
    result = run_cli("restore", str(backup), "--config", str(write_config(tmp_path, state, name="s2.toml")))
    assert result.returncode == 1
    assert "is there without its database" in result.stderr
    assert not (state / DB_FILENAME).exists()


@pytest.mark.parametrize("how", ["garbage", "damaged-pages"])
def test_restore_over_a_damaged_current_database_refuses_and_says_what_to_do(
    tmp_path: Path, live: tuple[Path, Path], how: str
) -> None:
    config, db = live
    backup = tmp_path / "b.db"
    assert run_cli("backup", str(backup), "--config", str(config)).returncode == 0
    if how == "garbage":
        db.write_bytes(b"this is no longer a database " * 300)
    else:
        populate(db, [], [event("thermo-1", "tick", at_ms=T0_MS + i, pad="q" * 300) for i in range(400)])
        damage(db)
    before = digest(db)
    result = run_cli("restore", str(backup), "--config", str(config))
    assert result.returncode == 1
    assert "nothing restored" in result.stderr
    assert f"move {db} and its -wal/-shm away yourself, then restore again" in result.stderr
    assert digest(db) == before
    assert aside_files(db.parent) == []
    assert leftovers(db.parent) == []

    for suffix in ("", "-wal", "-shm"):
        if Path(f"{db}{suffix}").exists():
            Path(f"{db}{suffix}").rename(tmp_path / f"damaged.db{suffix}")
    assert run_cli("restore", str(backup), "--config", str(config)).returncode == 0
    assert query(db, "SELECT COUNT(*) FROM devices") == [(2,)]


def test_an_older_backup_is_restored_and_the_daemon_store_migrates_it(
    tmp_path: Path, live: tuple[Path, Path]
) -> None:
    config, db = live
    old = tmp_path / "v1.db"
    conn = sqlite3.connect(old, isolation_level=None)
    migrate(conn, str(old), MIGRATIONS[:1])
    conn.execute("INSERT INTO devices VALUES ('old-1', 'thermostat', 0, '{\"temperature\": 19}', '{}', 1, 2, 'json')")
    conn.close()
    result = run_cli("restore", str(old), "--config", str(config))
    assert result.returncode == 0, result.stderr
    assert f"migrates it from schema version 1 to {known_schema_version()}" in result.stdout
    store = Store(db, StoreSettings())
    store.open()
    try:
        [restored] = store.load_devices()
        assert (restored.device_id, restored.state) == ("old-1", {"temperature": 19})
    finally:
        store.close()
    assert query(db, "PRAGMA user_version") == [(known_schema_version(),)]


def test_the_daemon_refuses_a_newer_database_with_one_line(tmp_path: Path) -> None:
    """What an operator sees after a downgrade: exit 1 and the reason, not a traceback."""
    state = tmp_path / "state"
    newer_schema(state / DB_FILENAME)
    config = write_config(tmp_path, state)
    result = run_cli("run", "--config", str(config),
                     env={"DEVICEAGENTD_MQTT_URL": f"mqtt://127.0.0.1:{free_port()}",
                          "DEVICEAGENTD_VOICE_LISTEN": f"127.0.0.1:{free_port()}"})
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert re.search(rf"cannot start: database \S+ has schema version {known_schema_version() + 1}, but this "
                     rf"deviceagentd only knows versions up to {known_schema_version()}", result.stderr)
    assert query(state / DB_FILENAME, "PRAGMA user_version") == [(known_schema_version() + 1,)]
    assert query(state / DB_FILENAME, "SELECT device_id FROM devices") == [("from-the-future",)]
    # it never had a database open, so it must not claim to have stored anything
    assert "all accepted events are stored" not in result.stderr


# ------------------------------------------------- the real daemon: listing, backup, restore


async def start_gateway(broker: MosquittoBroker, state: Path) -> DaemonProcess:
    proc = spawn_daemon(broker.url, state, mqtt_client_id=unique("gw-ops"))
    await asyncio.to_thread(proc.wait_http)
    return proc


def http_status(proc: DaemonProcess, path: str) -> int:
    try:
        with urllib.request.urlopen(proc.base_url + path, timeout=5) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


async def simulated(broker: MosquittoBroker, product_id: str, device_id: str) -> SimulatedDevice:
    sim = SimulatedDevice(load_spec_file(PRODUCTS_DIR / f"{product_id}.json"), device_id,
                          SimulatorOptions(url=broker.url, heartbeat_s=0, seed=1))
    await asyncio.wait_for(sim.start(), WAIT_S)
    return sim


async def until_stored(db: Path, sql: str, *args: Any) -> None:
    deadline = time.monotonic() + WAIT_S
    while not (db.exists() and query(db, sql, *args)):
        if time.monotonic() > deadline:
            raise AssertionError(f"never stored: {sql} {args}")
        await asyncio.sleep(0.05)


async def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(run_cli, *args)


async def test_listing_backup_and_restore_with_the_real_daemon(broker: MosquittoBroker, tmp_path: Path) -> None:
    state = tmp_path / "state"
    db = state / DB_FILENAME
    thermo, lamp = unique("ops-thermo"), unique("ops-lamp")
    proc = await start_gateway(broker, state)
    try:
        config = write_config(tmp_path, state, http_port=int(proc.base_url.rsplit(":", 1)[1]))
        first = await simulated(broker, "thermostat", thermo)
        await first.emit_event("temperature_alert", {"temperature": 38.5})
        await until_stored(db, "SELECT 1 FROM events WHERE device_id = ? AND event = 'temperature_alert'", thermo)
        # Device rows are saved on the registry's own tick, apart from events.
        await until_stored(db, "SELECT 1 FROM devices WHERE device_id = ?", thermo)

        # devices / events read the file while the daemon writes it.
        table = await cli("devices", "--config", str(config))
        assert table.returncode == 0, table.stderr
        header, *rows = table.stdout.splitlines()
        assert header.split() == ["DEVICE", "PRODUCT", "ONLINE", "LAST", "SEEN"]
        [row] = [r for r in rows if r.startswith(thermo)]
        assert row.split()[1:3] == ["thermostat", "yes"] and row.endswith("ago)")
        listed = json.loads((await cli("devices", "--json", "--config", str(config))).stdout)
        [mine] = [d for d in listed["devices"] if d["deviceId"] == thermo]
        assert (mine["productId"], mine["online"], mine["state"]["mode"]) == ("thermostat", True, "auto")
        events = json.loads((await cli("events", thermo, "--json", "--config", str(config))).stdout)["events"]
        alert = next(e for e in events if e["event"] == "temperature_alert")
        assert (alert["level"], alert["data"], alert["declared"]) == ("warning", {"temperature": 38.5}, True)
        events_table = (await cli("events", thermo, "--level", "warning", "--config", str(config))).stdout
        assert events_table.splitlines()[0].split() == ["TIME", "DEVICE", "EVENT", "LEVEL", "DATA"]
        assert re.search(rf"{thermo}\s+temperature_alert\s+warning\s+\{{\"temperature\": 38.5\}}", events_table)

        backup = tmp_path / "gateway.db"
        result = await cli("backup", str(backup), "--config", str(config))
        assert result.returncode == 0, result.stderr

        second = await simulated(broker, "light", lamp)
        await until_stored(db, "SELECT 1 FROM devices WHERE device_id = ?", lamp)
        refused = await cli("restore", str(backup), "--config", str(config))
        assert refused.returncode == 1
        assert "the daemon is running" in refused.stderr
        assert query(db, "SELECT 1 FROM devices WHERE device_id = ?", lamp) == [(1,)]
        assert aside_files(state) == []

        await first.stop()
        await second.stop()
        assert await asyncio.to_thread(proc.terminate) == 0
    finally:
        if proc.process.poll() is None:
            proc.process.kill()
            proc.process.wait(10)

    result = await cli("restore", str(backup), "--config", str(config))
    assert result.returncode == 0, result.stderr
    [aside] = aside_files(state)
    assert query(aside, "SELECT 1 FROM devices WHERE device_id = ?", lamp) == [(1,)]

    # The daemon started again serves the restored data.
    proc = await start_gateway(broker, state)
    try:
        assert await asyncio.to_thread(http_status, proc, f"/api/devices/{thermo}") == 200
        assert await asyncio.to_thread(http_status, proc, f"/api/devices/{lamp}") == 404
        _, body = await asyncio.to_thread(proc.get_json, f"/api/devices/{thermo}/events")
        assert "temperature_alert" in [e["event"] for e in body["events"]]
    finally:
        assert await asyncio.to_thread(proc.terminate) == 0


# ------------------------------------------------------------------ devices / events (Store)


def test_devices_and_events_on_an_empty_database(tmp_path: Path) -> None:
    state = tmp_path / "state"
    populate(state / DB_FILENAME, [], [])
    config = write_config(tmp_path, state)
    for args, text, empty in ((["devices"], "no devices", {"devices": []}), (["events"], "no events", {"events": []})):
        result = run_cli(*args, "--config", str(config))
        assert (result.returncode, result.stdout) == (0, text + "\n")
        result = run_cli(*args, "--json", "--config", str(config))
        assert result.returncode == 0
        assert json.loads(result.stdout) == empty


def test_devices_and_events_without_a_database_fail(tmp_path: Path) -> None:
    config = write_config(tmp_path, tmp_path / "nothing-here")
    for args in (["devices"], ["events"]):
        result = run_cli(*args, "--config", str(config))
        assert result.returncode == 1
        assert "no database at" in result.stderr
    assert not (tmp_path / "nothing-here").exists()


def test_the_config_can_come_from_the_environment(live: tuple[Path, Path]) -> None:
    config, _ = live
    result = run_cli("devices", env={CONFIG_PATH_ENV: str(config)})
    assert result.returncode == 0
    assert "thermo-1" in result.stdout


def test_state_commands_fall_back_to_the_installed_config(
    tmp_path: Path, live: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`sudo deviceagentd devices` on a gateway reads the installed daemon's database; a named
    config ($DEVICEAGENTD_CONFIG or --config) still wins."""
    from deviceagentd import cli

    config, _ = live
    monkeypatch.delenv(CONFIG_PATH_ENV, raising=False)
    for name in [k for k in os.environ if k.startswith("DEVICEAGENTD_")]:
        monkeypatch.delenv(name)
    monkeypatch.setattr(cli, "INSTALLED_CONFIG", config)
    assert cli.main(["devices"]) == 0
    assert "thermo-1" in capsys.readouterr().out

    elsewhere = write_config(tmp_path, tmp_path / "elsewhere", name="elsewhere.toml")
    monkeypatch.setenv(CONFIG_PATH_ENV, str(elsewhere))
    assert cli.main(["devices"]) == 1
    assert "elsewhere" in capsys.readouterr().err
    monkeypatch.delenv(CONFIG_PATH_ENV)
    assert cli.main(["devices", "--config", str(elsewhere)]) == 1
    capsys.readouterr()

    # check-config keeps its documented default: the built-in defaults, not the installed file.
    monkeypatch.setattr(cli, "INSTALLED_CONFIG", tmp_path / "bad-installed.toml")
    (tmp_path / "bad-installed.toml").write_text("this is not toml")
    assert cli.main(["check-config"]) == 0
    assert "# effective configuration (<defaults>" in capsys.readouterr().out


def test_events_filters_order_and_limit(tmp_path: Path) -> None:
    state = tmp_path / "state"
    events = [event("a-1", "tick", "info", T0_MS + i, n=i) for i in range(25)]
    events += [event("b-1", "overheat", "error", T0_MS + 100, temperature=90),
               event("a-1", "door", "alert", T0_MS + 101, open=True),
               event("a-1", "overheat", "warning", T0_MS + 102, temperature=70)]
    populate(state / DB_FILENAME, [device("a-1"), device("b-1")], events)
    config = str(write_config(tmp_path, state))

    def names(*args: str) -> list[tuple[str, str, str]]:
        result = run_cli("events", *args, "--json", "--config", config)
        assert result.returncode == 0, result.stderr
        return [(e["deviceId"], e["event"], e["level"]) for e in json.loads(result.stdout)["events"]]

    everything = names()
    assert len(everything) == 20  # the default limit
    assert everything[:3] == [("a-1", "overheat", "warning"), ("a-1", "door", "alert"), ("b-1", "overheat", "error")]
    assert names("b-1") == [("b-1", "overheat", "error")]
    assert names("a-1", "--level", "warning", "--level", "alert") == [("a-1", "overheat", "warning"),
                                                                       ("a-1", "door", "alert")]
    assert names("--event", "overheat") == [("a-1", "overheat", "warning"), ("b-1", "overheat", "error")]
    assert len(names("a-1", "--limit", "100")) == 27
    assert names("a-1", "-n", "1") == [("a-1", "overheat", "warning")]
    assert names("nobody") == []
    result = run_cli("events", "nobody", "--config", config)
    assert (result.returncode, result.stdout) == (0, "no events\n")

    table = run_cli("events", "--limit", "2", "--config", config).stdout.splitlines()
    assert len(table) == 3
    assert re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d  a-1\s+overheat\s+warning\s+\{\"temperature\": 70\}$", table[1])


def test_table_output_escapes_control_characters_and_shortens_data(tmp_path: Path) -> None:
    state = tmp_path / "state"
    sneaky = "lamp-\x1b[2J-1"
    populate(state / DB_FILENAME, [device(sneaky, "light")],
             [event(sneaky, "note", text="\x1b]0;owned\x07" + "long " * 40)])
    config = str(write_config(tmp_path, state))
    devices = run_cli("devices", "--config", config).stdout
    events = run_cli("events", "--config", config).stdout
    for output in (devices, events):
        assert "\x1b" not in output and "\x07" not in output
        assert "lamp-\\x1b[2J-1" in output
    data = events.splitlines()[1].split("note", 1)[1].split("info", 1)[1].strip()
    assert data.startswith('{"text": "\\u001b]0;owned\\u0007long') and data.endswith("…")
    assert len(data) <= 80  # shortened; --json has it whole
    full = json.loads(run_cli("events", "--json", "--config", config).stdout)["events"][0]
    assert full["data"]["text"].endswith("long " * 3)
    assert full["deviceId"] == sneaky


def test_listing_never_changes_the_database(live: tuple[Path, Path]) -> None:
    config, db = live
    before = digest(db)
    for args in (["devices"], ["devices", "--json"], ["events"], ["events", "thermo-1", "--json"]):
        assert run_cli(*args, "--config", str(config)).returncode == 0
    assert digest(db) == before


# ------------------------------------------------------------------- docs/operations.md


@pytest.fixture
def operations_doc() -> Iterator[str]:
    yield OPERATIONS_DOC.read_text()


def exported_metric_names(tmp_path: Path) -> set[str]:
    # With the uplink on, so its series (registered only then) are exported too.
    config = load_config(None, {"DEVICEAGENTD_STORAGE_DIR": str(tmp_path),
                                "DEVICEAGENTD_PRODUCTS_DIR": str(PRODUCTS_DIR),
                                "DEVICEAGENTD_UPLINK_URL": "mqtt://127.0.0.1:1", "DEVICEAGENTD_UPLINK_SITE_ID": "s"})
    daemon = Daemon(config, load_catalog(PRODUCTS_DIR))
    return set(re.findall(r"^# TYPE (\S+) ", daemon.metrics.render(), re.M))


def test_operations_doc_lists_every_metric(tmp_path: Path, operations_doc: str) -> None:
    names = exported_metric_names(tmp_path)
    assert len(names) > 15
    missing = sorted(name for name in names if f"`{name}" not in operations_doc)
    assert not missing, f"metrics not described in docs/operations.md: {missing}"
    mentioned = set(re.findall(r"`(deviceagentd_[a-z_]+)", operations_doc))
    assert mentioned <= names, f"docs/operations.md names metrics that do not exist: {mentioned - names}"


def test_operations_doc_commands_and_keys_exist(operations_doc: str) -> None:
    subcommands = set(next(a for a in build_parser()._actions if a.dest == "command").choices or {})
    blocks = "\n".join(re.findall(r"^```[a-z]*\n(.*?)^```", operations_doc, re.M | re.S))
    used = set(re.findall(r"^\s*(?:sudo )?deviceagentd ([a-z][a-z-]*)", blocks, re.M))
    used |= set(re.findall(r"`deviceagentd ([a-z][a-z-]*)", operations_doc))
    assert {"backup", "restore", "devices", "events", "check-config"} <= used
    assert used <= subcommands, f"unknown commands in docs/operations.md: {used - subcommands}"

    sections = {key.split(".")[0] for key in config_keys()}
    dotted = {k for k in re.findall(r"`([a-z_]+(?:\.[a-z_]+)+)`", operations_doc) if k.split(".")[0] in sections}
    assert dotted, "expected configuration keys in docs/operations.md"
    unknown = dotted - set(config_keys())
    assert not unknown, f"docs/operations.md names keys that do not exist: {unknown}"

    envs = set(re.findall(r"\bDEVICEAGENTD_[A-Z_]+", operations_doc))
    valid = {env_name(key) for key in config_keys()} | {CONFIG_PATH_ENV}
    assert envs <= valid, f"docs/operations.md names environment variables that do not exist: {envs - valid}"
