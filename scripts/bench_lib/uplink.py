"""Section `uplink` (issue 15, docs/benchmarks.md §15): a cloud outage at a busy site and the catch-up.

A site broker and a TLS "cloud" Mosquitto of its own (`tests/uplink_site.py`), 1,000 simulated
devices from `footprint_load` (100 state reports/s, events, NTP, 1 command/s), and one gateway
restarted once on the same state directory and HTTP port:

1. uplink off: disk writes over a steady window, an NTP probe, LAN ingest bursts (the baselines);
2. uplink on and connected: the same (writes with the uplink on; ingest before the outage);
3. the cloud broker stopped for `--outage` seconds (default 60, the issue's figure 600): the
   outbox fills on disk; RSS, files and the outbox's own pages are read throughout;
4. the cloud broker back: while the outbox drains, NTP probes and ingest bursts again; the
   catch-up rate and the time until the outbox is back at its connected level.

Not in the default set (about five minutes at the default outage).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import math
import os
import sqlite3
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from bench_lib import procs
from bench_lib.footprint_daemon import proc_io
from bench_lib.procs import DaemonClient, DaemonProcess, Helper
from bench_lib.prom import Histogram
from bench_lib.report import Row
from bench_lib.scenarios import TELEMETRY, Bench, IngestRun, NtpRun, ingest_daemon, ntp_exchanges
from bench_lib.stats import median, percentile
from bench_lib.uplink_samples import (
    Point,
    drained_at,
    first_connected,
    growth_ratio,
    ideal_drain_s,
    per_hour,
    per_rows,
    rate,
    window,
)
from deviceagentd.config import UplinkConfig

DEFAULT_OUTAGE_S = 60.0
QUICK_OUTAGE_S = 20.0
SITE_ID = "bench-site"
DB_NAME = "deviceagentd.db"
NTP_NAME = "deviceagentd_ntp_turnaround_seconds"
MB = 1_000_000
KIB = 1024
# Flat: the outbox is on disk, so memory at the end of the outage is at most this much above its start.
MAX_RSS_GROWTH = 1.05
MIN_INGEST_RATIO = 0.8


@dataclass(frozen=True)
class Plan:
    outage_s: float
    steady_s: float  # each steady window: one 60 s device-state save falls in it
    ingest_messages: int
    baseline_rounds: int
    catchup_rounds: int
    ntp_count: int
    devices_per_product: int = 200
    state_interval_s: float = 10.0  # per device: 1,000 devices → 100 state reports/s
    sample_s: float = 0.5
    # The product default unless DEVICEAGENTD_UPLINK_MAX_PUBLISH_RATE (passed on to the daemon) says otherwise.
    max_publish_rate: float = field(default_factory=lambda: float(
        os.environ.get("DEVICEAGENTD_UPLINK_MAX_PUBLISH_RATE", UplinkConfig().max_publish_rate)))

    @classmethod
    def for_run(cls, quick: bool, outage_s: float | None) -> Plan:
        outage = outage_s if outage_s is not None else QUICK_OUTAGE_S if quick else DEFAULT_OUTAGE_S
        if outage < 10:
            raise ValueError("uplink: --outage must be at least 10 s")
        if quick:
            return cls(outage, steady_s=20.0, ingest_messages=5_000, baseline_rounds=1, catchup_rounds=1,
                       ntp_count=200)
        return cls(outage, steady_s=60.0, ingest_messages=20_000, baseline_rounds=3,
                   catchup_rounds=max(3, min(5, int(outage // 60))), ntp_count=500)


# --------------------------------------------------------------------------- readings


class Sampler:
    """Reads one daemon every `every_s` in the background (a failed read is skipped: restarts)."""

    def __init__(self, api: DaemonClient, state_dir: Path, every_s: float) -> None:
        self.api = api
        self.state_dir = state_dir
        self.every_s = every_s
        self.points: list[Point] = []
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    @property
    def last(self) -> Point:
        return self.points[-1]

    async def read(self) -> Point:
        scrape = await self.api.scrape()
        pid = self.api.pid
        db = self.state_dir / DB_NAME
        point = Point(
            t=time.monotonic(),
            connected=scrape.value("deviceagentd_uplink_connected") == 1,
            rows=scrape.value("deviceagentd_uplink_outbox_rows"),
            payload_bytes=scrape.value("deviceagentd_uplink_outbox_bytes"),
            acked=scrape.value("deviceagentd_uplink_acked_total"),
            telemetry_in=scrape.value(TELEMETRY, kind="telemetry"),
            rss_kib=procs.proc_status_kib(pid, "VmRSS"),
            anon_kib=procs.proc_status_kib(pid, "RssAnon"),
            write_bytes=proc_io(pid)["write_bytes"],
            db_bytes=_size(db),
            wal_bytes=_size(db.with_name(DB_NAME + "-wal")),
        )
        self.points.append(point)
        return point

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(aiohttp.ClientError, OSError, KeyError):
                await self.read()
            await asyncio.sleep(self.every_s)

    async def until(self, what: str, done: Any, timeout_s: float) -> float:
        """Monotonic time of the first new reading for which done(point) holds."""
        seen = len(self.points)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for p in self.points[seen:]:
                if done(p):
                    return p.t
            seen = len(self.points)
            await asyncio.sleep(self.every_s / 2)
        raise RuntimeError(f"uplink: {what} not within {timeout_s:.0f} s")


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


@dataclass(frozen=True)
class Pages:
    """The database's pages as the daemon last committed them."""

    outbox_bytes: int  # pages of uplink_outbox and its index (dbstat)
    used_bytes: int  # (page_count - freelist_count) × page_size
    file_bytes: int  # page_count × page_size


def read_pages(db: Path) -> Pages:
    """A read-only look at the daemon's database (WAL: it does not block the writer)."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        page_size = conn.execute("PRAGMA page_size").fetchone()[0]
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        free = conn.execute("PRAGMA freelist_count").fetchone()[0]
        outbox = conn.execute(
            "SELECT COALESCE(SUM(pgsize), 0) FROM dbstat WHERE name IN "
            "(SELECT name FROM sqlite_master WHERE tbl_name = 'uplink_outbox')"
        ).fetchone()[0]
    finally:
        conn.close()
    return Pages(outbox, (pages - free) * page_size, pages * page_size)


# --------------------------------------------------------------------------- the gateway and the site


@dataclass
class Gateway:
    proc: DaemonProcess
    api: DaemonClient
    sampler: Sampler


async def start_gateway(site: Bench, root: Path, http_port: int, name: str,
                        uplink: dict[str, Any] | None) -> Gateway:
    """The daemon on the site broker, always on `http_port` (the load generator's commands go there)."""
    state = root / "state"
    overrides = {**procs.daemon_overrides(), "http_listen": f"127.0.0.1:{http_port}", **(uplink or {})}
    spawned = procs.spawn_daemon(site.broker.url, state, log_path=root / f"daemon-{name}.log", **overrides)
    proc = DaemonProcess(spawned.process, f"http://127.0.0.1:{http_port}", spawned.log_path)
    await asyncio.to_thread(proc.wait_http, 30.0)
    api = DaemonClient(proc, site.session)
    await api.wait_subscribed(site.broker.url)
    site._daemon = api
    sampler = Sampler(api, state, 0.5)
    sampler.start()
    return Gateway(proc, api, sampler)


async def stop_gateway(site: Bench, gateway: Gateway) -> int:
    await gateway.sampler.stop()
    site._daemon = None
    return await asyncio.to_thread(gateway.proc.terminate)


def uplink_overrides(cloud_url: str, ca: Path) -> dict[str, Any]:
    # Backoff capped at 2 s instead of the product's 60 s: the number wanted is the catch-up, not
    # how long a reconnect attempt waits after the broker is back (up to 72 s with the defaults).
    return {"uplink_url": cloud_url, "uplink_site_id": SITE_ID, "uplink_tls_ca_file": str(ca),
            "uplink_reconnect_min_s": 0.5, "uplink_reconnect_max_s": 2.0}


async def start_site_load(site: Bench, gateway: Gateway, plan: Plan) -> Helper:
    spec = {"url": site.broker.url, "api": gateway.proc.base_url,
            "products_dir": str(procs.REPO / "etc" / "deviceagentd" / "products"),
            "devices_per_product": plan.devices_per_product, "state_interval_s": plan.state_interval_s}
    helper = await Helper.start("footprint_load", spec, timeout_s=180.0)
    want = plan.devices_per_product * len(site.catalog.products) + len(site.registered)
    _, total = await gateway.api.wait_counter("deviceagentd_devices_total", want, poll_s=0.2, stall_s=15.0)
    if total < want:
        raise RuntimeError(f"uplink: only {total:.0f} of {want} devices registered")
    helper.go()
    return helper


# --------------------------------------------------------------------------- measurements


@dataclass
class NtpProbe:
    hist: Histogram
    run: NtpRun


async def ntp_probe(site: Bench, gateway: Gateway, count: int) -> NtpProbe:
    """As section `ntp`: sequential exchanges, the daemon's turnaround histogram over them."""
    before = (await gateway.api.scrape()).histogram(NTP_NAME)
    run = await ntp_exchanges(site, count, 0.001)
    after = (await gateway.api.scrape()).histogram(NTP_NAME)
    return NtpProbe(after.minus(before), run)


@dataclass
class Phase:
    steady: list[Point] = field(default_factory=list)
    ntp: list[NtpProbe] = field(default_factory=list)
    ingest: list[IngestRun] = field(default_factory=list)
    backlog: list[tuple[float, float]] = field(default_factory=list)  # outbox rows before / after each burst
    t_end: float = 0.0  # when the last measurement ended (monotonic)


async def steady_phase(site: Bench, gateway: Gateway, plan: Plan) -> Phase:
    phase = Phase()
    start = time.monotonic()
    await asyncio.sleep(plan.steady_s)
    phase.steady = window(gateway.sampler.points, start, time.monotonic())
    phase.ntp.append(await ntp_probe(site, gateway, plan.ntp_count))
    for _ in range(plan.baseline_rounds):
        phase.ingest.append(await ingest_daemon(site, gateway.api, plan.ingest_messages))
    return phase


async def catchup_phase(site: Bench, gateway: Gateway, plan: Plan, threshold: float) -> Phase:
    """NTP probe then an ingest burst, round after round while the backlog lasts (at least one)."""
    phase = Phase()
    for i in range(plan.catchup_rounds):
        before = (await gateway.sampler.read()).rows
        if i and before <= threshold:
            break
        phase.ntp.append(await ntp_probe(site, gateway, plan.ntp_count))
        phase.ingest.append(await ingest_daemon(site, gateway.api, plan.ingest_messages))
        phase.backlog.append((before, (await gateway.sampler.read()).rows))
    phase.t_end = time.monotonic()
    return phase


# --------------------------------------------------------------------------- the section


async def uplink(b: Bench, outage_s: float | None = None) -> None:
    # tests/ is on sys.path once bench_lib.procs is imported.
    from uplink_site import start_cloud

    plan = Plan.for_run(b.report.mode == "quick", outage_s)
    root = b.workdir / "uplink"
    root.mkdir(parents=True, exist_ok=True)
    load_before = os.getloadavg()
    site_broker = await asyncio.to_thread(procs.start_broker, root / "site")
    site = dataclasses.replace(b, broker=site_broker, _daemon=None, registered=set())
    cloud = None
    gateway: Gateway | None = None
    load: Helper | None = None
    http_port = procs.free_port()
    try:
        cloud = await asyncio.to_thread(start_cloud, root / "cloud")
        say(f"uplink off; {plan.devices_per_product * 5:,} simulated devices starting")
        gateway = await start_gateway(site, root, http_port, "off", None)
        await site.ensure_thermostats()
        load = await start_site_load(site, gateway, plan)
        await asyncio.sleep(5.0)
        off = await steady_phase(site, gateway, plan)
        off_points = gateway.sampler.points
        off_exit = await stop_gateway(site, gateway)

        say("uplink on, connected")
        gateway = await start_gateway(site, root, http_port, "on", uplink_overrides(cloud.uplink_url, cloud.ca))
        await gateway.sampler.until("uplink connected", lambda p: p.connected, 30.0)
        await asyncio.sleep(plan.state_interval_s + 5.0)  # every device reported once, the first rows acked
        on = await steady_phase(site, gateway, plan)
        threshold = max(100.0, max(p.rows for p in on.steady))

        say(f"cloud broker down for {plan.outage_s:g} s")
        db = root / "state" / DB_NAME
        pages_before = await asyncio.to_thread(read_pages, db)
        t_down = time.monotonic()
        await asyncio.to_thread(cloud.broker.stop)
        await asyncio.sleep(plan.outage_s)
        pages_after = await asyncio.to_thread(read_pages, db)
        at_end = await gateway.sampler.read()

        say(f"cloud broker back; {at_end.rows:,.0f} rows to send")
        t_back = time.monotonic()
        await asyncio.to_thread(cloud.broker.start)
        t_connected = await gateway.sampler.until("reconnect", lambda p: p.connected, 60.0)
        catchup = await catchup_phase(site, gateway, plan, threshold)
        await gateway.sampler.until("drain", lambda p: p.connected and p.rows <= threshold,
                                    plan.outage_s * 3 + 120.0)
        pages_drained = await asyncio.to_thread(read_pages, db)
        load_result = await load.stop(timeout_s=120.0)
        load = None
        on_points = gateway.sampler.points
        on_exit = await stop_gateway(site, gateway)
        gateway = None
    finally:
        if load is not None:
            load.kill()
        if gateway is not None:
            await stop_gateway(site, gateway)
        if cloud is not None:
            await asyncio.to_thread(cloud.broker.stop)
        await asyncio.to_thread(site_broker.stop)
    save_points(root / "samples.jsonl", {"off": off_points, "on": on_points},
                {"down": t_down, "back": t_back, "connected": t_connected, "measured": catchup.t_end})
    report(b, plan, Results(off, on, catchup, on_points, threshold, (pages_before, pages_after, pages_drained),
                            t_down, t_back, t_connected, load_result, {"off": off_exit, "on": on_exit},
                            load_before, os.getloadavg()))


def save_points(path: Path, points: dict[str, list[Point]], marks: dict[str, float]) -> None:
    """Every reading, for a look beyond the table (`--keep`)."""
    with path.open("w") as out:
        out.write(json.dumps({"marks": marks}) + "\n")
        for name, readings in points.items():
            for p in readings:
                out.write(json.dumps({"gateway": name, **dataclasses.asdict(p)}) + "\n")


def say(text: str) -> None:
    print(f"bench: uplink: {text}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- results


@dataclass
class Results:
    off: Phase
    on: Phase
    catchup: Phase
    points: list[Point]  # every reading of the `on` gateway
    threshold: float  # outbox rows at most while connected and steady: "drained"
    pages: tuple[Pages, Pages, Pages]  # before the outage, at its end, once drained
    t_down: float
    t_back: float
    t_connected: float
    load_result: dict[str, Any]
    exit_codes: dict[str, int]
    load_before: tuple[float, float, float]
    load_after: tuple[float, float, float]


def merged(hists: list[Histogram]) -> Histogram:
    """Several probes' histograms as one (same buckets)."""
    buckets = [(le, sum(dict(h.buckets).get(le, 0.0) for h in hists)) for le, _ in hists[0].buckets]
    return Histogram(tuple(buckets), sum(h.sum for h in hists), sum(h.count for h in hists))


def writes_mb_per_hour(points: list[Point]) -> float:
    return per_hour(points[-1].write_bytes - points[0].write_bytes, points[-1].t - points[0].t) / MB


def fmt_load(values: tuple[float, float, float]) -> str:
    return "/".join(f"{v:.2f}" for v in values)


def report(b: Bench, plan: Plan, r: Results) -> None:
    outage = window(r.points, r.t_down, r.t_back)
    first, end = outage[0], outage[-1]
    queued = end.rows - first.rows
    inflow = rate(r.on.steady[0], r.on.steady[-1], "acked")  # connected and drained: what comes in goes out
    lan_rate = rate(r.on.steady[0], r.on.steady[-1], "telemetry_in")
    drained = drained_at(r.points, r.t_connected, r.threshold)
    connected_at = first_connected(r.points, r.t_back)
    start = next(p for p in r.points if p.t >= r.t_connected)
    backlog = start.rows
    label = f"{plan.outage_s:g} s"

    # --- catch-up rate and time to drain
    if drained is None or connected_at is None:
        raise RuntimeError("uplink: the outbox never drained")
    span = window(r.points, r.t_connected, drained)
    catchup_rate = rate(span[0], span[-1], "acked")
    busy = window(r.points, r.t_connected, r.catchup.t_end)
    quiet = window(r.points, r.catchup.t_end, drained)
    split = (f"; {rate(busy[0], busy[-1], 'acked'):.0f} msg/s while the NTP probes and ingest bursts ran "
             f"({busy[-1].t - busy[0].t:.1f} s)" if len(busy) > 1 else "")
    if len(quiet) > 2:
        split += f", {rate(quiet[0], quiet[-1], 'acked'):.0f} msg/s after them ({quiet[-1].t - quiet[0].t:.1f} s)"
    drain_s = drained - r.t_connected
    ideal = ideal_drain_s(backlog, plan.max_publish_rate, inflow)
    b.report.add(Row(f"uplink: catch-up rate after a {label} outage", catchup_rate, "msg/s", plan.max_publish_rate,
                     catchup_rate / plan.max_publish_rate,
                     note=f"PUBACKs/s from reconnect until drained, {backlog:,.0f} rows waiting at the reconnect "
                     f"({queued:,.0f} queued during the outage, {queued / plan.outage_s:.0f} rows/s); baseline: "
                     f"uplink.max_publish_rate; TLS to a local Mosquitto with no subscriber"
                     + split))
    b.report.add(Row(f"uplink: time to drain after a {label} outage", drain_s, "s", ideal, drain_s / ideal,
                     note=f"reconnect → outbox back at its connected level (≤ {r.threshold:,.0f} rows); broker "
                     f"back → reconnected {r.t_connected - r.t_back:.1f} s (backoff capped at 2 s for the bench); "
                     f"baseline: backlog / (max_publish_rate − inflow {inflow:.0f} rows/s)"))

    # --- LAN ingest during catch-up
    base_rate = median([x.rate for x in r.off.ingest])
    before = median([x.rate for x in r.on.ingest])
    during = median([x.rate for x in r.catchup.ingest])
    ratio = during / base_rate
    backlogs = ", ".join(f"{a:,.0f} → {z:,.0f}" for a, z in r.catchup.backlog)
    b.report.add(Row(f"uplink: LAN ingest during catch-up ({plan.ingest_messages:,} msgs, "
                     f"median of {len(r.catchup.ingest)})", during, "msg/s", base_rate, ratio,
                     f"ratio ≥ {MIN_INGEST_RATIO}", ratio >= MIN_INGEST_RATIO,
                     f"telemetry bursts as fast as one publisher sends, on top of the site's {lan_rate:.0f} msg/s; "
                     f"baseline: uplink off (median of {len(r.off.ingest)}: "
                     f"{', '.join(f'{x.rate:,.0f}' for x in r.off.ingest)}); uplink on before the outage "
                     f"{before:,.0f} msg/s ({before / base_rate:.2f}×); during catch-up "
                     f"{', '.join(f'{x.rate:,.0f}' for x in r.catchup.ingest)} msg/s; outbox rows before → after "
                     f"each NTP probe + burst: {backlogs}"))

    # --- NTP during catch-up
    hist = merged([p.hist for p in r.catchup.ntp])
    idle = merged([p.hist for p in r.off.ntp])
    within = hist.fraction_at_most(0.001)
    turn = [t for p in r.catchup.ntp for t in p.run.turnaround_ms]
    rtt = [t for p in r.catchup.ntp for t in p.run.rtt_ms]
    base_rtt = [t for p in r.off.ntp for t in p.run.rtt_ms]
    on_hist = merged([p.hist for p in r.on.ntp])
    b.report.add(Row("uplink: NTP turnaround p99 during catch-up (daemon histogram)", hist.quantile(0.99) * 1000,
                     "ms", idle.quantile(0.99) * 1000, None, "≤ 1 ms", within >= 0.99,
                     f"{len(turn):,} sequential requests during catch-up ({hist.count:.0f} answers counted, the "
                     f"site's own ~1/s included), {within:.2%} within 1 ms; baseline: uplink off; uplink on before "
                     f"the outage {on_hist.quantile(0.99) * 1000:.3f} ms; client round trip t4 − t1 p99 "
                     f"{percentile(rtt, 99):.2f} ms (uplink off {percentile(base_rtt, 99):.2f} ms)"))
    p99 = percentile(turn, 99)
    base_turn = [t for p in r.off.ntp for t in p.run.turnaround_ms]
    lost = sum(p.run.lost for p in r.catchup.ntp)
    b.report.add(Row("uplink: NTP turnaround p99 during catch-up (payload t3 − t2, whole ms)", p99, "ms",
                     percentile(base_turn, 99), None, "≤ 1 ms", p99 <= 1 and lost == 0,
                     f"max {max(turn, default=0)} ms; {lost} requests unanswered within 2 s"))

    # --- disk per 100,000 queued rows
    before_pages, after_pages, drained_pages = r.pages
    outbox_growth = after_pages.outbox_bytes - before_pages.outbox_bytes
    payload_growth = end.payload_bytes - first.payload_bytes
    disk = per_rows(outbox_growth, queued) / MB
    payload = per_rows(payload_growth, queued) / MB
    files = per_rows((end.db_bytes + end.wal_bytes) - (first.db_bytes + first.wal_bytes), queued) / MB
    used = per_rows(after_pages.used_bytes - before_pages.used_bytes, queued) / MB
    b.report.add(Row("uplink: disk per 100,000 queued rows", disk, "MB", payload, disk / payload,
                     note=f"pages of uplink_outbox and its index (dbstat) grew {outbox_growth / MB:.2f} MB for "
                     f"{queued:,.0f} rows; baseline: the rows' payload + topic bytes (the outbox's own count, what "
                     f"uplink.outbox_max_bytes bounds); used pages of the whole database {used:.1f} MB and "
                     f"database + WAL files {files:.1f} MB per 100,000 over the outage (other tables included); "
                     f"once drained the file stays {drained_pages.file_bytes / MB:.1f} MB with "
                     f"{(drained_pages.file_bytes - drained_pages.used_bytes) / MB:.1f} MB free pages to reuse"))

    # --- RSS through the outage
    rss = [p.rss_kib for p in outage]
    flat = growth_ratio(rss)
    peak_catchup = max(p.rss_kib for p in window(r.points, r.t_back, drained))
    b.report.add(Row(f"uplink: RSS through the {label} outage (last / first)", rss[-1] * KIB / MB, "MB",
                     rss[0] * KIB / MB, flat, f"≤ {MAX_RSS_GROWTH}×", flat <= MAX_RSS_GROWTH,
                     f"VmRSS every {plan.sample_s:g} s ({len(rss)} readings), max {max(rss) * KIB / MB:.1f} MB; "
                     f"RssAnon {outage[0].anon_kib * KIB / MB:.1f} → {outage[-1].anon_kib * KIB / MB:.1f} MB; "
                     f"{queued:,.0f} rows queued; max during catch-up {peak_catchup * KIB / MB:.1f} MB"))

    # --- SD-card writes per hour
    on_w, off_w = writes_mb_per_hour(r.on.steady), writes_mb_per_hour(r.off.steady)
    # The second half: the first holds the commits of the ingest bursts just before the outage.
    out_w = writes_mb_per_hour(window(r.points, r.t_down + plan.outage_s / 2, r.t_back))
    up_w = writes_mb_per_hour(span) if len(span) > 1 else math.nan
    b.report.add(Row("uplink: disk writes per hour, uplink on / off", on_w, "MB", off_w, on_w / off_w,
                     note=f"/proc/<pid>/io write_bytes over {plan.steady_s:g} s of steady site load, × 3,600 / "
                     f"seconds; uplink on and connected ({inflow:.0f} outbox rows/s in and acked) vs off, the same "
                     f"gateway restarted; during the second half of the outage {out_w:.0f} MB/h, during catch-up "
                     f"{up_w:.0f} MB/h (with the ingest bursts)"))

    # --- the site meanwhile
    failed = r.load_result.get("commands_failed") or {}
    b.report.add(Row("uplink: site load served", lan_rate, "msg/s",
                     note=f"{r.load_result.get('devices', 0):,} simulated devices (state every "
                     f"{plan.state_interval_s:g} s, events, NTP, 1 HTTP command/s); commands "
                     f"{r.load_result.get('commands_ok', 0):,} of {r.load_result.get('commands_sent', 0):,} ok"
                     + (f" (failed: {failed}; the gateway restart between off and on refuses a few)" if failed else "")
                     + f"; exit codes on SIGTERM {r.exit_codes}"))
    b.report.note(f"uplink: outage {plan.outage_s:g} s (the issue's figure is 600 s: `--only uplink --outage 600`); "
                  f"load average (1/5/15 min) {fmt_load(r.load_before)} before, {fmt_load(r.load_after)} after; "
                  f"{os.cpu_count()} CPUs shared with the site's load generator, two brokers and other work")
