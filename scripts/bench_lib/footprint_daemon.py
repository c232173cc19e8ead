"""Starting the daemon as systemd would for the `footprint` section.

Unlike the other sections (test harness settings, `python -m deviceagentd`), this runs the
installed entry point `deviceagentd run --config <the shipped deviceagentd.toml>` from `/`
(systemd's default working directory), with `NOTIFY_SOCKET` set (Type=notify) and only the
settings a site must change given as DEVICEAGENTD_* overrides: broker URL, listen ports,
state directory and the products directory. Every other setting is the product default
(batch window 1 s, retention, log level info, MQTT session, ...).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from bench_lib.procs import REPO, proc_status_kib, wait_ready

SHIPPED_CONFIG = REPO / "etc" / "deviceagentd" / "deviceagentd.toml"
PRODUCTS_DIR = REPO / "etc" / "deviceagentd" / "products"
DROP_CACHES = Path("/proc/sys/vm/drop_caches")
READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0


def entry_point() -> list[str]:
    """What ExecStart= runs: the console script next to our interpreter, else `python -m`."""
    script = Path(sys.executable).parent / "deviceagentd"
    return [str(script)] if script.exists() else [sys.executable, "-m", "deviceagentd"]


def proc_io(pid: int) -> dict[str, int]:
    """/proc/<pid>/io: rchar, wchar, syscr, syscw, read_bytes, write_bytes, cancelled_write_bytes."""
    out = {}
    for line in Path(f"/proc/{pid}/io").read_text().splitlines():
        key, _, value = line.partition(":")
        out[key.strip()] = int(value)
    return out


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def drop_page_cache() -> str:
    """Write back dirty pages and drop the page cache; '' when done, else why not."""
    os.sync()
    try:
        DROP_CACHES.write_text("3\n")
    except OSError as exc:
        return f"{DROP_CACHES}: {exc.strerror or exc}"
    return ""


@dataclass
class StartedDaemon:
    process: subprocess.Popen[bytes]
    base_url: str
    log_path: Path
    ready_s: float  # exec → READY=1
    read_bytes: int  # what the process had read from the block device by READY=1
    rss_kib: int  # VmRSS at READY=1

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> int:
        """SIGTERM as `systemctl stop` does, SIGKILL after the timeout; returns the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                return self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
        return self.process.wait()


def site_environment(broker_url: str, state_dir: Path, http_port: int, voice_port: int) -> dict[str, str]:
    # The caller's own DEVICEAGENTD_* settings must not leak into a product-default run.
    env = {k: v for k, v in os.environ.items() if not k.startswith("DEVICEAGENTD_") and k != "NOTIFY_SOCKET"}
    env.update({
        "DEVICEAGENTD_MQTT_URL": broker_url,
        "DEVICEAGENTD_HTTP_LISTEN": f"127.0.0.1:{http_port}",
        "DEVICEAGENTD_VOICE_LISTEN": f"127.0.0.1:{voice_port}",
        "DEVICEAGENTD_STORAGE_DIR": str(state_dir),
        "DEVICEAGENTD_PRODUCTS_DIR": str(PRODUCTS_DIR),
    })
    return env


def start_notified(broker_url: str, state_dir: Path, run_dir: Path,
                   timeout_s: float = READY_TIMEOUT_S) -> StartedDaemon:
    """exec the daemon and wait for READY=1 on our notify socket. `run_dir` holds the socket
    and the log (the journal's stand-in), so neither touches the state directory."""
    run_dir.mkdir(parents=True, exist_ok=True)
    sock_path = run_dir / "notify.sock"
    with contextlib.suppress(FileNotFoundError):
        sock_path.unlink()
    http_port = free_port()
    voice_port = free_port()
    while voice_port == http_port:
        voice_port = free_port()
    env = site_environment(broker_url, state_dir, http_port, voice_port)
    env["NOTIFY_SOCKET"] = str(sock_path)
    log_path = run_dir / "daemon.log"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(sock_path))
        with log_path.open("ab") as log:
            started = time.monotonic()
            process = subprocess.Popen([*entry_point(), "run", "--config", str(SHIPPED_CONFIG)], env=env,
                                       stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd="/")
        ready_s = wait_ready(sock, process, started, timeout_s, log_path)
    io = proc_io(process.pid)
    rss = proc_status_kib(process.pid, "VmRSS")
    return StartedDaemon(process, f"http://127.0.0.1:{http_port}", log_path, ready_s, io["read_bytes"], rss)
