"""`GET /api/devices` (every product: filters, search, paging) and a device's command log
(`GET /api/devices/{deviceId}/commands`), against the real daemon and simulated devices."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from daemon_harness import PRODUCTS_DIR, RunningDaemon, start_daemon, wait_until
from mosquitto_broker import MosquittoBroker

from deviceagentd.core.spec import load_spec_file
from deviceagentd.http.routes_devices import MAX_SEARCH_CHARS
from deviceagentd.simulator import SimulatedDevice, SimulatorOptions

WAIT_S = 15.0


@pytest.fixture
async def site(broker: MosquittoBroker, tmp_path: Path) -> AsyncIterator[tuple[RunningDaemon, list[SimulatedDevice]]]:
    gw = await start_daemon(broker.url, tmp_path / "state")
    sims: list[SimulatedDevice] = []
    try:
        for product, device_id in (("thermostat", "thermostat-001"), ("thermostat", "thermostat-002"),
                                   ("light", "light-101"), ("light", "light-102"), ("curtain", "curtain-101")):
            spec = load_spec_file(PRODUCTS_DIR / f"{product}.json")
            sim = SimulatedDevice(spec, device_id, SimulatorOptions(
                url=broker.url, client_id=f"sim-{device_id}-{uuid.uuid4().hex[:8]}", heartbeat_s=0,
                answer_delay_ms=0))
            await asyncio.wait_for(sim.start(), WAIT_S)
            sims.append(sim)
        await wait_until(lambda: gw.daemon.registry.online_count == 5, WAIT_S)
        yield gw, sims
    finally:
        for sim in sims:
            if sim.connected:
                await sim.stop()
        await gw.stop()


async def get(gw: RunningDaemon, path: str, status: int = 200) -> Any:
    got, body = await gw.request("GET", path)
    assert got == status, body
    return body


def ids(body: dict[str, Any]) -> list[str]:
    return [d["deviceId"] for d in body["devices"]]


async def test_devices_of_every_product_filtered_and_searched(site: tuple[RunningDaemon, list[Any]]) -> None:
    gw, sims = site
    await sims[1].stop()  # thermostat-002 goes offline
    await wait_until(lambda: gw.daemon.registry.online_count == 4, WAIT_S)

    everything = await get(gw, "/api/devices")
    assert ids(everything) == ["curtain-101", "light-101", "light-102", "thermostat-001", "thermostat-002"]
    assert everything["total"] == 5 and everything["nextAfter"] is None
    assert everything["devices"][3] == await get(gw, "/api/devices/thermostat-001")  # the same Device objects
    assert ids(await get(gw, "/api/devices?productId=light")) == ["light-101", "light-102"]
    assert ids(await get(gw, "/api/devices?status=offline")) == ["thermostat-002"]
    assert ids(await get(gw, "/api/devices?productId=thermostat&status=online")) == ["thermostat-001"]
    assert ids(await get(gw, "/api/devices?q=101")) == ["curtain-101", "light-101"]
    assert ids(await get(gw, "/api/devices?q=LIGHT-1")) == ["light-101", "light-102"]  # case does not matter
    assert ids(await get(gw, "/api/devices?q=nothing-like-this")) == []


async def test_devices_are_paged_by_id(site: tuple[RunningDaemon, list[Any]]) -> None:
    gw, _ = site
    seen: list[str] = []
    query = "/api/devices?limit=2"
    while True:
        page = await get(gw, query)
        assert page["total"] == 5 and len(page["devices"]) <= 2
        seen += ids(page)
        if page["nextAfter"] is None:
            break
        query = f"/api/devices?limit=2&after={page['nextAfter']}"
    assert seen == ["curtain-101", "light-101", "light-102", "thermostat-001", "thermostat-002"]
    last = await get(gw, "/api/devices?limit=5")
    assert last["nextAfter"] is None  # exactly one full page: no empty page after it


async def test_bad_device_list_queries_are_refused(site: tuple[RunningDaemon, list[Any]]) -> None:
    gw, _ = site
    for query, status, code, field in (
        ("status=sleeping", 400, "invalid_request", "status"),
        ("limit=0", 400, "invalid_request", "limit"),
        ("limit=1001", 400, "invalid_request", "limit"),
        ("limit=ten", 400, "invalid_request", "limit"),
        ("q=" + "x" * (MAX_SEARCH_CHARS + 1), 400, "invalid_request", "q"),
        ("productId=fridge", 404, "product_not_found", None),
    ):
        body = await get(gw, f"/api/devices?{query}", status)
        assert body["error"]["code"] == code, (query, body)
        if field:
            assert body["error"]["details"][0]["field"] == field


async def test_command_log_newest_first_with_every_outcome(site: tuple[RunningDaemon, list[Any]]) -> None:
    gw, sims = site
    sent = []
    for mode in ("eco", "heat", "cool"):
        status, body = await gw.request("POST", "/api/devices/thermostat-001/commands",
                                        json_body={"command": "set_mode", "params": {"mode": mode}})
        assert status == 200, body
        sent.append(body["requestId"])
    status, body = await gw.request("POST", "/api/devices/thermostat-001/commands",
                                    json_body={"command": "set_mode", "params": {"mode": "warp"}})
    assert status == 400  # refused before sending: not in the log
    sims[0].options = dataclasses.replace(sims[0].options, answer=False)
    status, body = await gw.request("POST", "/api/devices/thermostat-001/commands",
                                    json_body={"command": "set_mode", "params": {"mode": "auto"},
                                               "timeoutMs": 300, "requestId": "will-time-out"})
    assert status == 504
    await gw.request("POST", "/api/devices/light-101/commands", json_body={"command": "turn_on"})

    log = await get(gw, "/api/devices/thermostat-001/commands")
    assert [c["requestId"] for c in log["commands"]] == ["will-time-out", *reversed(sent)]
    assert log["nextBefore"] is None
    newest = log["commands"][0]
    assert (newest["status"], newest["command"], newest["params"], newest["timeoutMs"]) == (
        "timeout", "set_mode", {"mode": "auto"}, 300)
    answered = log["commands"][1]
    assert (answered["status"], answered["code"], answered["msg"], answered["late"]) == ("ok", 0, "ok", False)
    assert answered["data"] == {"mode": "cool"} and answered["answeredAt"] >= answered["sentAt"]

    first = await get(gw, "/api/devices/thermostat-001/commands?limit=3")
    assert first["nextBefore"]
    rest = await get(gw, f"/api/devices/thermostat-001/commands?limit=3&before={first['nextBefore']}")
    assert [c["requestId"] for c in first["commands"] + rest["commands"]] == ["will-time-out", *reversed(sent)]
    assert rest["nextBefore"] is None
    assert [c["command"] for c in (await get(gw, "/api/devices/light-101/commands"))["commands"]] == ["turn_on"]
    assert (await get(gw, "/api/devices/curtain-101/commands")) == {"commands": [], "nextBefore": None}


async def test_bad_command_log_queries_are_refused(site: tuple[RunningDaemon, list[Any]]) -> None:
    gw, _ = site
    assert (await get(gw, "/api/devices/nobody/commands", 404))["error"]["code"] == "device_not_found"
    for query, field in (("limit=0", "limit"), ("before=yesterday", "before"), ("before=12:", "before"),
                         ("before=:req-1", "before")):
        body = await get(gw, f"/api/devices/thermostat-001/commands?{query}", 400)
        assert body["error"]["details"][0]["field"] == field, query
