"""Running the real daemon in tests: in-process on the test's loop, or as a subprocess.

The config is built through environment overrides (DEVICEAGENTD_*), the same path an
installer uses, so tests exercise it too.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from mosquitto_broker import free_port

from deviceagentd.agent.types import Provider
from deviceagentd.config import Config, load_config
from deviceagentd.core.catalog import load_catalog
from deviceagentd.daemon import Daemon
from deviceagentd.schedules.runner import Announcer

REPO = Path(__file__).resolve().parent.parent
PRODUCTS_DIR = REPO / "etc" / "deviceagentd" / "products"


def daemon_env(broker_url: str, state_dir: Path, http_port: int, **overrides: Any) -> dict[str, str]:
    """Environment overrides for a test daemon; keyword names are `section_key` in lower case."""
    voice_port = free_port()
    while voice_port == http_port:
        voice_port = free_port()
    env = {
        "DEVICEAGENTD_MQTT_URL": broker_url,
        "DEVICEAGENTD_MQTT_CLIENT_ID": f"test-gw-{uuid.uuid4().hex[:8]}",
        "DEVICEAGENTD_HTTP_LISTEN": f"127.0.0.1:{http_port}",
        "DEVICEAGENTD_VOICE_LISTEN": f"127.0.0.1:{voice_port}",
        # Test gateways use fresh client ids; a short session keeps the shared broker from
        # queueing every later message for each of them. Tests of persistence override it.
        "DEVICEAGENTD_MQTT_SESSION_EXPIRY_S": "30",
        "DEVICEAGENTD_STORAGE_DIR": str(state_dir),
        "DEVICEAGENTD_STORAGE_BATCH_INTERVAL_S": "0.05",
        "DEVICEAGENTD_PRODUCTS_DIR": str(PRODUCTS_DIR),
        "DEVICEAGENTD_MQTT_RECONNECT_MIN_S": "0.2",
        "DEVICEAGENTD_MQTT_RECONNECT_MAX_S": "1",
    }
    for key, value in overrides.items():
        name = "DEVICEAGENTD_" + key.upper()
        env[name] = json.dumps(value) if isinstance(value, list) else str(value)
    return env


@dataclass
class RunningDaemon:
    daemon: Daemon
    config: Config
    base_url: str
    session: aiohttp.ClientSession = field(repr=False)
    voice_url: str = ""

    async def request(self, method: str, path: str, *, json_body: Any = None, data: bytes | None = None,
                      headers: Mapping[str, str] | None = None) -> tuple[int, Any]:
        """One HTTP call; returns (status, decoded JSON or text)."""
        async with self.session.request(method, self.base_url + path, json=json_body, data=data,
                                        headers=headers) as resp:
            text = await resp.text()
            if resp.content_type == "application/json":
                return resp.status, json.loads(text)
            return resp.status, text

    async def stop(self) -> None:
        await self.session.close()
        await self.daemon.stop()


async def start_daemon(broker_url: str, state_dir: Path, *, wait_subscribed: bool = True,
                       provider: Provider | None = None, announcer: Announcer | None = None,
                       **overrides: Any) -> RunningDaemon:
    """`provider` replaces the configured agent provider (a scripted one in tests); `announcer` what
    speaks scheduled words on speakers."""
    port = free_port()
    config = load_config(None, daemon_env(broker_url, state_dir, port, **overrides))
    daemon = Daemon(config, load_catalog(Path(config.products.dir)), provider=provider, announcer=announcer)
    await daemon.start()
    if wait_subscribed:
        await asyncio.wait_for(daemon.link.subscribed.wait(), 10)
    return RunningDaemon(daemon, config, f"http://127.0.0.1:{port}", aiohttp.ClientSession(),
                         f"http://127.0.0.1:{daemon.voice_port}")


async def wait_until(predicate: Any, timeout: float = 5.0, interval: float = 0.02) -> Any:
    """Poll until predicate() is truthy; returns its value or raises AssertionError."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        await asyncio.sleep(interval)


@dataclass
class DaemonProcess:
    """The daemon as a separate process, for signal and crash tests."""

    process: subprocess.Popen[bytes]
    base_url: str
    log_path: Path

    def get_json(self, path: str, timeout: float = 2.0) -> tuple[int, Any]:
        try:
            with urllib.request.urlopen(self.base_url + path, timeout=timeout) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())

    def wait_http(self, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"daemon exited early:\n{self.log_path.read_text()}")
            try:
                self.get_json("/api/health", timeout=0.5)
                return
            except OSError:
                time.sleep(0.05)
        raise AssertionError(f"daemon HTTP not up:\n{self.log_path.read_text()}")

    def terminate(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int:
        self.process.send_signal(sig)
        return self.process.wait(timeout)

    def log(self) -> str:
        return self.log_path.read_text()


def spawn_daemon(broker_url: str, state_dir: Path, *, log_path: Path | None = None,
                 **overrides: Any) -> DaemonProcess:
    """`log_path` defaults to daemon.log in `state_dir` (not wanted there when the state
    directory is a small file system filled on purpose)."""
    port = free_port()
    env = {**os.environ, **daemon_env(broker_url, state_dir, port, **overrides)}
    env.pop("NOTIFY_SOCKET", None)
    state_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_path or state_dir / "daemon.log"
    log_file = log_path.open("wb")
    process = subprocess.Popen([sys.executable, "-m", "deviceagentd", "run"], env=env, stdout=log_file,
                               stderr=subprocess.STDOUT, cwd=REPO)
    log_file.close()
    return DaemonProcess(process, f"http://127.0.0.1:{port}", log_path)
