"""Section `schedules`: timers and recurring actions with 10,000 stored (docs/benchmarks.md §13).

A daemon of its own (its own state dir, the shared broker) and one simulated thermostat:

1. RSS: idle with no schedule, after 10,000 were created over HTTP, and after a restart that
   loads them from SQLite; creation throughput and the restart time, as information.
2. Precision: with the 10,000 stored (none due during the run), 300 one-off schedules that send a
   command to the thermostat fall due every 50 ms; how late each action started (the `lateMs`
   of its `schedule_fired` event): p99 target ≤ 100 ms. Baseline: the lateness of plain uvloop
   timers set for the same instants in the benchmark's own process.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench_lib import procs
from bench_lib.procs import DaemonClient
from bench_lib.report import Row
from bench_lib.scenarios import Bench
from bench_lib.stats import percentile
from deviceagentd.simulator import SimulatedDevice, SimulatorOptions

STORED = 10_000
PRECISION_RUNS = 300
SPACING_MS = 50
LEAD_MS = 4_000
CREATE_CONCURRENCY = 32
DEVICE = "bench-sched-thermostat"
KIB, MB = 1024, 1e6


async def start_schedules_daemon(b: Bench, state: Path) -> DaemonClient:
    state.mkdir(parents=True, exist_ok=True)
    overrides: dict[str, Any] = {**procs.daemon_overrides(), "schedules_max_schedules": STORED + PRECISION_RUNS + 100,
                                 "mqtt_client_id": f"bench-sched-{uuid.uuid4().hex[:6]}"}
    proc = procs.spawn_daemon(b.broker.url, state, **overrides)
    await asyncio.to_thread(proc.wait_http, 60.0)
    client = DaemonClient(proc, b.session)
    await client.wait_subscribed(b.broker.url)
    return client


def stored_body(i: int) -> dict[str, Any]:
    """Half one-off (days ahead), half recurring on January 1st: none falls due during the run."""
    action = {"type": "say", "text": f"reminder {i}", "speaker": f"bench-speaker-{i % 100}"}
    if i % 2:
        return {"name": f"stored {i}", "inSeconds": 86_400 * (1 + i % 300) + i, "action": action}
    return {"name": f"stored {i}", "cron": f"{i % 60} {i % 24} 1 1 *", "action": action}


async def create_all(daemon: DaemonClient, bodies: list[dict[str, Any]]) -> None:
    queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    for body in bodies:
        queue.put_nowait(body)

    async def worker() -> None:
        while not queue.empty():
            body = queue.get_nowait()
            async with daemon.session.post(daemon.base_url + "/api/schedules", json=body) as resp:
                answer = await resp.json()
                if resp.status != 201:
                    raise RuntimeError(f"schedule not created: {resp.status} {answer}")

    await asyncio.gather(*(worker() for _ in range(CREATE_CONCURRENCY)))


async def schedules(b: Bench) -> None:
    state = b.workdir / "schedules-state"
    stored = STORED if b.sizes.commands >= 1_000 else 2_000
    daemon = await start_schedules_daemon(b, state)
    device = SimulatedDevice(b.catalog.products["thermostat"], DEVICE,
                             SimulatorOptions(url=b.broker.url, heartbeat_s=0, seed=9))
    await device.start()
    try:
        await asyncio.sleep(b.sizes.idle_s)
        empty_kib = procs.proc_status_kib(daemon.pid, "VmRSS")
        started = time.monotonic()
        await create_all(daemon, [stored_body(i) for i in range(stored)])
        rate = stored / (time.monotonic() - started)
        await asyncio.sleep(b.sizes.idle_s)
        created_kib = procs.proc_status_kib(daemon.pid, "VmRSS")
        await asyncio.to_thread(daemon.proc.terminate)
        restart_started = time.monotonic()
        daemon = await start_schedules_daemon(b, state)
        restart_s = time.monotonic() - restart_started
        await asyncio.sleep(b.sizes.idle_s)
        loaded_kib = procs.proc_status_kib(daemon.pid, "VmRSS")
        total = (await daemon.get_json("/api/schedules?limit=1"))["total"]
        if total != stored:
            raise RuntimeError(f"{total} schedules after the restart, expected {stored}")
        base = empty_kib * KIB / MB
        b.report.add(Row(f"RSS with {stored:,} schedules (after a restart loaded them)", loaded_kib * KIB / MB, "MB",
                         base, loaded_kib / empty_kib,
                         note=f"{(loaded_kib - empty_kib) / stored * 1024:.0f} bytes per schedule; right after "
                         f"creating them over HTTP {created_kib * KIB / MB:.1f} MB; baseline: the same daemon idle "
                         "with none"))
        b.report.add(Row(f"  creating {stored:,} schedules over HTTP ({CREATE_CONCURRENCY} at once)", rate, "/s",
                         note="each answered after its commit; restart with them stored: "
                         f"{restart_s:.1f} s to the HTTP API answering"))
        await _precision(b, daemon, state)
    finally:
        await device.stop()
        await asyncio.to_thread(daemon.proc.terminate)


async def _precision(b: Bench, daemon: DaemonClient, state: Path) -> None:
    await daemon.wait_online(DEVICE)
    first_due = int(time.time() * 1000) + LEAD_MS
    dues = [first_due + k * SPACING_MS for k in range(PRECISION_RUNS)]
    await create_all(daemon, [{
        "at": datetime.fromtimestamp(due / 1000, UTC).isoformat(timespec="milliseconds"),
        "action": {"type": "command", "deviceId": DEVICE, "command": "set_target_temperature",
                   "params": {"target_temperature": 15 + k % 15}}} for k, due in enumerate(dues)])
    if int(time.time() * 1000) >= first_due:
        raise RuntimeError("creating the timed schedules took longer than their lead time")
    baseline = await _timer_lateness(dues)
    late = await _fired(state, PRECISION_RUNS, dues[-1])
    p50, p99 = percentile(late, 50), percentile(late, 99)
    b.report.add(Row(f"schedule lateness p99 ({PRECISION_RUNS} due every {SPACING_MS} ms, "
                     f"{STORED:,} stored)", p99, "ms", percentile(baseline, 99), p99 / max(percentile(baseline, 99),
                                                                                    0.001),
                     "≤ 100 ms", p99 <= 100,
                     note=f"action start − due time (lateMs of schedule_fired events); p50 {p50:.1f} ms, max "
                     f"{max(late):.1f} ms; baseline: uvloop timers for the same instants in the bench process "
                     f"(p50 {percentile(baseline, 50):.2f} ms)"))



async def _timer_lateness(dues: list[int]) -> list[float]:
    """How late asyncio timers fire for wall-clock instants, in this process."""
    late: list[float] = []
    for due in dues:
        await asyncio.sleep(max(0.0, due / 1000 - time.time()))
        late.append(max(0.0, time.time() * 1000 - due))
    return late


async def _fired(state: Path, count: int, last_due: int) -> list[float]:
    """lateMs of the schedule_fired events, read from the daemon's database once all are there."""
    db = state / "deviceagentd.db"
    deadline = last_due / 1000 + 30
    while True:
        with sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True) as conn:
            rows = conn.execute("SELECT data FROM events WHERE event = 'schedule_fired' AND source = 'schedule'"
                                " AND device_id = ?", (DEVICE,)).fetchall()
        fired = [json.loads(row[0]) for row in rows]
        if len(fired) >= count:
            failed = [f for f in fired if f["outcome"] != "ok"]
            if failed:
                raise RuntimeError(f"{len(failed)} scheduled commands failed, e.g. {failed[0]}")
            return [float(f["lateMs"]) for f in fired]
        if time.time() > deadline:
            raise RuntimeError(f"only {len(fired)} of {count} schedules fired")
        await asyncio.sleep(0.5)
