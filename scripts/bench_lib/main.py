"""Command line of `scripts/bench`: run the measurements in order, print one table."""

from __future__ import annotations

import argparse
import functools
import logging
import shutil
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import uvloop

from bench_lib import (
    agent,
    console,
    footprint,
    mcp_server,
    plateau,
    procs,
    scenarios,
    schedules,
    uplink,
    voice,
    voice_offline,
    voice_opus,
    voice_vad,
    voiceplatform,
)
from bench_lib.procs import Helper
from bench_lib.report import Report, machine
from bench_lib.scenarios import Bench, Sizes

# In run order. `ready` first: its daemons start on a quiet machine; `durability` last: it
# stops and kills the shared daemon.
SECTIONS: dict[str, Callable[[Bench], Awaitable[None]]] = {
    "ready": scenarios.ready,
    "rss": scenarios.rss,
    "ingest": scenarios.ingest,
    "ntp": scenarios.ntp,
    "commands": scenarios.commands,
    "agent": agent.agent,
    "commits": scenarios.commits,
    "voice_vad": voice_vad.voice_vad,
    "voice_opus": voice_opus.voice_opus,
    "voice": voice.voice,
    "voice_offline": voice_offline.voice_offline,
    "voiceplatform": voiceplatform.voiceplatform,
    "mcp": mcp_server.mcp,
    "schedules": schedules.schedules,
    "console": console.console,
    "durability": scenarios.durability,
    "footprint": footprint.footprint,
    "plateau": plateau.plateau,
    "uplink": uplink.uplink,
}
# Only with --only: they take long (footprint: an hour by default; uplink: about five minutes).
OPT_IN = frozenset({"footprint", "uplink"})

EXIT_OK = 0
EXIT_TARGET_MISSED = 1
EXIT_ERROR = 2
EXIT_INTERRUPTED = 130


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="scripts/bench",
        description="Benchmark deviceagentd against baselines measured in the same run (docs/benchmarks.md).",
    )
    parser.add_argument("--quick", action="store_true", help="smaller counts: a smoke run (about 20 s)")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also save the results as JSON")
    parser.add_argument("--check", action="store_true",
                        help="exit 1 when a target is missed (2: a measurement failed)")
    parser.add_argument("--only", metavar="LIST",
                        help=f"comma-separated sections to run (default all): {', '.join(SECTIONS)}")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (broker and daemon logs)")
    parser.add_argument("--profile", type=Path, metavar="DIR",
                        help="sample the daemon with py-spy during ingest, NTP and commands (collapsed stacks "
                        "in DIR; numbers are then perturbed, do not compare them)")
    parser.add_argument("--duration", type=float, metavar="SECONDS",
                        help="footprint: how long to load and sample (default 3600, --quick 240)")
    parser.add_argument("--outage", type=float, metavar="SECONDS",
                        help="uplink: how long the cloud broker is down (default 60, --quick 20; the issue's "
                        "figure is 600)")
    return parser


def selected_sections(only: str | None) -> list[str]:
    """Sections to run, in run order; ValueError names unknown ones."""
    if not only:
        return [n for n in SECTIONS if n not in OPT_IN]
    names = [n.strip() for n in only.split(",") if n.strip()]
    unknown = [n for n in names if n not in SECTIONS]
    if unknown:
        raise ValueError(f"unknown section(s) {', '.join(unknown)}; choose from {', '.join(SECTIONS)}")
    return [n for n in SECTIONS if n in names]


async def run(args: argparse.Namespace, workdir: Path) -> Report:
    report = Report(mode="quick" if args.quick else "full")
    sizes = Sizes.quick() if args.quick else Sizes()
    started = time.monotonic()
    broker = procs.start_broker(workdir / "mosquitto")
    try:
        async with aiohttp.ClientSession() as session:
            bench = Bench(sizes, workdir, broker, session, report, profile_dir=args.profile)
            try:
                for name in selected_sections(args.only):
                    print(f"bench: {name} ...", file=sys.stderr, flush=True)
                    section_started = time.monotonic()
                    section = SECTIONS[name]
                    if name == "footprint":
                        section = functools.partial(footprint.footprint, duration_s=args.duration)
                    elif name == "uplink":
                        section = functools.partial(uplink.uplink, outage_s=args.outage)
                    await section(bench)
                    print(f"bench: {name} done in {time.monotonic() - section_started:.1f} s",
                          file=sys.stderr, flush=True)
            finally:
                Helper.kill_all()
                await bench.close()
    finally:
        broker.stop()
    report.duration_s = time.monotonic() - started
    return report


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        selected_sections(args.only)  # fail on a typo before starting anything
    except ValueError as exc:
        parser.error(str(exc))
    if args.profile and procs.py_spy() is None:
        parser.error("--profile needs py-spy: .venv/bin/pip install py-spy")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    # The in-process simulated device warns when a state report races its own disconnect.
    logging.getLogger("deviceagentd.simulator").setLevel(logging.ERROR)
    workdir = Path(tempfile.mkdtemp(prefix="deviceagentd-bench-"))
    try:
        report = uvloop.run(run(args, workdir))
    except KeyboardInterrupt:
        print(f"bench: interrupted; logs are in {workdir}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception:
        logging.exception("bench: a measurement failed; logs are in %s", workdir)
        return EXIT_ERROR
    info = machine()
    print(f"\ndeviceagentd benchmark ({report.mode}), {report.started}, {info['cpu']} × {info['cpus']}, "
          f"Python {info['python']}, {report.duration_s:.0f} s\n")
    print(report.table())
    if args.json:
        report.save(args.json)
        print(f"\nsaved {args.json}")
    if args.keep:
        print(f"work directory kept: {workdir}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    missed = report.missed
    if missed:
        print(f"\n{len(missed)} target(s) missed: {', '.join(r.name.strip() for r in missed)}")
    return EXIT_TARGET_MISSED if args.check and missed else EXIT_OK
