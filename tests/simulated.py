"""Simulated devices of the example products on the test broker, for tests of features on top of them."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from daemon_harness import PRODUCTS_DIR
from mosquitto_broker import MosquittoBroker

from deviceagentd.core.spec import load_spec_file
from deviceagentd.simulator import SimulatedDevice, SimulatorOptions

START_S = 15.0


async def start_device(broker: MosquittoBroker, product: str, device_id: str, **options: Any) -> SimulatedDevice:
    """A simulated `product` device, connected (fresh client id, no heartbeat unless asked)."""
    options.setdefault("heartbeat_s", 0)
    sim = SimulatedDevice(load_spec_file(PRODUCTS_DIR / f"{product}.json"), device_id,
                          SimulatorOptions(url=broker.url, client_id=f"sim-{uuid.uuid4().hex[:8]}", **options))
    await asyncio.wait_for(sim.start(), START_S)
    return sim
