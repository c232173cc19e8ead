"""Simulated devices for a test, started on the session broker and stopped at its end:
`sims.start("thermostat", "thermostat-001")` (the `sims` fixture is in conftest.py)."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from daemon_harness import PRODUCTS_DIR
from mosquitto_broker import MosquittoBroker

from deviceagentd.core.spec import load_spec_file
from deviceagentd.simulator import SimulatedDevice, SimulatorOptions

START_S = 15.0


class Sims:
    def __init__(self, broker: MosquittoBroker) -> None:
        self.broker = broker
        self.started: list[SimulatedDevice] = []

    async def start(self, product: str, device_id: str, **options: Any) -> SimulatedDevice:
        """A device of `product`, connected and online; no heartbeat unless asked."""
        options.setdefault("heartbeat_s", 0)
        sim = SimulatedDevice(load_spec_file(PRODUCTS_DIR / f"{product}.json"), device_id, SimulatorOptions(
            url=self.broker.url, client_id=f"sim-{device_id}-{uuid.uuid4().hex[:8]}", **options))
        await asyncio.wait_for(sim.start(), START_S)
        self.started.append(sim)
        return sim
