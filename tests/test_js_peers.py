"""The gateway against devices written in JavaScript with the libraries they really use:
mqtt.js for MQTT and cbor-x for CBOR (issue 13, finding 5)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from daemon_harness import RunningDaemon, wait_until
from mosquitto_broker import MosquittoBroker
from node_peers import NodeDevice, run_node
from test_mqtt_support import WAIT_S, running_gateway, unique


@pytest.fixture
async def gw(broker: MosquittoBroker, tmp_path: Path) -> AsyncIterator[RunningDaemon]:
    async with running_gateway(broker.url, tmp_path / "state") as daemon:
        yield daemon


async def test_a_cbor_x_time_sync_request_with_a_float_send_time_is_answered(broker: MosquittoBroker,
                                                                             gw: RunningDaemon) -> None:
    [result] = await run_node("ntp.mjs", broker.url, "thermostat", unique("js-clock"))
    assert "answer" in result, result
    answer = result["answer"]
    # Date.now() went out as a CBOR float64. The answer's stamps come back as numbers cbor-x
    # decodes to plain JavaScript numbers (not BigInt), so the device's arithmetic works.
    assert result["types"] == {"deviceSendTime": "number", "serverRecvTime": "number",
                               "serverSendTime": "number", "serverClockSynced": "boolean", "requestId": "string"}
    assert answer["deviceSendTime"] > 1_700_000_000_000
    assert answer["requestId"] == "js-1"
    assert answer["serverRecvTime"] <= answer["serverSendTime"]
    assert abs(result["offset"]) < 5_000  # same machine: the clocks agree
    assert gw.daemon.metrics.rejects.get({"kind": "ntp", "reason": "ntp_without_device_send_time"}) == 0


async def test_events_from_an_mqtt_js_device_are_all_stored_once(broker: MosquittoBroker, gw: RunningDaemon) -> None:
    device_id = unique("js-dev")
    device = await NodeDevice.start(broker.url, "thermostat", device_id, 300, 1000)
    try:
        await device.wait_done(WAIT_S)
        await wait_until(lambda: gw.daemon.metrics.messages_in.get({"kind": "event"}) >= 300, WAIT_S)
        events = await gw.daemon.store.query_events(device_id, limit=1000)
        assert sorted(e.data["n"] for e in events if e.event == "fault_seq") == list(range(300))
    finally:
        await device.stop()
