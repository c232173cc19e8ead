"""Helper process: a whole simulated site for the `footprint` section
(`python -m bench_lib.footprint_load SPEC`).

Every device is a `SimulatedDevice` with its own MQTT connection, as on a real LAN: it says
online, reports its state every `state_interval_s`, sends a random event of its product now
and then (exponential gaps, mean `event_mean_s`), synchronises its clock every
`ntp_interval_s` (once right after connecting, the boot storm a real site has after a power
cut) and answers the commands the gateway sends it. Starts are spread over one state
interval, so state reports arrive evenly rather than in one burst every interval.

Besides the devices, an HTTP client sends `command_rate` commands per second through the
daemon's API to random devices (a random command of the product with sample parameters).

Protocol on stdio as for the other helpers (`procs.Helper`): `{"ready": true}` once every
device is connected, `go` on stdin starts the commands, SIGTERM stops everything and prints
one JSON result line.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import uvloop

from bench_lib.stats import percentile
from deviceagentd.core.catalog import load_catalog
from deviceagentd.core.spec import CommandSpec, ProductSpec
from deviceagentd.simulator import SimulatedDevice, SimulatorOptions

SCALAR_TYPES = ("int", "float", "bool", "string")
START_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 60.0


@dataclass
class LoadSpec:
    url: str  # the site's broker
    api: str  # the daemon's HTTP base URL
    products_dir: str
    devices_per_product: int = 200
    state_interval_s: float = 10.0
    event_mean_s: float = 3000.0  # per device
    ntp_interval_s: float = 1000.0  # per device
    command_rate: float = 1.0  # HTTP commands per second, whole site
    command_timeout_ms: int = 5000
    seed: int = 1


@dataclass
class CommandStats:
    sent: int = 0
    ok: int = 0
    failed: dict[str, int] = field(default_factory=dict)  # "HTTP 504 timeout" -> count
    rtt_ms: list[float] = field(default_factory=list)

    def fail(self, why: str) -> None:
        self.failed[why] = self.failed.get(why, 0) + 1


def device_id(product: str, i: int) -> str:
    return f"site-{product}-{i:03d}"


def simple_commands(spec: ProductSpec) -> list[CommandSpec]:
    """Commands whose parameters all have scalar types (sample values are valid for them)."""
    return [c for c in spec.commands.values() if all(p.type in SCALAR_TYPES for p in c.params.values())]


def command_body(device: SimulatedDevice, rng: random.Random, timeout_ms: int) -> dict[str, Any]:
    command = rng.choice(simple_commands(device.spec))
    params = {name: device.model.sample_value(p) for name, p in command.params.items() if p.required}
    return {"command": command.name, "params": params, "timeoutMs": timeout_ms}


async def start_devices(spec: LoadSpec) -> list[SimulatedDevice]:
    catalog = load_catalog(Path(spec.products_dir))
    devices: list[SimulatedDevice] = []
    for product in sorted(catalog.products):
        for i in range(spec.devices_per_product):
            options = SimulatorOptions(url=spec.url, heartbeat_s=0, state_interval_s=spec.state_interval_s,
                                       random_events_s=spec.event_mean_s, ntp_interval_s=spec.ntp_interval_s,
                                       seed=spec.seed * 100_000 + len(devices), source="footprint")
            devices.append(SimulatedDevice(catalog.products[product], device_id(product, i), options))
    spread = spec.state_interval_s / len(devices)
    started = time.monotonic()
    for n, device in enumerate(devices):
        delay = started + n * spread - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        await asyncio.wait_for(device.start(), START_TIMEOUT_S)
    return devices


async def send_commands(spec: LoadSpec, devices: list[SimulatedDevice], stats: CommandStats,
                        stop: asyncio.Event) -> None:
    rng = random.Random(spec.seed)
    timeout = aiohttp.ClientTimeout(total=spec.command_timeout_ms / 1000 + 10)
    tasks: set[asyncio.Task[None]] = set()

    async def one(session: aiohttp.ClientSession, device: SimulatedDevice, body: dict[str, Any]) -> None:
        started = time.perf_counter()
        try:
            async with session.post(f"{spec.api}/api/devices/{device.device_id}/commands", json=body) as resp:
                answer = await resp.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError) as exc:
            stats.fail(type(exc).__name__)
            return
        if resp.status == 200 and isinstance(answer, dict) and answer.get("ok"):
            stats.ok += 1
            stats.rtt_ms.append((time.perf_counter() - started) * 1000)
        else:
            code = answer.get("error", {}).get("code", "") if isinstance(answer, dict) else ""
            stats.fail(f"HTTP {resp.status} {code}".strip())

    async with aiohttp.ClientSession(timeout=timeout) as session:
        t0 = time.monotonic()
        while not stop.is_set():
            # Fixed schedule, each command its own task: a slow answer does not slow the rate.
            due = t0 + stats.sent / spec.command_rate
            if due > time.monotonic():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), due - time.monotonic())
                continue
            device = rng.choice(devices)
            task = asyncio.create_task(one(session, device, command_body(device, rng, spec.command_timeout_ms)))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            stats.sent += 1
        if tasks:
            await asyncio.wait(tasks, timeout=spec.command_timeout_ms / 1000 + 10)


async def run(spec: LoadSpec) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    t_start = time.monotonic()
    devices = await start_devices(spec)
    start_s = time.monotonic() - t_start
    print(json.dumps({"ready": True, "devices": len(devices), "start_s": round(start_s, 1)}), flush=True)
    await loop.run_in_executor(None, sys.stdin.readline)
    cpu_before = time.process_time()
    t_go = time.monotonic()
    stats = CommandStats()
    await send_commands(spec, devices, stats, stop)
    ran_s = time.monotonic() - t_go
    cpu_s = time.process_time() - cpu_before
    disconnected = sum(1 for d in devices if not d.connected)
    offsets = [abs(s.offset_ms) for d in devices for s in d.ntp_samples]
    await asyncio.wait_for(asyncio.gather(*(d.stop() for d in devices), return_exceptions=True), STOP_TIMEOUT_S)
    return {
        "devices": len(devices),
        "start_s": start_s,
        "ran_s": ran_s,
        "cpu_share": cpu_s / ran_s if ran_s else 0.0,
        "disconnected_at_end": disconnected,
        "commands_sent": stats.sent,
        "commands_ok": stats.ok,
        "commands_failed": stats.failed,
        "command_p50_ms": percentile(stats.rtt_ms, 50) if stats.rtt_ms else None,
        "command_p99_ms": percentile(stats.rtt_ms, 99) if stats.rtt_ms else None,
        "ntp_samples": len(offsets),
        "ntp_abs_offset_p99_ms": percentile(offsets, 99) if offsets else None,
    }


def main() -> None:
    # A thousand devices would log every state report and clock sync at INFO.
    logging.basicConfig(level=logging.ERROR, format="footprint_load %(levelname)s %(name)s: %(message)s")
    logging.getLogger("deviceagentd.simulator").setLevel(logging.ERROR)
    spec = LoadSpec(**json.loads(sys.argv[1]))
    result = uvloop.run(run(spec))
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
