"""The daemon's broker connection (SPEC §2 "Link"): broker down at boot, broker restarts with
and without our session, Receive Maximum on bursts, a persistent session across our own
restart, and health/commands while the broker is away."""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from pathlib import Path

import pytest
from daemon_harness import PRODUCTS_DIR, RunningDaemon, wait_until
from mosquitto_broker import MosquittoBroker
from test_mqtt_support import (
    SEED_EVENT,
    WAIT_S,
    events_of,
    online_device,
    raw_device,
    running_gateway,
    unique,
    wait_events,
)

from deviceagentd.core.spec import load_spec_file
from deviceagentd.mqtt.topics import TopicKind, TopicTemplates
from deviceagentd.simulator import SimulatedDevice, SimulatorOptions

RECONNECT_S = 30.0  # backoff is 0.2..1 s in tests; generous for a loaded CI machine


async def health(gw: RunningDaemon) -> tuple[int, dict]:
    status, body = await gw.request("GET", "/api/health")
    return status, body


async def wait_health(gw: RunningDaemon, expected: int) -> dict:
    deadline = time.monotonic() + RECONNECT_S
    while True:
        status, body = await health(gw)
        if status == expected:
            return body
        if time.monotonic() > deadline:
            raise AssertionError(f"health stayed {status}: {body}")
        await asyncio.sleep(0.1)


async def traffic_flows(gw: RunningDaemon, url: str, product: str = "thermostat") -> str:
    """A new device can register and be commanded: subscriptions and publishing both work."""
    async with raw_device(url, product) as device:
        await online_device(gw, device, {"mode": "eco"} if product == "thermostat" else None)
        request = asyncio.ensure_future(gw.request(
            "POST", f"/api/devices/{device.device_id}/commands",
            json_body={"command": "set_mode", "params": {"mode": "heat"}}))
        command = json.loads((await device.command()).payload)
        await device.send(TopicKind.RESPONSE, {"code": 0, "requestId": command["requestId"]})
        status, outcome = await asyncio.wait_for(request, WAIT_S)
        assert status == 200, outcome
        return device.device_id


async def test_a_daemon_started_while_the_broker_is_down_comes_up_with_it(fresh_broker: MosquittoBroker,
                                                                         tmp_path: Path) -> None:
    fresh_broker.stop()
    async with running_gateway(fresh_broker.url, tmp_path / "s", wait_subscribed=False) as gw:
        body = await wait_health(gw, 503)
        assert body["status"] == "degraded"
        assert body["mqtt"]["connected"] is False
        await asyncio.sleep(1.5)  # a few failed attempts
        assert gw.daemon.link.status.connects == 0
        assert gw.daemon.link.status.last_error
        fresh_broker.start()
        await asyncio.wait_for(gw.daemon.link.subscribed.wait(), RECONNECT_S)
        body = await wait_health(gw, 200)
        assert body["status"] == "ok" and body["mqtt"]["connected"] is True
        await traffic_flows(gw, fresh_broker.url)


@pytest.mark.parametrize("how", ["restart", "kill", "restart_without_persistence"])
async def test_the_daemon_reconnects_and_resubscribes_after_the_broker_goes_away(
        fresh_broker: MosquittoBroker, tmp_path: Path, how: str) -> None:
    async with running_gateway(fresh_broker.url, tmp_path / "s") as gw:
        first = await traffic_flows(gw, fresh_broker.url)
        if how == "restart":
            fresh_broker.restart()
        elif how == "kill":
            await asyncio.sleep(1.5)  # let autosave (1 s) write our session
            fresh_broker.kill()
            fresh_broker.start()
        else:
            # The broker forgets everything: the daemon must subscribe again itself.
            fresh_broker.stop()
            shutil.rmtree(fresh_broker.data_dir)
            fresh_broker.start()
        await wait_until(lambda: gw.daemon.link.status.connects >= 2, RECONNECT_S)
        await asyncio.wait_for(gw.daemon.link.subscribed.wait(), RECONNECT_S)
        await wait_health(gw, 200)
        await traffic_flows(gw, fresh_broker.url)
        # A device known from before the outage is served again too.
        async with raw_device(fresh_broker.url, "thermostat", first) as device:
            await device.send(TopicKind.TELEMETRY, {"type": "state", "data": {"humidity": 77}})
            await wait_until(lambda: gw.daemon.registry.get(first).state.get("humidity") == 77, WAIT_S)


async def test_subscriptions_are_not_duplicated_by_reconnects(fresh_broker: MosquittoBroker, tmp_path: Path) -> None:
    async with running_gateway(fresh_broker.url, tmp_path / "s") as gw:
        for _ in range(2):
            fresh_broker.stop()
            shutil.rmtree(fresh_broker.data_dir)
            fresh_broker.start()
            await wait_until(lambda: gw.daemon.link.is_connected, RECONNECT_S)
            await asyncio.wait_for(gw.daemon.link.subscribed.wait(), RECONNECT_S)
        async with raw_device(fresh_broker.url, "thermostat") as device:
            await online_device(gw, device)
            for index in range(5):
                await device.send(TopicKind.EVENT, {"type": "event", "data": {"event": "tick", "n": index}})
            events = await wait_events(gw, device.device_id,
                                       lambda e: len([x for x in e if x.event == "tick"]) >= 5)
            await asyncio.sleep(0.5)
            ticks = [e.data["n"] for e in await events_of(gw, device.device_id) if e.event == "tick"]
            assert ticks == [0, 1, 2, 3, 4], events  # each message handled once


async def test_a_burst_of_60_qos1_commands_all_arrive(broker: MosquittoBroker, tmp_path: Path) -> None:
    spec = load_spec_file(PRODUCTS_DIR / "thermostat.json")
    async with running_gateway(broker.url, tmp_path / "s") as gw:
        device = SimulatedDevice(spec, unique("sim"), SimulatorOptions(url=broker.url, heartbeat_s=0, seed=9))
        await asyncio.wait_for(device.start(), WAIT_S)
        try:
            await wait_until(lambda: gw.daemon.registry.get(device.device_id), WAIT_S)
            targets = [5 + i * 0.5 for i in range(60)]  # 5.0 .. 34.5, all valid
            results = await asyncio.wait_for(asyncio.gather(*(
                gw.request("POST", f"/api/devices/{device.device_id}/commands",
                           json_body={"command": "set_target_temperature", "params": {"target_temperature": t},
                                      "requestId": f"burst-{i}"})
                for i, t in enumerate(targets))), 60)
            statuses = [status for status, _ in results]
            assert statuses == [200] * 60, [body for status, body in results if status != 200][:3]
            assert sorted(body["requestId"] for _, body in results) == sorted(f"burst-{i}" for i in range(60))
            assert all(body["code"] == 0 for _, body in results)
            assert sorted(c.request_id for c in device.commands_received) == sorted(f"burst-{i}" for i in range(60))
            assert gw.daemon.metrics.commands.get({"outcome": "ok"}) == 60
            assert gw.daemon.metrics.commands.get({"outcome": "failed"}) == 0
            assert gw.daemon.link.is_connected
        finally:
            await device.stop()


async def test_a_burst_of_60_commands_to_60_devices(broker: MosquittoBroker, tmp_path: Path) -> None:
    async with running_gateway(broker.url, tmp_path / "s") as gw:
        spec = load_spec_file(PRODUCTS_DIR / "switch.json")
        devices = [SimulatedDevice(spec, unique("sw"), SimulatorOptions(url=broker.url, heartbeat_s=0, seed=i))
                   for i in range(60)]
        await asyncio.gather(*(asyncio.wait_for(d.start(), WAIT_S) for d in devices))
        try:
            await wait_until(lambda: all(gw.daemon.registry.get(d.device_id) for d in devices), WAIT_S)
            results = await asyncio.wait_for(asyncio.gather(*(
                gw.request("POST", f"/api/devices/{d.device_id}/commands", json_body={"command": "turn_on"})
                for d in devices)), 60)
            assert [status for status, _ in results] == [200] * 60
            assert all(d.state["power"] is True for d in devices)
        finally:
            await asyncio.gather(*(d.stop() for d in devices))


async def test_messages_published_while_the_daemon_is_down_are_stored_after_its_restart(
        fresh_broker: MosquittoBroker, tmp_path: Path) -> None:
    state = tmp_path / "state"
    client_id = unique("gw-persistent")
    async with raw_device(fresh_broker.url, "thermostat") as device:
        async with running_gateway(fresh_broker.url, state, mqtt_client_id=client_id, keep_session=True) as gw:
            await online_device(gw, device, {"temperature": 20})
        # The daemon is stopped; the broker keeps its session and queues QoS 1 messages.
        for index in range(25):
            await device.send(TopicKind.EVENT, {"type": "event", "data": {"event": "while_away", "n": index}})
        await device.send(TopicKind.TELEMETRY, {"type": "state", "data": {"temperature": 23.5}})
        await device.flush()  # the broker has them all
        async with running_gateway(fresh_broker.url, state, mqtt_client_id=client_id) as again:
            events = await wait_events(again, device.device_id,
                                       lambda e: len([x for x in e if x.event == "while_away"]) == 25)
            assert [e.data["n"] for e in events if e.event == "while_away"] == list(range(25))
            await wait_until(lambda: again.daemon.registry.get(device.device_id).state.get("temperature")
                             == 23.5, WAIT_S)
            # connect() returns a few loop turns after CONNACK, while the queued messages flow.
            await wait_until(lambda: again.daemon.link.status.connects == 1, WAIT_S)


async def test_messages_queued_across_a_broker_restart_while_the_daemon_is_down(
        fresh_broker: MosquittoBroker, tmp_path: Path) -> None:
    state = tmp_path / "state"
    client_id = unique("gw-persistent")
    async with running_gateway(fresh_broker.url, state, mqtt_client_id=client_id, keep_session=True) as gw, \
            raw_device(fresh_broker.url, "thermostat") as device:
        await online_device(gw, device)
    async with raw_device(fresh_broker.url, "thermostat", device.device_id) as device:
        await device.send(TopicKind.EVENT, SEED_EVENT)
        await device.flush()
    fresh_broker.restart()  # persistence keeps our session and the queued event
    async with running_gateway(fresh_broker.url, state, mqtt_client_id=client_id) as again:
        events = await wait_events(again, device.device_id, lambda e: any(x.event == "temperature_alert" for x in e))
        assert [e.event for e in events if e.source == "device"] == ["temperature_alert"]


async def test_health_and_commands_while_the_broker_is_away(fresh_broker: MosquittoBroker, tmp_path: Path) -> None:
    async with running_gateway(fresh_broker.url, tmp_path / "s") as gw, \
            raw_device(fresh_broker.url, "thermostat") as device:
        await online_device(gw, device)
        status, body = await health(gw)
        assert (status, body["status"], body["mqtt"]["connected"]) == (200, "ok", True)
        fresh_broker.stop()
        body = await wait_health(gw, 503)
        assert body["status"] == "degraded"
        assert body["mqtt"]["connected"] is False
        assert body["storage"]["healthy"] is True
        started = time.monotonic()
        status, error = await gw.request("POST", f"/api/devices/{device.device_id}/commands",
                                         json_body={"command": "set_mode", "params": {"mode": "eco"},
                                                    "timeoutMs": 20000})
        assert status == 503
        assert error["error"]["code"] == "broker_unavailable"
        assert time.monotonic() - started < 10  # failed fast, not after timeoutMs
        text = (await gw.request("GET", "/metrics"))[1]
        assert "deviceagentd_mqtt_connected 0" in text
        fresh_broker.start()
        body = await wait_health(gw, 200)
        assert body["status"] == "ok"
        assert "deviceagentd_mqtt_connected 1" in (await gw.request("GET", "/metrics"))[1]
        await traffic_flows(gw, fresh_broker.url)


async def test_the_simulator_and_the_daemon_both_survive_a_broker_restart(fresh_broker: MosquittoBroker,
                                                                          tmp_path: Path) -> None:
    spec = load_spec_file(PRODUCTS_DIR / "light.json")
    async with running_gateway(fresh_broker.url, tmp_path / "s") as gw:
        device = SimulatedDevice(spec, unique("lamp"), SimulatorOptions(url=fresh_broker.url, heartbeat_s=0))
        await asyncio.wait_for(device.start(), WAIT_S)
        try:
            await wait_until(lambda: gw.daemon.registry.get(device.device_id), WAIT_S)
            fresh_broker.restart()
            await wait_until(lambda: device.connected and gw.daemon.link.is_connected, RECONNECT_S)

            async def command_works() -> bool:
                status, _ = await gw.request("POST", f"/api/devices/{device.device_id}/commands",
                                             json_body={"command": "set_brightness", "params": {"brightness": 33},
                                                        "timeoutMs": 2000})
                return status == 200

            deadline = time.monotonic() + RECONNECT_S
            while not await command_works():
                assert time.monotonic() < deadline, "commands never worked again"
                await asyncio.sleep(0.2)
            assert device.state["brightness"] == 33
        finally:
            await device.stop()


async def test_an_mqtt_311_gateway(broker: MosquittoBroker, tmp_path: Path) -> None:
    async with running_gateway(broker.url, tmp_path / "s", mqtt_protocol_version=4) as gw:
        assert not gw.daemon.link.is_mqtt5
        await traffic_flows(gw, broker.url)
        async with raw_device(broker.url, "thermostat") as device:
            await online_device(gw, device)
            pending = []
            for index in range(60):
                pending.append(asyncio.ensure_future(gw.request(
                    "POST", f"/api/devices/{device.device_id}/commands",
                    json_body={"command": "set_mode", "params": {"mode": "eco"}, "requestId": f"v4-{index}"})))
            for _ in range(60):
                command = json.loads((await device.command()).payload)
                await device.send(TopicKind.RESPONSE, {"code": 0, "requestId": command["requestId"]})
            results = await asyncio.wait_for(asyncio.gather(*pending), 60)
            assert [status for status, _ in results] == [200] * 60


async def test_custom_topic_templates_end_to_end(broker: MosquittoBroker, tmp_path: Path) -> None:
    custom = TopicTemplates(command="site/{productId}/{deviceId}/down/cmd")
    async with running_gateway(broker.url, tmp_path / "s", mqtt_topics_command=custom.command) as gw, \
            raw_device(broker.url, "thermostat", topics=custom) as device:
        assert device.topic(TopicKind.COMMAND) == f"site/thermostat/{device.device_id}/down/cmd"
        await online_device(gw, device)
        request = asyncio.ensure_future(gw.request(
            "POST", f"/api/devices/{device.device_id}/commands",
            json_body={"command": "set_mode", "params": {"mode": "eco"}}))
        command = await device.command()
        assert command.topic == f"site/thermostat/{device.device_id}/down/cmd"
        await device.send(TopicKind.RESPONSE, {"code": 0, "requestId": json.loads(command.payload)["requestId"]})
        status, _ = await asyncio.wait_for(request, WAIT_S)
        assert status == 200

    custom = TopicTemplates(telemetry="up/{deviceId}/{productId}/state")
    async with running_gateway(broker.url, tmp_path / "t", mqtt_topics_telemetry=custom.telemetry) as gw, \
            raw_device(broker.url, "light", topics=custom) as device:
        await device.send(TopicKind.TELEMETRY, {"type": "status", "data": {"status": "online"}})
        await wait_until(lambda: gw.daemon.registry.get(device.device_id), WAIT_S)
        assert gw.daemon.registry.get(device.device_id).product_id == "light"
        # The default topic is no longer listened to.
        async with raw_device(broker.url, "light") as old_style:
            await old_style.send(TopicKind.TELEMETRY, {"type": "status", "data": {"status": "online"}})
            await old_style.flush()
            await asyncio.sleep(0.5)
            assert gw.daemon.registry.get(old_style.device_id) is None
