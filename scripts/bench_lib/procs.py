"""The processes of a run: the private broker, daemons, helper processes, and /proc readings.

The broker and the daemon come from the test helpers (`tests/mosquitto_broker.py`,
`tests/daemon_harness.py`), so the benchmark runs exactly what the tests run.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import aiohttp

REPO = Path(__file__).resolve().parents[2]
if str(REPO / "tests") not in sys.path:
    sys.path.insert(0, str(REPO / "tests"))

from daemon_harness import DaemonProcess, daemon_env, spawn_daemon  # noqa: E402
from mosquitto_broker import MosquittoBroker, free_port, start_broker  # noqa: E402

from bench_lib.mqttc import BenchClient  # noqa: E402
from bench_lib.prom import Scrape  # noqa: E402

__all__ = ["BATCH_INTERVAL_S", "DaemonClient", "DaemonProcess", "Helper", "MosquittoBroker", "start_broker"]

# The product default; the test harness uses 0.05 s, which would hide what batching costs.
BATCH_INTERVAL_S = 1.0
PROBE_DEVICE = "bench-probe"


def daemon_overrides() -> dict[str, Any]:
    return {"storage_batch_interval_s": BATCH_INTERVAL_S, "log_level": "info"}


# --------------------------------------------------------------------------- daemons


def start_daemon(broker: MosquittoBroker, state_dir: Path) -> DaemonProcess:
    """`python -m deviceagentd run` as a subprocess; returns once its HTTP API answers."""
    log = state_dir / "daemon.log"
    if log.exists():  # a restart on the same state dir: keep the previous run's log
        log.rename(state_dir / f"daemon.{time.time_ns()}.log")
    proc = spawn_daemon(broker.url, state_dir, **daemon_overrides())
    proc.wait_http(timeout=30.0)
    return proc


@dataclass
class ReadyRun:
    seconds: float
    process: subprocess.Popen[bytes]


def start_until_ready(broker: MosquittoBroker, state_dir: Path, timeout_s: float = 30.0) -> ReadyRun:
    """Start the daemon the way systemd does (Type=notify) and time Popen → READY=1."""
    state_dir.mkdir(parents=True, exist_ok=True)
    sock_path = state_dir / "notify.sock"
    with contextlib.suppress(FileNotFoundError):
        sock_path.unlink()
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(sock_path))
        env = {**os.environ, **daemon_env(broker.url, state_dir, free_port(), **daemon_overrides())}
        env["NOTIFY_SOCKET"] = str(sock_path)
        with (state_dir / "daemon.log").open("ab") as log:
            started = time.monotonic()
            process = subprocess.Popen([sys.executable, "-m", "deviceagentd", "run"], env=env, stdout=log,
                                       stderr=subprocess.STDOUT, cwd=REPO)
        return ReadyRun(wait_ready(sock, process, started, timeout_s, state_dir / "daemon.log"), process)


def wait_ready(sock: socket.socket, process: subprocess.Popen[bytes], started: float, timeout_s: float,
               log_path: Path) -> float:
    """Seconds from `started` (monotonic) to the READY=1 datagram on the bound notify socket;
    kills the daemon and raises RuntimeError when it does not come within `timeout_s`."""
    deadline = started + timeout_s
    while True:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            message = sock.recv(4096)
        except TimeoutError:
            process.kill()
            process.wait()
            raise RuntimeError(f"no READY=1 within {timeout_s:.0f} s; see {log_path}") from None
        if b"READY=1" in message.split(b"\n"):
            return time.monotonic() - started


def stop_process(process: subprocess.Popen[bytes], timeout_s: float = 15.0) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def interpreter_start_s() -> float:
    started = time.monotonic()
    subprocess.run([sys.executable, "-c", "pass"], check=True)
    return time.monotonic() - started


DAEMON_IMPORTS = "import uvloop, aiohttp.web, gmqtt, sdnotify, deviceagentd.cli, deviceagentd.daemon"


def import_time_s() -> float:
    """Interpreter start plus the daemon's imports, without running it (`os._exit`: the
    interpreter's own teardown of ~400 modules would add 30-100 ms that READY never pays)."""
    started = time.monotonic()
    subprocess.run([sys.executable, "-c", f"{DAEMON_IMPORTS}\nimport os\nos._exit(0)"], check=True, cwd=REPO)
    return time.monotonic() - started


def import_rss_kib() -> int:
    """VmRSS of an interpreter that only imported the daemon's modules: where idle memory goes."""
    report = "for line in open('/proc/self/status'):\n    line.startswith('VmRSS:') and print(line.split()[1])"
    code = f"{DAEMON_IMPORTS}\n{report}"
    out = subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO, capture_output=True, text=True)
    return int(out.stdout.strip())


# --------------------------------------------------------------------------- profiling


def py_spy() -> str | None:
    """py-spy next to our interpreter (`.venv/bin/pip install py-spy`) or on PATH."""
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.exists() else shutil.which("py-spy")


@contextlib.asynccontextmanager
async def profiled(pid: int, out: Path | None) -> AsyncIterator[None]:
    """Sample `pid` with py-spy while the block runs (collapsed stacks in `out`); no-op without `out`."""
    binary = py_spy() if out is not None else None
    if out is None or binary is None:
        yield
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    process = await asyncio.create_subprocess_exec(
        binary, "record", "--pid", str(pid), "--rate", "200", "--threads", "--format", "raw",
        "--output", str(out), stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )
    await asyncio.sleep(0.3)  # attach before the load starts
    try:
        yield
    finally:
        process.send_signal(signal.SIGINT)
        await asyncio.wait_for(process.wait(), 30.0)


# --------------------------------------------------------------------------- /proc


def proc_status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, all threads (10 ms resolution)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def mapped_libraries(pid: int, needles: tuple[str, ...]) -> list[str]:
    """Files mapped into the process whose path contains one of `needles`."""
    found = set()
    for line in Path(f"/proc/{pid}/maps").read_text().splitlines():
        parts = line.split(maxsplit=5)
        if len(parts) == 6 and any(n in parts[5] for n in needles):
            found.add(parts[5])
    return sorted(found)


# --------------------------------------------------------------------------- talking to a daemon


class DaemonClient:
    """HTTP and metrics access to one daemon process."""

    def __init__(self, proc: DaemonProcess, session: aiohttp.ClientSession) -> None:
        self.proc = proc
        self.session = session
        self.base_url = proc.base_url

    @property
    def pid(self) -> int:
        return self.proc.process.pid

    async def get_json(self, path: str) -> Any:
        async with self.session.get(self.base_url + path) as resp:
            resp.raise_for_status()
            return await resp.json()

    async def scrape(self) -> Scrape:
        async with self.session.get(self.base_url + "/metrics") as resp:
            resp.raise_for_status()
            return Scrape.parse(await resp.text())

    async def counter(self, name: str, **labels: str) -> float:
        return (await self.scrape()).value(name, **labels)

    async def wait_counter(self, name: str, target: float, *, labels: dict[str, str] | None = None,
                           poll_s: float = 0.02, stall_s: float = 5.0, timeout_s: float = 300.0) -> tuple[float, float]:
        """Poll until counter `name` reaches `target`. Returns (monotonic time it was seen there
        or the time of the last progress, last value); gives up after `stall_s` without progress."""
        labels = labels or {}
        last_value = -1.0
        last_progress = time.monotonic()
        deadline = last_progress + timeout_s
        while True:
            value = (await self.scrape()).value(name, **labels)
            now = time.monotonic()
            if value >= target:
                return now, value
            if value != last_value:
                last_value, last_progress = value, now
            elif now - last_progress > stall_s or now > deadline:
                return last_progress, value
            await asyncio.sleep(poll_s)

    async def wait_online(self, device_id: str, timeout_s: float = 10.0) -> None:
        """Until GET /api/devices/:id says the device is online."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            async with self.session.get(f"{self.base_url}/api/devices/{device_id}") as resp:
                if resp.status == 200 and (await resp.json())["online"]:
                    return
            await asyncio.sleep(0.05)
        raise RuntimeError(f"simulated device {device_id} did not come online")

    async def wait_subscribed(self, broker_url: str, timeout_s: float = 15.0) -> None:
        """Until the daemon answers a time-sync request: its subscriptions (one SUBSCRIBE) are in place."""
        request = f"device-agent/thermostat/device/{PROBE_DEVICE}/ntp/request"
        response = f"device-agent/thermostat/device/{PROBE_DEVICE}/ntp/response"
        answered = asyncio.Event()
        client = BenchClient(broker_url, f"bench-probe-{uuid.uuid4().hex[:6]}", lambda _t, _p: answered.set())
        await client.connect()
        try:
            await client.subscribe(response, qos=0)
            deadline = time.monotonic() + timeout_s
            while not answered.is_set():
                if time.monotonic() > deadline:
                    raise RuntimeError(f"daemon did not answer time sync within {timeout_s:.0f} s")
                client.publish0(request, json.dumps({"deviceSendTime": time.time_ns() // 1_000_000}).encode())
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(answered.wait(), 0.2)
        finally:
            await client.disconnect()


# --------------------------------------------------------------------------- helper processes


class Helper:
    """A `bench_lib.publisher` / `bench_lib.subscriber` process: JSON spec in argv, a ready line,
    `go` on stdin, one JSON result line."""

    live: ClassVar[set[Helper]] = set()  # killed by kill_all() if a run ends early

    def __init__(self, process: asyncio.subprocess.Process, name: str) -> None:
        self.process = process
        self.name = name
        Helper.live.add(self)

    @classmethod
    def kill_all(cls) -> None:
        for helper in list(cls.live):
            helper.kill()

    @classmethod
    async def start(cls, module: str, spec: dict[str, Any], timeout_s: float = 30.0) -> Helper:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "scripts"), os.environ.get("PYTHONPATH", "")])}
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", f"bench_lib.{module}", json.dumps(spec),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, env=env, cwd=REPO,
        )
        helper = cls(process, module)
        line = await helper._line(timeout_s)
        if not line.get("ready"):
            raise RuntimeError(f"{module} did not start: {line}")
        return helper

    def go(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(b"go\n")

    async def result(self, timeout_s: float = 300.0) -> dict[str, Any]:
        line = await self._line(timeout_s)
        await asyncio.wait_for(self.process.wait(), 10.0)
        Helper.live.discard(self)
        return line

    async def stop(self, timeout_s: float = 30.0) -> dict[str, Any]:
        """SIGTERM (an unlimited publisher stops and reports) and read the result."""
        if self.process.returncode is None:
            self.process.terminate()
        return await self.result(timeout_s)

    def kill(self) -> None:
        if self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()
        Helper.live.discard(self)

    async def _line(self, timeout_s: float) -> dict[str, Any]:
        assert self.process.stdout is not None
        raw = await asyncio.wait_for(self.process.stdout.readline(), timeout_s)
        if not raw:
            await self.process.wait()
            raise RuntimeError(f"{self.name} exited with code {self.process.returncode} without a result")
        result: dict[str, Any] = json.loads(raw)
        return result
