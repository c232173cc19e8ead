"""Every JSON answer ends with a newline and carries text as UTF-8 (not \\u escapes), errors too;
a value with no UTF-8 form (a lone surrogate from an older database row) becomes U+FFFD."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from daemon_harness import RunningDaemon, start_daemon, wait_until
from mosquitto_broker import MosquittoBroker
from test_mqtt_support import RawDevice

from deviceagentd.http.responses import encode_json


@pytest.fixture
async def gateway(broker: MosquittoBroker, tmp_path: Path) -> AsyncIterator[RunningDaemon]:
    gw = await start_daemon(broker.url, tmp_path / "state")
    try:
        yield gw
    finally:
        await gw.stop()


async def raw(gw: RunningDaemon, method: str, path: str, **kwargs: object) -> tuple[int, str, bytes]:
    async with gw.session.request(method, gw.base_url + path, **kwargs) as resp:  # type: ignore[arg-type]
        return resp.status, resp.headers["Content-Type"], await resp.read()


async def test_stored_text_comes_back_as_utf8_with_a_final_newline(
        broker: MosquittoBroker, gateway: RunningDaemon) -> None:
    device_id = f"thermostat-{uuid.uuid4().hex[:6]}"
    body = {"type": "state", "data": {"mode": "auto", "temperature": 21},
            "metadata": {"productId": "thermostat", "name": "客厅温控器"}}
    device = await RawDevice(broker.url, "thermostat", device_id).connect(subscribe=False)
    try:
        await device.raw(f"v1/thermostat/{device_id}/telemetry", json.dumps(body).encode())
        await device.flush()
    finally:
        await device.disconnect()
    await wait_until(lambda: gateway.daemon.registry.get(device_id) is not None, 10)
    status, content_type, data = await raw(gateway, "GET", f"/api/devices/{device_id}")
    assert status == 200
    assert content_type == "application/json; charset=utf-8"
    assert data.endswith(b"}\n")
    assert "客厅温控器".encode() in data and b"\\u" not in data
    assert json.loads(data)["metadata"]["name"] == "客厅温控器"


async def test_errors_end_with_a_newline_too(gateway: RunningDaemon) -> None:
    for method, path in (("GET", "/api/devices/nobody"), ("GET", "/no/such/route"), ("PUT", "/api/health")):
        status, content_type, data = await raw(gateway, method, path)
        assert status in (404, 405)
        assert content_type.startswith("application/json")
        assert data.endswith(b"}\n"), data
        assert "error" in json.loads(data)


def test_a_lone_surrogate_never_reaches_a_client() -> None:
    # Strict JSON out (issue 13): a lone surrogate is not Unicode text, many JSON parsers refuse
    # it. None can come in any more (strictjson refuses it at the door); one from an older
    # database row is answered as U+FFFD, still as UTF-8 and with the final newline.
    encoded = encode_json({"name": "a\ud800b", "zh": "灯"})
    assert encoded.endswith(b"\n") and b"\\u" not in encoded
    assert json.loads(encoded) == {"name": "a\ufffdb", "zh": "灯"}
