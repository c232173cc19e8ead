"""Device → gateway traffic through a real Mosquitto into the real daemon (SPEC §2 telemetry,
encoding, rejections, events, online/offline), published by raw gmqtt devices and the simulator."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import cbor2
import pytest
from daemon_harness import PRODUCTS_DIR, RunningDaemon, wait_until
from mosquitto_broker import MosquittoBroker
from test_mqtt_support import (
    SEED_EVENT,
    SEED_STATUS,
    WAIT_S,
    RawDevice,
    events_of,
    now_ms,
    online_device,
    raw_device,
    rejects,
    running_gateway,
    unique,
    wait_events,
)

from deviceagentd.core.spec import load_spec_file
from deviceagentd.mqtt.topics import TopicKind, TopicTemplates
from deviceagentd.simulator import SimulatedDevice, SimulatorOptions


@pytest.fixture
async def gw(broker: MosquittoBroker, tmp_path: Path) -> AsyncIterator[RunningDaemon]:
    async with running_gateway(broker.url, tmp_path / "state") as daemon:
        yield daemon


@pytest.fixture
async def bystander(broker: MosquittoBroker, gw: RunningDaemon) -> AsyncIterator[RawDevice]:
    """Another device whose valid traffic must keep flowing while a neighbour misbehaves."""
    async with raw_device(broker.url, "light") as device:
        await online_device(gw, device, {"power": False})
        yield device


async def bystander_still_served(gw: RunningDaemon, device: RawDevice, brightness: int) -> None:
    await device.send(TopicKind.TELEMETRY, {"type": "state", "data": {"brightness": brightness}})
    await wait_until(lambda: gw.daemon.registry.get(device.device_id).state.get("brightness") == brightness,
                     WAIT_S)


async def wait_reject(gw: RunningDaemon, kind: str, reason: str, count: float = 1) -> None:
    await wait_until(lambda: rejects(gw, kind, reason) >= count, WAIT_S)


def topic_of(kind: TopicKind, product_id: str, device_id: str) -> str:
    return TopicTemplates().format(kind, product_id, device_id)


# --------------------------------------------------------------------------------- telemetry


async def test_seed_online_status_registers_the_device(broker: MosquittoBroker, gw: RunningDaemon) -> None:
    async with raw_device(broker.url, "thermostat") as device:
        before = now_ms()
        await device.send(TopicKind.TELEMETRY, SEED_STATUS)
        await wait_until(lambda: gw.daemon.registry.get(device.device_id), WAIT_S)
        registered = gw.daemon.registry.get(device.device_id)
        assert registered.online is True
        assert registered.product_id == "thermostat"
        assert registered.state == {"temperature": 28, "humidity": 62, "mode": "auto"}
        assert registered.metadata == {"productId": "thermostat", "source": "existing-device"}
        assert registered.encoding == "json"

        [lifecycle] = await wait_events(gw, device.device_id, lambda e: len(e) == 1)
        assert (lifecycle.event, lifecycle.level, lifecycle.source) == ("online", "info", "gateway")
        assert lifecycle.device_id == device.device_id and lifecycle.product_id == "thermostat"
        assert before - 1000 <= lifecycle.ts_ms <= now_ms() + 1000

        status, body = await gw.request("GET", f"/api/devices/{device.device_id}")
        assert status == 200
        assert body["status"] == "online" and body["online"] is True
        assert body["state"] == {"temperature": 28, "humidity": 62, "mode": "auto"}
        assert body["metadata"] == {"productId": "thermostat", "source": "existing-device"}
        status, listed = await gw.request("GET", "/api/products/thermostat/devices?status=online")
        assert device.device_id in [d["deviceId"] for d in listed["devices"]]

        # The device and its lifecycle event are on disk, not only in memory.
        # Changed devices reach the store on the registry's persist tick; take it now.
        gw.daemon.registry.persist_changes()
        await gw.daemon.store.flush()
        stored = await asyncio.to_thread(gw.daemon.store.load_devices)
        [record] = [r for r in stored if r.device_id == device.device_id]
        assert (record.online, record.state, record.metadata) == (True, registered.state, registered.metadata)
        status, events = await gw.request("GET", f"/api/devices/{device.device_id}/events")
        assert [e["event"] for e in events["events"]] == ["online"]
        assert events["events"][0]["source"] == "gateway"


async def test_state_telemetry_merges_into_the_state(broker: MosquittoBroker, gw: RunningDaemon) -> None:
    async with raw_device(broker.url, "thermostat") as device:
        await device.send(TopicKind.TELEMETRY, SEED_STATUS)
        await device.send(TopicKind.TELEMETRY, {"type": "state", "data": {"temperature": 25.5},
                                                "metadata": {"productId": "thermostat", "source": "v2"}})
        registry = gw.daemon.registry
        await wait_until(lambda: registry.get(device.device_id)
                         and registry.get(device.device_id).state.get("temperature") == 25.5, WAIT_S)
        found = registry.get(device.device_id)
        assert found.state == {"temperature": 25.5, "humidity": 62, "mode": "auto"}
        assert found.metadata == {"productId": "thermostat", "source": "v2"}  # the last metadata


async def test_any_other_type_with_object_data_merges(broker: MosquittoBroker, gw: RunningDaemon) -> None:
    async with raw_device(broker.url, "thermostat") as device:
        await online_device(gw, device, {"temperature": 20})
        await device.send(TopicKind.TELEMETRY, {"type": "report", "data": {"humidity": 41, "mode": "eco"}})
        await wait_until(lambda: gw.daemon.registry.get(device.device_id).state.get("humidity") == 41, WAIT_S)
        assert gw.daemon.registry.get(device.device_id).state == {"temperature": 20, "humidity": 41, "mode": "eco"}


async def test_a_wrongly_typed_field_is_dropped_and_the_rest_kept(broker: MosquittoBroker,
                                                                  gw: RunningDaemon) -> None:
    warnings = gw.daemon.metrics.validation_warnings
    async with raw_device(broker.url, "thermostat") as device:
        await online_device(gw, device, {"temperature": 20, "mode": "auto"})
        before = warnings.get({"product": "thermostat"})
        await device.send(TopicKind.TELEMETRY, {"type": "state", "data": {
            "temperature": "hot", "humidity": 40, "mode": "turbo", "target_temperature": 99}})
        await wait_until(lambda: gw.daemon.registry.get(device.device_id).state.get("humidity") == 40, WAIT_S)
        state = gw.daemon.registry.get(device.device_id).state
        # "hot" is not a number and "turbo" not in the enum; 99 is out of range but still a
        # reading of the right type, so it is kept.
        assert state == {"temperature": 20, "humidity": 40, "mode": "auto", "target_temperature": 99}
        assert warnings.get({"product": "thermostat"}) == before + 2
        assert rejects(gw, "telemetry_field", "wrong_type") >= 2
        text = await gw.request("GET", "/metrics")
        assert 'deviceagentd_validation_warnings_total{product="thermostat"}' in text[1]


async def test_undeclared_fields_are_kept(broker: MosquittoBroker, gw: RunningDaemon) -> None:
    async with raw_device(broker.url, "thermostat") as device:
        await online_device(gw, device, {"temperature": 20})
        await device.send(TopicKind.TELEMETRY, {"type": "state", "data": {
            "battery": 88, "firmware": "1.2.3", "extra": {"rssi": -60}}})
        await wait_until(lambda: "battery" in gw.daemon.registry.get(device.device_id).state, WAIT_S)
        assert gw.daemon.registry.get(device.device_id).state == {
            "temperature": 20, "battery": 88, "firmware": "1.2.3", "extra": {"rssi": -60}}
        assert gw.daemon.metrics.validation_warnings.get({"product": "thermostat"}) == 0


async def test_a_status_without_state_keeps_the_state(broker: MosquittoBroker, gw: RunningDaemon) -> None:
    async with raw_device(broker.url, "thermostat") as device:
        await online_device(gw, device, {"temperature": 20})
        await device.send(TopicKind.TELEMETRY, {"type": "status", "data": {"status": "online"}})
        await device.send(TopicKind.TELEMETRY, {"type": "state", "data": {"humidity": 1}})
        await wait_until(lambda: gw.daemon.registry.get(device.device_id).state.get("humidity") == 1, WAIT_S)
        assert gw.daemon.registry.get(device.device_id).state == {"temperature": 20, "humidity": 1}


async def test_cbor_telemetry_by_content_type_and_cbor_commands_back(broker: MosquittoBroker,
                                                                     gw: RunningDaemon) -> None:
    async with raw_device(broker.url, "thermostat") as device:
        await device.send(TopicKind.TELEMETRY, SEED_STATUS, encoding="cbor")
        await wait_until(lambda: gw.daemon.registry.get(device.device_id), WAIT_S)
        found = gw.daemon.registry.get(device.device_id)
        assert found.state == {"temperature": 28, "humidity": 62, "mode": "auto"}
        assert found.encoding == "cbor"
        await assert_commands_in_cbor(gw, device, expect_content_type="application/cbor")


async def test_cbor_telemetry_by_first_byte_from_an_mqtt_311_device(broker: MosquittoBroker,
                                                                    gw: RunningDaemon) -> None:
    async with raw_device(broker.url, "thermostat", protocol=4) as device:
        await device.send(TopicKind.TELEMETRY, SEED_STATUS, encoding="cbor", content_type=None)
        await wait_until(lambda: gw.daemon.registry.get(device.device_id), WAIT_S)
        assert gw.daemon.registry.get(device.device_id).encoding == "cbor"
        assert gw.daemon.registry.get(device.device_id).state["mode"] == "auto"
        await assert_commands_in_cbor(gw, device, expect_content_type=None)


async def test_cbor_by_first_byte_from_an_mqtt5_device_without_content_type(broker: MosquittoBroker,
                                                                           gw: RunningDaemon) -> None:
    async with raw_device(broker.url, "thermostat") as device:
        await device.send(TopicKind.TELEMETRY, SEED_STATUS, encoding="cbor", content_type=None)
        await wait_until(lambda: gw.daemon.registry.get(device.device_id), WAIT_S)
        assert gw.daemon.registry.get(device.device_id).encoding == "cbor"


async def assert_commands_in_cbor(gw: RunningDaemon, device: RawDevice, expect_content_type: str | None) -> None:
    request = asyncio.ensure_future(gw.request(
        "POST", f"/api/devices/{device.device_id}/commands",
        json_body={"command": "set_target_temperature", "params": {"target_temperature": 24}}))
    command = await device.command()
    assert 0xA0 <= command.payload[0] <= 0xBF  # a CBOR map
    assert command.content_type == expect_content_type
    body = cbor2.loads(command.payload)
    assert body["cmd"] == "set_target_temperature"
    assert body["params"] == {"target_temperature": 24}
    assert isinstance(body["ts"], int)
    answer = {"code": 0, "msg": "ok", "requestId": body["requestId"], "data": {"target_temperature": 24}}
    await device.send(TopicKind.RESPONSE, answer, encoding="cbor",
                      content_type="auto" if expect_content_type else None)
    status, outcome = await asyncio.wait_for(request, WAIT_S)
    assert status == 200, outcome
    assert (outcome["code"], outcome["ok"], outcome["data"]) == (0, True, {"target_temperature": 24})


async def test_a_json_device_gets_json_commands(broker: MosquittoBroker, gw: RunningDaemon) -> None:
    async with raw_device(broker.url, "thermostat") as device:
        await online_device(gw, device)
        request = asyncio.ensure_future(gw.request(
            "POST", f"/api/devices/{device.device_id}/commands",
            json_body={"command": "set_mode", "params": {"mode": "eco"}}))
        command = await device.command()
        assert command.payload.startswith(b"{")
        assert command.content_type == "application/json"
        body = json.loads(command.payload)
        assert set(body) == {"cmd", "params", "requestId", "ts"}
        await device.send(TopicKind.RESPONSE, {"code": 0, "msg": "ok", "requestId": body["requestId"]})
        status, _ = await asyncio.wait_for(request, WAIT_S)
        assert status == 200


async def test_the_encoding_follows_the_device(broker: MosquittoBroker, gw: RunningDaemon) -> None:
    async with raw_device(broker.url, "thermostat") as device:
        await online_device(gw, device, encoding="cbor")
        assert gw.daemon.registry.get(device.device_id).encoding == "cbor"
        await device.send(TopicKind.TELEMETRY, {"type": "state", "data": {"humidity": 5}})
        await wait_until(lambda: gw.daemon.registry.get(device.device_id).encoding == "json", WAIT_S)


# --------------------------------------------------------------------------------- rejections


async def test_malformed_json_is_rejected(broker: MosquittoBroker, gw: RunningDaemon,
                                          bystander: RawDevice) -> None:
    async with raw_device(broker.url, "thermostat") as device:
        await device.raw(device.topic(TopicKind.TELEMETRY), b'{"type": "status", "data": ')
        await wait_reject(gw, "telemetry", "bad_json")
        await bystander_still_served(gw, bystander, 11)
        assert gw.daemon.registry.get(device.device_id) is None


async def test_malformed_cbor_is_rejected(broker: MosquittoBroker, gw: RunningDaemon,
                                          bystander: RawDevice) -> None:
    async with raw_device(broker.url, "thermostat") as device:
        truncated = cbor2.dumps(SEED_STATUS)[:-4]
        await device.raw(device.topic(TopicKind.TELEMETRY), truncated, content_type="application/cbor")
        await wait_reject(gw, "telemetry", "bad_cbor")
        await device.raw(device.topic(TopicKind.EVENT), b"\xa1\x61a\xd8\x1c\x80")  # tag 28 by first byte
        await wait_reject(gw, "event", "bad_cbor")
        await bystander_still_served(gw, bystander, 12)
        assert gw.daemon.registry.get(device.device_id) is None


@pytest.mark.parametrize(
    ("payload", "content_type"),
    [(b"[1, 2, 3]", None), (b'"online"', "application/json"), (cbor2.dumps([1, 2]), "application/cbor")],
)
async def test_a_non_object_payload_is_rejected(broker: MosquittoBroker, gw: RunningDaemon, bystander: RawDevice,
                                                payload: bytes, content_type: str | None) -> None:
    async with raw_device(broker.url, "thermostat") as device:
        await device.raw(device.topic(TopicKind.TELEMETRY), payload, content_type=content_type)
        await wait_reject(gw, "telemetry", "not_object")
        await bystander_still_served(gw, bystander, 13)
        assert gw.daemon.registry.get(device.device_id) is None


async def test_an_oversized_payload_is_rejected(broker: MosquittoBroker, tmp_path: Path) -> None:
    async with running_gateway(broker.url, tmp_path / "small", mqtt_max_payload_bytes=2048) as small, \
            raw_device(broker.url, "light") as other, raw_device(broker.url, "thermostat") as device:
        await online_device(small, other, {"power": True})
        big = json.dumps({"type": "state", "data": {"temperature": 21, "blob": "x" * 3000}}).encode()
        assert len(big) > 2048
        await device.raw(device.topic(TopicKind.TELEMETRY), big)
        await wait_reject(small, "telemetry", "too_large")
        await bystander_still_served(small, other, 14)
        assert small.daemon.registry.get(device.device_id) is None
        # Just under the limit is fine.
        fits = json.dumps({"type": "state", "data": {"temperature": 21, "blob": "x" * 1900}}).encode()
        assert len(fits) <= 2048
        await device.raw(device.topic(TopicKind.TELEMETRY), fits)
        await wait_until(lambda: small.daemon.registry.get(device.device_id), WAIT_S)


async def test_an_unknown_product_is_rejected(broker: MosquittoBroker, gw: RunningDaemon,
                                              bystander: RawDevice) -> None:
    async with raw_device(broker.url, "toaster") as device:
        await device.send(TopicKind.TELEMETRY, {"type": "status", "data": {"status": "online"}})
        await wait_reject(gw, "telemetry", "unknown_product")
        await device.send(TopicKind.EVENT, {"type": "event", "data": {"event": "burnt"}})
        await wait_reject(gw, "event", "unknown_product")
        await bystander_still_served(gw, bystander, 15)
        assert gw.daemon.registry.get(device.device_id) is None
        status, _ = await gw.request("GET", f"/api/devices/{device.device_id}")
        assert status == 404


async def test_a_device_id_bound_to_another_product_is_rejected(broker: MosquittoBroker, gw: RunningDaemon,
                                                                bystander: RawDevice) -> None:
    async with raw_device(broker.url, "thermostat") as device:
        await online_device(gw, device, {"temperature": 20})
        impostor_topic = topic_of(TopicKind.TELEMETRY, "light", device.device_id)
        await device.raw(impostor_topic, json.dumps({"type": "state", "data": {"power": True}}).encode())
        await wait_reject(gw, "telemetry", "product_mismatch")
        impostor_event = topic_of(TopicKind.EVENT, "light", device.device_id)
        await device.raw(impostor_event, json.dumps({"type": "event", "data": {"event": "x"}}).encode())
        await wait_reject(gw, "event", "product_mismatch")
        await bystander_still_served(gw, bystander, 16)
        found = gw.daemon.registry.get(device.device_id)
        assert found.product_id == "thermostat"
        assert found.state == {"temperature": 20}
        assert [e.event for e in await events_of(gw, device.device_id)] == ["online"]


@pytest.mark.parametrize(
    "body",
    [
        {"data": {"status": "online"}},
        {"type": "", "data": {"status": "online"}},
        {"type": 5, "data": {}},
        {"type": "state"},
        {"type": "state", "data": [1, 2]},
        {"type": "state", "data": "warm"},
        {"type": "status", "data": None},
    ],
)
async def test_telemetry_without_type_or_object_data_is_rejected(broker: MosquittoBroker, gw: RunningDaemon,
                                                                 bystander: RawDevice, body: Any) -> None:
    async with raw_device(broker.url, "thermostat") as device:
        await device.send(TopicKind.TELEMETRY, body)
        await wait_reject(gw, "telemetry", "bad_telemetry")
        await bystander_still_served(gw, bystander, 17)
        assert gw.daemon.registry.get(device.device_id) is None


@pytest.mark.parametrize(
    "data",
    [{"status": "sleeping"}, {}, {"status": True}, {"status": "online", "state": [1]}],
)
async def test_a_bad_status_is_rejected(broker: MosquittoBroker, gw: RunningDaemon, bystander: RawDevice,
                                        data: dict[str, Any]) -> None:
    async with raw_device(broker.url, "thermostat") as device:
        await device.send(TopicKind.TELEMETRY, {"type": "status", "data": data})
        await wait_reject(gw, "telemetry", "bad_status")
        await bystander_still_served(gw, bystander, 18)
        assert gw.daemon.registry.get(device.device_id) is None


@pytest.mark.parametrize("data", [{"level": "warning"}, {"event": ""}, {"event": "   "}, {"event": 5}])
async def test_an_event_without_a_name_is_rejected(broker: MosquittoBroker, gw: RunningDaemon,
                                                   bystander: RawDevice, data: dict[str, Any]) -> None:
    async with raw_device(broker.url, "thermostat") as device:
        await online_device(gw, device)
        await device.send(TopicKind.EVENT, {"type": "event", "data": data})
        await wait_reject(gw, "event", "event_without_name")
        await bystander_still_served(gw, bystander, 19)
        assert [e.event for e in await events_of(gw, device.device_id)] == ["online"]


async def test_an_event_without_object_data_is_rejected(broker: MosquittoBroker, gw: RunningDaemon,
                                                        bystander: RawDevice) -> None:
    async with raw_device(broker.url, "thermostat") as device:
        await device.send(TopicKind.EVENT, {"type": "event", "data": "temperature_alert"})
        await wait_reject(gw, "event", "bad_event")
        await bystander_still_served(gw, bystander, 20)


async def test_a_response_for_an_unknown_request_id_is_rejected(broker: MosquittoBroker, gw: RunningDaemon,
                                                                bystander: RawDevice) -> None:
    async with raw_device(broker.url, "thermostat") as device:
        await online_device(gw, device)
        await device.send(TopicKind.RESPONSE, {"code": 0, "msg": "ok", "requestId": "req-never-sent"})
        await wait_reject(gw, "response", "unknown_request_id")
        await bystander_still_served(gw, bystander, 21)


@pytest.mark.parametrize("body", [{"code": 0, "msg": "ok"}, {"code": 0, "requestId": ""},
                                  {"code": 0, "requestId": 17}])
async def test_a_response_without_request_id_is_rejected(broker: MosquittoBroker, gw: RunningDaemon,
                                                         bystander: RawDevice, body: dict[str, Any]) -> None:
    async with raw_device(broker.url, "thermostat") as device:
        await online_device(gw, device)
        await device.send(TopicKind.RESPONSE, body)
        await wait_reject(gw, "response", "response_without_request_id")
        await bystander_still_served(gw, bystander, 22)


@pytest.mark.parametrize("code", [None, "0", True, 1.5])
async def test_a_response_without_an_integer_code_is_rejected(broker: MosquittoBroker, gw: RunningDaemon,
                                                              bystander: RawDevice, code: Any) -> None:
    async with raw_device(broker.url, "thermostat") as device:
        await online_device(gw, device)
        request = asyncio.ensure_future(gw.request(
            "POST", f"/api/devices/{device.device_id}/commands",
            json_body={"command": "set_mode", "params": {"mode": "heat"}}))
        request_id = json.loads((await device.command()).payload)["requestId"]
        body: dict[str, Any] = {"msg": "ok", "requestId": request_id}
        if code is not None:
            body["code"] = code
        await device.send(TopicKind.RESPONSE, body)
        await wait_reject(gw, "response", "bad_response")
        await bystander_still_served(gw, bystander, 28)
        assert not request.done()
        await device.send(TopicKind.RESPONSE, {"code": 0, "requestId": request_id})
        status, _ = await asyncio.wait_for(request, WAIT_S)
        assert status == 200


async def test_a_duplicate_response_is_rejected(broker: MosquittoBroker, gw: RunningDaemon,
                                                bystander: RawDevice) -> None:
    async with raw_device(broker.url, "thermostat") as device:
        await online_device(gw, device)
        request = asyncio.ensure_future(gw.request(
            "POST", f"/api/devices/{device.device_id}/commands",
            json_body={"command": "set_mode", "params": {"mode": "heat"}}))
        command = json.loads((await device.command()).payload)
        answer = {"code": 0, "msg": "ok", "requestId": command["requestId"], "data": {"mode": "heat"}}
        await device.send(TopicKind.RESPONSE, answer)
        status, outcome = await asyncio.wait_for(request, WAIT_S)
        assert status == 200 and outcome["code"] == 0
        await device.send(TopicKind.RESPONSE, {**answer, "code": 1, "msg": "second answer"})
        await wait_reject(gw, "response", "duplicate_response")
        await bystander_still_served(gw, bystander, 23)
        record = await gw.daemon.store.get_command(command["requestId"])
        assert (record.status, record.code, record.late) == ("ok", 0, False)  # the first answer stands


async def test_an_ntp_request_without_device_send_time_gets_no_answer(broker: MosquittoBroker, gw: RunningDaemon,
                                                                       bystander: RawDevice) -> None:
    async with raw_device(broker.url, "thermostat") as device:
        await device.send(TopicKind.NTP_REQUEST, {"requestId": "bad-1"})
        await wait_reject(gw, "ntp", "ntp_without_device_send_time")
        # Same connection, same topic: the broker keeps the order, so once the good request
        # is answered the bad one had its chance.
        await device.send(TopicKind.NTP_REQUEST, {"deviceSendTime": now_ms(), "requestId": "good-1"})
        await device.expect(lambda r: r.topic == device.topic(TopicKind.NTP_RESPONSE))
        await bystander_still_served(gw, bystander, 24)
        assert [r.body().get("requestId") for r in device.ntp_answers()] == ["good-1"]


async def test_an_empty_topic_id_is_rejected(broker: MosquittoBroker, gw: RunningDaemon,
                                             bystander: RawDevice) -> None:
    async with raw_device(broker.url, "thermostat") as device:
        await device.raw("v1/thermostat//telemetry", json.dumps(SEED_STATUS).encode())
        await wait_reject(gw, "message", "bad_topic_id")
        await bystander_still_served(gw, bystander, 25)
        assert gw.daemon.registry.get("") is None
        assert gw.daemon.registry.total == 1  # only the bystander


async def test_rejections_are_logged_at_most_once_per_device_and_minute(
        broker: MosquittoBroker, gw: RunningDaemon, bystander: RawDevice, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="deviceagentd.mqtt.rejects")
    async with raw_device(broker.url, "thermostat") as noisy, raw_device(broker.url, "thermostat") as other:
        for _ in range(5):
            await noisy.raw(noisy.topic(TopicKind.TELEMETRY), b"{broken")
        await other.raw(other.topic(TopicKind.TELEMETRY), b"{broken")
        await wait_reject(gw, "telemetry", "bad_json", 6)
        await bystander_still_served(gw, bystander, 26)
        lines = [r.getMessage() for r in caplog.records if r.name == "deviceagentd.mqtt.rejects"]
        assert len([line for line in lines if noisy.device_id in line]) == 1
        assert len([line for line in lines if other.device_id in line]) == 1
    text = (await gw.request("GET", "/metrics"))[1]
    assert 'deviceagentd_mqtt_rejects_total{kind="telemetry",reason="bad_json"} 6' in text


async def test_a_cbor_value_without_json_equivalent_is_rejected(broker: MosquittoBroker, gw: RunningDaemon,
                                                                  bystander: RawDevice) -> None:
    """CBOR can carry values JSON cannot (byte strings); the gateway stores and serves JSON, so the
    message is refused whole instead of breaking the device's record."""
    async with raw_device(broker.url, "thermostat") as device:
        await online_device(gw, device, {"temperature": 20}, encoding="cbor")
        await device.send(TopicKind.TELEMETRY, {"type": "state", "data": {"humidity": 30, "raw": b"\x00\x01"}},
                          encoding="cbor")
        await wait_reject(gw, "telemetry", "unsupported_cbor_value")
        await device.send(TopicKind.EVENT, {"type": "event", "data": {"event": "dump", "blob": b"\x01"}},
                          encoding="cbor")
        await wait_reject(gw, "event", "unsupported_cbor_value")
        await bystander_still_served(gw, bystander, 27)
        await device.send(TopicKind.TELEMETRY, {"type": "state", "data": {"humidity": 31}}, encoding="cbor")
        await wait_until(lambda: gw.daemon.registry.get(device.device_id).state.get("humidity") == 31, WAIT_S)
        assert gw.daemon.registry.get(device.device_id).state == {"temperature": 20, "humidity": 31}
        assert "dump" not in [e.event for e in await events_of(gw, device.device_id)]
        status, body = await gw.request("GET", f"/api/devices/{device.device_id}")
        assert status == 200, body
        gw.daemon.registry.persist_changes()
        await gw.daemon.store.flush()
        stored = await asyncio.to_thread(gw.daemon.store.load_devices)
        [record] = [r for r in stored if r.device_id == device.device_id]
        assert record.state == {"temperature": 20, "humidity": 31}


# --------------------------------------------------------------------------------- events


async def test_event_levels(broker: MosquittoBroker, gw: RunningDaemon) -> None:
    async with raw_device(broker.url, "thermostat") as device:
        await online_device(gw, device)
        # data.level wins.
        await device.send(TopicKind.EVENT, {"type": "event", "data": {
            "event": "temperature_alert", "temperature": 41.0, "level": "error"}})
        # No level: the spec's eventType (warning).
        await device.send(TopicKind.EVENT, {"type": "event", "data": {"event": "temperature_alert", "temperature": 40}})
        # Not in the spec, no level: info.
        await device.send(TopicKind.EVENT, {"type": "event", "data": {"event": "filter_dirty", "hours": 300}})
        # Not in the spec, with a level.
        await device.send(TopicKind.EVENT, {"type": "event", "data": {"event": "door_open", "level": "alert"}})
        events = await wait_events(gw, device.device_id, lambda e: len(e) == 5)
        got = [(e.event, e.level, e.declared, e.source, e.data) for e in events[1:]]
        assert got == [
            ("temperature_alert", "error", True, "device", {"temperature": 41.0}),
            ("temperature_alert", "warning", True, "device", {"temperature": 40}),
            ("filter_dirty", "info", False, "device", {"hours": 300}),
            ("door_open", "alert", False, "device", {}),
        ]


async def test_the_seed_event_is_stored_and_readable_over_http(broker: MosquittoBroker, gw: RunningDaemon) -> None:
    async with raw_device(broker.url, "thermostat") as device:
        await online_device(gw, device)
        before = now_ms()
        await device.send(TopicKind.EVENT, SEED_EVENT)
        await wait_events(gw, device.device_id, lambda e: len(e) == 2)
        status, body = await gw.request("GET", f"/api/devices/{device.device_id}/events")
        assert status == 200
        newest = body["events"][0]
        assert newest["event"] == "temperature_alert"
        assert newest["level"] == "warning"
        assert newest["declared"] is True
        assert newest["source"] == "device"
        assert newest["data"] == {"temperature": 38.5}
        assert newest["deviceId"] == device.device_id and newest["productId"] == "thermostat"
        assert newest["ts"].endswith("Z") and newest["receivedAt"].endswith("Z")
        assert body["events"][1]["event"] == "online"
        status, only = await gw.request("GET", f"/api/devices/{device.device_id}/events?event=temperature_alert")
        assert [e["event"] for e in only["events"]] == ["temperature_alert"]
        [stored] = [e for e in await events_of(gw, device.device_id) if e.event == "temperature_alert"]
        assert before - 1000 <= stored.received_at_ms <= now_ms() + 1000


async def test_the_device_timestamp_is_used_when_plausible(broker: MosquittoBroker, gw: RunningDaemon) -> None:
    async with raw_device(broker.url, "thermostat") as device:
        await online_device(gw, device)
        await device.send(TopicKind.EVENT, {**SEED_EVENT, "ts": 1710000010000})
        await device.send(TopicKind.EVENT, {**SEED_EVENT, "ts": 1710000010})  # seconds: not ms
        await device.send(TopicKind.EVENT, {**SEED_EVENT, "ts": "2024-03-09T16:00:10Z"})
        events = await wait_events(gw, device.device_id, lambda e: len(e) == 4)
        assert events[1].ts_ms == 1710000010000
        for implausible in events[2:]:
            assert abs(implausible.ts_ms - implausible.received_at_ms) < 5000
            assert abs(implausible.ts_ms - now_ms()) < 60_000


async def test_cbor_event(broker: MosquittoBroker, gw: RunningDaemon) -> None:
    async with raw_device(broker.url, "thermostat") as device:
        await online_device(gw, device, encoding="cbor")
        await device.send(TopicKind.EVENT, SEED_EVENT, encoding="cbor")
        events = await wait_events(gw, device.device_id, lambda e: len(e) == 2)
        assert (events[1].event, events[1].data) == ("temperature_alert", {"temperature": 38.5})


async def test_simulator_events_are_stored(broker: MosquittoBroker, gw: RunningDaemon) -> None:
    spec = load_spec_file(PRODUCTS_DIR / "thermostat.json")
    device = SimulatedDevice(spec, unique("sim"), SimulatorOptions(url=broker.url, heartbeat_s=0, seed=1))
    await asyncio.wait_for(device.start(), WAIT_S)
    try:
        await device.emit_event("temperature_alert", {"temperature": 39.5})
        events = await wait_events(gw, device.device_id, lambda e: any(x.source == "device" for x in e))
        [event] = [e for e in events if e.source == "device"]
        assert (event.event, event.level, event.declared, event.data) == (
            "temperature_alert", "warning", True, {"temperature": 39.5})
    finally:
        await device.stop()


# --------------------------------------------------------------------------------- online / offline


async def test_status_offline_marks_the_device_offline(broker: MosquittoBroker, gw: RunningDaemon) -> None:
    async with raw_device(broker.url, "thermostat") as device:
        await online_device(gw, device, {"temperature": 20})
        await device.send(TopicKind.TELEMETRY, {"type": "status", "data": {"status": "offline"}})
        await wait_until(lambda: not gw.daemon.registry.get(device.device_id).online, WAIT_S)
        events = await wait_events(gw, device.device_id, lambda e: len(e) == 2)
        assert [(e.event, e.level, e.source) for e in events] == [
            ("online", "info", "gateway"), ("offline", "info", "gateway")]
        status, body = await gw.request("GET", f"/api/devices/{device.device_id}")
        assert body["status"] == "offline" and body["online"] is False
        assert body["state"] == {"temperature": 20}  # the last known state is kept
        # A command to an offline device is refused, not sent.
        status, error = await gw.request("POST", f"/api/devices/{device.device_id}/commands",
                                         json_body={"command": "set_mode", "params": {"mode": "eco"}})
        assert status == 409 and error["error"]["code"] == "device_offline"
        assert device.commands() == []


async def test_the_last_will_marks_a_killed_simulator_offline(broker: MosquittoBroker, gw: RunningDaemon) -> None:
    spec = load_spec_file(PRODUCTS_DIR / "thermostat.json")
    device = SimulatedDevice(spec, unique("sim"), SimulatorOptions(url=broker.url, heartbeat_s=0, seed=2))
    await asyncio.wait_for(device.start(), WAIT_S)
    await wait_until(lambda: gw.daemon.registry.get(device.device_id)
                     and gw.daemon.registry.get(device.device_id).online, WAIT_S)
    await device.kill()
    await wait_until(lambda: not gw.daemon.registry.get(device.device_id).online, WAIT_S)
    events = await wait_events(gw, device.device_id, lambda e: [x.event for x in e] == ["online", "offline"])
    assert events[-1].source == "gateway"


async def test_the_last_will_of_a_raw_device(broker: MosquittoBroker, gw: RunningDaemon) -> None:
    will = {"type": "status", "data": {"status": "offline"}, "metadata": {"productId": "light"}}
    device = RawDevice(broker.url, "light", unique("lamp"), will=will)
    await device.connect()
    await online_device(gw, device, {"power": True})
    await device.kill()
    await wait_until(lambda: not gw.daemon.registry.get(device.device_id).online, WAIT_S)


async def test_silence_makes_a_device_offline_and_a_message_brings_it_back(broker: MosquittoBroker,
                                                                           tmp_path: Path) -> None:
    async with running_gateway(broker.url, tmp_path / "s", devices_offline_after_s=1) as quick, \
            raw_device(broker.url, "thermostat") as device:
        await online_device(quick, device, {"temperature": 20})
        await wait_until(lambda: not quick.daemon.registry.get(device.device_id).online, WAIT_S)
        events = await wait_events(quick, device.device_id, lambda e: len(e) == 2)
        assert [(e.event, e.source) for e in events] == [("online", "gateway"), ("offline", "gateway")]
        assert "no message" in events[1].data.get("reason", "")
        _, body = await quick.request("GET", "/api/health")
        assert body["devices"] == {"total": 1, "online": 0}
        await device.send(TopicKind.TELEMETRY, {"type": "state", "data": {"temperature": 21}})
        await wait_until(lambda: quick.daemon.registry.get(device.device_id).online, WAIT_S)
        events = await wait_events(quick, device.device_id, lambda e: len(e) == 3)
        assert events[2].event == "online"
        assert quick.daemon.registry.get(device.device_id).state["temperature"] == 21


@pytest.mark.parametrize("kind", [TopicKind.EVENT, TopicKind.NTP_REQUEST, TopicKind.RESPONSE, TopicKind.TELEMETRY])
async def test_any_accepted_message_brings_an_offline_device_back(broker: MosquittoBroker, gw: RunningDaemon,
                                                                  kind: TopicKind) -> None:
    async with raw_device(broker.url, "thermostat") as device:
        await online_device(gw, device)
        await device.send(TopicKind.TELEMETRY, {"type": "status", "data": {"status": "offline"}})
        await wait_until(lambda: not gw.daemon.registry.get(device.device_id).online, WAIT_S)
        if kind is TopicKind.RESPONSE:
            # A command that times out, then its late answer.
            await device.send(TopicKind.TELEMETRY, {"type": "state", "data": {}})
            await wait_until(lambda: gw.daemon.registry.get(device.device_id).online, WAIT_S)
            status, error = await gw.request("POST", f"/api/devices/{device.device_id}/commands",
                                             json_body={"command": "set_mode", "params": {"mode": "eco"},
                                                        "timeoutMs": 100})
            assert status == 504
            request_id = error["error"]["details"]["requestId"]
            await device.send(TopicKind.TELEMETRY, {"type": "status", "data": {"status": "offline"}})
            await wait_until(lambda: not gw.daemon.registry.get(device.device_id).online, WAIT_S)
            body: dict[str, Any] = {"code": 0, "msg": "ok", "requestId": request_id}
        else:
            body = {
                TopicKind.EVENT: SEED_EVENT,
                TopicKind.NTP_REQUEST: {"deviceSendTime": now_ms()},
                TopicKind.TELEMETRY: {"type": "state", "data": {"humidity": 3}},
            }[kind]
        await device.send(kind, body)
        await wait_until(lambda: gw.daemon.registry.get(device.device_id).online, WAIT_S)
        lifecycle = [e.event for e in await events_of(gw, device.device_id) if e.source == "gateway"]
        assert lifecycle[-2:] == ["offline", "online"]


async def test_offline_after_zero_never_expires(broker: MosquittoBroker, tmp_path: Path) -> None:
    async with running_gateway(broker.url, tmp_path / "s", devices_offline_after_s=0) as never, \
            raw_device(broker.url, "thermostat") as device:
        await online_device(never, device)
        await asyncio.sleep(2.5)
        assert never.daemon.registry.get(device.device_id).online
        assert [e.event for e in await events_of(never, device.device_id)] == ["online"]
