"""`scripts/bench --only footprint`: the numbers a field deployment needs (issue 6).

* Start to READY=1 as systemd starts the daemon (Type=notify, shipped config, fresh state
  directory), with a cold page cache where the kernel lets us drop it, next to warm starts.
* Two gateways side by side for `--duration` (default one hour), each with its own broker and
  its own state volume: one idle with 1,000 registered devices, one serving a simulated site
  (see `footprint_load`). Every `sample_s` both are read: memory, /proc/<pid>/io, the block
  device under their state directory, database and WAL sizes, /metrics.
* Out: a checkpoint table (start, 10, 30, 60 min), per-hour rates over the steady part of
  the run, a per-year projection of disk writes, and the RSS growth (section `plateau` checks
  that it levels off).

Not in the default set (it takes an hour); see docs/benchmarks.md.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import random
import shutil
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench_lib import procs
from bench_lib.footprint_daemon import StartedDaemon, drop_page_cache, start_notified
from bench_lib.footprint_load import device_id
from bench_lib.footprint_sample import (
    DB_NAME,
    KIB,
    MB,
    Rates,
    Sample,
    checkpoint_label,
    checkpoint_table,
    nearest,
    rates_table,
    take_sample,
)
from bench_lib.mqttc import BenchClient
from bench_lib.procs import DaemonClient, DaemonProcess, Helper, MosquittoBroker
from bench_lib.report import Row
from bench_lib.scenarios import Bench, client_id
from bench_lib.stats import median
from bench_lib.volume import Volume
from deviceagentd.simulator.model import DeviceModel

HOUR = 3600.0
QUICK_DURATION_S = 240.0
CHECKPOINTS_S = (0.0, 600.0, 1800.0, 3600.0)
STEADY_FROM_S = 600.0  # rates are taken from here: registration, WAL growth from empty, offline sweep are over
VOLUME_BYTES = 1 << 30  # sparse; the database stays far below
# Debian's packaged Mosquitto snapshots every 30 min; the test broker's 1 s would only cost CPU here.
BROKER_CONF = "autosave_interval 1800"
YEAR_H = 24 * 365


@dataclass(frozen=True)
class Plan:
    duration_s: float
    sample_s: float
    ready_runs: int
    devices_per_product: int = 200
    state_interval_s: float = 10.0  # each device: 1,000 devices → 100 state reports/s
    event_mean_s: float = 3000.0  # each device: 1,000 devices → 20 events/min
    ntp_interval_s: float = 1000.0  # each device: 1,000 devices → 1 request/s
    command_rate: float = 1.0  # HTTP commands per second, whole site

    @classmethod
    def for_run(cls, quick: bool, duration_s: float | None) -> Plan:
        duration = duration_s if duration_s is not None else QUICK_DURATION_S if quick else HOUR
        if duration < 60:
            raise ValueError("footprint: --duration must be at least 60 s")
        return cls(duration_s=duration, sample_s=min(30.0, duration / 12), ready_runs=1 if quick else 3)

    @property
    def checkpoints(self) -> list[float]:
        points = [c for c in CHECKPOINTS_S if c <= self.duration_s]
        return points if points[-1] == self.duration_s else [*points, self.duration_s]

    @property
    def steady_from_s(self) -> float:
        return min(STEADY_FROM_S, self.duration_s / 4)


@dataclass
class Site:
    """One gateway under test: its broker, state volume and daemon."""

    name: str
    root: Path
    broker: MosquittoBroker
    volume: Volume | None
    volume_note: str
    daemon: StartedDaemon | None = None
    client: DaemonClient | None = None
    samples: list[Sample] = field(default_factory=list)

    @property
    def state_dir(self) -> Path:
        base = self.volume.mount_point if self.volume else self.root / "state"
        return base / "deviceagentd"  # like /var/lib/deviceagentd on the SD card's file system

    def api(self) -> DaemonClient:
        assert self.client is not None
        return self.client

    def process(self) -> StartedDaemon:
        assert self.daemon is not None
        return self.daemon


# --------------------------------------------------------------------------- start → READY


@dataclass
class ReadyRuns:
    cold_s: list[float] = field(default_factory=list)
    warm_s: list[float] = field(default_factory=list)
    cold_read_mb: list[float] = field(default_factory=list)
    warm_read_mb: list[float] = field(default_factory=list)
    rss_mb: list[float] = field(default_factory=list)
    drop_refused: str = ""


async def one_start(b: Bench, root: Path) -> StartedDaemon:
    started = await asyncio.to_thread(start_notified, b.broker.url, root / "state" / "deviceagentd", root)
    await asyncio.to_thread(started.stop)
    return started


async def measure_ready(b: Bench, plan: Plan) -> ReadyRuns:
    """Alternating cold and warm starts, each on a fresh state directory (a first boot)."""
    runs = ReadyRuns()
    base = b.workdir / "footprint" / "ready"
    for i in range(plan.ready_runs):
        why = await asyncio.to_thread(drop_page_cache)
        run = await one_start(b, base / f"cold-{i}")
        if why:
            runs.drop_refused = why
        (runs.warm_s if why else runs.cold_s).append(run.ready_s)
        (runs.warm_read_mb if why else runs.cold_read_mb).append(run.read_bytes / MB)
        runs.rss_mb.append(run.rss_kib * KIB / MB)
        run = await one_start(b, base / f"warm-{i}")
        runs.warm_s.append(run.ready_s)
        runs.warm_read_mb.append(run.read_bytes / MB)
        runs.rss_mb.append(run.rss_kib * KIB / MB)
    return runs


def report_ready(b: Bench, runs: ReadyRuns) -> None:
    warm = median(runs.warm_s)
    rss = f"VmRSS at READY {median(runs.rss_mb):.1f} MB"
    if runs.cold_s:
        cold = median(runs.cold_s)
        b.report.add(Row(f"footprint: start → READY=1, cold page cache (median of {len(runs.cold_s)})", cold, "s",
                         warm, cold / warm,
                         note=f"cold runs {', '.join(f'{t:.2f}' for t in runs.cold_s)} s after "
                         "`sync; echo 3 > /proc/sys/vm/drop_caches`, reading "
                         f"{median(runs.cold_read_mb):.1f} MB from the disk by READY (warm: "
                         f"{median(runs.warm_read_mb):.1f} MB); baseline: warm runs "
                         f"{', '.join(f'{t:.2f}' for t in runs.warm_s)} s; each on a fresh state directory with "
                         f"the shipped config, `deviceagentd run` exec'd from / with NOTIFY_SOCKET; {rss}. In a VM the "
                         "host may still cache the guest's disk, so 'cold' is cold for the guest's page cache"))
    else:
        b.report.add(Row(f"footprint: start → READY=1, page cache NOT dropped (median of {len(runs.warm_s)})", warm,
                         "s", note=f"could not drop the page cache ({runs.drop_refused}), so every run is warm: "
                         f"{', '.join(f'{t:.2f}' for t in runs.warm_s)} s; fresh state directory, shipped config, "
                         f"NOTIFY_SOCKET; {rss}"))


# --------------------------------------------------------------------------- the two gateways


async def open_site(b: Bench, name: str) -> Site:
    root = b.workdir / "footprint" / name
    broker = await asyncio.to_thread(procs.start_broker, root / "mosquitto", extra_conf=BROKER_CONF)
    site = Site(name, root, broker, None, "")
    try:
        site.volume, site.volume_note = await asyncio.to_thread(Volume.create, root / "state.img", root / "state",
                                                                VOLUME_BYTES)
        site.state_dir.mkdir(parents=True, exist_ok=True)
        site.daemon = await asyncio.to_thread(start_notified, broker.url, site.state_dir, root / "run")
    except BaseException:
        await close_site(site)  # the caller only cleans up sites that opened
        raise
    proc = DaemonProcess(site.daemon.process, site.daemon.base_url, site.daemon.log_path)
    site.client = DaemonClient(proc, b.session)
    return site


async def close_site(site: Site) -> int | None:
    code = await asyncio.to_thread(site.daemon.stop) if site.daemon else None
    await asyncio.to_thread(site.broker.stop)
    # The volume image goes with the volume; a copy of the database (checkpointed at the daemon's
    # stop) stays in the work directory for a look at what was written (`--keep`).
    for name in (DB_NAME, DB_NAME + "-wal"):
        if (site.state_dir / name).exists():
            await asyncio.to_thread(shutil.copy2, site.state_dir / name, site.root / name)
    if site.volume is not None:
        await asyncio.to_thread(site.volume.close)
    return code


async def register_idle(b: Bench, site: Site, plan: Plan) -> int:
    """One state report per device (the same ids as the loaded site), then silence."""
    client = BenchClient(site.broker.url, client_id("footprint-register"))
    await client.connect()
    rng = random.Random(7)
    count = 0
    for product in sorted(b.catalog.products):
        model = DeviceModel(b.catalog.products[product], rng, source="footprint")
        for i in range(plan.devices_per_product):
            model.drift()
            client.publish0(f"v1/{product}/{device_id(product, i)}/telemetry",
                            json.dumps(model.state_payload()).encode())
            await client.drain()
            count += 1
    await client.disconnect()
    await wait_devices(site, count)
    return count


async def wait_devices(site: Site, count: int) -> None:
    _, total = await site.api().wait_counter("deviceagentd_devices_total", count, poll_s=0.2, stall_s=15.0)
    if total < count:
        raise RuntimeError(f"footprint: only {total:.0f} of {count} devices registered at the {site.name} gateway")


async def start_load(b: Bench, site: Site, plan: Plan) -> Helper:
    spec = {"url": site.broker.url, "api": site.process().base_url,
            "products_dir": str(procs.REPO / "etc" / "deviceagentd" / "products"),
            "devices_per_product": plan.devices_per_product, "state_interval_s": plan.state_interval_s,
            "event_mean_s": plan.event_mean_s, "ntp_interval_s": plan.ntp_interval_s,
            "command_rate": plan.command_rate}
    helper = await Helper.start("footprint_load", spec, timeout_s=180.0)
    await wait_devices(site, plan.devices_per_product * len(b.catalog.products))
    return helper


async def sample_site(site: Site, t_s: float) -> Sample:
    daemon = site.process()
    if not daemon.alive():
        raise RuntimeError(f"footprint: the {site.name} daemon exited ({daemon.process.returncode}); "
                           f"see {daemon.log_path}")
    scrape = await site.api().scrape()
    block = site.volume.stat() if site.volume else None
    sample = take_sample(t_s, daemon.pid, site.state_dir, daemon.log_path, block, scrape)
    site.samples.append(sample)
    return sample


def progress(t_s: float, sites: list[Site]) -> str:
    parts = []
    for site in sites:
        s, first = site.samples[-1], site.samples[0]
        disk = s.write_bytes - first.write_bytes
        if s.block_write_bytes is not None and first.block_write_bytes is not None:
            disk = s.block_write_bytes - first.block_write_bytes
        parts.append(f"{site.name}: RSS {s.rss_kib * KIB / MB:.1f} MB, disk {disk / MB:.1f} MB, "
                     f"db {(s.db_bytes + s.wal_bytes) / MB:.1f} MB, commits {s.commits - first.commits:,.0f}")
    return f"bench: footprint {t_s:,.0f} s  " + "; ".join(parts)


async def sample_for(sites: list[Site], plan: Plan, log: Path) -> None:
    """Sample every site every plan.sample_s until plan.duration_s (and at exactly the end)."""
    times = [i * plan.sample_s for i in range(int(plan.duration_s // plan.sample_s) + 1)]
    if times[-1] < plan.duration_s:
        times.append(plan.duration_s)
    t0 = time.monotonic()
    with log.open("a") as out:
        for t in times:
            await asyncio.sleep(max(0.0, t0 + t - time.monotonic()))
            for site in sites:
                out.write((await sample_site(site, t)).to_json(site.name) + "\n")
            out.flush()
            print(progress(t, sites), file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- results


def rss_mb(sample: Sample) -> float:
    return sample.rss_kib * KIB / MB


def report_sites(b: Bench, plan: Plan, idle: Site, load: Site, load_result: dict[str, Any],
                 exit_codes: dict[str, int | None]) -> dict[str, Rates]:
    steady = {s.name: Rates.between(nearest(s.samples, plan.steady_from_s), s.samples[-1]) for s in (idle, load)}
    window = f"{plan.steady_from_s / 60:g}–{plan.duration_s / 60:g} min"
    r_idle, r_load = steady[idle.name], steady[load.name]

    for c in plan.checkpoints:
        at_load, at_idle = nearest(load.samples, c), nearest(idle.samples, c)
        b.report.add(Row(f"footprint: VmRSS at {checkpoint_label(c)} (loaded / idle)", rss_mb(at_load), "MB",
                         rss_mb(at_idle), note=f"VmHWM {at_load.hwm_kib * KIB / MB:.1f} / "
                         f"{at_idle.hwm_kib * KIB / MB:.1f} MB; RssAnon {at_load.anon_kib * KIB / MB:.1f} / "
                         f"{at_idle.anon_kib * KIB / MB:.1f} MB"))

    from_s = plan.steady_from_s
    growth = {s.name: rss_mb(s.samples[-1]) - rss_mb(nearest(s.samples, from_s)) for s in (idle, load)}
    anon = {s.name: (s.samples[-1].anon_kib - nearest(s.samples, from_s).anon_kib) * KIB / MB for s in (idle, load)}
    # Information, not a verdict: at one command a second the bounded per-command memory (remembered
    # request ids, SQLite's page caches) is still filling after an hour; section `plateau` sends
    # enough commands to fill it and checks that growth stops.
    b.report.add(Row(f"footprint: RSS growth {checkpoint_label(from_s)} → {checkpoint_label(plan.duration_s)}",
                     growth[load.name], "MB", growth[idle.name],
                     note=f"RssAnon growth {anon[load.name]:+.2f} MB loaded, {anon[idle.name]:+.2f} MB idle; "
                     + headroom(rss_mb(load.samples[-1]), growth[load.name], plan.duration_s - from_s)
                     + "; whether it levels off: `scripts/bench --only plateau`"))

    have_block = not math.isnan(r_load.block_mb)
    wb_works = load.samples[-1].write_bytes > load.samples[0].write_bytes
    if have_block:
        b.report.add(Row("footprint: disk writes per hour, block device (loaded / idle)", r_load.block_mb, "MB",
                         r_idle.block_mb, note=f"{window}; sectors written to the loop device under the state "
                         f"directory (ext4, noatime): {r_load.block_ios:,.0f} / {r_idle.block_ios:,.0f} write "
                         f"requests and {r_load.block_flushes:,.0f} / {r_idle.block_flushes:,.0f} flushes per hour"))
    else:
        b.report.add(Row("footprint: disk writes per hour, block device", None, "MB",
                         note=f"not measured: {load.volume_note}"))
    b.report.add(Row("  write_bytes per hour (/proc/<pid>/io)", r_load.write_bytes_mb, "MB", r_idle.write_bytes_mb,
                     note=f"{window}; page-cache bytes the daemon dirtied (counted once per page until written "
                     f"back); cancelled_write_bytes {r_load.cancelled_mb:.2f} / {r_idle.cancelled_mb:.2f} MB/h"
                     + ("" if wb_works else "; write_bytes stayed 0 here: use file growth and wchar instead")))
    b.report.add(Row("  database + WAL growth per hour", r_load.growth_mb, "MB", r_idle.growth_mb,
                     note=f"{window}; size of deviceagentd.db + -wal: "
                     f"{(load.samples[-1].db_bytes + load.samples[-1].wal_bytes) / MB:.1f} / "
                     f"{(idle.samples[-1].db_bytes + idle.samples[-1].wal_bytes) / MB:.1f} MB at the end"))
    b.report.add(Row("  wchar per hour (every write call, sockets too)", r_load.wchar_mb, "MB", r_idle.wchar_mb,
                     note="write()/send() calls of any kind: the database files, but also sockets and the log pipe; "
                     "no page rounding, no file-system overhead"))
    b.report.add(Row("  SQLite commits per hour", r_load.commits, "count", r_idle.commits))
    b.report.add(Row("  log output per hour (journald's share)", r_load.log_mb, "MB", r_idle.log_mb,
                     note="stdout+stderr at log level info; journald writes it, not the daemon"))
    year_load, year_idle = r_load.disk_mb * YEAR_H / 1000, r_idle.disk_mb * YEAR_H / 1000
    b.report.add(Row("footprint: projected disk writes per year (loaded / idle)", year_load, "GB", year_idle,
                     note=("block device" if have_block else "write_bytes")
                     + f" rate of {window} × 8,760 h; the SD card's flash sees more (write amplification, "
                     "see docs/benchmarks.md)"))
    b.report.add(Row("footprint: daemon CPU (loaded / idle)", r_load.cpu_share * 100, "% core",
                     r_idle.cpu_share * 100, note=f"{window}; a Raspberry Pi core is several times slower"))
    failed = load_result.get("commands_failed") or {}
    b.report.add(Row("footprint: site load served", r_load.telemetry_per_s, "msg/s",
                     target="no failed commands", ok=not failed and exit_codes.get(load.name) == 0,
                     note=f"{window}: {r_load.telemetry_per_s:.1f} state reports/s, {r_load.events_per_min:.1f} "
                     f"events/min, {r_load.ntp_per_s:.2f} NTP requests/s, {r_load.commands_per_s:.2f} commands/s "
                     f"counted by the daemon. Load generator: {load_result.get('commands_ok', 0):,} of "
                     f"{load_result.get('commands_sent', 0):,} HTTP commands ok"
                     + (f" (failed: {failed})" if failed else "")
                     + f", p50 {fmt_ms(load_result.get('command_p50_ms'))}, "
                     f"p99 {fmt_ms(load_result.get('command_p99_ms'))}; {load_result.get('ntp_samples', 0):,} "
                     f"clock syncs, |offset| p99 {fmt_ms(load_result.get('ntp_abs_offset_p99_ms'))}; "
                     f"{load_result.get('disconnected_at_end', '?')} devices disconnected at the end; "
                     f"load generator on {load_result.get('cpu_share', 0):.0%} of a core; "
                     f"exit codes on SIGTERM: {exit_codes}"))
    return steady


def headroom(rss: float, growth_mb: float, over_s: float) -> str:
    """What the growth would mean if it went on linearly (a leak would; bounded caches do not)."""
    if growth_mb <= 0:
        return "loaded RSS did not grow"
    per_day = growth_mb / over_s * 86400
    return f"if the loaded growth went on linearly: {per_day:.1f} MB/day, {rss + per_day * 30:.0f} MB after 30 days"


def fmt_ms(value: Any) -> str:
    return f"{value:.1f} ms" if isinstance(value, int | float) else "n/a"


# --------------------------------------------------------------------------- the section


async def footprint(b: Bench, duration_s: float | None = None) -> None:
    plan = Plan.for_run(b.report.mode == "quick", duration_s)
    out_dir = b.workdir / "footprint"
    out_dir.mkdir(parents=True, exist_ok=True)
    load_before = os.getloadavg()
    print(f"bench: footprint: start → READY ({plan.ready_runs} cold + {plan.ready_runs} warm) ...",
          file=sys.stderr, flush=True)
    report_ready(b, await measure_ready(b, plan))

    sites: list[Site] = []
    helper: Helper | None = None
    load_result: dict[str, Any] = {}
    exit_codes: dict[str, int | None] = {}
    # A plain `kill` would end the process without the clean-up below, leaving daemons, brokers
    # and mounted loop devices behind for an hour-long section: handle SIGTERM as Ctrl-C is
    # handled, by cancelling the run.
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, signal.raise_signal, signal.SIGINT)
    try:
        idle = await open_site(b, "idle")
        sites.append(idle)
        load = await open_site(b, "loaded")
        sites.append(load)
        registered = await register_idle(b, idle, plan)
        helper = await start_load(b, load, plan)
        helper.go()
        print(f"bench: footprint: {registered:,} devices each; sampling every {plan.sample_s:g} s for "
              f"{plan.duration_s:g} s (samples: {out_dir / 'samples.jsonl'})", file=sys.stderr, flush=True)
        await sample_for(sites, plan, out_dir / "samples.jsonl")
        load_result = await helper.stop(timeout_s=120.0)
        helper = None
    finally:
        if helper is not None:
            helper.kill()
        for site in sites:
            exit_codes[site.name] = await close_site(site)
        loop.remove_signal_handler(signal.SIGTERM)
    load_after = os.getloadavg()

    steady = report_sites(b, plan, idle, load, load_result, exit_codes)
    table = checkpoint_table({s.name: s.samples for s in sites}, plan.checkpoints)
    rates = rates_table(steady)
    (out_dir / "table.md").write_text(table + "\n\n" + rates + "\n")
    print(f"\nfootprint: checkpoints (counters since the start of sampling)\n\n{table}\n\n"
          f"footprint: per hour, {plan.steady_from_s / 60:g}–{plan.duration_s / 60:g} min\n\n{rates}\n")
    if idle.volume is None:
        b.report.note(f"footprint: state directories on the work directory's file system ({idle.volume_note}); "
                      "disk writes from /proc/<pid>/io only")
    b.report.note(f"footprint: load average (1/5/15 min) {fmt_load(load_before)} before, {fmt_load(load_after)} "
                  f"after; {os.cpu_count()} CPUs shared with other work, the two gateways, their brokers and the "
                  "load generator")


def fmt_load(values: tuple[float, float, float]) -> str:
    return "/".join(f"{v:.2f}" for v in values)
