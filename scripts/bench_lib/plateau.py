"""Section `plateau`: does the daemon's memory level off under many commands? (docs/benchmarks.md §11)

The footprint hour (§10) sends one command a second, too few to fill what the daemon keeps per
command (the remembered request ids, SQLite's page caches of the growing command log). Here a
daemon of its own gets 20,000 commands (quick runs too) through `POST /api/devices/:id/commands`
to one simulated light, 16 at a time, and its VmRSS/RssAnon are read every 2,000: the growth over
the last quarter must be small against the growth over the first.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from bench_lib import procs
from bench_lib.procs import DaemonClient
from bench_lib.report import Row
from bench_lib.scenarios import Bench
from deviceagentd.simulator import SimulatedDevice, SimulatorOptions

LIGHT = "plateau-light"
TOTAL = 20_000
AT_ONCE = 16
SAMPLE_EVERY = 2_000
KIB = 1024
MB = 1_000_000
# Over the last quarter of the commands, at most this much more RssAnon: the caches are full.
MAX_LATE_GROWTH_MB = 0.5


async def plateau(b: Bench) -> None:
    total = TOTAL  # also in a quick run: fewer would not fill the caches (about 11 s)
    state = b.workdir / "plateau-state"
    overrides: dict[str, Any] = {**procs.daemon_overrides(), "mqtt_client_id": f"bench-plateau-{uuid.uuid4().hex[:6]}"}
    proc = procs.spawn_daemon(b.broker.url, state, **overrides)
    await asyncio.to_thread(proc.wait_http, 30.0)
    daemon = DaemonClient(proc, b.session)
    light = SimulatedDevice(b.catalog.products["light"], LIGHT, SimulatorOptions(url=b.broker.url, heartbeat_s=0,
                                                                                 seed=11))
    await light.start()
    samples: list[tuple[int, int, int]] = []  # (commands, VmRSS KiB, RssAnon KiB)
    try:
        await daemon.wait_subscribed(b.broker.url)
        await _wait_online(daemon)
        pid = proc.process.pid
        samples.append((0, procs.proc_status_kib(pid, "VmRSS"), procs.proc_status_kib(pid, "RssAnon")))
        url = f"{daemon.base_url}/api/devices/{LIGHT}/commands"
        for done in range(0, total, SAMPLE_EVERY):
            for first in range(done, done + SAMPLE_EVERY, AT_ONCE):
                await asyncio.gather(*(_command(b, url, i) for i in range(first, first + AT_ONCE)))
            samples.append((done + SAMPLE_EVERY, procs.proc_status_kib(pid, "VmRSS"),
                            procs.proc_status_kib(pid, "RssAnon")))
    finally:
        await light.stop()
        await asyncio.to_thread(proc.terminate)
    _report(b, total, samples)


async def _wait_online(daemon: DaemonClient) -> None:
    for _ in range(200):
        async with daemon.session.get(f"{daemon.base_url}/api/devices/{LIGHT}") as resp:
            if resp.status == 200 and (await resp.json())["online"]:
                return
        await asyncio.sleep(0.05)
    raise RuntimeError(f"simulated device {LIGHT} did not come online")


async def _command(b: Bench, url: str, i: int) -> None:
    body = {"command": "set_brightness", "params": {"brightness": 1 + i % 99}, "timeoutMs": 5000}
    async with b.session.post(url, json=body) as resp:
        answer = await resp.json()
        if resp.status != 200 or not answer.get("ok"):
            raise RuntimeError(f"command {i} failed: {resp.status} {answer}")


def _report(b: Bench, total: int, samples: list[tuple[int, int, int]]) -> None:
    start, end = samples[0], samples[-1]
    quarter = next(s for s in samples if s[0] >= total * 3 // 4)
    first_quarter = next(s for s in samples if s[0] >= total // 4)
    early = (first_quarter[2] - start[2]) * KIB / MB
    late = (end[2] - quarter[2]) * KIB / MB
    curve = ", ".join(f"{n:,}: {anon * KIB / MB:.1f}" for n, _, anon in samples)
    b.report.add(Row(f"VmRSS after {total:,} commands", end[1] * KIB / MB, "MB", start[1] * KIB / MB,
                     end[1] / start[1], note="baseline: the same daemon before the first command"))
    b.report.add(Row("  RssAnon growth, last quarter of the commands", late, "MB", early,
                     target=f"≤ {MAX_LATE_GROWTH_MB} MB", ok=late <= MAX_LATE_GROWTH_MB,
                     note=f"baseline: growth over the first quarter; RssAnon MB by commands sent: {curve}"))
