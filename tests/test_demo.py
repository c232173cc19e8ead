"""The README's first command, scripts/demo, run as a user would (on spare ports)."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
from mosquitto_broker import free_port

REPO = Path(__file__).resolve().parent.parent


ROOM_DEVICES = ["ac-101", "curtain-101", "light-101", "thermostat-001"]


def check_first_hour(work: Path, base: str, text: str) -> None:
    """What a newcomer meets: the example room's devices online, none of their first messages
    lost, the console, and the operator commands finding the demo's database."""
    every = _curl_json(f"{base}/api/devices?status=online")
    assert sorted(d["deviceId"] for d in every["devices"]) == ROOM_DEVICES  # type: ignore[union-attr,index]
    for device_id in ROOM_DEVICES:
        # The first online message reached a subscribed gateway: its lifecycle event says so.
        events = _curl_json(f"{base}/api/devices/{device_id}/events?event=online")
        assert events["events"], device_id
    # The simulator's first time sync (right after connecting) was answered, not lost.
    sim_log = work / "simulator-thermostat-001.log"
    deadline = time.monotonic() + 30
    while "NTP" not in sim_log.read_text():
        assert time.monotonic() < deadline, sim_log.read_text()
        time.sleep(0.2)
    first_ntp = next(line for line in sim_log.read_text().splitlines() if "NTP" in line)
    assert "NTP offset" in first_ntp, first_ntp
    log = (work / "deviceagentd.log").read_text()
    assert log.index("ready (") < log.index("device thermostat-001 registered"), log
    # The speaker's room shows the devices online (discovery and scenes work on them).
    view = _curl_json(f"{base}/api/voice-platform")
    room = view["rooms"][0]  # type: ignore[index]
    assert all(d["online"] for d in room["devices"]), room
    with urllib.request.urlopen(base + "/", timeout=10) as resp:
        assert resp.headers["Content-Type"] == "text/html; charset=utf-8"
    assert f"Open the console in a browser:  {base}/" in text

    config = work / "deviceagentd.toml"
    assert f".venv/bin/deviceagentd devices --config {config}" in text
    command = [str(REPO / ".venv" / "bin" / "deviceagentd"), "devices", "--json", "--config", str(config)]
    deadline = time.monotonic() + 15
    while True:  # the command reads what the daemon has committed (about once a second)
        listed = subprocess.run(command, capture_output=True, text=True, timeout=60, cwd="/")
        assert listed.returncode == 0, listed.stderr
        found = sorted(d["deviceId"] for d in json.loads(listed.stdout)["devices"])
        if found == ROOM_DEVICES or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    assert found == ROOM_DEVICES


def _curl_json(url: str, body: dict[str, object] | None = None) -> dict[str, object]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as resp:
        result: dict[str, object] = json.loads(resp.read())
        return result


@pytest.mark.timeout(180)
def test_demo_runs_the_seed_tour_and_stops_cleanly(tmp_path: Path) -> None:
    http_port, voice_port, mqtt_port = free_port(), free_port(), free_port()
    env = {**os.environ, "DEMO_HTTP_PORT": str(http_port), "DEMO_VOICE_PORT": str(voice_port),
           "DEMO_MQTT_PORT": str(mqtt_port), "DEMO_DIR": str(tmp_path / "demo")}
    out_path = tmp_path / "demo.out"
    with out_path.open("wb") as out:
        demo = subprocess.Popen(["bash", "scripts/demo"], cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while "demo ready" not in out_path.read_text():
            assert demo.poll() is None, f"demo exited early:\n{out_path.read_text()}"
            assert time.monotonic() < deadline, f"demo not ready:\n{out_path.read_text()}"
            time.sleep(0.2)
        text = out_path.read_text()
        base = f"http://127.0.0.1:{http_port}"
        # The tour prints the seed document's calls against this demo.
        assert f"curl '{base}/api/products/thermostat/devices?status=online'" in text
        assert re.search(r"set_target_temperature.*target_temperature.*24", text)

        online = _curl_json(f"{base}/api/products/thermostat/devices?status=online")
        assert [d["deviceId"] for d in online["devices"]] == ["thermostat-001"]  # type: ignore[index,union-attr]
        check_first_hour(tmp_path / "demo", base, text)
        result = _curl_json(
            f"{base}/api/devices/thermostat-001/commands",
            {"command": "set_target_temperature", "params": {"target_temperature": 24}, "timeoutMs": 30000},
        )
        assert result["ok"] is True and result["code"] == 0
        assert result["data"] == {"target_temperature": 24}
        # The device reports its new state right after its answer: wait for that report.
        deadline = time.monotonic() + 10
        while _curl_json(f"{base}/api/devices/thermostat-001")["state"]["target_temperature"] != 24:  # type: ignore[index]
            assert time.monotonic() < deadline, "the state after the command never arrived"
            time.sleep(0.1)
        events = _curl_json(f"{base}/api/devices/thermostat-001/events?limit=50")
        assert any(e["event"] == "online" for e in events["events"])  # type: ignore[union-attr,index]

        # The speaker tour (docs/voice-platform.md) works against the demo's example room.
        assert f"curl '{base}/v1.0/voice/devices/speaker-101/token?code=demo-brand&industry_type=hotel'" in text
        tokens = _curl_json(f"{base}/v1.0/voice/devices/speaker-101/token?code=demo-brand&industry_type=hotel")
        assert tokens["success"] is True, tokens
        request = urllib.request.Request(
            f"{base}/v1.0/voice/execute",
            data=json.dumps({"message_id": "m-1", "version": "1.0",
                             "command": {"interface": "Tuya.Voice.Platform.Control", "intent": "SetTemperature",
                                         "value": 22},
                             "endpoint": {"instance_id": "thermostat-001"}}).encode(),
            headers={"Content-Type": "application/json",
                     "access_token": str(tokens["result"]["token"])})  # type: ignore[index]
        with urllib.request.urlopen(request, timeout=10) as resp:
            control = json.loads(resp.read())
        assert control["success"] is True, control
        assert {"name": "temperature", "value": 22} in control["result"]["properties"]
    finally:
        if demo.poll() is None:
            demo.send_signal(signal.SIGTERM)
        try:
            code = demo.wait(30)
        finally:
            # Whatever happened, leave no broker, daemon or simulator behind.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(demo.pid, signal.SIGKILL)
    assert code == 0, out_path.read_text()
    assert "demo stopped" in out_path.read_text()
