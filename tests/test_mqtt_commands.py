"""Commands HTTP → MQTT → device → MQTT → HTTP through a real broker (SPEC §2 "Commands"):
round trip with the simulator, timeouts and late answers kept in the command log, answers
matched by requestId and device only."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from daemon_harness import PRODUCTS_DIR, RunningDaemon, wait_until
from mosquitto_broker import MosquittoBroker
from test_mqtt_support import (
    WAIT_S,
    online_device,
    raw_device,
    rejects,
    running_gateway,
    unique,
)

from deviceagentd.core.spec import load_spec_file
from deviceagentd.mqtt.topics import TopicKind
from deviceagentd.simulator import SimulatedDevice, SimulatorOptions


@pytest.fixture
async def gw(broker: MosquittoBroker, tmp_path: Path) -> AsyncIterator[RunningDaemon]:
    async with running_gateway(broker.url, tmp_path / "state") as daemon:
        yield daemon


async def simulator(broker: MosquittoBroker, gw: RunningDaemon, product: str = "thermostat",
                    **options: object) -> SimulatedDevice:
    spec = load_spec_file(PRODUCTS_DIR / f"{product}.json")
    values: dict[str, object] = {"url": broker.url, "heartbeat_s": 0, "seed": 5}
    values.update(options)
    device = SimulatedDevice(spec, unique(product), SimulatorOptions(**values))  # type: ignore[arg-type]
    await asyncio.wait_for(device.start(), WAIT_S)
    await wait_until(lambda: gw.daemon.registry.get(device.device_id)
                     and gw.daemon.registry.get(device.device_id).online, WAIT_S)
    return device


async def test_http_command_round_trip_through_the_simulator(broker: MosquittoBroker, gw: RunningDaemon) -> None:
    device = await simulator(broker, gw)
    try:
        status, outcome = await gw.request(
            "POST", f"/api/devices/{device.device_id}/commands",
            json_body={"command": "set_target_temperature", "params": {"target_temperature": 24},
                       "requestId": "req-001-" + device.device_id})
        assert status == 200, outcome
        assert outcome["requestId"] == "req-001-" + device.device_id
        assert (outcome["code"], outcome["msg"], outcome["ok"]) == (0, "ok", True)
        assert outcome["data"] == {"target_temperature": 24}
        assert outcome["latencyMs"] >= 0
        [received] = device.commands_received
        assert (received.cmd, received.params, received.request_id) == (
            "set_target_temperature", {"target_temperature": 24}, "req-001-" + device.device_id)
        assert isinstance(received.ts, int)
        assert device.state["target_temperature"] == 24
        # The simulator reports its new state after a successful command.
        await wait_until(lambda: gw.daemon.registry.get(device.device_id).state.get("target_temperature") == 24,
                         WAIT_S)
        record = await gw.daemon.store.get_command(outcome["requestId"])
        assert (record.status, record.code, record.late, record.device_id) == ("ok", 0, False, device.device_id)
        assert record.params == {"target_temperature": 24}
        assert record.answered_at_ms is not None and record.answered_at_ms >= record.sent_at_ms
        assert gw.daemon.metrics.commands.get({"outcome": "ok"}) == 1
    finally:
        await device.stop()


async def test_a_device_error_code_is_passed_back(broker: MosquittoBroker, gw: RunningDaemon) -> None:
    async with raw_device(broker.url, "thermostat") as device:
        await online_device(gw, device)
        request = asyncio.ensure_future(gw.request(
            "POST", f"/api/devices/{device.device_id}/commands",
            json_body={"command": "set_mode", "params": {"mode": "heat"}}))
        command = json.loads((await device.command()).payload)
        await device.send(TopicKind.RESPONSE, {"code": 3, "msg": "heater broken", "requestId": command["requestId"],
                                               "data": {"fault": "E3"}})
        status, outcome = await asyncio.wait_for(request, WAIT_S)
        assert status == 200
        assert (outcome["code"], outcome["msg"], outcome["ok"], outcome["data"]) == (
            3, "heater broken", False, {"fault": "E3"})
        record = await gw.daemon.store.get_command(command["requestId"])
        assert (record.status, record.code, record.msg) == ("error", 3, "heater broken")


async def test_commands_are_qos1_and_not_retained(broker: MosquittoBroker, gw: RunningDaemon) -> None:
    async with raw_device(broker.url, "thermostat") as device:
        await online_device(gw, device)
        request = asyncio.ensure_future(gw.request(
            "POST", f"/api/devices/{device.device_id}/commands",
            json_body={"command": "set_mode", "params": {"mode": "cool"}, "timeoutMs": 5000}))
        command = await device.command()
        assert command.qos == 1
        assert not command.properties.get("retain")
        body = json.loads(command.payload)
        await device.send(TopicKind.RESPONSE, {"code": 0, "requestId": body["requestId"]})
        status, _ = await asyncio.wait_for(request, WAIT_S)
        assert status == 200
    # A device connecting later finds no retained command waiting.
    async with raw_device(broker.url, "thermostat", device.device_id) as again:
        await asyncio.sleep(0.5)
        assert again.commands() == []


async def test_after_an_answer_in_time_a_second_answer_is_a_duplicate_and_the_id_stays_taken(
        broker: MosquittoBroker, gw: RunningDaemon) -> None:
    async with raw_device(broker.url, "thermostat") as device, raw_device(broker.url, "thermostat") as other:
        await online_device(gw, device)
        await online_device(gw, other)
        request = asyncio.ensure_future(gw.request(
            "POST", f"/api/devices/{device.device_id}/commands",
            json_body={"command": "set_mode", "params": {"mode": "cool"}, "timeoutMs": 5000}))
        request_id = json.loads((await device.command()).payload)["requestId"]
        await device.send(TopicKind.RESPONSE, {"code": 0, "requestId": request_id, "data": {"mode": "cool"}})
        status, _ = await asyncio.wait_for(request, WAIT_S)
        assert status == 200

        await device.send(TopicKind.RESPONSE, {"code": 0, "requestId": request_id})
        await wait_until(lambda: rejects(gw, "response", "duplicate_response") == 1, WAIT_S)
        await other.send(TopicKind.RESPONSE, {"code": 0, "requestId": request_id})
        await wait_until(lambda: rejects(gw, "response", "response_device_mismatch") == 1, WAIT_S)
        status, error = await gw.request("POST", f"/api/devices/{device.device_id}/commands",
                                         json_body={"command": "set_mode", "params": {"mode": "eco"},
                                                    "requestId": request_id})
        assert status == 409 and error["error"]["details"] == {"requestId": request_id}
        # Neither answer touched the logged outcome.
        record = await gw.daemon.store.get_command(request_id)
        assert (record.status, record.late, record.data, record.params) == ("ok", False, {"mode": "cool"},
                                                                            {"mode": "cool"})


async def test_generated_request_ids_sort_by_when_the_command_was_sent(broker: MosquittoBroker,
                                                                      gw: RunningDaemon) -> None:
    device = await simulator(broker, gw)
    try:
        ids = []
        for mode in ("cool", "heat", "eco", "auto"):
            status, outcome = await gw.request("POST", f"/api/devices/{device.device_id}/commands",
                                               json_body={"command": "set_mode", "params": {"mode": mode}})
            assert status == 200, outcome
            ids.append(outcome["requestId"])
        assert ids == sorted(ids) and len(set(ids)) == 4
        assert all(re.fullmatch(r"req-[0-9a-f]{21}", request_id) for request_id in ids)
    finally:
        await device.stop()


async def test_a_late_answer_is_recorded_in_the_command_log(broker: MosquittoBroker, gw: RunningDaemon) -> None:
    async with raw_device(broker.url, "thermostat") as device:
        await online_device(gw, device)
        request = asyncio.ensure_future(gw.request(
            "POST", f"/api/devices/{device.device_id}/commands",
            json_body={"command": "set_target_temperature", "params": {"target_temperature": 21},
                       "timeoutMs": 300}))
        command = json.loads((await device.command()).payload)
        request_id = command["requestId"]
        status, error = await asyncio.wait_for(request, WAIT_S)
        assert status == 504
        assert error["error"]["code"] == "command_timeout"
        assert error["error"]["details"]["requestId"] == request_id
        record = await gw.daemon.store.get_command(request_id)
        assert (record.status, record.late, record.code) == ("timeout", False, None)

        await device.send(TopicKind.RESPONSE, {"code": 0, "msg": "done, slowly", "requestId": request_id,
                                               "data": {"target_temperature": 21}})

        async def late_recorded() -> None:
            while True:
                record = await gw.daemon.store.get_command(request_id)
                if record is not None and record.late:
                    return
                await asyncio.sleep(0.05)

        await asyncio.wait_for(late_recorded(), WAIT_S)
        record = await gw.daemon.store.get_command(request_id)
        assert (record.late, record.code, record.status, record.msg) == (True, 0, "ok", "done, slowly")
        assert record.data == {"target_temperature": 21}
        assert gw.daemon.metrics.commands.get({"outcome": "timeout"}) == 1
        assert gw.daemon.metrics.commands.get({"outcome": "late"}) == 1
        # Committed to disk, not only waiting in memory.
        await gw.daemon.store.flush()
        assert (await gw.daemon.store.get_command(request_id)).late is True
        # A second late answer is a duplicate.
        await device.send(TopicKind.RESPONSE, {"code": 0, "requestId": request_id})
        await wait_until(lambda: rejects(gw, "response", "duplicate_response") == 1, WAIT_S)


async def test_a_simulator_that_never_answers_times_out(broker: MosquittoBroker, gw: RunningDaemon) -> None:
    device = await simulator(broker, gw, answer=False)
    try:
        status, error = await gw.request("POST", f"/api/devices/{device.device_id}/commands",
                                         json_body={"command": "set_mode", "params": {"mode": "eco"},
                                                    "timeoutMs": 200})
        assert status == 504
        assert len(device.commands_received) == 1
        record = await gw.daemon.store.get_command(error["error"]["details"]["requestId"])
        assert record.status == "timeout"
    finally:
        await device.stop()


async def test_answers_are_matched_only_from_the_right_device(broker: MosquittoBroker, gw: RunningDaemon) -> None:
    async with raw_device(broker.url, "thermostat") as target, raw_device(broker.url, "thermostat") as other:
        await online_device(gw, target)
        await online_device(gw, other)
        request = asyncio.ensure_future(gw.request(
            "POST", f"/api/devices/{target.device_id}/commands",
            json_body={"command": "set_mode", "params": {"mode": "heat"}}))
        command = json.loads((await target.command()).payload)
        assert other.commands() == []
        # The other device answers with the target's requestId on its own response topic.
        await other.send(TopicKind.RESPONSE, {"code": 0, "msg": "not me", "requestId": command["requestId"]})
        await wait_until(lambda: rejects(gw, "response", "response_device_mismatch") == 1, WAIT_S)
        assert not request.done()
        await target.send(TopicKind.RESPONSE, {"code": 0, "msg": "me", "requestId": command["requestId"]})
        status, outcome = await asyncio.wait_for(request, WAIT_S)
        assert status == 200
        assert outcome["msg"] == "me"


async def test_an_answer_under_another_product_does_not_complete_the_command(broker: MosquittoBroker,
                                                                             gw: RunningDaemon) -> None:
    async with raw_device(broker.url, "thermostat") as target, raw_device(broker.url, "light") as other:
        await online_device(gw, target)
        request = asyncio.ensure_future(gw.request(
            "POST", f"/api/devices/{target.device_id}/commands",
            json_body={"command": "set_mode", "params": {"mode": "heat"}}))
        command = json.loads((await target.command()).payload)
        await other.raw(other.templates.format(TopicKind.RESPONSE, "light", target.device_id),
                        json.dumps({"code": 0, "msg": "impostor", "requestId": command["requestId"]}).encode())
        await wait_until(lambda: rejects(gw, "response", "product_mismatch") == 1, WAIT_S)
        await asyncio.sleep(0.2)
        assert not request.done()
        await target.send(TopicKind.RESPONSE, {"code": 0, "msg": "me", "requestId": command["requestId"]})
        status, outcome = await asyncio.wait_for(request, WAIT_S)
        assert (status, outcome["msg"]) == (200, "me")


async def test_concurrent_commands_to_several_devices(broker: MosquittoBroker, gw: RunningDaemon) -> None:
    devices = [await simulator(broker, gw, product) for product in ("thermostat", "light", "curtain", "switch")]
    try:
        calls = [
            (devices[0], "set_mode", {"mode": "heat"}),
            (devices[1], "set_brightness", {"brightness": 40}),
            (devices[2], "open", {}),
            (devices[3], "turn_on", {}),
        ]
        results = await asyncio.gather(*(
            gw.request("POST", f"/api/devices/{d.device_id}/commands", json_body={"command": c, "params": p})
            for d, c, p in calls))
        for (device, command, _), (status, outcome) in zip(calls, results, strict=True):
            assert status == 200, (command, outcome)
            assert outcome["code"] == 0
            assert [r.cmd for r in device.commands_received] == [command]
        assert devices[1].state["brightness"] == 40
        assert devices[2].state["position"] == 100
        assert devices[3].state["power"] is True
    finally:
        for device in devices:
            await device.stop()


async def test_invalid_commands_are_refused_before_anything_is_published(broker: MosquittoBroker,
                                                                        gw: RunningDaemon) -> None:
    async with raw_device(broker.url, "thermostat") as device:
        await online_device(gw, device)
        for body in ({"command": "fly", "params": {}},
                     {"command": "set_target_temperature", "params": {"target_temperature": 99}},
                     {"command": "set_mode", "params": {}}):
            status, error = await gw.request("POST", f"/api/devices/{device.device_id}/commands", json_body=body)
            assert status == 400, error
        await asyncio.sleep(0.3)
        assert device.commands() == []
