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


def _curl_json(url: str, body: dict[str, object] | None = None) -> dict[str, object]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as resp:
        result: dict[str, object] = json.loads(resp.read())
        return result


@pytest.mark.timeout(180)
def test_demo_runs_the_seed_tour_and_stops_cleanly(tmp_path: Path) -> None:
    http_port, mqtt_port, voice_port = free_port(), free_port(), free_port()
    env = {**os.environ, "DEMO_HTTP_PORT": str(http_port), "DEMO_MQTT_PORT": str(mqtt_port),
           "DEMO_VOICE_PORT": str(voice_port), "DEMO_DIR": str(tmp_path / "demo")}
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
        result = _curl_json(
            f"{base}/api/devices/thermostat-001/commands",
            {"command": "set_target_temperature", "params": {"target_temperature": 24}, "timeoutMs": 30000},
        )
        assert result["ok"] is True and result["code"] == 0
        assert result["data"] == {"target_temperature": 24}
        device = _curl_json(f"{base}/api/devices/thermostat-001")
        assert device["state"]["target_temperature"] == 24  # type: ignore[index]
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

        # The voice line: spoken, recognised offline, answered and spoken back with no key anywhere.
        url = f"ws://127.0.0.1:{voice_port}/ws/voice"
        line = f'scripts/voice-client --url {url} --say "what is the current temperature" --out reply.wav'
        assert line in text
        reply = tmp_path / "reply.wav"
        talk = subprocess.run(["bash", "scripts/voice-client", "--url", url, "--say", "what is the current temperature",
                               "--out", str(reply)], cwd=REPO, capture_output=True, text=True, timeout=90,
                              env={k: v for k, v in os.environ.items() if "API_KEY" not in k})
        assert talk.returncode == 0, talk.stdout + talk.stderr
        assert "provider offline" in talk.stdout and "heard: what is the current temperature" in talk.stdout
        assert re.search(r"reply: .*temperature.*\d", talk.stdout), talk.stdout
        assert "saved to" in talk.stdout and reply.stat().st_size > 10_000
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
