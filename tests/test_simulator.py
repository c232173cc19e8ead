"""The device simulator: its state rules alone, then SimulatedDevice against a real mosquitto
with a gmqtt client in this file playing the gateway."""

from __future__ import annotations

import asyncio
import json
import os
import random
import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cbor2
import gmqtt
import pytest

from deviceagentd.core.spec import ProductSpec, load_spec_file, parse_spec
from deviceagentd.mqtt.codec import decode, encode
from deviceagentd.mqtt.topics import TopicKind
from deviceagentd.simulator import DeviceModel, SimulatedDevice, SimulatorOptions
from deviceagentd.simulator.__main__ import find_product, parse_state_assignments
from deviceagentd.simulator.clock import ntp_sample
from deviceagentd.simulator.link import InflightStore, parse_broker_url
from deviceagentd.simulator.model import ReceivedCommand, initial_state

PRODUCTS_DIR = Path(__file__).resolve().parents[1] / "etc" / "deviceagentd" / "products"
WAIT_S = 15.0  # generous: only a broken simulator takes this long


def product(product_id: str) -> ProductSpec:
    return load_spec_file(PRODUCTS_DIR / f"{product_id}.json")


def model_of(product_id: str) -> DeviceModel:
    return DeviceModel(product(product_id), random.Random(7))


def command(cmd: Any, params: Any = None, request_id: Any = "r1") -> ReceivedCommand:
    return ReceivedCommand(cmd=cmd, params=params, request_id=request_id, ts=None, encoding="json")


# ---------------------------------------------------------------------------------------------
# State and command rules (no broker)
# ---------------------------------------------------------------------------------------------


def test_initial_state_is_the_seed_thermostat() -> None:
    state = initial_state(product("thermostat"))
    assert {k: state[k] for k in ("temperature", "humidity", "mode")} == {
        "temperature": 28, "humidity": 62, "mode": "auto",
    }


def test_initial_state_without_defaults_uses_zero_values_within_range() -> None:
    spec = parse_spec("gadget", {"telemetry": {
        "level": {"type": "int", "min": 10, "max": 20},
        "ratio": {"type": "float"},
        "on": {"type": "bool"},
        "label": {"type": "string"},
        "mode": {"type": "enum", "enum": ["eco", "boost"]},
        "extra": {"type": "object"},
        "items": {"type": "array"},
    }})
    assert initial_state(spec) == {
        "level": 10, "ratio": 0, "on": False, "label": "", "mode": "eco", "extra": {}, "items": [],
    }


def test_a_parameter_named_like_a_field_sets_it() -> None:
    model = model_of("thermostat")
    answer = model.execute(command("set_target_temperature", {"target_temperature": 24}, "req-001"))
    assert answer == {
        "code": 0, "msg": "ok", "requestId": "req-001", "data": {"target_temperature": 24},
        "metadata": {"productId": "thermostat", "source": "simulator"},
    }
    assert model.state["target_temperature"] == 24


@pytest.mark.parametrize("product_id", ["light", "switch", "air_conditioner"])
def test_turn_on_and_turn_off_set_the_power_field(product_id: str) -> None:
    model = model_of(product_id)
    assert model.run("turn_on", {}).data == {"power": True}
    assert model.state["power"] is True
    assert model.run("turn_off", None).data == {"power": False}
    assert model.state["power"] is False
    assert model.run("set_power", {"power": True}).data == {"power": True}


def test_curtain_open_close_pause_and_position() -> None:
    model = model_of("curtain")
    assert model.run("open", {}).data == {"position": 100, "motion": "stopped"}
    assert model.run("close", {}).data == {"position": 0, "motion": "stopped"}
    model.state["motion"] = "opening"
    assert model.run("pause", {}).data == {"motion": "stopped"}
    assert model.run("set_position", {"position": 40}).data == {"position": 40}
    assert model.state == {"position": 40, "motion": "stopped"}


def test_named_rules_use_the_fields_range_and_skip_what_does_not_fit() -> None:
    spec = parse_spec("blind", {
        "commands": {"open": {}, "close": {}, "pause": {}},
        "telemetry": {
            "percent": {"type": "int", "min": 5, "max": 95},
            "motion": {"type": "enum", "enum": ["moving", "idle"]},  # no "stopped": left alone
        },
    })
    model = DeviceModel(spec, random.Random(1))
    assert model.run("open", {}).data == {"percent": 95}
    assert model.run("close", {}).data == {"percent": 5}
    assert model.run("pause", {}).data == {}


def test_set_field_with_a_single_value_parameter_sets_the_field() -> None:
    spec = parse_spec("emqx_thermostat", {
        "commands": {"set_target_temperature": {"parameters": {"value": {"type": "float", "required": True}}}},
        "telemetry": {"target_temperature": {"type": "float"}, "current_temperature": {"type": "float"}},
    })
    model = DeviceModel(spec, random.Random(1))
    assert model.run("set_target_temperature", {"value": 21.5}).data == {"target_temperature": 21.5}


def test_a_parameter_that_does_not_fit_its_field_is_not_applied() -> None:
    spec = parse_spec("odd", {
        "commands": {"set_level": {"parameters": {"level": {"type": "int"}}}},
        "telemetry": {"level": {"type": "int", "max": 10}},
    })
    model = DeviceModel(spec, random.Random(1))
    assert model.run("set_level", {"level": 50}).data == {}
    assert model.state["level"] == 0


def test_int_fields_stay_ints() -> None:
    model = model_of("air_conditioner")
    model.run("set_target_temperature", {"target_temperature": 22.0})
    assert model.state["target_temperature"] == 22
    assert isinstance(model.state["target_temperature"], int)


def test_unknown_command_and_bad_params_are_refused_without_changing_state() -> None:
    model = model_of("thermostat")
    before = dict(model.state)
    unknown = model.run("fly", {})
    assert (unknown.code, unknown.msg) == (404, "Unknown command: fly")
    bad = model.run("set_target_temperature", {"target_temperature": 99})
    assert bad.code == 400
    assert "target_temperature" in bad.msg and "35" in bad.msg
    assert model.run("set_target_temperature", {}).code == 400
    assert model.run(None, {}).code == 400
    assert model.run("set_mode", "cool").code == 400
    assert model.state == before


def test_a_command_without_request_id_is_ignored() -> None:
    assert isinstance(DeviceModel.read_command({"cmd": "set_mode", "params": {}}, "json"), str)
    assert isinstance(DeviceModel.read_command({"cmd": "set_mode", "requestId": ""}, "json"), str)
    read = DeviceModel.read_command({"cmd": "set_mode", "requestId": "r9", "ts": 5}, "cbor")
    assert read == ReceivedCommand("set_mode", None, "r9", 5, "cbor")


def test_answers_are_remembered_per_request_id() -> None:
    model = model_of("thermostat")
    answer = model.execute(command("set_mode", {"mode": "heat"}, "r1"))
    assert model.cached_answer("r1") == answer
    assert model.cached_answer("r2") is None


def test_drift_moves_only_readings_and_stays_in_range() -> None:
    model = model_of("thermostat")
    settable = {"target_temperature": 22, "mode": "auto"}
    moved: set[str] = set()
    for _ in range(2000):
        moved.update(model.drift())
        assert -20 <= model.state["temperature"] <= 60
        assert 0 <= model.state["humidity"] <= 100
        assert isinstance(model.state["humidity"], int)
    assert moved == {"temperature", "humidity"}
    assert {k: model.state[k] for k in settable} == settable


def test_event_fields_come_from_the_state_unless_given() -> None:
    model = model_of("thermostat")
    assert model.event_fields("temperature_alert") == {"temperature": 28}
    assert model.event_fields("temperature_alert", {"temperature": 38.5}) == {"temperature": 38.5}
    assert model.event_payload("temperature_alert", {"temperature": 38.5}) == {
        "type": "event",
        "data": {"event": "temperature_alert", "temperature": 38.5, "level": "warning"},
        "metadata": {"productId": "thermostat", "source": "simulator"},
    }
    # Not in the spec: sent as it is, without a level (the gateway flags it undeclared).
    assert model.event_payload("made_up", {})["data"] == {"event": "made_up"}
    fault = model_of("air_conditioner").event_fields("fault")
    assert isinstance(fault["fault_code"], str) and isinstance(fault["reason"], str)


def test_connection_fields_follow_the_connection() -> None:
    spec = parse_spec("gadget", {"telemetry": {"online": {"type": "bool"}}})
    model = DeviceModel(spec, random.Random(1))
    model.set_connected(True)
    assert model.state == {"online": True}


def test_ntp_math() -> None:
    sample = ntp_sample(t1=1000.0, t2=1100.0, t3=1105.0, t4=1010.0, server_synced=True)
    assert sample.offset_ms == pytest.approx(97.5)
    assert sample.delay_ms == pytest.approx(5.0)
    assert sample.describe() == "NTP offset +97.5 ms, round trip 5.0 ms (gateway clock synced: yes)"
    # Whole-millisecond server stamps can make a tiny round trip look negative.
    assert ntp_sample(1000.2, 1000, 1001, 1000.6, None).delay_ms == 0.0


def test_broker_urls() -> None:
    assert parse_broker_url("mqtt://10.0.0.2").url == "mqtt://10.0.0.2:1883"
    secure = parse_broker_url("mqtts://gw.local")
    assert (secure.port, secure.tls) == (8883, True)
    with_user = parse_broker_url("mqtt://sim:s%40cret@127.0.0.1:1884")
    assert (with_user.username, with_user.password, with_user.port) == ("sim", "s@cret", 1884)
    assert "s@cret" not in with_user.url
    with pytest.raises(ValueError):
        parse_broker_url("ws://127.0.0.1:8083")


def test_cli_helpers() -> None:
    assert parse_state_assignments(["temperature=30.5", 'mode="cool"', "label=hall"]) == {
        "temperature": 30.5, "mode": "cool", "label": "hall",
    }
    with pytest.raises(ValueError):
        parse_state_assignments(["temperature"])
    assert find_product("light", PRODUCTS_DIR).product_id == "light"
    assert find_product(str(PRODUCTS_DIR / "switch.json"), Path("/nonexistent")).product_id == "switch"
    with pytest.raises(FileNotFoundError, match="thermostat"):
        find_product("toaster", PRODUCTS_DIR)


async def test_inflight_store_waits_for_room() -> None:
    store = InflightStore()
    for mid in range(3):
        store.push_message(mid, b"x")
    waiter = asyncio.ensure_future(store.wait_below(3))
    await asyncio.sleep(0)
    assert not waiter.done()
    store.remove_message_by_mid(1)
    await asyncio.wait_for(waiter, WAIT_S)
    store.clear()
    await asyncio.wait_for(store.wait_empty(), WAIT_S)


# ---------------------------------------------------------------------------------------------
# A real broker and a fake gateway
# ---------------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Broker:
    """One mosquitto process on a free loopback port (tests/conftest.py has a shared one; this
    file keeps its own so it can restart it)."""

    directory: Path
    port: int = field(default_factory=_free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self) -> None:
        exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        conf = self.directory / "m.conf"
        lines = [f"listener {self.port} 127.0.0.1", "allow_anonymous true", "persistence false"]
        if os.geteuid() == 0:
            lines.append("user root")  # else mosquitto drops to user "mosquitto"
        conf.write_text("\n".join(lines) + "\n")
        with open(self.directory / "mosquitto.log", "ab") as log:  # the child keeps its own copy
            self.process = subprocess.Popen([exe, "-c", str(conf)], stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"mosquitto exited: {(self.directory / 'mosquitto.log').read_text()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("mosquitto did not open its port")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self.process = None


@pytest.fixture
def sim_broker(tmp_path: Path) -> Iterator[Broker]:
    broker = Broker(tmp_path)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


@dataclass
class Received:
    topic: str
    message: dict[str, Any]
    content_type: str | None
    raw: bytes


class FakeGateway:
    """A gmqtt client that listens where deviceagentd listens, answers NTP requests the way
    SPEC §2 says, and lets a test wait for the message it expects."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.answer_ntp = True
        self.ntp_request_id = True
        self.received: asyncio.Queue[Received] = asyncio.Queue()
        self.client = gmqtt.Client(f"fake-gateway-{os.getpid()}-{random.randrange(10**6)}")
        self.client.on_message = self._on_message
        self._subscribed = asyncio.Event()
        self.client.on_subscribe = lambda *_: self._subscribed.set()

    async def start(self) -> None:
        await self.client.connect("127.0.0.1", self.port)
        self.client.subscribe([
            gmqtt.Subscription(topic, qos=1)
            for topic in (
                "v1/+/+/telemetry",
                "v1/+/+/event",
                "device-agent/+/device/+/responses",
                "device-agent/+/device/+/ntp/request",
            )
        ])
        await asyncio.wait_for(self._subscribed.wait(), WAIT_S)

    async def stop(self) -> None:
        await self.client.disconnect()

    def _on_message(self, client: Any, topic: str, payload: bytes, qos: int, properties: dict[str, Any]) -> None:
        server_recv = int(time.time() * 1000)
        content_type = (properties.get("content_type") or [None])[0]
        message, encoding = decode(payload, content_type, 1 << 20)
        if topic.endswith("/ntp/request") and self.answer_ntp:
            answer = {"deviceSendTime": message["deviceSendTime"], "serverRecvTime": server_recv}
            if self.ntp_request_id and "requestId" in message:
                answer["requestId"] = message["requestId"]
            answer["serverClockSynced"] = True
            answer["serverSendTime"] = int(time.time() * 1000)
            self.client.publish(topic.replace("/ntp/request", "/ntp/response"), encode(answer, encoding))
            return
        self.received.put_nowait(Received(topic, message, content_type, payload))

    async def expect(self, match: Callable[[Received], bool]) -> Received:
        """The next message that matches; others are skipped (heartbeats, state reports)."""
        async def wait() -> Received:
            while True:
                item = await self.received.get()
                if match(item):
                    return item
        return await asyncio.wait_for(wait(), WAIT_S)

    async def expect_on(self, topic: str, **data: Any) -> Received:
        def match(item: Received) -> bool:
            if item.topic != topic:
                return False
            body = item.message.get("data", item.message)
            return isinstance(body, dict) and all(body.get(k) == v for k, v in data.items())
        return await self.expect(match)

    async def response(self, request_id: str) -> dict[str, Any]:
        got = await self.expect(lambda i: i.topic.endswith("/responses") and i.message.get("requestId") == request_id)
        return got.message

    def send_command(self, device: SimulatedDevice, message: dict[str, Any], cbor: bool = False) -> None:
        props = {"content_type": "application/cbor"} if cbor else {}
        payload = cbor2.dumps(message) if cbor else json.dumps(message).encode()
        self.client.publish(device.topic(TopicKind.COMMAND), payload, qos=1, **props)


@pytest.fixture
async def gateway(sim_broker: Broker) -> AsyncIterator[FakeGateway]:
    gw = FakeGateway(sim_broker.port)
    await gw.start()
    try:
        yield gw
    finally:
        await gw.stop()


def options(broker: Broker, **overrides: Any) -> SimulatorOptions:
    values: dict[str, Any] = {"url": broker.url, "heartbeat_s": 0, "seed": 3}
    values.update(overrides)
    return SimulatorOptions(**values)


@pytest.fixture
async def thermostat(sim_broker: Broker, gateway: FakeGateway) -> AsyncIterator[SimulatedDevice]:
    device = SimulatedDevice(product("thermostat"), "thermostat-001", options(sim_broker))
    await asyncio.wait_for(device.start(), WAIT_S)
    try:
        yield device
    finally:
        await device.stop()


TELEMETRY = "v1/thermostat/thermostat-001/telemetry"
EVENT = "v1/thermostat/thermostat-001/event"
SEED_COMMAND = {"cmd": "set_target_temperature", "params": {"target_temperature": 24},
                "requestId": "req-001", "ts": 1710000010000}


async def test_online_status_then_the_seed_command(gateway: FakeGateway, thermostat: SimulatedDevice) -> None:
    online = await gateway.expect_on(TELEMETRY, status="online")
    assert online.message == {
        "type": "status",
        "data": {"status": "online", "state": {
            "temperature": 28, "humidity": 62, "mode": "auto", "target_temperature": 22,
        }},
        "metadata": {"productId": "thermostat", "source": "simulator"},
    }
    gateway.send_command(thermostat, SEED_COMMAND)
    answer = await gateway.response("req-001")
    assert answer == {
        "code": 0, "msg": "ok", "requestId": "req-001", "data": {"target_temperature": 24},
        "metadata": {"productId": "thermostat", "source": "simulator"},
    }
    state = await gateway.expect(lambda i: i.topic == TELEMETRY and i.message.get("type") == "state")
    assert state.message["data"]["target_temperature"] == 24
    assert thermostat.state["target_temperature"] == 24
    assert [(c.cmd, c.request_id) for c in thermostat.commands_received] == [("set_target_temperature", "req-001")]


async def test_unknown_command_bad_params_and_missing_request_id(
    gateway: FakeGateway, thermostat: SimulatedDevice
) -> None:
    gateway.send_command(thermostat, {"cmd": "fly", "params": {}, "requestId": "req-404", "ts": 1})
    assert await gateway.response("req-404") == {
        "code": 404, "msg": "Unknown command: fly", "requestId": "req-404",
        "metadata": {"productId": "thermostat", "source": "simulator"},
    }
    gateway.send_command(thermostat, {"cmd": "set_target_temperature", "params": {"target_temperature": 99},
                                      "requestId": "req-400"})
    bad = await gateway.response("req-400")
    assert bad["code"] == 400 and "target_temperature" in bad["msg"]
    assert thermostat.state["target_temperature"] == 22

    # No requestId: nothing to answer to. The next response is the next command's.
    gateway.send_command(thermostat, {"cmd": "set_mode", "params": {"mode": "heat"}})
    gateway.send_command(thermostat, {"cmd": "set_mode", "params": {"mode": "cool"}, "requestId": "req-after"})
    after = await gateway.expect(lambda i: i.topic.endswith("/responses"))
    assert after.message["requestId"] == "req-after"
    assert thermostat.state["mode"] == "cool"


async def test_a_repeated_request_id_gets_the_same_answer_without_reapplying(
    gateway: FakeGateway, thermostat: SimulatedDevice
) -> None:
    gateway.send_command(thermostat, SEED_COMMAND)
    first = await gateway.response("req-001")
    await thermostat.report_state(target_temperature=20)
    gateway.send_command(thermostat, SEED_COMMAND)
    assert await gateway.response("req-001") == first
    assert thermostat.state["target_temperature"] == 20
    assert len(thermostat.commands_received) == 1


async def test_events_arrive_on_the_event_topic(gateway: FakeGateway, thermostat: SimulatedDevice) -> None:
    await thermostat.emit_event("temperature_alert", {"temperature": 38.5})
    event = await gateway.expect(lambda i: i.topic == EVENT)
    assert event.message == {
        "type": "event",
        "data": {"event": "temperature_alert", "temperature": 38.5, "level": "warning"},
        "metadata": {"productId": "thermostat", "source": "simulator"},
    }


async def test_a_burst_of_qos1_events_stays_within_the_brokers_receive_maximum(
    gateway: FakeGateway, thermostat: SimulatedDevice
) -> None:
    # Mosquitto allows 20 unacknowledged QoS 1 messages; gmqtt 0.8.0 raises past that.
    await asyncio.gather(*(thermostat.emit_event("temperature_alert", {"temperature": n}) for n in range(60)))
    seen: set[int] = set()
    while len(seen) < 60:
        event = await gateway.expect(lambda i: i.topic == EVENT)
        seen.add(event.message["data"]["temperature"])
    assert seen == set(range(60))


async def test_sync_clock_against_a_responder(gateway: FakeGateway, thermostat: SimulatedDevice) -> None:
    sample = await thermostat.sync_clock(timeout_s=WAIT_S)
    # Same host, same clock: the offset is the stamps' rounding plus the broker hops.
    assert abs(sample.offset_ms) < 1000
    assert 0 <= sample.delay_ms < 10_000
    assert sample.server_synced is True
    gateway.ntp_request_id = False  # matched by deviceSendTime instead
    assert (await thermostat.sync_clock(timeout_s=WAIT_S)).server_synced is True
    assert len(thermostat.ntp_samples) == 2
    gateway.answer_ntp = False
    with pytest.raises(TimeoutError):
        await thermostat.sync_clock(timeout_s=0.5)


async def test_cbor_round_trip(sim_broker: Broker, gateway: FakeGateway) -> None:
    device = SimulatedDevice(product("thermostat"), "thermostat-cbor", options(sim_broker, encoding="cbor"))
    await asyncio.wait_for(device.start(), WAIT_S)
    try:
        online = await gateway.expect_on("v1/thermostat/thermostat-cbor/telemetry", status="online")
        assert online.content_type == "application/cbor"
        assert cbor2.loads(online.raw)["data"]["state"]["temperature"] == 28
        gateway.send_command(device, {**SEED_COMMAND, "requestId": "req-cbor"}, cbor=True)
        answer = await gateway.expect(lambda i: i.topic.endswith("/responses"))
        assert answer.content_type == "application/cbor"
        assert cbor2.loads(answer.raw)["data"] == {"target_temperature": 24}
        assert device.commands_received[0].encoding == "cbor"
        # A JSON command is understood too; the device keeps answering in its own encoding.
        gateway.send_command(device, {"cmd": "set_mode", "params": {"mode": "eco"}, "requestId": "req-json"})
        json_answer = await gateway.response("req-json")
        assert json_answer["code"] == 0
        assert device.state["mode"] == "eco"
    finally:
        await device.stop()


async def test_kill_makes_the_broker_publish_the_last_will(gateway: FakeGateway, thermostat: SimulatedDevice) -> None:
    await gateway.expect_on(TELEMETRY, status="online")
    await thermostat.kill()
    will = await gateway.expect_on(TELEMETRY, status="offline")
    assert will.message == {
        "type": "status",
        "data": {"status": "offline"},
        "metadata": {"productId": "thermostat", "source": "simulator"},
    }


async def test_stop_says_offline(gateway: FakeGateway, thermostat: SimulatedDevice) -> None:
    await gateway.expect_on(TELEMETRY, status="online")
    await thermostat.stop()
    offline = await gateway.expect_on(TELEMETRY, status="offline")
    assert offline.message["data"] == {"status": "offline"}
    assert not thermostat.connected


async def test_no_answer_mode_takes_commands_but_never_answers(sim_broker: Broker, gateway: FakeGateway) -> None:
    device = SimulatedDevice(product("thermostat"), "thermostat-mute", options(sim_broker, answer=False))
    await asyncio.wait_for(device.start(), WAIT_S)
    try:
        gateway.send_command(device, SEED_COMMAND)
        deadline = time.monotonic() + WAIT_S
        while not device.commands_received and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert [c.request_id for c in device.commands_received] == ["req-001"]
        await asyncio.sleep(0.3)
        responses = [i for i in _drain(gateway) if i.topic.endswith("/responses")]
        assert responses == []
        assert device.state["target_temperature"] == 22
    finally:
        await device.stop()


def _drain(gateway: FakeGateway) -> list[Received]:
    items = []
    while not gateway.received.empty():
        items.append(gateway.received.get_nowait())
    return items


async def test_mqtt_311_device(sim_broker: Broker, gateway: FakeGateway) -> None:
    device = SimulatedDevice(product("light"), "light-311", options(sim_broker, protocol=4))
    await asyncio.wait_for(device.start(), WAIT_S)
    try:
        await gateway.expect_on("v1/light/light-311/telemetry", status="online")
        gateway.send_command(device, {"cmd": "turn_on", "params": {}, "requestId": "on-1"})
        assert (await gateway.response("on-1"))["data"] == {"power": True}
    finally:
        await device.stop()


async def test_start_waits_for_a_broker_that_comes_up_later(tmp_path: Path) -> None:
    broker = Broker(tmp_path)
    device = SimulatedDevice(product("switch"), "switch-late", options(broker))
    starting = asyncio.ensure_future(device.start())
    try:
        await asyncio.sleep(1.5)  # at least one refused attempt
        assert not starting.done()
        broker.start()
        await asyncio.wait_for(starting, WAIT_S)
        assert device.connected
        await device.stop()
    finally:
        starting.cancel()
        broker.stop()


async def test_subscriptions_come_back_after_a_broker_restart(sim_broker: Broker) -> None:
    device = SimulatedDevice(product("switch"), "switch-restart", options(sim_broker))
    await asyncio.wait_for(device.start(), WAIT_S)
    try:
        sim_broker.stop()
        sim_broker.start()
        gateway = FakeGateway(sim_broker.port)
        await gateway.start()
        try:
            # The device republishes its online status after reconnecting, subscribed again.
            await gateway.expect_on("v1/switch/switch-restart/telemetry", status="online")
            gateway.send_command(device, {"cmd": "turn_on", "requestId": "after-restart"})
            assert (await gateway.response("after-restart"))["code"] == 0
        finally:
            await gateway.stop()
    finally:
        await device.stop()


async def test_timers_send_heartbeats_state_reports_random_events_and_sync_once(
    sim_broker: Broker, gateway: FakeGateway
) -> None:
    device = SimulatedDevice(product("thermostat"), "thermostat-busy", options(
        sim_broker, heartbeat_s=0.2, state_interval_s=0.2, random_events_s=0.2, ntp_interval_s=0,
    ))
    await asyncio.wait_for(device.start(), WAIT_S)
    try:
        telemetry = "v1/thermostat/thermostat-busy/telemetry"
        await gateway.expect_on(telemetry, status="online")
        await gateway.expect_on(telemetry, status="online")  # a heartbeat
        state = await gateway.expect(lambda i: i.topic == telemetry and i.message.get("type") == "state")
        assert set(state.message["data"]) == {"temperature", "humidity", "mode", "target_temperature"}
        event = await gateway.expect(lambda i: i.topic == "v1/thermostat/thermostat-busy/event")
        assert event.message["data"]["event"] == "temperature_alert"
        deadline = time.monotonic() + WAIT_S
        while not device.ntp_samples and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert len(device.ntp_samples) == 1
    finally:
        await device.stop()


def test_options_are_checked() -> None:
    with pytest.raises(ValueError, match="protocol"):
        SimulatorOptions(protocol=3)
    with pytest.raises(ValueError, match="encoding"):
        SimulatorOptions(encoding="xml")  # type: ignore[arg-type]
