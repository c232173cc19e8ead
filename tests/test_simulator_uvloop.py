"""The simulator under uvloop (as the bench and the daemon's loop run it): the online status
must be published on connect, not lost to a race with connect() returning."""

from __future__ import annotations

import asyncio
import json

import gmqtt
import uvloop
from daemon_harness import PRODUCTS_DIR
from mosquitto_broker import MosquittoBroker

from deviceagentd.core.spec import load_spec_file
from deviceagentd.simulator import SimulatedDevice, SimulatorOptions


async def _online_status_seen(broker: MosquittoBroker) -> dict[str, object]:
    seen: asyncio.Queue[dict[str, object]] = asyncio.Queue()
    watcher = gmqtt.Client("uvloop-watcher")
    watcher.on_message = lambda _c, _t, payload, _q, _p: seen.put_nowait(json.loads(payload))
    await watcher.connect(broker.host, broker.port)
    watcher.subscribe("v1/switch/uvloop-switch-1/telemetry", qos=1)
    await asyncio.sleep(0.2)
    device = SimulatedDevice(load_spec_file(PRODUCTS_DIR / "switch.json"), "uvloop-switch-1",
                             SimulatorOptions(url=broker.url))
    try:
        await asyncio.wait_for(device.start(), 10)
        return await asyncio.wait_for(seen.get(), 5)
    finally:
        await device.stop()
        await watcher.disconnect()


def test_online_status_is_published_under_uvloop(broker: MosquittoBroker) -> None:
    first = uvloop.run(_online_status_seen(broker))
    assert first["type"] == "status"
    assert first["data"]["status"] == "online"  # type: ignore[index]
