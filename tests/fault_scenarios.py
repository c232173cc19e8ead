"""Fault scenarios: real faults under real traffic, counting what the device sent against what
the gateway stored. Used small by tests/test_faults.py and at full size by scripts/faults.

The device is mqtt.js (tests/peers/mqttjs/device.mjs): it publishes numbered QoS 1 events and reports
every PUBACK from the broker. From a PUBACK on, a message is the broker's and the gateway's to
keep; mqtt.js sends again what was not acknowledged. The broker runs with the shipped
Mosquitto snippet's queue limits. The daemon is `python -m deviceagentd run`, as installed.

Counts per scenario: sent (published by the device), acked (by the broker), stored (distinct
events in the database at the end), lost (acked but not stored), duplicated (stored twice:
QoS 1 is at least once), reported (rows the daemon itself said it lost).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import sqlite3
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from daemon_harness import DaemonProcess, spawn_daemon
from mosquitto_broker import MosquittoBroker, start_broker
from node_peers import NodeDevice

REPO = Path(__file__).resolve().parent.parent
SHIPPED_MOSQUITTO_CONF = REPO / "etc" / "mosquitto" / "conf.d" / "deviceagentd.conf"
DB_NAME = "deviceagentd.db"
PRODUCT = "thermostat"
# How the daemon reports rows it could not store (daemon.py, Daemon.stop).
_REPORTED_LOST = re.compile(r"stopped; (\d+) accepted rows were NOT stored")


def shipped_queue_settings() -> str:
    """The queue lines of the Mosquitto snippet the package ships, for the test broker."""
    keep = ("max_queued_messages", "max_queued_bytes", "max_inflight_messages")
    lines = [line.strip() for line in SHIPPED_MOSQUITTO_CONF.read_text().splitlines()]
    return "\n".join(line for line in lines if line.split(" ", 1)[0] in keep)


@dataclass
class FaultResult:
    name: str
    sent: int = 0
    acked: int = 0
    stored: int = 0
    lost: int = 0
    duplicated: int = 0
    reported: int = 0
    peak_pending_rows: int = 0
    """Full disk: the most rows waiting in the daemon's memory while the disk was full."""
    notes: list[str] = field(default_factory=list)

    def row(self) -> str:
        note = "; ".join(self.notes)
        return (f"| {self.name} | {self.sent} | {self.acked} | {self.stored} | {self.lost} | {self.duplicated} | "
                f"{self.reported} | {note} |")


def stored_numbers(db: Path, device_id: str) -> Counter[int]:
    """How often each event number is in the database (read-only, while the daemon may write)."""
    if not db.exists():
        return Counter()
    uri = f"{db.resolve().as_uri()}?mode=ro"
    with contextlib.closing(sqlite3.connect(uri, uri=True, timeout=10)) as conn:
        rows = conn.execute("SELECT data FROM events WHERE device_id = ? AND event = 'fault_seq'", (device_id,))
        return Counter(int(json.loads(data)["n"]) for (data,) in rows)


def reported_lost(log: str) -> int:
    return sum(int(found) for found in _REPORTED_LOST.findall(log))


def rss_kb(pid: int) -> int:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


@dataclass
class Site:
    """A broker with the shipped queue limits, the daemon, and one mqtt.js device."""

    workdir: Path
    broker: MosquittoBroker
    state: Path
    client_id: str
    device_id: str
    daemon: DaemonProcess | None = None
    logs: list[str] = field(default_factory=list)
    peak_wal_kb: int = 0
    starts: int = 0

    @property
    def db(self) -> Path:
        return self.state / DB_NAME

    def start_daemon(self) -> DaemonProcess:
        # Product defaults where they matter (a 1 s batch window); a long session so the broker
        # queues for the daemon while it is away.
        self.starts += 1
        self.daemon = spawn_daemon(self.broker.url, self.state, log_path=self.workdir / f"daemon-{self.starts}.log",
                                   mqtt_client_id=self.client_id, mqtt_session_expiry_s=3600,
                                   storage_batch_interval_s=1.0, mqtt_reconnect_min_s=0.5, mqtt_reconnect_max_s=5)
        self.daemon.wait_http(30)
        return self.daemon

    async def stop_daemon(self, sig: int = signal.SIGTERM) -> int:
        """Signal the daemon and wait for its exit without blocking the loop (the device's
        acknowledgements are read meanwhile)."""
        assert self.daemon is not None
        code = await asyncio.to_thread(self.daemon.terminate, sig, 60)
        self.logs.append(self.daemon.log())
        self.daemon = None
        return code

    def health(self) -> dict[str, Any]:
        assert self.daemon is not None
        try:
            return self.daemon.get_json("/api/health")[1]  # type: ignore[no-any-return]
        except OSError:
            return {}

    async def wait_subscribed(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while not self.health().get("mqtt", {}).get("connected"):
            if time.monotonic() > deadline:
                raise AssertionError("the daemon did not connect to the broker")
            await asyncio.sleep(0.1)

    async def wait_stored(self, wanted: set[int], timeout: float, settle_s: float = 5.0) -> Counter[int]:
        """Until every number in `wanted` is stored, or nothing new was stored for `settle_s`
        (what is missing is not coming), or `timeout`: what is stored."""
        deadline = time.monotonic() + timeout
        wal = self.state / f"{DB_NAME}-wal"
        last: Counter[int] = Counter()
        changed_at = time.monotonic()
        while True:
            with contextlib.suppress(OSError):
                self.peak_wal_kb = max(self.peak_wal_kb, wal.stat().st_size // 1024)
            found = await asyncio.to_thread(stored_numbers, self.db, self.device_id)
            now = time.monotonic()
            if found != last:
                last, changed_at = found, now
            if wanted <= set(found) or now > deadline or now - changed_at > settle_s:
                return found
            await asyncio.sleep(0.25)

    def result(self, name: str, device: NodeDevice, sent: int, found: Counter[int]) -> FaultResult:
        acked = device.acked
        return FaultResult(
            name=name, sent=sent, acked=len(acked), stored=len(found),
            lost=len(acked - set(found)), duplicated=sum(count - 1 for count in found.values()),
            reported=sum(reported_lost(log) for log in self.logs))


@contextlib.asynccontextmanager
async def site(workdir: Path, state: Path | None = None) -> AsyncIterator[Site]:
    workdir.mkdir(parents=True, exist_ok=True)
    broker = start_broker(workdir / "broker", extra_conf=shipped_queue_settings())
    suffix = uuid.uuid4().hex[:8]
    running = Site(workdir, broker, state or workdir / "state", f"gw-fault-{suffix}", f"fault-{suffix}")
    try:
        await asyncio.to_thread(running.start_daemon)
        await running.wait_subscribed()
        yield running
    finally:
        if running.daemon is not None:
            with contextlib.suppress(Exception):
                await running.stop_daemon(signal.SIGKILL)
        broker.stop()


async def _finish(running: Site, device: NodeDevice, count: int, timeout: float) -> Counter[int]:
    """Wait for the device to be acknowledged, then for the daemon to store all of it; stop."""
    with contextlib.suppress(TimeoutError):
        await device.wait_done(timeout)
    found = await running.wait_stored(set(device.acked), timeout)
    await device.stop()
    if running.daemon is not None:
        await running.stop_daemon()
    return found


async def broker_restart(workdir: Path, count: int, rate: int, down_s: float) -> FaultResult:
    """The broker stops (SIGTERM, saving its queues) mid-traffic and comes back `down_s` later."""
    async with site(workdir) as running:
        device = await NodeDevice.start(running.broker.url, PRODUCT, running.device_id, count, rate, run="broker")
        await asyncio.sleep(count / rate / 3)
        running.broker.stop()
        await asyncio.sleep(down_s)
        running.broker.start()
        back = time.monotonic()
        await running.wait_subscribed(60)
        reconnect_s = time.monotonic() - back
        found = await _finish(running, device, count, count / rate * 4 + 30)
        result = running.result(f"broker restart ({down_s:g} s down)", device, count, found)
        result.notes.append(f"daemon back {reconnect_s:.1f} s after the broker")
        return result


async def daemon_restart(workdir: Path, count: int, rate: int, down_s: float, sig: int) -> FaultResult:
    """The daemon is stopped (SIGTERM) or killed (SIGKILL) mid-traffic, restarted `down_s` later."""
    name = "SIGTERM" if sig == signal.SIGTERM else "kill -9"
    async with site(workdir) as running:
        device = await NodeDevice.start(running.broker.url, PRODUCT, running.device_id, count, rate, run=name)
        await asyncio.sleep(count / rate / 3)
        code = await running.stop_daemon(sig)
        await asyncio.sleep(down_s)
        await asyncio.to_thread(running.start_daemon)
        found = await _finish(running, device, count, count / rate * 4 + 30)
        result = running.result(f"daemon {name} ({down_s:g} s down)", device, count, found)
        result.notes.append(f"exit code {code}")
        return result


# ----------------------------------------------------------------------------- full disk


def can_mount_tmpfs() -> str | None:
    """None when a tmpfs can be mounted here, else why not (the reason a test skips with)."""
    if os.geteuid() != 0:
        return "mounting a small tmpfs to fill needs root"
    return None


@contextlib.contextmanager
def small_tmpfs(path: Path, size_kb: int) -> Iterator[Path]:
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kb}k,mode=0700", "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill(path: Path, leave_kb: int) -> Path:
    """A file taking all the space of `path`'s file system but `leave_kb`."""
    stat = os.statvfs(path)
    free = stat.f_bavail * stat.f_frsize
    filler = path / "filler"
    with filler.open("wb") as out:
        out.write(b"\0" * max(0, free - leave_kb * 1024))
    return filler


async def full_disk(workdir: Path, count: int, rate: int, full_s: float, *, sigterm_while_full: bool,
                    size_kb: int = 4096, leave_kb: int = 600) -> FaultResult:
    """Storage on a small tmpfs that fills up under traffic and stays full for `full_s`. Then
    either space comes back (the filler is deleted) or the daemon gets SIGTERM while full and
    is started again once there is space."""
    mount = workdir / "tmpfs"
    with small_tmpfs(mount, size_kb):
        state = mount / "state"
        state.mkdir()
        filler = fill(mount, leave_kb)
        async with site(workdir, state=state) as running:
            assert running.daemon is not None
            device = await NodeDevice.start(running.broker.url, PRODUCT, running.device_id, count, rate,
                                            pad=200, run="full")
            deadline = time.monotonic() + count / rate + 30
            while not running.health().get("storage", {}).get("backpressure"):
                if time.monotonic() > deadline:
                    raise AssertionError("the disk never filled up")
                await asyncio.sleep(0.1)
            full_at = time.monotonic()
            peak_kb = rss_kb(running.daemon.process.pid)
            peak_rows = 0
            while time.monotonic() - full_at < full_s:
                peak_kb = max(peak_kb, rss_kb(running.daemon.process.pid))
                peak_rows = max(peak_rows, int(running.health().get("storage", {}).get("pendingRows") or 0))
                await asyncio.sleep(0.2)
            notes = [f"peak RSS while full {peak_kb / 1024:.0f} MB", f"at most {peak_rows} rows waiting"]
            if sigterm_while_full:
                code = await running.stop_daemon()
                notes.append(f"exit code {code} at SIGTERM while full")
                filler.unlink()
                await asyncio.to_thread(running.start_daemon)
            else:
                filler.unlink()
            found = await _finish(running, device, count, count / rate * 4 + 60)
            notes.append(f"WAL at most {running.peak_wal_kb} kB while catching up")
            name = "full disk, SIGTERM while full" if sigterm_while_full else "full disk, space comes back"
            result = running.result(f"{name} ({full_s:g} s full)", device, count, found)
            result.notes = notes
            result.peak_pending_rows = peak_rows
            return result


# ----------------------------------------------------------------------------- scripts/faults


TABLE_HEAD = ("| fault | sent | acked by the broker | stored | lost | duplicated | reported lost by the daemon "
              "| notes |\n|---|---|---|---|---|---|---|---|")


def full_size(quick: bool) -> list[tuple[str, Any]]:
    """The fault table: (name, coroutine factory taking a work directory)."""
    scale = 0.1 if quick else 1.0

    def n(count: int) -> int:
        return max(500, int(count * scale))

    return [
        ("broker", lambda w: broker_restart(w, count=n(60_000), rate=500, down_s=60 * scale)),
        ("sigterm", lambda w: daemon_restart(w, count=n(60_000), rate=500, down_s=60 * scale, sig=signal.SIGTERM)),
        ("kill9", lambda w: daemon_restart(w, count=n(20_000), rate=1000, down_s=5, sig=signal.SIGKILL)),
        ("disk", lambda w: full_disk(w, count=n(180_000), rate=2000, full_s=90 * scale, sigterm_while_full=False,
                                     size_kb=131072, leave_kb=1024)),
        ("disk-sigterm", lambda w: full_disk(w, count=n(60_000), rate=2000, full_s=20 * scale,
                                             sigterm_while_full=True, size_kb=131072, leave_kb=1024)),
    ]


def main(argv: list[str] | None = None) -> int:
    import argparse
    import tempfile

    parser = argparse.ArgumentParser(prog="scripts/faults", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a tenth of the size (a smoke run of a few minutes)")
    parser.add_argument("--only", help="comma-separated: broker, sigterm, kill9, disk, disk-sigterm")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    args = parser.parse_args(argv)
    scenarios = full_size(args.quick)
    wanted = set(args.only.split(",")) if args.only else {name for name, _ in scenarios}
    unknown = wanted - {name for name, _ in scenarios}
    if unknown:
        parser.error(f"unknown scenario(s): {', '.join(sorted(unknown))}")
    results: list[FaultResult] = []
    print(TABLE_HEAD, flush=True)
    with tempfile.TemporaryDirectory(prefix="deviceagentd-faults-") as scratch:
        for name, scenario in scenarios:
            if name not in wanted:
                continue
            if name.startswith("disk") and can_mount_tmpfs() is not None:
                print(f"| {name} | skipped: {can_mount_tmpfs()} |||||||", flush=True)
                continue
            result = asyncio.run(scenario(Path(scratch) / name))
            results.append(result)
            print(result.row(), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps([vars(r) for r in results], indent=2) + "\n")
    # Any loss where none is allowed fails the run (kill -9 loses up to its batch window by design).
    failed = [r for r in results if r.lost > r.reported and not r.name.startswith("daemon kill -9")]
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
