"""Section `voiceplatform`: the Tuya-compatible speaker API (docs/benchmarks.md §9).

A second daemon (its own state dir, the shared broker) serves a rooms file with one room of
50 devices (10 of each example product) and 10 scenes. Measured, each next to a baseline:

1. Discovery p50 for that room, vs the HTTP floor (GET /api/health on the same session).
2. Control round trip with a simulated light, vs the HTTP command route to the same light
   with the equivalent command, alternating so both see the same conditions: the overhead
   p50(Control) − p50(HTTP command) has a target of ≤ 2 ms.
3. Token checks per second, in process (TokenService.check_access on a real store), vs
   hashing the token alone (the floor every check pays).
"""

from __future__ import annotations

import asyncio
import json
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from bench_lib import procs
from bench_lib.procs import DaemonClient
from bench_lib.report import Row
from bench_lib.scenarios import Bench
from bench_lib.stats import percentile
from deviceagentd.core.clock import Clock
from deviceagentd.simulator import SimulatedDevice, SimulatorOptions

PRODUCTS = ("light", "switch", "curtain", "air_conditioner", "thermostat")
PER_PRODUCT = 10
SCENES = 10
SPEAKER, BRAND = "bench-speaker", "bench-brand"
CONTROL_LIGHT = "vp-light-0"


def rooms_toml() -> str:
    lines = ['[[rooms]]', 'id = "bench"', 'name = "Bench room"']
    for product in PRODUCTS:
        for i in range(PER_PRODUCT):
            lines += ["[[rooms.devices]]", f'device_id = "vp-{product}-{i}"', f'product = "{product}"',
                      f'name = "{product.replace("_", " ")} {i}"', f'aliases = ["{product} number {i}"]',
                      'position = "bedroom"']
    for s in range(SCENES):
        steps = ", ".join(f'{{ device_id = "vp-light-{i}", command = "turn_off" }}' for i in range(3))
        lines += ["[[rooms.scenes]]", f'id = "bench-scene-{s}"', f'name = "Scene {s}"', f"steps = [{steps}]"]
    lines += ["[[speakers]]", f'voice_id = "{SPEAKER}"', f'code = "{BRAND}"', 'room = "bench"']
    return "\n".join(lines) + "\n"


async def start_platform_daemon(b: Bench) -> DaemonClient:
    state = b.workdir / "voiceplatform-state"
    state.mkdir(parents=True, exist_ok=True)
    rooms = b.workdir / "voiceplatform-rooms.toml"
    rooms.write_text(rooms_toml())
    overrides: dict[str, Any] = {**procs.daemon_overrides(), "voiceplatform_rooms_file": str(rooms),
                                 "mqtt_client_id": f"bench-vp-{uuid.uuid4().hex[:6]}"}
    proc = procs.spawn_daemon(b.broker.url, state, **overrides)
    await asyncio.to_thread(proc.wait_http, 30.0)
    client = DaemonClient(proc, b.session)
    await client.wait_subscribed(b.broker.url)
    return client


async def voiceplatform(b: Bench) -> None:
    runs = 200 if b.sizes.commands < 1_000 else 1_000
    daemon = await start_platform_daemon(b)
    light = SimulatedDevice(b.catalog.products["light"], CONTROL_LIGHT,
                            SimulatorOptions(url=b.broker.url, heartbeat_s=0, seed=3))
    await light.start()
    try:
        await daemon.wait_online(CONTROL_LIGHT)
        token = await _token(daemon)
        await _discovery(b, daemon, token, runs)
        await _control(b, daemon, token, runs)
    finally:
        await light.stop()
        await asyncio.to_thread(daemon.proc.terminate)
    await asyncio.to_thread(_token_checks, b)



async def _token(daemon: DaemonClient) -> str:
    url = f"{daemon.base_url}/v1.0/voice/devices/{SPEAKER}/token?code={BRAND}&industry_type=hotel"
    async with daemon.session.get(url) as resp:
        answer = await resp.json()
    if not answer.get("success"):
        raise RuntimeError(f"no voice token: {answer}")
    return str(answer["result"]["token"])


async def _execute(daemon: DaemonClient, token: str, command: dict[str, Any],
                   endpoint: dict[str, str] | None = None) -> tuple[float, dict[str, Any]]:
    body: dict[str, Any] = {"message_id": uuid.uuid4().hex, "version": "1.0", "command": command}
    if endpoint:
        body["endpoint"] = endpoint
    data = json.dumps(body).encode()
    started = time.perf_counter()
    async with daemon.session.post(f"{daemon.base_url}/v1.0/voice/execute", data=data,
                                   headers={"access_token": token, "Content-Type": "application/json"}) as resp:
        answer = await resp.json()
    elapsed = (time.perf_counter() - started) * 1000
    if not answer.get("success"):
        raise RuntimeError(f"execute failed: {answer}")
    return elapsed, answer


async def _discovery(b: Bench, daemon: DaemonClient, token: str, runs: int) -> None:
    floor: list[float] = []
    discovery: list[float] = []
    command = {"interface": "Tuya.Voice.Platform.Discovery", "intent": "Discover"}
    size = 0
    for i in range(runs + 20):
        started = time.perf_counter()
        async with daemon.session.get(f"{daemon.base_url}/api/health") as resp:
            await resp.read()
        health = (time.perf_counter() - started) * 1000
        elapsed, answer = await _execute(daemon, token, command)
        if i >= 20:
            floor.append(health)
            discovery.append(elapsed)
        size = len(json.dumps(answer))
        devices, scenes = len(answer["result"]["devices"]), len(answer["result"]["scenes"])
    p50, base = percentile(discovery, 50), percentile(floor, 50)
    b.report.add(Row(f"Discovery p50, room of {devices} devices + {scenes} scenes ({runs:,} sequential)", p50, "ms",
                     base, p50 / base,
                     note=f"p99 {percentile(discovery, 99):.2f} ms; answer {size / 1024:.1f} KiB; baseline: "
                     "GET /api/health on the same keep-alive session (the HTTP floor)"))


async def _control(b: Bench, daemon: DaemonClient, token: str, runs: int) -> None:
    control: list[float] = []
    http: list[float] = []
    url = f"{daemon.base_url}/api/devices/{CONTROL_LIGHT}/commands"
    for i in range(runs + 20):
        level = 10 + i % 80
        elapsed, _ = await _execute(daemon, token, {"interface": "Tuya.Voice.Platform.Control",
                                                     "intent": "SetBrightness", "value": level},
                                    {"instance_id": CONTROL_LIGHT})
        started = time.perf_counter()
        async with daemon.session.post(url, json={"command": "set_brightness", "params": {"brightness": level + 1},
                                                  "timeoutMs": 5000}) as resp:
            answer = await resp.json()
            if resp.status != 200 or not answer.get("ok"):
                raise RuntimeError(f"HTTP command failed: {resp.status} {answer}")
        command_ms = (time.perf_counter() - started) * 1000
        if i >= 20:
            control.append(elapsed)
            http.append(command_ms)
    p50, base = percentile(control, 50), percentile(http, 50)
    overhead = p50 - base
    b.report.add(Row(f"Control SetBrightness round trip p50 ({runs:,}, alternating)", p50, "ms", base, p50 / base,
                     note=f"speaker → daemon → MQTT → simulated light → daemon → speaker; p99 "
                     f"{percentile(control, 99):.2f} ms; baseline: POST /api/devices/:id/commands set_brightness "
                     f"to the same light (p99 {percentile(http, 99):.2f} ms)"))
    b.report.add(Row("Control overhead p50(Control) − p50(HTTP command)", overhead, "ms", target="≤ 2 ms",
                     ok=overhead <= 2, note="token check, envelope, intent mapping and the idempotency cache"))


def _token_checks(b: Bench) -> None:
    """check_access on a real TokenService (a store on a temporary SQLite file)."""
    import hashlib

    from deviceagentd.store.settings import StoreSettings
    from deviceagentd.store.store import Store
    from deviceagentd.voiceplatform.tokens import TokenService

    async def measure() -> tuple[float, float]:
        with tempfile.TemporaryDirectory() as tmp:
            store = Store(Path(tmp) / "tokens.db", StoreSettings())
            store.open()
            try:
                tokens = TokenService(store, Clock())
                issued = [await tokens.issue(f"speaker-{i}") for i in range(100)]
                checks = 200_000 if b.sizes.commands >= 1_000 else 50_000
                values = [t.access_token for t in issued]
                started = time.perf_counter()
                for i in range(checks):
                    tokens.check_access(values[i % 100])
                checked = checks / (time.perf_counter() - started)
                started = time.perf_counter()
                for i in range(checks):
                    hashlib.sha256(values[i % 100].encode()).hexdigest()
                hashed = checks / (time.perf_counter() - started)
                return checked, hashed
            finally:
                store.close()

    checked, hashed = asyncio.run(measure())
    b.report.add(Row("voice token checks per second (in process, 100 live speakers)", checked, "/s", hashed,
                     checked / hashed,
                     note="TokenService.check_access (hash, lookup, expiry); baseline: sha256 of the token alone"))
