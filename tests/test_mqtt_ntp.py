"""Time sync for devices (SPEC §2 "NTP") through a real broker: the four stamps, JSON and
CBOR, bad requests unanswered, and the simulator's offset against the daemon."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import cbor2
import pytest
from daemon_harness import PRODUCTS_DIR, RunningDaemon, wait_until
from mosquitto_broker import MosquittoBroker, start_broker
from test_mqtt_support import (
    WAIT_S,
    RawDevice,
    now_ms,
    online_device,
    raw_device,
    rejects,
    running_gateway,
    unique,
)

from deviceagentd.core.spec import load_spec_file
from deviceagentd.mqtt.topics import TopicKind
from deviceagentd.simulator import SimulatedDevice, SimulatorOptions

# Slack for comparing the daemon's stamps with this process's clock (same host, same clock;
# only a clock step between the two reads could make them disagree).
CLOCK_SLACK_MS = 50


@pytest.fixture(scope="module")
def ntp_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MosquittoBroker]:
    """A broker with Nagle off, as on a real gateway: otherwise each hop can wait ~40 ms for a
    delayed ACK and the round trip says more about TCP than about the daemon."""
    broker = start_broker(tmp_path_factory.mktemp("mosquitto-ntp"), extra_conf="set_tcp_nodelay true")
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture
async def gw(ntp_broker: MosquittoBroker, tmp_path: Path) -> AsyncIterator[RunningDaemon]:
    async with running_gateway(ntp_broker.url, tmp_path / "state") as daemon:
        yield daemon


async def ask(device: RawDevice, body: dict[str, Any], encoding: str = "json",
              content_type: str | None = "auto") -> tuple[int, int, Any]:
    """Send one request; returns (sent ms, received ms, the answer)."""
    count = len(device.ntp_answers())
    sent = now_ms()
    await device.send(TopicKind.NTP_REQUEST, body, encoding=encoding, qos=0, content_type=content_type)
    await wait_until(lambda: len(device.ntp_answers()) > count, WAIT_S, interval=0.001)
    answer = device.ntp_answers()[count]
    return sent, answer.at_ms, answer


def check_stamps(body: dict[str, Any], device_send_time: int, sent: int, received: int) -> None:
    assert body["deviceSendTime"] == device_send_time
    for key in ("deviceSendTime", "serverRecvTime", "serverSendTime"):
        assert isinstance(body[key], int) and not isinstance(body[key], bool), key
    assert isinstance(body["serverClockSynced"], bool)
    assert body["serverRecvTime"] <= body["serverSendTime"]
    assert sent - CLOCK_SLACK_MS <= body["serverRecvTime"]
    assert body["serverSendTime"] <= received + CLOCK_SLACK_MS


async def test_json_request_and_answer(ntp_broker: MosquittoBroker, gw: RunningDaemon) -> None:
    async with raw_device(ntp_broker.url, "thermostat") as device:
        t1 = now_ms()
        sent, received, answer = await ask(device, {"deviceSendTime": t1, "requestId": "ntp-1"})
        body = answer.body()
        assert answer.payload.startswith(b"{")
        assert answer.content_type == "application/json"
        assert answer.qos == 0
        assert set(body) == {"deviceSendTime", "serverRecvTime", "serverSendTime", "serverClockSynced", "requestId"}
        assert body["requestId"] == "ntp-1"
        check_stamps(body, t1, sent, received)
        assert gw.daemon.metrics.ntp_turnaround.count == 1


async def test_the_seed_request_without_request_id(ntp_broker: MosquittoBroker, gw: RunningDaemon) -> None:
    async with raw_device(ntp_broker.url, "thermostat") as device:
        sent, received, answer = await ask(device, {"deviceSendTime": 1710000010000})
        body = answer.body()
        assert "requestId" not in body
        check_stamps(body, 1710000010000, sent, received)


async def test_an_integer_request_id_is_echoed(ntp_broker: MosquittoBroker, gw: RunningDaemon) -> None:
    async with raw_device(ntp_broker.url, "thermostat") as device:
        _, _, answer = await ask(device, {"deviceSendTime": now_ms(), "requestId": 42})
        assert answer.body()["requestId"] == 42


async def test_cbor_request_gets_a_cbor_answer(ntp_broker: MosquittoBroker, gw: RunningDaemon) -> None:
    async with raw_device(ntp_broker.url, "thermostat") as device:
        t1 = now_ms()
        sent, received, answer = await ask(device, {"deviceSendTime": t1, "requestId": "c-1"}, encoding="cbor")
        assert 0xA0 <= answer.payload[0] <= 0xBF
        assert answer.content_type == "application/cbor"
        body = cbor2.loads(answer.payload)
        assert body["requestId"] == "c-1"
        check_stamps(body, t1, sent, received)


async def test_cbor_by_first_byte_from_an_mqtt_311_device(ntp_broker: MosquittoBroker, gw: RunningDaemon) -> None:
    async with raw_device(ntp_broker.url, "thermostat", protocol=4) as device:
        t1 = now_ms()
        sent, received, answer = await ask(device, {"deviceSendTime": t1}, encoding="cbor", content_type=None)
        assert 0xA0 <= answer.payload[0] <= 0xBF
        body = cbor2.loads(answer.payload)
        check_stamps(body, t1, sent, received)


async def test_many_requests_stay_consistent(ntp_broker: MosquittoBroker, gw: RunningDaemon) -> None:
    async with raw_device(ntp_broker.url, "thermostat") as device:
        for index in range(30):
            t1 = now_ms()
            sent, received, answer = await ask(device, {"deviceSendTime": t1, "requestId": f"n-{index}"})
            body = answer.body()
            assert body["requestId"] == f"n-{index}"
            check_stamps(body, t1, sent, received)


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ({"requestId": "x"}, "ntp_without_device_send_time"),
        ({"deviceSendTime": "1710000010000"}, "ntp_without_device_send_time"),
        ({"deviceSendTime": 1710000010000.5}, "ntp_without_device_send_time"),
        ({"deviceSendTime": -5}, "ntp_without_device_send_time"),
        ({"deviceSendTime": True}, "ntp_without_device_send_time"),
        ({"deviceSendTime": None}, "ntp_without_device_send_time"),
        ({"deviceSendTime": 1710000010000, "requestId": {"a": 1}}, "bad_ntp_request_id"),
    ],
)
async def test_bad_requests_get_no_answer(ntp_broker: MosquittoBroker, gw: RunningDaemon,
                                          body: dict[str, Any], reason: str) -> None:
    async with raw_device(ntp_broker.url, "thermostat") as device:
        await device.send(TopicKind.NTP_REQUEST, body, qos=1)
        await wait_until(lambda: rejects(gw, "ntp", reason) == 1, WAIT_S)
        # In order on one connection: once the good request is answered, the bad one had its turn.
        _, _, answer = await ask(device, {"deviceSendTime": now_ms(), "requestId": "good"})
        assert [a.body().get("requestId") for a in device.ntp_answers()] == ["good"]
        assert answer.body()["requestId"] == "good"


@pytest.mark.parametrize("payload", [b"{nope", b"[1]", b"\xa1\x61a"])
async def test_undecodable_requests_get_no_answer(ntp_broker: MosquittoBroker, gw: RunningDaemon,
                                                  payload: bytes) -> None:
    async with raw_device(ntp_broker.url, "thermostat") as device:
        await device.raw(device.topic(TopicKind.NTP_REQUEST), payload)
        await wait_until(lambda: sum(v for k, v in gw.daemon.metrics.rejects.values.items()
                                     if ("kind", "ntp") in k) == 1, WAIT_S)
        await ask(device, {"deviceSendTime": now_ms(), "requestId": "good"})
        assert len(device.ntp_answers()) == 1


async def test_an_unknown_device_is_answered_but_not_registered(ntp_broker: MosquittoBroker,
                                                                gw: RunningDaemon) -> None:
    async with raw_device(ntp_broker.url, "thermostat") as device:
        await ask(device, {"deviceSendTime": now_ms()})
        assert gw.daemon.registry.get(device.device_id) is None


async def test_a_request_marks_a_known_device_online(ntp_broker: MosquittoBroker, gw: RunningDaemon) -> None:
    async with raw_device(ntp_broker.url, "thermostat") as device:
        await online_device(gw, device)
        await device.send(TopicKind.TELEMETRY, {"type": "status", "data": {"status": "offline"}})
        await wait_until(lambda: not gw.daemon.registry.get(device.device_id).online, WAIT_S)
        await ask(device, {"deviceSendTime": now_ms()})
        await wait_until(lambda: gw.daemon.registry.get(device.device_id).online, WAIT_S)


async def test_simulator_sync_clock_offset_is_small(ntp_broker: MosquittoBroker, gw: RunningDaemon) -> None:
    spec = load_spec_file(PRODUCTS_DIR / "thermostat.json")
    for encoding in ("json", "cbor"):
        device = SimulatedDevice(spec, unique("sim"), SimulatorOptions(url=ntp_broker.url, heartbeat_s=0,
                                                                       encoding=encoding))  # type: ignore[arg-type]
        await asyncio.wait_for(device.start(), WAIT_S)
        try:
            samples = [await device.sync_clock() for _ in range(5)]
        finally:
            await device.stop()
        for sample in samples:
            # Same host, same clock: the true offset is 0; the estimate is off by at most
            # half the round trip plus the gateway's millisecond rounding.
            assert abs(sample.offset_ms) < 50, sample
            assert sample.delay_ms >= 0
            assert isinstance(sample.server_synced, bool)
        best = min(samples, key=lambda s: s.delay_ms)
        assert abs(best.offset_ms) <= best.delay_ms / 2 + 1.5


async def test_no_answer_while_the_request_is_on_another_template(ntp_broker: MosquittoBroker,
                                                                  gw: RunningDaemon) -> None:
    """Only the ntp_request template is answered; a request on the response topic is ignored."""
    async with raw_device(ntp_broker.url, "thermostat") as device:
        await device.send(TopicKind.NTP_RESPONSE, {"deviceSendTime": now_ms()}, qos=1)
        await device.flush()
        await ask(device, {"deviceSendTime": now_ms(), "requestId": "real"})
        answers = [a.body() for a in device.ntp_answers()]
        assert [a.get("requestId") for a in answers if "serverRecvTime" in a] == ["real"]
