"""The daemon under a systemd-like supervisor: READY, STATUS, WATCHDOG and STOPPING on $NOTIFY_SOCKET."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from daemon_harness import REPO, daemon_env
from mosquitto_broker import MosquittoBroker, free_port


def _collect(sock: socket.socket, until: str, timeout: float) -> list[str]:
    """Datagrams received until one contains `until` (or the timeout)."""
    messages: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        sock.settimeout(max(0.05, deadline - time.monotonic()))
        try:
            data = sock.recv(4096).decode()
        except TimeoutError:
            break
        messages.append(data)
        if until in data:
            break
    return messages


def test_notify_protocol_ready_status_watchdog_stopping(broker: MosquittoBroker, tmp_path: Path) -> None:
    sock_path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(sock_path))
    env = {**os.environ, **daemon_env(broker.url, tmp_path / "state", free_port())}
    env["NOTIFY_SOCKET"] = str(sock_path)
    # systemd would ask for a ping at least every second; the daemon must ping twice as often.
    env["WATCHDOG_USEC"] = "1000000"
    started = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "deviceagentd", "run"], env=env, cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        before_ready = _collect(sock, "READY=1", timeout=15)
        assert any("READY=1" in m for m in before_ready), before_ready
        ready = next(m for m in before_ready if "READY=1" in m)
        # READY comes once the broker subscription is in place, and says so.
        assert "STATUS=MQTT connected" in ready, ready
        assert time.monotonic() - started < 15

        after = _collect(sock, "never", timeout=2.0)
        assert sum("WATCHDOG=1" in m for m in after) >= 2, after

        proc.send_signal(signal.SIGTERM)
        stopping = _collect(sock, "STOPPING=1", timeout=10)
        assert any("STOPPING=1" in m for m in stopping), stopping
        assert proc.wait(15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        sock.close()
    log = proc.stderr.read().decode() if proc.stderr else ""
    assert "stopped; all accepted events are stored" in log


def test_no_watchdog_pings_without_watchdog_usec(broker: MosquittoBroker, tmp_path: Path) -> None:
    sock_path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(sock_path))
    env = {**os.environ, **daemon_env(broker.url, tmp_path / "state", free_port())}
    env["NOTIFY_SOCKET"] = str(sock_path)
    env.pop("WATCHDOG_USEC", None)
    proc = subprocess.Popen([sys.executable, "-m", "deviceagentd", "run"], env=env, cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert any("READY=1" in m for m in _collect(sock, "READY=1", timeout=15))
        assert not any("WATCHDOG=1" in m for m in _collect(sock, "never", timeout=1.5))
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(15)
        sock.close()


async def test_ready_without_a_broker_after_the_grace_period(tmp_path: Path) -> None:
    """A broker down at boot must not keep READY back forever (systemd would kill us)."""
    from deviceagentd.config import load_config
    from deviceagentd.core.catalog import load_catalog
    from deviceagentd.daemon import Daemon

    config = load_config(None, daemon_env(f"mqtt://127.0.0.1:{free_port()}", tmp_path / "state", free_port()))
    daemon = Daemon(config, load_catalog(Path(config.products.dir)), ready_without_broker_s=0.3)
    await daemon.start()
    try:
        await asyncio.wait_for(daemon.ready.wait(), 5)
        assert not daemon.link.is_connected
        assert "MQTT" in daemon._status_line() and "connection refused" in daemon._status_line()
    finally:
        await daemon.stop()
