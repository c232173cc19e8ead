"""The HTTP API (SPEC §3) end to end: the real daemon, a real mosquitto, simulated devices.

Every test starts its own daemon (fresh state directory) on the session broker; simulated
devices get unique MQTT client ids. Bad requests are checked for their status and error
envelope, for not reaching the device, and for leaving the gateway working ("nothing else is
lost": a valid command still goes through and telemetry still updates the state afterwards).
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import shlex
import shutil
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import pytest
from daemon_harness import PRODUCTS_DIR, RunningDaemon, start_daemon, wait_until
from mosquitto_broker import MosquittoBroker, free_port

import deviceagentd
from deviceagentd.core.spec import ProductSpec, load_spec_file
from deviceagentd.simulator import SimulatedDevice, SimulatorOptions

TOKEN = "a-very-secret-token-123"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
JSON = {"Content-Type": "application/json"}
WAIT_S = 15.0  # generous: only a broken daemon or simulator takes this long
T = TypeVar("T")

# The seed document's command example, byte for byte as `curl -d '...'` sends it.
SEED_COMMAND_BODY = """{
    "command": "set_target_temperature",
    "params": {
      "target_temperature": 24
    },
    "timeoutMs": 30000
  }"""
# The seed document's four curl examples, verbatim (the base URL is swapped for the test's).
SEED_CURL = {
    "list": "curl 'http://127.0.0.1:3000/api/products/thermostat/devices?status=online'",
    "device": "curl 'http://127.0.0.1:3000/api/devices/thermostat-001'",
    "command": "curl http://127.0.0.1:3000/api/devices/thermostat-001/commands \\\n"
    "  -H 'Content-Type: application/json' \\\n"
    f"  -d '{SEED_COMMAND_BODY}'",
    "events": "curl 'http://127.0.0.1:3000/api/devices/thermostat-001/events?limit=50'",
}
DEVICE_KEYS = {"deviceId", "productId", "status", "online", "state", "lastSeen", "firstSeen", "metadata"}
EVENT_KEYS = {"id", "deviceId", "productId", "event", "level", "declared", "data", "ts", "receivedAt"}


def spec(product: str) -> ProductSpec:
    return load_spec_file(PRODUCTS_DIR / f"{product}.json")


# ---------------------------------------------------------------------------------------------
# Fixtures and helpers
# ---------------------------------------------------------------------------------------------


class Devices:
    """Starts simulated devices and stops them all at the end of the test."""

    def __init__(self) -> None:
        self.started: list[SimulatedDevice] = []

    async def start(self, broker_url: str, product: str, device_id: str, **options: Any) -> SimulatedDevice:
        options.setdefault("heartbeat_s", 0)
        client_id = f"sim-{device_id}-{uuid.uuid4().hex[:8]}"
        sim = SimulatedDevice(spec(product), device_id, SimulatorOptions(url=broker_url, client_id=client_id,
                                                                         **options))
        await asyncio.wait_for(sim.start(), WAIT_S)
        self.started.append(sim)
        return sim

    async def stop_all(self) -> None:
        for sim in reversed(self.started):
            await sim.stop()


@pytest.fixture
async def devices() -> AsyncIterator[Devices]:
    factory = Devices()
    try:
        yield factory
    finally:
        await factory.stop_all()


@pytest.fixture
async def gateway(broker: MosquittoBroker, tmp_path: Path) -> AsyncIterator[RunningDaemon]:
    gw = await start_daemon(broker.url, tmp_path / "state")
    try:
        yield gw
    finally:
        await gw.stop()


@pytest.fixture
async def thermostat(broker: MosquittoBroker, gateway: RunningDaemon, devices: Devices) -> SimulatedDevice:
    """The seed's thermostat-001, online at `gateway`."""
    sim = await devices.start(broker.url, "thermostat", "thermostat-001")
    await until_online(gateway, "thermostat-001")
    return sim


async def until_online(gw: RunningDaemon, device_id: str, online: bool = True) -> None:
    def check() -> bool:
        device = gw.daemon.registry.get(device_id)
        return device is not None and device.online == online

    await wait_until(check, WAIT_S)


async def eventually(probe: Callable[[], Awaitable[T | None]], timeout: float = WAIT_S) -> T:
    """Await probe() until it returns something other than None (or False)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = await probe()
        if value is not None and value is not False:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not met within {timeout} s (last value {value!r})")
        await asyncio.sleep(0.05)


def error_of(status: int, body: Any, expected_status: int, code: str) -> dict[str, Any]:
    """Check the SPEC §3 error envelope and return its `error` object."""
    assert status == expected_status, f"expected {expected_status} {code}, got {status}: {body!r}"
    assert isinstance(body, dict) and set(body) == {"error"}, body
    error: dict[str, Any] = body["error"]
    assert set(error) <= {"code", "message", "details"}, error
    assert error["code"] == code, error
    assert isinstance(error["message"], str) and error["message"].strip(), error
    return error


def fields_of(error: dict[str, Any]) -> list[str]:
    details = error.get("details")
    assert isinstance(details, list) and details, f"a 400 must name the field(s) in details: {error}"
    for item in details:
        assert set(item) == {"field", "reason"} and isinstance(item["reason"], str) and item["reason"], item
    return [item["field"] for item in details]


async def send(gw: RunningDaemon, body: Any, device_id: str = "thermostat-001",
               headers: dict[str, str] | None = None) -> tuple[int, Any]:
    return await gw.request("POST", f"/api/devices/{device_id}/commands", json_body=body, headers=headers)


async def send_raw(gw: RunningDaemon, data: bytes, content_type: str | None = "application/json",
                   device_id: str = "thermostat-001") -> tuple[int, Any]:
    headers = {"Content-Type": content_type} if content_type is not None else None
    return await gw.request("POST", f"/api/devices/{device_id}/commands", data=data, headers=headers)


async def device_json(gw: RunningDaemon, device_id: str, headers: dict[str, str] | None = None) -> dict[str, Any]:
    status, body = await gw.request("GET", f"/api/devices/{device_id}", headers=headers)
    assert status == 200, body
    assert isinstance(body, dict)
    return body


async def events_of(gw: RunningDaemon, device_id: str, query: str = "") -> dict[str, Any]:
    status, body = await gw.request("GET", f"/api/devices/{device_id}/events{query}")
    assert status == 200, body
    assert isinstance(body, dict) and set(body) == {"events", "nextBefore"}, body
    return body


async def until_events(gw: RunningDaemon, device_id: str, count: int, query: str = "?limit=1000") -> list[Any]:
    async def probe() -> list[Any] | None:
        events: list[Any] = (await events_of(gw, device_id, query))["events"]
        return events if len(events) >= count else None

    return await eventually(probe)


async def until_state(gw: RunningDaemon, device_id: str, headers: dict[str, str] | None = None,
                      **expected: Any) -> dict[str, Any]:
    async def probe() -> dict[str, Any] | None:
        state: dict[str, Any] = (await device_json(gw, device_id, headers))["state"]
        return state if all(state.get(k) == v for k, v in expected.items()) else None

    return await eventually(probe)


async def assert_nothing_lost(gw: RunningDaemon, sim: SimulatedDevice, headers: dict[str, str] | None = None) -> None:
    """After bad requests: a valid command still reaches the device, telemetry still lands."""
    before = len(sim.commands_received)
    status, body = await send(gw, {"command": "set_mode", "params": {"mode": "heat"}, "timeoutMs": 10000},
                              sim.device_id, headers)
    assert status == 200, body
    assert (body["code"], body["ok"], body["data"]) == (0, True, {"mode": "heat"})
    assert len(sim.commands_received) == before + 1
    assert sim.commands_received[-1].cmd == "set_mode"
    assert sim.state["mode"] == "heat"
    await sim.report_state(temperature=31.5)
    await until_state(gw, sim.device_id, headers, temperature=31.5, mode="heat")


def iso(value: str) -> datetime:
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z", value), value
    return datetime.fromisoformat(value)


# ---------------------------------------------------------------------------------------------
# Health
# ---------------------------------------------------------------------------------------------


async def test_health_ok_reports_mqtt_and_device_totals(
    broker: MosquittoBroker, gateway: RunningDaemon, devices: Devices
) -> None:
    status, body = await gateway.request("GET", "/api/health")
    assert status == 200, body
    assert body["status"] == "ok"
    assert body["version"] == deviceagentd.__version__
    assert isinstance(body["uptimeS"], int | float) and body["uptimeS"] >= 0
    assert body["mqtt"]["connected"] is True
    assert body["devices"] == {"total": 0, "online": 0}

    await devices.start(broker.url, "thermostat", "thermostat-001")
    light = await devices.start(broker.url, "light", "light-001")
    await until_online(gateway, "thermostat-001")
    await until_online(gateway, "light-001")
    status, body = await gateway.request("GET", "/api/health")
    assert status == 200 and body["devices"] == {"total": 2, "online": 2}, body

    await light.stop()
    await until_online(gateway, "light-001", online=False)
    status, body = await gateway.request("GET", "/api/health")
    assert status == 200 and body["status"] == "ok"
    assert body["devices"] == {"total": 2, "online": 1}


async def test_health_is_503_degraded_when_the_broker_is_unreachable(tmp_path: Path) -> None:
    closed = f"mqtt://127.0.0.1:{free_port()}"
    gw = await start_daemon(closed, tmp_path / "state", wait_subscribed=False)
    try:
        status, body = await gw.request("GET", "/api/health")
        assert status == 503, body
        assert body["status"] == "degraded"
        assert body["mqtt"]["connected"] is False
        assert body["version"] == deviceagentd.__version__
        assert body["devices"] == {"total": 0, "online": 0}
        # The rest of the API is served all the same.
        status, body = await gw.request("GET", "/api/products")
        assert status == 200 and body["products"]
    finally:
        await gw.stop()


# ---------------------------------------------------------------------------------------------
# Products
# ---------------------------------------------------------------------------------------------


async def test_products_list_every_configured_product(gateway: RunningDaemon, thermostat: SimulatedDevice) -> None:
    status, body = await gateway.request("GET", "/api/products")
    assert status == 200, body
    by_id = {p["productId"]: p for p in body["products"]}
    assert set(by_id) == {path.stem for path in PRODUCTS_DIR.glob("*.json")}
    assert set(by_id) >= {"thermostat", "light"}
    thermo = by_id["thermostat"]
    assert thermo["name"] == "Thermostat"
    assert thermo["description"].startswith("A room thermostat.")
    assert thermo["commands"] == ["set_mode", "set_target_temperature"]
    assert thermo["devices"] == 1
    assert by_id["light"]["devices"] == 0


async def test_product_is_its_device_spec(gateway: RunningDaemon) -> None:
    status, body = await gateway.request("GET", "/api/products/thermostat")
    assert status == 200, body
    assert body["productId"] == "thermostat"
    assert body["name"] == "Thermostat"
    assert set(body["commands"]) == {"set_target_temperature", "set_mode"}
    param = body["commands"]["set_target_temperature"]["parameters"]["target_temperature"]
    assert {k: param[k] for k in ("type", "required", "min", "max", "unit")} == {
        "type": "float", "required": True, "min": 5, "max": 35, "unit": "°C",
    }
    assert body["commands"]["set_mode"]["parameters"]["mode"]["enum"] == ["auto", "cool", "heat", "eco", "off"]
    assert set(body["telemetry"]) == {"temperature", "humidity", "mode", "target_temperature"}
    assert body["telemetry"]["humidity"]["type"] == "int"
    assert body["events"]["temperature_alert"]["eventType"] == "warning"
    assert body["events"]["temperature_alert"]["outputData"]["temperature"]["type"] == "float"


async def test_unknown_product_is_404(gateway: RunningDaemon) -> None:
    status, body = await gateway.request("GET", "/api/products/fridge")
    error = error_of(status, body, 404, "product_not_found")
    assert error["details"] == {"productId": "fridge"}


# ---------------------------------------------------------------------------------------------
# Devices
# ---------------------------------------------------------------------------------------------


async def test_devices_of_a_product_filtered_by_status(
    broker: MosquittoBroker, gateway: RunningDaemon, devices: Devices, thermostat: SimulatedDevice
) -> None:
    spare = await devices.start(broker.url, "thermostat", "thermostat-002")
    await devices.start(broker.url, "light", "light-001")
    await until_online(gateway, "thermostat-002")
    await until_online(gateway, "light-001")
    await spare.stop()
    await until_online(gateway, "thermostat-002", online=False)

    async def ids(query: str) -> list[str]:
        status, body = await gateway.request("GET", f"/api/products/thermostat/devices{query}")
        assert status == 200, body
        for device in body["devices"]:
            assert set(device) == DEVICE_KEYS
            assert device["productId"] == "thermostat"
            assert device["online"] is (device["status"] == "online")
        return [d["deviceId"] for d in body["devices"]]

    assert await ids("?status=online") == ["thermostat-001"]
    assert await ids("?status=offline") == ["thermostat-002"]
    assert await ids("") == ["thermostat-001", "thermostat-002"]
    assert await ids("?status=") == ["thermostat-001", "thermostat-002"]
    status, body = await gateway.request("GET", "/api/products/light/devices?status=online")
    assert status == 200 and [d["deviceId"] for d in body["devices"]] == ["light-001"]
    status, body = await gateway.request("GET", "/api/products/curtain/devices")
    assert status == 200 and body == {"devices": []}


@pytest.mark.parametrize("value", ["sleeping", "ONLINE", "true", "1"])
async def test_devices_with_a_bad_status_filter_is_400(gateway: RunningDaemon, value: str) -> None:
    status, body = await gateway.request("GET", f"/api/products/thermostat/devices?status={value}")
    error = error_of(status, body, 400, "invalid_request")
    assert fields_of(error) == ["status"]


async def test_devices_of_an_unknown_product_is_404(gateway: RunningDaemon) -> None:
    status, body = await gateway.request("GET", "/api/products/fridge/devices?status=online")
    error_of(status, body, 404, "product_not_found")


async def test_device_details(gateway: RunningDaemon, thermostat: SimulatedDevice) -> None:
    device = await device_json(gateway, "thermostat-001")
    assert set(device) == DEVICE_KEYS
    assert device["deviceId"] == "thermostat-001"
    assert device["productId"] == "thermostat"
    assert device["status"] == "online" and device["online"] is True
    assert device["state"] == {"temperature": 28, "humidity": 62, "mode": "auto", "target_temperature": 22}
    assert device["metadata"] == {"productId": "thermostat", "source": "simulator"}
    assert iso(device["firstSeen"]) <= iso(device["lastSeen"])


async def test_unknown_device_is_404(gateway: RunningDaemon, thermostat: SimulatedDevice) -> None:
    status, body = await gateway.request("GET", "/api/devices/thermostat-999")
    error = error_of(status, body, 404, "device_not_found")
    assert error["details"] == {"deviceId": "thermostat-999"}


# ---------------------------------------------------------------------------------------------
# The seed document's examples
# ---------------------------------------------------------------------------------------------


async def test_seed_examples_verbatim(gateway: RunningDaemon, thermostat: SimulatedDevice) -> None:
    status, body = await gateway.request("GET", "/api/products/thermostat/devices?status=online")
    assert status == 200, body
    assert [d["deviceId"] for d in body["devices"]] == ["thermostat-001"]

    device = await device_json(gateway, "thermostat-001")
    assert device["online"] is True and device["state"]["temperature"] == 28

    status, body = await send_raw(gateway, SEED_COMMAND_BODY.encode())
    assert status == 200, body
    assert set(body) == {"requestId", "code", "msg", "data", "ok", "latencyMs"}
    assert isinstance(body["requestId"], str) and body["requestId"]
    assert body["code"] == 0
    assert body["msg"] == "ok"
    assert body["data"] == {"target_temperature": 24}
    assert body["ok"] is True
    assert isinstance(body["latencyMs"], int | float) and body["latencyMs"] >= 0
    # The device really got it, with the gateway's requestId, and now reports 24.
    assert [(c.cmd, c.params, c.request_id) for c in thermostat.commands_received] == [
        ("set_target_temperature", {"target_temperature": 24}, body["requestId"])
    ]
    await until_state(gateway, "thermostat-001", target_temperature=24)

    page = await events_of(gateway, "thermostat-001", "?limit=50")
    assert [e["event"] for e in page["events"]] == ["online"]
    assert page["nextBefore"] is None


@pytest.mark.skipif(shutil.which("curl") is None or shutil.which("bash") is None, reason="needs curl and bash")
async def test_seed_curl_commands_verbatim(gateway: RunningDaemon, thermostat: SimulatedDevice) -> None:
    async def curl(name: str) -> Any:
        command = SEED_CURL[name].replace("http://127.0.0.1:3000", gateway.base_url)
        assert shlex.split(command)[0] == "curl"
        proc = await asyncio.create_subprocess_exec(
            "bash", "-c", command + " --silent --show-error",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode == 0, err.decode()
        return json.loads(out)

    listing = await curl("list")
    assert [d["deviceId"] for d in listing["devices"]] == ["thermostat-001"]
    assert (await curl("device"))["status"] == "online"
    result = await curl("command")
    assert (result["code"], result["msg"], result["data"], result["ok"]) == (0, "ok", {"target_temperature": 24}, True)
    await until_state(gateway, "thermostat-001", target_temperature=24)
    events = await curl("events")
    assert events["events"][-1]["event"] == "online"


# ---------------------------------------------------------------------------------------------
# Events
# ---------------------------------------------------------------------------------------------


async def test_events_newest_first_with_the_online_lifecycle_event(
    gateway: RunningDaemon, thermostat: SimulatedDevice
) -> None:
    for temperature in (36.0, 37.0, 38.5):
        await thermostat.emit_event("temperature_alert", {"temperature": temperature})
    events = await until_events(gateway, "thermostat-001", 4)
    assert len(events) == 4
    for event in events:
        assert set(event) >= EVENT_KEYS, event
        assert (event["deviceId"], event["productId"]) == ("thermostat-001", "thermostat")
        iso(event["ts"])
        iso(event["receivedAt"])
    ids = [e["id"] for e in events]
    assert ids == sorted(ids, reverse=True) and len(set(ids)) == 4
    assert [e["event"] for e in events] == ["temperature_alert"] * 3 + ["online"]
    assert [e["data"].get("temperature") for e in events[:3]] == [38.5, 37.0, 36.0]
    for alert in events[:3]:
        assert (alert["level"], alert["declared"], alert["source"]) == ("warning", True, "device")
    online = events[3]
    assert (online["level"], online["declared"], online["source"]) == ("info", True, "gateway")


async def test_offline_is_stored_as_a_lifecycle_event(
    broker: MosquittoBroker, gateway: RunningDaemon, devices: Devices
) -> None:
    sim = await devices.start(broker.url, "light", "light-001")
    await until_online(gateway, "light-001")
    await sim.stop()
    events = await until_events(gateway, "light-001", 2)
    assert [(e["event"], e["source"], e["level"]) for e in events] == [
        ("offline", "gateway", "info"), ("online", "gateway", "info"),
    ]


async def test_event_level_and_undeclared_events(gateway: RunningDaemon, thermostat: SimulatedDevice) -> None:
    await thermostat.emit_event("door_opened", {"by": "test"})
    await thermostat.emit_event("temperature_alert", {"temperature": 41.0, "level": "alert"})
    events = await until_events(gateway, "thermostat-001", 3)
    alert, door = events[0], events[1]
    assert (alert["event"], alert["level"], alert["declared"]) == ("temperature_alert", "alert", True)
    assert alert["data"] == {"temperature": 41.0}
    assert (door["event"], door["level"], door["declared"]) == ("door_opened", "info", False)
    assert door["data"] == {"by": "test"}


async def test_events_page_with_limit_and_before(gateway: RunningDaemon, thermostat: SimulatedDevice) -> None:
    for n in range(7):
        await thermostat.emit_event("temperature_alert", {"temperature": 30.0 + n})
    everything = await until_events(gateway, "thermostat-001", 8)
    assert len(everything) == 8
    all_ids = [e["id"] for e in everything]

    pages: list[list[int]] = []
    query = "?limit=3"
    while True:
        page = await events_of(gateway, "thermostat-001", query)
        ids = [e["id"] for e in page["events"]]
        pages.append(ids)
        if page["nextBefore"] is None:
            break
        assert page["nextBefore"] == ids[-1]
        query = f"?limit=3&before={page['nextBefore']}"
        assert len(pages) < 10, "pagination does not end"
    assert pages == [all_ids[0:3], all_ids[3:6], all_ids[6:8]]

    # A page that ends exactly at the last event may still carry nextBefore: the next is empty.
    first = await events_of(gateway, "thermostat-001", "?limit=4")
    second = await events_of(gateway, "thermostat-001", f"?limit=4&before={first['nextBefore']}")
    assert [e["id"] for e in first["events"] + second["events"]] == all_ids
    if second["nextBefore"] is not None:
        last = await events_of(gateway, "thermostat-001", f"?limit=4&before={second['nextBefore']}")
        assert last == {"events": [], "nextBefore": None}

    older = await events_of(gateway, "thermostat-001", f"?before={all_ids[1]}")
    assert [e["id"] for e in older["events"]] == all_ids[2:]
    assert older["nextBefore"] is None


async def test_events_default_limit_is_50(gateway: RunningDaemon, thermostat: SimulatedDevice) -> None:
    for n in range(55):
        await thermostat.emit_event("temperature_alert", {"temperature": float(n)})
    await until_events(gateway, "thermostat-001", 56)
    page = await events_of(gateway, "thermostat-001")
    assert len(page["events"]) == 50
    assert page["nextBefore"] == page["events"][-1]["id"]
    assert page["events"][0]["data"]["temperature"] == 54.0
    edge = await events_of(gateway, "thermostat-001", "?limit=1000")
    assert len(edge["events"]) == 56 and edge["nextBefore"] is None
    one = await events_of(gateway, "thermostat-001", "?limit=1")
    assert [e["id"] for e in one["events"]] == [edge["events"][0]["id"]]


async def test_events_filtered_by_name(gateway: RunningDaemon, thermostat: SimulatedDevice) -> None:
    for n in range(3):
        await thermostat.emit_event("temperature_alert", {"temperature": 40.0 + n})
    await thermostat.emit_event("door_opened", {})
    await until_events(gateway, "thermostat-001", 5)
    alerts = await events_of(gateway, "thermostat-001", "?event=temperature_alert")
    assert [e["data"]["temperature"] for e in alerts["events"]] == [42.0, 41.0, 40.0]
    assert {e["event"] for e in alerts["events"]} == {"temperature_alert"}
    online = await events_of(gateway, "thermostat-001", "?event=online")
    assert [(e["event"], e["source"]) for e in online["events"]] == [("online", "gateway")]
    assert await events_of(gateway, "thermostat-001", "?event=nothing_like_this") == {
        "events": [], "nextBefore": None,
    }
    page = await events_of(gateway, "thermostat-001", "?event=temperature_alert&limit=2")
    assert [e["data"]["temperature"] for e in page["events"]] == [42.0, 41.0]
    rest = await events_of(gateway, "thermostat-001", f"?event=temperature_alert&limit=2&before={page['nextBefore']}")
    assert [e["data"]["temperature"] for e in rest["events"]] == [40.0]
    assert rest["nextBefore"] is None


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("limit=0", "limit"),
        ("limit=1001", "limit"),
        ("limit=abc", "limit"),
        ("limit=-1", "limit"),
        ("limit=2.5", "limit"),
        ("before=abc", "before"),
        ("before=0", "before"),
    ],
)
async def test_events_bad_query_is_400(
    gateway: RunningDaemon, thermostat: SimulatedDevice, query: str, field: str
) -> None:
    status, body = await gateway.request("GET", f"/api/devices/thermostat-001/events?{query}")
    error = error_of(status, body, 400, "invalid_request")
    assert fields_of(error) == [field]


@pytest.mark.parametrize("query", ["limit=1_0", "limit=%205", "limit=%D9%A3"])
async def test_events_limit_must_be_plain_digits(
    gateway: RunningDaemon, thermostat: SimulatedDevice, query: str
) -> None:
    status, body = await gateway.request("GET", f"/api/devices/thermostat-001/events?{query}")
    assert fields_of(error_of(status, body, 400, "invalid_request")) == ["limit"]


async def test_events_of_an_unknown_device_is_404(gateway: RunningDaemon) -> None:
    status, body = await gateway.request("GET", "/api/devices/nobody/events?limit=50")
    error_of(status, body, 404, "device_not_found")


# ---------------------------------------------------------------------------------------------
# Commands: bad input. Each is refused, never reaches the device, and breaks nothing.
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "content_type"),
    [
        pytest.param(b'{"command": "set_mode", "params": {"mode": ', "application/json", id="truncated-json"),
        pytest.param(b"{'command': 'set_mode'}", "application/json", id="single-quotes"),
        pytest.param(b"", "application/json", id="empty-body"),
        pytest.param(b'\xff\xfe{"command": "set_mode"}', "application/json", id="not-utf8"),
        pytest.param(b'{"command": "set_mode"} {}', "application/json", id="two-documents"),
    ],
)
async def test_command_with_bad_json_is_400(
    gateway: RunningDaemon, thermostat: SimulatedDevice, data: bytes, content_type: str
) -> None:
    status, body = await send_raw(gateway, data, content_type)
    error_of(status, body, 400, "invalid_json")
    assert thermostat.commands_received == []
    await assert_nothing_lost(gateway, thermostat)


async def test_json_with_a_charset_parameter_is_json(gateway: RunningDaemon, thermostat: SimulatedDevice) -> None:
    data = json.dumps({"command": "set_mode", "params": {"mode": "cool"}}).encode()
    status, body = await send_raw(gateway, data, "application/json; charset=utf-8")
    assert status == 200 and body["data"] == {"mode": "cool"}, body


@pytest.mark.parametrize("data", [b"[]", b'["set_mode"]', b'"set_mode"', b"42", b"null", b"true"])
async def test_command_body_that_is_not_an_object_is_400(
    gateway: RunningDaemon, thermostat: SimulatedDevice, data: bytes
) -> None:
    status, body = await send_raw(gateway, data)
    error_of(status, body, 400, "invalid_json")
    assert thermostat.commands_received == []
    await assert_nothing_lost(gateway, thermostat)


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/x-www-form-urlencoded", "application/xml", None]
)
async def test_command_with_wrong_content_type_is_415(
    gateway: RunningDaemon, thermostat: SimulatedDevice, content_type: str | None
) -> None:
    valid = json.dumps({"command": "set_mode", "params": {"mode": "cool"}}).encode()
    status, body = await send_raw(gateway, valid, content_type)
    error_of(status, body, 415, "unsupported_media_type")
    assert thermostat.commands_received == []
    await assert_nothing_lost(gateway, thermostat)


BAD_COMMANDS = [
    pytest.param({"params": {"target_temperature": 24}}, ["command"], id="missing-command"),
    pytest.param({"command": ""}, ["command"], id="empty-command"),
    pytest.param({"command": 7}, ["command"], id="command-not-a-string"),
    pytest.param({"command": "self_destruct"}, ["command"], id="unknown-command"),
    pytest.param({"command": "set_mode", "params": {"mode": "eco"}, "priority": "high"}, ["priority"],
                 id="extra-field"),
    pytest.param({"command": "set_mode", "params": ["eco"]}, ["params"], id="params-not-an-object"),
    pytest.param({"command": "set_target_temperature", "params": {"target_temperature": "hot"}},
                 ["params.target_temperature"], id="param-wrong-type"),
    pytest.param({"command": "set_target_temperature", "params": {"target_temperature": True}},
                 ["params.target_temperature"], id="param-bool-for-number"),
    pytest.param({"command": "set_mode", "params": {"mode": "turbo"}}, ["params.mode"], id="param-outside-enum"),
    pytest.param({"command": "set_target_temperature", "params": {"target_temperature": 4.9}},
                 ["params.target_temperature"], id="param-below-min"),
    pytest.param({"command": "set_target_temperature", "params": {"target_temperature": 35.5}},
                 ["params.target_temperature"], id="param-above-max"),
    pytest.param({"command": "set_target_temperature", "params": {"target_temperature": 24, "humidity": 50}},
                 ["params.humidity"], id="param-unknown"),
    pytest.param({"command": "set_target_temperature", "params": {}}, ["params.target_temperature"],
                 id="param-missing-required"),
    pytest.param({"command": "set_target_temperature"}, ["params.target_temperature"], id="params-absent"),
    pytest.param({"command": "set_mode", "params": {"mode": "eco"}, "timeoutMs": 50}, ["timeoutMs"],
                 id="timeout-50"),
    pytest.param({"command": "set_mode", "params": {"mode": "eco"}, "timeoutMs": 99}, ["timeoutMs"],
                 id="timeout-99"),
    pytest.param({"command": "set_mode", "params": {"mode": "eco"}, "timeoutMs": 120001}, ["timeoutMs"],
                 id="timeout-120001"),
    pytest.param({"command": "set_mode", "params": {"mode": "eco"}, "timeoutMs": 200000}, ["timeoutMs"],
                 id="timeout-200000"),
    pytest.param({"command": "set_mode", "params": {"mode": "eco"}, "timeoutMs": "abc"}, ["timeoutMs"],
                 id="timeout-abc"),
    pytest.param({"command": "set_mode", "params": {"mode": "eco"}, "timeoutMs": "1000"}, ["timeoutMs"],
                 id="timeout-numeric-string"),
    pytest.param({"command": "set_mode", "params": {"mode": "eco"}, "timeoutMs": True}, ["timeoutMs"],
                 id="timeout-bool"),
    pytest.param({"command": "set_mode", "params": {"mode": "eco"}, "timeoutMs": 1500.5}, ["timeoutMs"],
                 id="timeout-fraction"),
    pytest.param({"command": "set_mode", "params": {"mode": "eco"}, "requestId": "r" * 129}, ["requestId"],
                 id="request-id-too-long"),
    pytest.param({"command": "set_mode", "params": {"mode": "eco"}, "requestId": ""}, ["requestId"],
                 id="request-id-empty"),
    pytest.param({"command": "set_mode", "params": {"mode": "eco"}, "requestId": 42}, ["requestId"],
                 id="request-id-not-a-string"),
    pytest.param({"command": "set_target_temperature", "params": {"target_temperature": 99}, "timeoutMs": 5},
                 ["params.target_temperature", "timeoutMs"], id="every-bad-field-named"),
]


@pytest.mark.parametrize(("body", "fields"), BAD_COMMANDS)
async def test_bad_command_is_400_naming_the_field(
    gateway: RunningDaemon, thermostat: SimulatedDevice, body: dict[str, Any], fields: list[str]
) -> None:
    status, answer = await send(gateway, body)
    error = error_of(status, answer, 400, "invalid_request")
    assert sorted(fields_of(error)) == sorted(fields)
    assert thermostat.commands_received == [], "a refused command must not reach the device"
    await assert_nothing_lost(gateway, thermostat)


async def test_param_errors_say_why(gateway: RunningDaemon, thermostat: SimulatedDevice) -> None:
    reasons = {}
    for name, value in (("low", 4), ("high", 36), ("type", "hot")):
        status, body = await send(gateway, {"command": "set_target_temperature",
                                            "params": {"target_temperature": value}})
        reasons[name] = error_of(status, body, 400, "invalid_request")["details"][0]["reason"]
    assert "5" in reasons["low"] and "35" in reasons["high"] and "number" in reasons["type"]
    status, body = await send(gateway, {"command": "set_mode", "params": {"mode": "turbo"}})
    error = error_of(status, body, 400, "invalid_request")
    assert all(mode in error["details"][0]["reason"] for mode in ("auto", "cool", "heat", "eco", "off"))


def non_json_number(constant: bytes) -> bytes:
    return b'{"command": "set_target_temperature", "timeoutMs": 2000, "params": {"target_temperature": ' + \
        constant + b"}}"


@pytest.mark.parametrize("constant", [b"Infinity", b"-Infinity"])
async def test_command_with_infinity_is_400(
    gateway: RunningDaemon, thermostat: SimulatedDevice, constant: bytes
) -> None:
    status, body = await send_raw(gateway, non_json_number(constant))
    assert status == 400 and body["error"]["code"] in ("invalid_json", "invalid_request"), body
    assert thermostat.commands_received == []
    await assert_nothing_lost(gateway, thermostat)


async def test_command_with_nan_is_400(gateway: RunningDaemon, thermostat: SimulatedDevice) -> None:
    status, body = await send_raw(gateway, non_json_number(b"NaN"))
    assert status == 400 and body["error"]["code"] in ("invalid_json", "invalid_request"), body
    assert thermostat.commands_received == []


async def test_values_at_the_edges_are_accepted(gateway: RunningDaemon, thermostat: SimulatedDevice) -> None:
    for value in (5, 35, 24.0, 22.5):
        status, body = await send(gateway, {"command": "set_target_temperature",
                                            "params": {"target_temperature": value}})
        assert status == 200 and body["ok"] is True, body
        assert body["data"] == {"target_temperature": value}
    status, body = await send(gateway, {"command": "set_mode", "params": {"mode": "off"}, "timeoutMs": 120000,
                                        "requestId": "r" * 128})
    assert status == 200 and body["requestId"] == "r" * 128, body
    status, body = await send(gateway, {"command": "set_mode", "params": {"mode": "eco"}, "timeoutMs": None})
    assert status == 200 and body["ok"] is True, body
    status, body = await send(gateway, {"command": "set_mode", "params": {"mode": "cool"}, "timeoutMs": 100})
    assert status in (200, 504), body  # 100 ms is allowed; whether the device makes it is another matter
    await wait_until(lambda: len(thermostat.commands_received) == 7, WAIT_S)


async def test_unknown_device_command_is_404(gateway: RunningDaemon, thermostat: SimulatedDevice) -> None:
    status, body = await send(gateway, {"command": "set_mode", "params": {"mode": "eco"}}, "thermostat-999")
    error = error_of(status, body, 404, "device_not_found")
    assert error["details"] == {"deviceId": "thermostat-999"}
    assert thermostat.commands_received == []
    await assert_nothing_lost(gateway, thermostat)


async def test_command_to_an_offline_device_is_409(
    broker: MosquittoBroker, gateway: RunningDaemon, devices: Devices, thermostat: SimulatedDevice
) -> None:
    leaving = await devices.start(broker.url, "thermostat", "thermostat-002")
    await until_online(gateway, "thermostat-002")
    await leaving.stop()  # publishes status offline
    await until_online(gateway, "thermostat-002", online=False)
    status, body = await send(gateway, {"command": "set_mode", "params": {"mode": "eco"}}, "thermostat-002")
    error = error_of(status, body, 409, "device_offline")
    assert error["details"] == {"deviceId": "thermostat-002"}
    # Bad input is still reported as such for an offline device.
    status, body = await send(gateway, {"command": "set_mode", "params": {"mode": "turbo"}}, "thermostat-002")
    error_of(status, body, 400, "invalid_request")
    assert leaving.commands_received == []
    await assert_nothing_lost(gateway, thermostat)


async def test_device_gone_by_last_will_is_409(
    broker: MosquittoBroker, gateway: RunningDaemon, devices: Devices
) -> None:
    sim = await devices.start(broker.url, "light", "light-001")
    await until_online(gateway, "light-001")
    await sim.kill()  # no DISCONNECT: the broker publishes the offline last will
    await until_online(gateway, "light-001", online=False)
    status, body = await send(gateway, {"command": "turn_on"}, "light-001")
    error_of(status, body, 409, "device_offline")
    assert (await device_json(gateway, "light-001"))["status"] == "offline"


async def test_device_that_does_not_answer_is_504_with_the_request_id(
    broker: MosquittoBroker, gateway: RunningDaemon, devices: Devices
) -> None:
    mute = await devices.start(broker.url, "thermostat", "thermostat-001", answer=False)
    await until_online(gateway, "thermostat-001")
    command = {"command": "set_target_temperature", "params": {"target_temperature": 24}, "timeoutMs": 300}
    status, body = await send(gateway, command)
    error = error_of(status, body, 504, "command_timeout")
    generated = error["details"]["requestId"]
    assert isinstance(generated, str) and generated
    status, body = await send(gateway, {**command, "requestId": "slow-001"})
    error = error_of(status, body, 504, "command_timeout")
    assert error["details"] == {"requestId": "slow-001"}
    # Both were really sent (the device just kept quiet).
    await wait_until(lambda: len(mute.commands_received) == 2, WAIT_S)
    assert [c.request_id for c in mute.commands_received] == [generated, "slow-001"]
    assert mute.commands_received[0].params == {"target_temperature": 24}
    # A requestId that timed out stays used.
    status, body = await send(gateway, {**command, "requestId": "slow-001"})
    error_of(status, body, 409, "conflict")
    status, body = await gateway.request("GET", "/api/health")
    assert status == 200 and body["status"] == "ok"
    assert gateway.daemon.commands.pending_count == 0


async def test_duplicate_request_id_is_409(gateway: RunningDaemon, thermostat: SimulatedDevice) -> None:
    # A refused request does not use up its requestId.
    status, body = await send(gateway, {"command": "set_mode", "params": {"mode": "turbo"}, "requestId": "dup-001"})
    error_of(status, body, 400, "invalid_request")
    first = {"command": "set_mode", "params": {"mode": "eco"}, "requestId": "dup-001"}
    status, body = await send(gateway, first)
    assert status == 200 and body["requestId"] == "dup-001", body
    status, body = await send(gateway, {**first, "params": {"mode": "cool"}})
    error = error_of(status, body, 409, "conflict")
    assert error["details"] == {"requestId": "dup-001"}
    assert [c.request_id for c in thermostat.commands_received] == ["dup-001"]
    assert thermostat.state["mode"] == "eco"
    await assert_nothing_lost(gateway, thermostat)


async def test_body_over_max_body_bytes_is_413(
    broker: MosquittoBroker, tmp_path: Path, devices: Devices
) -> None:
    gw = await start_daemon(broker.url, tmp_path / "state", http_max_body_bytes=2048)
    try:
        sim = await devices.start(broker.url, "thermostat", "thermostat-001")
        await until_online(gw, "thermostat-001")
        head = b'{"command": "set_mode", "params": {"mode": "cool"}'

        def padded(size: int) -> bytes:  # the same valid command, blown up with JSON whitespace
            body = head + b" " * (size - len(head) - 1) + b"}"
            assert len(body) == size
            return body

        status, body = await send_raw(gw, padded(2049))
        error = error_of(status, body, 413, "payload_too_large")
        assert "2048" in error["message"]
        status, body = await send_raw(gw, padded(64 * 1024))
        error_of(status, body, 413, "payload_too_large")
        assert sim.commands_received == []
        status, body = await send_raw(gw, padded(2048))
        assert status == 200 and body["data"] == {"mode": "cool"}, body
        await assert_nothing_lost(gw, sim)
    finally:
        await gw.stop()


async def test_broker_down_makes_commands_503_and_health_degraded(
    fresh_broker: MosquittoBroker, tmp_path: Path, devices: Devices
) -> None:
    gw = await start_daemon(fresh_broker.url, tmp_path / "state")
    try:
        sim = await devices.start(fresh_broker.url, "thermostat", "thermostat-001")
        await until_online(gw, "thermostat-001")
        status, body = await send(gw, {"command": "set_mode", "params": {"mode": "eco"}})
        assert status == 200, body

        fresh_broker.kill()

        async def degraded() -> dict[str, Any] | None:
            status, body = await gw.request("GET", "/api/health")
            return body if status == 503 else None

        health = await eventually(degraded)
        assert health["status"] == "degraded" and health["mqtt"]["connected"] is False
        status, body = await send(gw, {"command": "set_mode", "params": {"mode": "cool"}, "timeoutMs": 30000})
        error_of(status, body, 503, "broker_unavailable")
        # Bad input is still 400, and reading still works.
        status, body = await send(gw, {"command": "set_mode", "params": {"mode": "turbo"}})
        error_of(status, body, 400, "invalid_request")
        assert (await device_json(gw, "thermostat-001"))["state"]["mode"] == "eco"
        assert (await events_of(gw, "thermostat-001"))["events"]

        fresh_broker.start()

        async def healthy() -> bool:
            status, _ = await gw.request("GET", "/api/health")
            return status == 200 and sim.connected

        await eventually(healthy, timeout=60)
        await until_online(gw, "thermostat-001")
        await assert_nothing_lost(gw, sim)
    finally:
        await gw.stop()


# ---------------------------------------------------------------------------------------------
# Auth
# ---------------------------------------------------------------------------------------------


@pytest.fixture
async def secured(broker: MosquittoBroker, tmp_path: Path) -> AsyncIterator[RunningDaemon]:
    gw = await start_daemon(broker.url, tmp_path / "state", http_tokens=[TOKEN])
    try:
        yield gw
    finally:
        await gw.stop()


PROTECTED_GETS = [
    "/api/products",
    "/api/products/thermostat",
    "/api/products/thermostat/devices?status=online",
    "/api/devices/thermostat-001",
    "/api/devices/thermostat-001/events?limit=50",
    "/api/openapi.json",
    "/metrics",
]
WRONG_AUTHORIZATION = [
    pytest.param(None, id="no-header"),
    pytest.param("Bearer wrong-token-wrong-token", id="wrong-token"),
    pytest.param(f"Bearer {TOKEN[:-1]}", id="token-prefix"),
    pytest.param(f"Bearer {TOKEN}x", id="token-with-suffix"),
    pytest.param("Bearer", id="scheme-only"),
    pytest.param(TOKEN, id="token-without-scheme"),
    pytest.param("Basic " + base64.b64encode(f"user:{TOKEN}".encode()).decode(), id="basic-auth"),
]


@pytest.mark.parametrize("authorization", WRONG_AUTHORIZATION)
async def test_without_the_right_token_every_route_is_401(
    secured: RunningDaemon, devices: Devices, broker: MosquittoBroker, authorization: str | None
) -> None:
    sim = await devices.start(broker.url, "thermostat", "thermostat-001")
    await until_online(secured, "thermostat-001")
    headers = {"Authorization": authorization} if authorization is not None else {}
    for path in PROTECTED_GETS:
        async with secured.session.get(secured.base_url + path, headers=headers) as resp:
            body = await resp.json()
            error_of(resp.status, body, 401, "unauthorized")
            assert resp.headers["WWW-Authenticate"].startswith("Bearer"), path
    status, body = await send(secured, {"command": "set_mode", "params": {"mode": "eco"}}, headers=headers)
    error_of(status, body, 401, "unauthorized")
    assert sim.commands_received == []
    await assert_nothing_lost(secured, sim, headers=AUTH)


async def test_with_the_right_token_every_route_answers(
    secured: RunningDaemon, devices: Devices, broker: MosquittoBroker
) -> None:
    sim = await devices.start(broker.url, "thermostat", "thermostat-001")
    await until_online(secured, "thermostat-001")
    for path in PROTECTED_GETS:
        for scheme in ("Bearer", "bearer"):
            status, body = await secured.request("GET", path, headers={"Authorization": f"{scheme} {TOKEN}"})
            assert status == 200, (path, body)
    status, body = await send(secured, {"command": "set_mode", "params": {"mode": "eco"}}, headers=AUTH)
    assert status == 200 and body["ok"] is True, body
    assert sim.state["mode"] == "eco"


async def test_health_needs_no_token(secured: RunningDaemon) -> None:
    status, body = await secured.request("GET", "/api/health")
    assert status == 200 and body["status"] == "ok", body
    status, body = await secured.request("GET", "/api/health", headers={"Authorization": "Bearer wrong"})
    assert status == 200, body


async def test_metrics_need_the_token(secured: RunningDaemon) -> None:
    status, body = await secured.request("GET", "/metrics")
    error_of(status, body, 401, "unauthorized")
    status, text = await secured.request("GET", "/metrics", headers=AUTH)
    assert status == 200 and "deviceagentd_devices_online" in text


# ---------------------------------------------------------------------------------------------
# Metrics
# ---------------------------------------------------------------------------------------------


LABEL = r'[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\.)*"'
SAMPLE = re.compile(rf"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{{{LABEL}(?:,{LABEL})*\}})? (-?[0-9.e+-]+|\+Inf|NaN)$")


def parse_metrics(text: str) -> dict[str, float]:
    """Prometheus text → {name{labels}: value}; every line must be a comment or a sample."""
    samples: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            assert not line or re.match(r"^# (HELP|TYPE) \S+ ", line), line
            continue
        match = SAMPLE.match(line)
        assert match, f"not a Prometheus sample line: {line!r}"
        samples[match.group(1) + (match.group(2) or "")] = float(match.group(3))
    return samples


async def test_metrics_expose_the_spec_series(gateway: RunningDaemon, thermostat: SimulatedDevice) -> None:
    status, body = await send(gateway, {"command": "set_mode", "params": {"mode": "eco"}})
    assert status == 200, body
    await thermostat.sync_clock()
    await thermostat.report_state(humidity="soggy")  # a wrongly typed field is rejected and counted
    await thermostat.emit_event("temperature_alert", {"temperature": 39.0})
    await until_events(gateway, "thermostat-001", 2)

    async def scrape() -> dict[str, float] | None:
        async with gateway.session.get(gateway.base_url + "/metrics") as resp:
            assert resp.status == 200
            assert resp.content_type == "text/plain"
            samples = parse_metrics(await resp.text())
        wanted = ('deviceagentd_mqtt_rejects_total{kind="telemetry_field",reason="wrong_type"}',
                  "deviceagentd_event_loop_lag_seconds_count")
        return samples if all(samples.get(k, 0) >= 1 for k in wanted) else None

    samples = await eventually(scrape)
    assert samples['deviceagentd_mqtt_messages_in_total{kind="telemetry"}'] >= 2
    assert samples['deviceagentd_mqtt_messages_in_total{kind="response"}'] == 1
    assert samples['deviceagentd_mqtt_messages_in_total{kind="ntp_request"}'] == 1
    assert samples['deviceagentd_mqtt_messages_in_total{kind="event"}'] == 1
    assert samples['deviceagentd_mqtt_messages_out_total{kind="command"}'] == 1
    assert samples['deviceagentd_mqtt_rejects_total{kind="telemetry_field",reason="wrong_type"}'] == 1
    assert samples["deviceagentd_devices_online"] == 1
    assert samples["deviceagentd_devices_total"] == 1
    assert samples["deviceagentd_command_latency_seconds_count"] == 1
    assert samples['deviceagentd_command_latency_seconds_bucket{le="+Inf"}'] == 1
    assert samples["deviceagentd_command_latency_seconds_sum"] > 0
    assert samples["deviceagentd_ntp_turnaround_seconds_count"] == 1
    assert samples['deviceagentd_ntp_turnaround_seconds_bucket{le="+Inf"}'] == 1
    assert samples["deviceagentd_event_loop_lag_seconds_count"] >= 1
    assert samples["deviceagentd_voice_sessions"] == 0
    assert samples["deviceagentd_mqtt_connected"] == 1
    # Histogram buckets are cumulative.
    buckets = [v for k, v in samples.items() if k.startswith("deviceagentd_command_latency_seconds_bucket")]
    assert buckets == sorted(buckets)


# ---------------------------------------------------------------------------------------------
# Unknown routes and wrong methods
# ---------------------------------------------------------------------------------------------


# "/" is the console and "/api/devices" the list of every product's devices.
@pytest.mark.parametrize("path", ["/api/nothing", "/api", "/index.html", "/api/device", "/api/devices/thermostat-001/x",
                                  "/api/products/thermostat/devices/thermostat-001"])
async def test_unknown_route_is_404_envelope(gateway: RunningDaemon, path: str) -> None:
    status, body = await gateway.request("GET", path)
    error_of(status, body, 404, "not_found")


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("DELETE", "/api/devices/thermostat-001", "GET"),
        ("POST", "/api/health", "GET"),
        ("PUT", "/api/products/thermostat", "GET"),
        ("PUT", "/api/devices/thermostat-001/commands", "POST"),  # GET is the command log
        ("POST", "/metrics", "GET"),
    ],
)
async def test_wrong_method_is_405_envelope(
    gateway: RunningDaemon, thermostat: SimulatedDevice, method: str, path: str, allowed: str
) -> None:
    async with gateway.session.request(method, gateway.base_url + path) as resp:
        error_of(resp.status, await resp.json(), 405, "method_not_allowed")
        assert allowed in [m.strip() for m in resp.headers["Allow"].split(",")]
    assert thermostat.commands_received == []
