"""Readings of one daemon at one moment, and what the `footprint` section derives from them:
per-hour rates over a steady window and the checkpoint table."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench_lib.footprint_daemon import proc_io
from bench_lib.procs import cpu_seconds, proc_status_kib
from bench_lib.prom import Scrape
from bench_lib.volume import BlockStat

MB = 1_000_000
KIB = 1024
HOUR_S = 3600.0
DB_NAME = "deviceagentd.db"
MESSAGES_IN = "deviceagentd_mqtt_messages_in_total"


@dataclass(frozen=True)
class Sample:
    """Cumulative counters (since the process started) and sizes at `t_s` into the run."""

    t_s: float
    rss_kib: int
    hwm_kib: int
    anon_kib: int
    file_kib: int
    cpu_s: float
    wchar: int  # bytes handed to write()-type calls: files, sockets and pipes alike
    syscw: int
    write_bytes: int  # bytes of page cache this process dirtied (what writeback will send to the disk)
    cancelled_write_bytes: int  # dirty bytes dropped again before writeback (truncation)
    read_bytes: int
    block_write_bytes: int | None  # the state volume's block device, when there is one
    block_write_ios: int | None
    block_flushes: int | None
    db_bytes: int
    wal_bytes: int
    shm_bytes: int
    log_bytes: int
    commits: float
    telemetry_in: float
    events_in: float
    ntp_in: float
    responses_in: float
    commands_ok: float
    commands_failed: float  # error, timeout and failed outcomes
    devices: float
    devices_online: float

    def to_json(self, site: str) -> str:
        return json.dumps({"site": site, **asdict(self)})


def file_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def take_sample(t_s: float, pid: int, state_dir: Path, log_path: Path, block: BlockStat | None,
                scrape: Scrape) -> Sample:
    io = proc_io(pid)
    db = state_dir / DB_NAME
    return Sample(
        t_s=t_s,
        rss_kib=proc_status_kib(pid, "VmRSS"),
        hwm_kib=proc_status_kib(pid, "VmHWM"),
        anon_kib=proc_status_kib(pid, "RssAnon"),
        file_kib=proc_status_kib(pid, "RssFile"),
        cpu_s=cpu_seconds(pid),
        wchar=io["wchar"],
        syscw=io["syscw"],
        write_bytes=io["write_bytes"],
        cancelled_write_bytes=io["cancelled_write_bytes"],
        read_bytes=io["read_bytes"],
        block_write_bytes=block.write_bytes if block else None,
        block_write_ios=block.write_ios if block else None,
        block_flushes=block.flush_ios if block else None,
        db_bytes=file_size(db),
        wal_bytes=file_size(db.with_name(DB_NAME + "-wal")),
        shm_bytes=file_size(db.with_name(DB_NAME + "-shm")),
        log_bytes=file_size(log_path),
        commits=scrape.value("deviceagentd_store_commits_total"),
        telemetry_in=scrape.value(MESSAGES_IN, kind="telemetry"),
        events_in=scrape.value(MESSAGES_IN, kind="event"),
        ntp_in=scrape.value(MESSAGES_IN, kind="ntp_request"),
        responses_in=scrape.value(MESSAGES_IN, kind="response"),
        commands_ok=scrape.value("deviceagentd_commands_total", outcome="ok"),
        commands_failed=sum(scrape.value("deviceagentd_commands_total", outcome=o)
                            for o in ("error", "timeout", "failed")),
        devices=scrape.value("deviceagentd_devices_total"),
        devices_online=scrape.value("deviceagentd_devices_online"),
    )


def nearest(samples: list[Sample], t_s: float) -> Sample:
    return min(samples, key=lambda s: abs(s.t_s - t_s))


@dataclass(frozen=True)
class Rates:
    """Per hour (per second for messages) between two samples."""

    t_from: float
    t_to: float
    block_mb: float  # NaN without a private block device
    block_ios: float
    block_flushes: float
    write_bytes_mb: float
    cancelled_mb: float
    wchar_mb: float
    growth_mb: float  # database + WAL size
    commits: float
    log_mb: float
    cpu_share: float  # of one core
    telemetry_per_s: float
    events_per_min: float
    ntp_per_s: float
    commands_per_s: float

    @classmethod
    def between(cls, a: Sample, b: Sample) -> Rates:
        span = b.t_s - a.t_s
        per_hour = HOUR_S / span

        def hourly(x: float, y: float, scale: float = MB) -> float:
            return (y - x) / scale * per_hour

        def block(x: int | None, y: int | None, scale: float) -> float:
            return math.nan if x is None or y is None else hourly(x, y, scale)

        return cls(
            t_from=a.t_s, t_to=b.t_s,
            block_mb=block(a.block_write_bytes, b.block_write_bytes, MB),
            block_ios=block(a.block_write_ios, b.block_write_ios, 1),
            block_flushes=block(a.block_flushes, b.block_flushes, 1),
            write_bytes_mb=hourly(a.write_bytes, b.write_bytes),
            cancelled_mb=hourly(a.cancelled_write_bytes, b.cancelled_write_bytes),
            wchar_mb=hourly(a.wchar, b.wchar),
            growth_mb=hourly(a.db_bytes + a.wal_bytes, b.db_bytes + b.wal_bytes),
            commits=hourly(a.commits, b.commits, 1),
            log_mb=hourly(a.log_bytes, b.log_bytes),
            cpu_share=(b.cpu_s - a.cpu_s) / span,
            telemetry_per_s=(b.telemetry_in - a.telemetry_in) / span,
            events_per_min=(b.events_in - a.events_in) / span * 60,
            ntp_per_s=(b.ntp_in - a.ntp_in) / span,
            commands_per_s=(b.commands_ok + b.commands_failed - a.commands_ok - a.commands_failed) / span,
        )

    @property
    def disk_mb(self) -> float:
        """The best number for what reaches the disk: the block device when measured."""
        return self.write_bytes_mb if math.isnan(self.block_mb) else self.block_mb


def checkpoint_label(t_s: float) -> str:
    return "start" if t_s == 0 else f"{t_s / 60:g} min"


def mb(n: float) -> str:
    return f"{n / MB:.2f}"


def checkpoint_table(sites: dict[str, list[Sample]], checkpoints: list[float]) -> str:
    """Markdown: one row per (site, quantity), one column per checkpoint; counters are
    cumulative since the start of the run (the first sample)."""
    labels = [checkpoint_label(c) for c in checkpoints]
    out = ["| daemon | quantity | " + " | ".join(labels) + " |", "|---|---|" + "---:|" * len(labels)]
    for site, samples in sites.items():
        first = samples[0]
        at = [nearest(samples, c) for c in checkpoints]

        def row(name: str, cells: list[str], site: str = site) -> None:
            out.append(f"| {site} | {name} | " + " | ".join(cells) + " |")

        row("VmRSS MB", [mb(s.rss_kib * KIB) for s in at])
        row("VmHWM MB", [mb(s.hwm_kib * KIB) for s in at])
        row("RssAnon MB", [mb(s.anon_kib * KIB) for s in at])
        row("db / -wal MB", [f"{mb(s.db_bytes)} / {mb(s.wal_bytes)}" for s in at])
        if first.block_write_bytes is not None:
            row("block device writes MB (requests)",
                [f"{mb((s.block_write_bytes or 0) - (first.block_write_bytes or 0))} "
                 f"({(s.block_write_ios or 0) - (first.block_write_ios or 0):,})" for s in at])
        row("write_bytes MB", [mb(s.write_bytes - first.write_bytes) for s in at])
        row("wchar MB", [mb(s.wchar - first.wchar) for s in at])
        row("SQLite commits", [f"{s.commits - first.commits:,.0f}" for s in at])
        row("log KB", [f"{(s.log_bytes - first.log_bytes) / 1000:,.0f}" for s in at])
        row("CPU s", [f"{s.cpu_s - first.cpu_s:,.1f}" for s in at])
        row("messages in (telemetry / event / ntp)",
            [f"{s.telemetry_in - first.telemetry_in:,.0f} / {s.events_in - first.events_in:,.0f} / "
             f"{s.ntp_in - first.ntp_in:,.0f}" for s in at])
        row("commands ok / failed", [f"{s.commands_ok - first.commands_ok:,.0f} / "
                                     f"{s.commands_failed - first.commands_failed:,.0f}" for s in at])
    return "\n".join(out)


def rates_table(rates: dict[str, Rates]) -> str:
    names = list(rates)
    out = ["| per hour | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]

    def row(name: str, fmt: Any) -> None:
        out.append(f"| {name} | " + " | ".join(fmt(r) for r in rates.values()) + " |")

    row("block device writes MB", lambda r: f"{r.block_mb:.2f}")
    row("block device write requests", lambda r: f"{r.block_ios:,.0f}")
    row("block device flushes", lambda r: f"{r.block_flushes:,.0f}")
    row("write_bytes MB (/proc/pid/io)", lambda r: f"{r.write_bytes_mb:.2f}")
    row("db + -wal growth MB", lambda r: f"{r.growth_mb:.2f}")
    row("wchar MB", lambda r: f"{r.wchar_mb:.1f}")
    row("SQLite commits", lambda r: f"{r.commits:,.0f}")
    row("log output MB", lambda r: f"{r.log_mb:.3f}")
    row("CPU, share of one core", lambda r: f"{r.cpu_share:.1%}")
    return "\n".join(out)
