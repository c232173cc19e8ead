"""The daemon as a real process (SPEC §7 and the systemd contract): clean stop on SIGTERM and
SIGINT with every accepted event on disk, kill -9 losing at most the last batch window and
never the file, and refusing to start on a bad configuration or product file."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from daemon_harness import REPO, DaemonProcess, spawn_daemon
from mosquitto_broker import MosquittoBroker
from test_mqtt_support import SEED_STATUS, WAIT_S, RawDevice, forget_session, raw_device, unique

from deviceagentd.mqtt.topics import TopicKind

BURST = 500
DB_NAME = "deviceagentd.db"


def metric(proc: DaemonProcess, name: str, labels: str = "") -> float:
    """One sample from GET /metrics, e.g. metric(p, "deviceagentd_mqtt_messages_in_total", 'kind="event"')."""
    with urllib.request.urlopen(proc.base_url + "/metrics", timeout=5) as resp:
        text = resp.read().decode()
    series = f"{name}{{{labels}}}" if labels else name
    for line in text.splitlines():
        if line.startswith(series + " "):
            return float(line.split()[-1])
    return 0.0


def events_accepted(proc: DaemonProcess) -> float:
    return metric(proc, "deviceagentd_mqtt_messages_in_total", 'kind="event"')


def stored_burst(db: Path, device_id: str) -> list[int]:
    """The `n` of every burst event in the database file itself."""
    conn = sqlite3.connect(db, timeout=10)
    try:
        rows = conn.execute("SELECT json_extract(data, '$.n') FROM events WHERE device_id = ? AND event = 'burst'",
                            (device_id,)).fetchall()
    finally:
        conn.close()
    return [row[0] for row in rows]


def integrity(db: Path) -> str:
    conn = sqlite3.connect(db, timeout=10)
    try:
        result: str = conn.execute("PRAGMA integrity_check").fetchone()[0]
        return result
    finally:
        conn.close()


@asynccontextmanager
async def daemon_process(url: str, state: Path, client_id: str | None = None, keep_session: bool = False,
                         **overrides: Any) -> AsyncIterator[DaemonProcess]:
    client_id = client_id or unique("gw-life")
    proc = spawn_daemon(url, state, mqtt_client_id=client_id, **overrides)
    try:
        await asyncio.to_thread(proc.wait_http)
        await wait_http_status(proc, "/api/health", 200)
        yield proc
    finally:
        if proc.process.poll() is None:
            proc.process.kill()
            proc.process.wait(10)
        if not keep_session:
            await forget_session(url, client_id)


async def wait_http_status(proc: DaemonProcess, path: str, status: int, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        try:
            got, body = await asyncio.to_thread(proc.get_json, path)
        except OSError:
            got, body = 0, None
        if got == status:
            return body
        if time.monotonic() > deadline:
            raise AssertionError(f"{path} answered {got}: {body}\n{proc.log()}")
        await asyncio.sleep(0.1)


async def register(proc: DaemonProcess, device: RawDevice) -> None:
    """Send the online status until the daemon knows the device (the first status may race the
    daemon's SUBSCRIBE right after it connected)."""
    deadline = time.monotonic() + WAIT_S
    while True:
        await device.send(TopicKind.TELEMETRY, SEED_STATUS)
        await asyncio.sleep(0.2)
        status, _ = await asyncio.to_thread(proc.get_json, f"/api/devices/{device.device_id}")
        if status == 200:
            return
        assert time.monotonic() < deadline, proc.log()


async def burst(device: RawDevice, count: int, pause_s: float = 0.0, stop: asyncio.Event | None = None) -> int:
    """Publish `count` QoS 1 events numbered from 0 (fewer if `stop` is set); returns how many."""
    for n in range(count):
        if stop is not None and stop.is_set():
            return n
        await device.send(TopicKind.EVENT, {"type": "event", "data": {"event": "burst", "n": n}})
        if pause_s:
            await asyncio.sleep(pause_s)
    return count


async def wait_accepted(proc: DaemonProcess, count: int) -> None:
    deadline = time.monotonic() + WAIT_S
    while await asyncio.to_thread(events_accepted, proc) < count:
        assert time.monotonic() < deadline, proc.log()
        await asyncio.sleep(0.05)


def assert_clean_log(proc: DaemonProcess) -> None:
    log = proc.log()
    assert "Traceback" not in log, log
    assert " ERROR " not in log, log


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
async def test_a_signal_after_a_burst_stops_cleanly_and_loses_nothing(fresh_broker: MosquittoBroker,
                                                                      tmp_path: Path, sig: signal.Signals) -> None:
    broker = fresh_broker
    state = tmp_path / "state"
    client_id = unique("gw-life")
    async with raw_device(broker.url, "thermostat") as device:
        async with daemon_process(broker.url, state, client_id, keep_session=True) as proc:
            await register(proc, device)
            await burst(device, BURST)
            await device.flush()  # the broker has all of them
            accepted = await asyncio.to_thread(events_accepted, proc)
            code = await asyncio.to_thread(proc.terminate, sig)
            assert code == 0, proc.log()
            assert "stopped; all accepted events are stored" in proc.log()
            assert_clean_log(proc)
        # Everything the daemon had accepted is in the file, without any help from the broker.
        on_disk = stored_burst(state / DB_NAME, device.device_id)
        print(f"{sig.name}: {accepted:.0f} accepted before the signal, {len(on_disk)} on disk after it")
        assert len(on_disk) >= accepted
        assert len(on_disk) == len(set(on_disk))
        # Restarted with the same client id, the broker hands over whatever it still had queued.
        async with daemon_process(broker.url, state, client_id) as again:
            deadline = time.monotonic() + WAIT_S
            while True:
                status, body = await asyncio.to_thread(
                    again.get_json, f"/api/devices/{device.device_id}/events?event=burst&limit=1000")
                assert status == 200
                numbers = sorted(e["data"]["n"] for e in body["events"])
                if len(numbers) >= BURST:
                    break
                assert time.monotonic() < deadline, f"only {len(numbers)} of {BURST} events"
                await asyncio.sleep(0.1)
            assert numbers == list(range(BURST))  # 0 lost, none twice
            status, known = await asyncio.to_thread(again.get_json, f"/api/devices/{device.device_id}")
            assert status == 200
            assert known["state"] == {"temperature": 28, "humidity": 62, "mode": "auto"}
            assert await asyncio.to_thread(again.terminate, signal.SIGTERM) == 0
    assert integrity(state / DB_NAME) == "ok"


async def test_kill_9_during_a_burst_loses_at_most_the_last_batch_window(fresh_broker: MosquittoBroker,
                                                                        tmp_path: Path) -> None:
    broker = fresh_broker
    state = tmp_path / "state"
    batch_s = 0.5
    margin_s = 1.5
    async with raw_device(broker.url, "thermostat") as device:
        async with daemon_process(broker.url, state, storage_batch_interval_s=batch_s) as proc:
            await register(proc, device)
            samples: list[tuple[float, float]] = []  # (time the count was read by, accepted count)
            stop = asyncio.Event()
            sender = asyncio.ensure_future(burst(device, 20_000, pause_s=0.004, stop=stop))

            def settled() -> float:
                """Events accepted more than one batch window (+ margin) ago: these must survive."""
                old = [count for at, count in samples if at <= time.monotonic() - batch_s - margin_s]
                return max(old, default=0.0)

            started = time.monotonic()
            # Run until a good number of events is safely in the past (longer on a slow machine).
            while time.monotonic() - started < 3.0 or settled() < 200:
                assert time.monotonic() - started < 60, f"the burst never got going: {samples[-5:]}"
                count = await asyncio.to_thread(events_accepted, proc)
                samples.append((time.monotonic(), count))
                await asyncio.sleep(0.05)
            assert not sender.done()  # the kill comes in the middle of the burst
            killed_at = time.monotonic()
            proc.process.send_signal(signal.SIGKILL)
            proc.process.wait(10)
            stop.set()
            sent = await asyncio.wait_for(sender, WAIT_S)
            assert sent < 20_000
        required = max(count for at, count in samples if at <= killed_at - batch_s - margin_s)
        assert required >= 200

    # A new daemon (another client id: no redelivery from the broker) opens the same file.
    async with daemon_process(broker.url, state) as again:
        health = await wait_http_status(again, "/api/health", 200)
        assert health["storage"]["healthy"] is True
        status, body = await asyncio.to_thread(
            again.get_json, f"/api/devices/{device.device_id}/events?event=burst&limit=10")
        assert status == 200 and len(body["events"]) == 10
        numbers = stored_burst(state / DB_NAME, device.device_id)
        print(f"kill -9: {samples[-1][1]:.0f} accepted, {required:.0f} required, {len(numbers)} stored")
        assert len(numbers) >= required, (len(numbers), required)
        assert len(numbers) == len(set(numbers))
        assert set(range(int(required))) <= set(numbers)  # in order on one connection
        assert "corrupt" not in again.log()
        assert await asyncio.to_thread(again.terminate, signal.SIGTERM) == 0
    assert not list(state.glob("*.corrupt-*"))
    assert integrity(state / DB_NAME) == "ok"


async def test_sigterm_while_the_broker_is_down(fresh_broker: MosquittoBroker, tmp_path: Path) -> None:
    fresh_broker.stop()
    client_id = unique("gw-life")
    proc = spawn_daemon(fresh_broker.url, tmp_path / "state", mqtt_client_id=client_id)
    try:
        await asyncio.to_thread(proc.wait_http)
        body = await wait_http_status(proc, "/api/health", 503)
        assert body["status"] == "degraded"
        assert await asyncio.to_thread(proc.terminate, signal.SIGTERM) == 0
    finally:
        if proc.process.poll() is None:
            proc.process.kill()
            proc.process.wait(10)


async def test_sigterm_while_a_command_waits(broker: MosquittoBroker, tmp_path: Path) -> None:
    async with raw_device(broker.url, "thermostat") as device, \
            daemon_process(broker.url, tmp_path / "state") as proc:
        await register(proc, device)

        def post() -> int:
            request = urllib.request.Request(
                proc.base_url + f"/api/devices/{device.device_id}/commands", method="POST",
                data=b'{"command": "set_mode", "params": {"mode": "eco"}, "timeoutMs": 60000}',
                headers={"Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(request, timeout=30) as resp:
                    return int(resp.status)
            except urllib.error.HTTPError as exc:
                return exc.code

        waiting = asyncio.ensure_future(asyncio.to_thread(post))
        await device.command()
        code = await asyncio.to_thread(proc.terminate, signal.SIGTERM)
        assert code == 0
        assert await asyncio.wait_for(waiting, WAIT_S) == 503


# --------------------------------------------------------------------------------- refusing to start


def run_module(*args: str, env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("DEVICEAGENTD_")}
    clean.pop("NOTIFY_SOCKET", None)
    clean.update(env)
    return subprocess.run([sys.executable, "-m", "deviceagentd", *args], capture_output=True, text=True,
                          env=clean, cwd=REPO, timeout=timeout)


def test_check_config_with_bad_environment_names_the_key(tmp_path: Path) -> None:
    result = run_module("check-config", env={"DEVICEAGENTD_MQTT_KEEPALIVE_S": "abc",
                                             "DEVICEAGENTD_MQTT_PROTOCOL_VERSION": "3",
                                             "DEVICEAGENTD_STORAGE_DIR": str(tmp_path)})
    assert result.returncode == 1
    assert "DEVICEAGENTD_MQTT_KEEPALIVE_S" in result.stderr
    assert "mqtt.protocol_version" in result.stderr
    assert result.stdout == ""


def test_run_with_bad_environment_refuses_to_start(tmp_path: Path) -> None:
    result = run_module("run", env={"DEVICEAGENTD_MQTT_URL": "tcp://broker", "DEVICEAGENTD_STORAGE_DIR": str(tmp_path)})
    assert result.returncode == 1
    assert "mqtt.url" in result.stderr
    assert not (tmp_path / DB_NAME).exists()


def test_a_bad_product_file_stops_the_daemon_at_start(tmp_path: Path, broker: MosquittoBroker) -> None:
    products = tmp_path / "products"
    products.mkdir()
    (products / "lamp.json").write_text('{"telemetry": {"power": {"type": "switch"}}, '
                                        '"events": {"fault": {"eventType": "fatal"}}}')
    state = tmp_path / "state"
    result = run_module("run", env={"DEVICEAGENTD_PRODUCTS_DIR": str(products),
                                    "DEVICEAGENTD_STORAGE_DIR": str(state),
                                    "DEVICEAGENTD_MQTT_URL": broker.url,
                                    "DEVICEAGENTD_HTTP_LISTEN": "127.0.0.1:1",
                                    "DEVICEAGENTD_VOICE_LISTEN": "127.0.0.1:2"})
    assert result.returncode == 1
    lamp = str(products / "lamp.json")
    assert re.search(re.escape(lamp) + r": \$\.telemetry\.power\.type: must be one of", result.stderr), result.stderr
    assert re.search(re.escape(lamp) + r": \$\.events\.fault\.eventType: must be one of", result.stderr)
    assert not (state / DB_NAME).exists()
