"""Command line: `deviceagentd run | check-config | backup | restore | devices | events`.

Exit codes, stable for scripts: 0 success, 1 failure (bad configuration or products, or an
operator command that could not do its job; one line on stderr says why), 2 usage error
(unknown command or option, bad argument; argparse's own code).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING

from deviceagentd import __version__
from deviceagentd.config import (
    CONFIG_PATH_ENV,
    Config,
    ConfigError,
    effective_config,
    load_config,
    parse_listen,
    to_toml,
)
from deviceagentd.core.catalog import Catalog, load_catalog
from deviceagentd.core.spec import EVENT_TYPES, SpecError
from deviceagentd.lograte import RateLimitFilter
from deviceagentd.retired_models import retired_models
from deviceagentd.store.errors import StoreError
from deviceagentd.systemd import managed_by_systemd

if TYPE_CHECKING:
    # The operator commands (backup, restore, devices, events) import their modules when run:
    # `deviceagentd run` does not carry them for its whole life.
    from deviceagentd.ops.database import DatabaseSummary
    from deviceagentd.ops.errors import OpsError

EXIT_OK = 0
EXIT_BAD_CONFIG = 1
EXIT_FAILED = 1
EXIT_USAGE = 2  # what argparse exits with on a usage error
# The config the installed package runs with; commands that work on the installed daemon's
# state use it when no other file is named.
INSTALLED_CONFIG = Path("/etc/deviceagentd/deviceagentd.toml")
MAX_EVENTS_LIMIT = 10000

_SYSLOG_PREFIX = {logging.DEBUG: "<7>", logging.INFO: "<6>", logging.WARNING: "<4>", logging.ERROR: "<3>",
                  logging.CRITICAL: "<2>"}


class _JournalFormatter(logging.Formatter):
    """journald adds the time; a `<N>` prefix carries the severity (SyslogLevelPrefix)."""

    def format(self, record: logging.LogRecord) -> str:
        return _SYSLOG_PREFIX.get(record.levelno, "<6>") + super().format(record)


def setup_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if os.environ.get("JOURNAL_STREAM"):
        handler.setFormatter(_JournalFormatter("%(name)s: %(message)s"))
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))
    # One kind of line repeated (a flood of rejects, a client error per request) must not
    # drown the journal or trip journald's own rate limit, which would hide everything else.
    handler.addFilter(RateLimitFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # gmqtt logs every packet at INFO and warns per packet while disconnected; our link
    # reports connection state itself, once.
    if level.lower() != "debug":
        logging.getLogger("gmqtt").setLevel(logging.CRITICAL)
        logging.getLogger("deviceagentd.mqtt.gmqtt").setLevel(logging.CRITICAL)


def _config_path(arg: str | None) -> Path | None:
    value = arg or os.environ.get(CONFIG_PATH_ENV)
    return Path(value) if value else None


def _state_config_path(arg: str | None) -> Path | None:
    """For commands on the daemon's state: as `run`, but an installed gateway's config is
    used when none is named, so `sudo deviceagentd backup FILE` finds the real database."""
    path = _config_path(arg)
    if path is None and INSTALLED_CONFIG.is_file():
        return INSTALLED_CONFIG
    return path


def _load_config_or_exit(path: Path | None) -> Config:
    try:
        return load_config(path)
    except ConfigError as exc:
        where = str(path) if path else "defaults + environment"
        print(f"deviceagentd: configuration problems ({where}):", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        raise SystemExit(EXIT_BAD_CONFIG) from None


def load_everything(config_arg: str | None) -> tuple[Config, Catalog]:
    """Config and products, or print every problem to stderr and exit 1."""
    config = _load_config_or_exit(_config_path(config_arg))
    try:
        catalog = load_catalog(Path(config.products.dir))
    except SpecError as exc:
        print(f"deviceagentd: product (DeviceSpec) problems in {config.products.dir}:", file=sys.stderr)
        for spec_problem in exc.problems:
            print(f"  products.dir: {spec_problem}", file=sys.stderr)
        raise SystemExit(EXIT_BAD_CONFIG) from None
    return config, catalog


def check_voice_platform(config: Config, catalog: Catalog) -> str:
    """The products' voice sections and the rooms file, or print every problem and exit 1.

    Returns a one-line summary for check-config.
    """
    # Imported here: a gateway without speakers does not load the voice platform at all.
    from deviceagentd.voiceplatform.profile import load_voice_profiles
    from deviceagentd.voiceplatform.rooms import load_rooms

    try:
        profiles = load_voice_profiles(catalog)
    except SpecError as exc:
        print(f"deviceagentd: voice section problems in {config.products.dir}:", file=sys.stderr)
        for spec_problem in exc.problems:
            print(f"  products.dir: {spec_problem}", file=sys.stderr)
        raise SystemExit(EXIT_BAD_CONFIG) from None
    rooms_file = config.voiceplatform.rooms_file
    if not rooms_file:
        return (f"voice platform off (voiceplatform.rooms_file is empty); voice sections checked: "
                f"{', '.join(sorted(profiles)) or 'none'}")
    try:
        rooms = load_rooms(Path(rooms_file), catalog, frozenset(profiles))
    except ConfigError as exc:
        print(f"deviceagentd: voice platform rooms file problems ({rooms_file}):", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        raise SystemExit(EXIT_BAD_CONFIG) from None
    return f"voice platform on: {len(rooms.speakers)} speakers, {len(rooms.rooms)} rooms from {rooms_file}"


def cmd_check_config(args: argparse.Namespace) -> int:
    config, catalog = load_everything(args.config)
    voice_platform = check_voice_platform(config, catalog)
    # Warnings, not errors: the model still answers until its shutdown date.
    for retired in retired_models(config):
        print(f"warning: {retired.message(date.today())}", file=sys.stderr)
    print(f"# effective configuration ({config.source}; secrets masked)")
    print(to_toml(effective_config(config)))
    print(f"\n# {len(catalog.products)} products in {config.products.dir}: "
          + ", ".join(sorted(catalog.products)))
    print(f"# {voice_platform}")
    # Which recogniser and voice each language gets (nothing of them is loaded to find out).
    from deviceagentd.voice.service import Capabilities

    for line in Capabilities.detect(config.voice).plan():
        print(f"# {line}")
    return EXIT_OK


def cmd_run(args: argparse.Namespace) -> int:
    config, catalog = load_everything(args.config)
    if config.voiceplatform.rooms_file:
        check_voice_platform(config, catalog)
    setup_logging(config.log.level)
    import uvloop

    from deviceagentd.memory import deferred_ca_bundle, limit_malloc_arenas

    limit_malloc_arenas()  # before any thread starts
    with deferred_ca_bundle():
        from deviceagentd.daemon import run_daemon

    try:
        stored = uvloop.run(run_daemon(config, catalog))
    except StoreError as exc:
        # Written for the operator (a downgrade, an unwritable state directory); a traceback
        # would bury the one line that matters in the journal.
        logging.getLogger("deviceagentd").error("cannot start: %s", exc)
        return EXIT_FAILED
    # Accepted rows that could not be stored (a full disk at SIGTERM): systemd shows the unit
    # failed instead of a clean stop.
    return EXIT_OK if stored else EXIT_FAILED


def _failed(exc: OpsError) -> int:
    print(f"deviceagentd: {exc}", file=sys.stderr)
    return EXIT_FAILED


def _print_summary(summary: DatabaseSummary) -> None:
    from deviceagentd.ops.database import format_bytes, format_rows

    print(f"  {format_bytes(summary.bytes)}, schema version {summary.schema_version}, integrity ok; rows:")
    for line in format_rows(summary.rows):
        print(line)


def cmd_backup(args: argparse.Namespace) -> int:
    from deviceagentd.ops.backup import backup_database
    from deviceagentd.ops.database import database_path
    from deviceagentd.ops.errors import OpsError

    config = _load_config_or_exit(_state_config_path(args.config))
    live = database_path(config)
    try:
        summary = backup_database(live, Path(args.file), force=args.force)
    except OpsError as exc:
        return _failed(exc)
    print(f"backup of {live} written to {summary.path}")
    _print_summary(summary)
    return EXIT_OK


def cmd_restore(args: argparse.Namespace) -> int:
    from deviceagentd.ops.database import database_path, known_schema_version
    from deviceagentd.ops.errors import OpsError
    from deviceagentd.ops.restore import restore_database

    config = _load_config_or_exit(_state_config_path(args.config))
    live = database_path(config)
    try:
        report = restore_database(Path(args.file), live, parse_listen(config.http.listen), time.time_ns() // 1_000_000)
    except OpsError as exc:
        return _failed(exc)
    print(f"restored {report.backup} into {live}")
    _print_summary(report.restored)
    if report.kept_aside is not None:
        print(f"the previous database is kept as {report.kept_aside} (delete it when no longer needed)")
    if report.restored.schema_version < known_schema_version():
        print(f"the daemon migrates it from schema version {report.restored.schema_version} "
              f"to {known_schema_version()} when it starts")
    if managed_by_systemd():
        print("start the daemon again: systemctl start deviceagentd")
    else:
        print(f"start the daemon again: deviceagentd run{_config_option(args.config)}")
    return EXIT_OK


def _config_option(arg: str | None) -> str:
    """How to name the same config to `deviceagentd run` (empty: the default it finds itself)."""
    path = _state_config_path(arg)
    return f" --config {path}" if path is not None else ""


def cmd_devices(args: argparse.Namespace) -> int:
    from deviceagentd.ops.database import database_path
    from deviceagentd.ops.errors import OpsError
    from deviceagentd.ops.listing import devices_json, devices_table, read_devices

    config = _load_config_or_exit(_state_config_path(args.config))
    try:
        devices = read_devices(database_path(config))
    except OpsError as exc:
        return _failed(exc)
    print(devices_json(devices) if args.json else devices_table(devices))
    return EXIT_OK


def cmd_events(args: argparse.Namespace) -> int:
    from deviceagentd.ops.database import database_path
    from deviceagentd.ops.errors import OpsError
    from deviceagentd.ops.listing import events_json, events_table, read_events

    config = _load_config_or_exit(_state_config_path(args.config))
    levels = frozenset(args.level) if args.level else None
    try:
        events = read_events(database_path(config), args.device, limit=args.limit, levels=levels, event=args.event)
    except OpsError as exc:
        return _failed(exc)
    print(events_json(events) if args.json else events_table(events))
    return EXIT_OK


def _events_limit(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if not 1 <= value <= MAX_EVENTS_LIMIT:
        raise argparse.ArgumentTypeError(f"must be between 1 and {MAX_EVENTS_LIMIT}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="deviceagentd",
        description="Edge gateway daemon for a site's devices.",
        epilog="exit codes: 0 ok, 1 failed (the reason is printed), 2 usage error",
    )
    parser.add_argument("--version", action="version", version=f"deviceagentd {__version__}")
    sub = parser.add_subparsers(dest="command")
    config_help = f"TOML config file (default: ${CONFIG_PATH_ENV}, else built-in defaults)"
    state_config_help = (f"TOML config file (default: ${CONFIG_PATH_ENV}, else {INSTALLED_CONFIG} "
                         "if it exists, else built-in defaults)")

    def command(name: str, func: Callable[[argparse.Namespace], int], text: str, *,
                state: bool = False) -> argparse.ArgumentParser:
        one = sub.add_parser(name, help=text, description=text)
        one.add_argument("-c", "--config", help=state_config_help if state else config_help)
        one.set_defaults(func=func)
        return one

    command("run", cmd_run, "run the daemon (default)")
    command("check-config", cmd_check_config, "check the configuration and products, print the effective config")
    backup = command("backup", cmd_backup, "copy the live database to FILE (safe while the daemon runs)", state=True)
    backup.add_argument("file", metavar="FILE", help="the backup file to write (a single SQLite file)")
    backup.add_argument("--force", action="store_true", help="overwrite FILE if it exists")
    restore = command("restore", cmd_restore,
                      "replace the database with the backup FILE (the daemon must be stopped); "
                      "the current one is kept as <name>.before-restore-<ms>", state=True)
    restore.add_argument("file", metavar="FILE", help="a backup written by `deviceagentd backup`")
    devices = command("devices", cmd_devices,
                      "list the stored devices as last saved: online/offline at once, state and last-seen "
                      "time up to storage.device_state_save_s old (read-only, safe while the daemon runs)",
                      state=True)
    devices.add_argument("--json", action="store_true", help="JSON as the HTTP API writes it, for scripts")
    events = command("events", cmd_events, "list stored events, newest first (read-only, safe while the daemon runs)",
                     state=True)
    events.add_argument("device", metavar="DEVICE", nargs="?", help="only this device's events")
    events.add_argument("-n", "--limit", type=_events_limit, default=20,
                        help=f"at most this many (1..{MAX_EVENTS_LIMIT}, default 20)")
    events.add_argument("--level", action="append", choices=EVENT_TYPES,
                        help="only events of this level (repeat for several)")
    events.add_argument("--event", help="only events of this name")
    events.add_argument("--json", action="store_true", help="JSON as the HTTP API writes it, for scripts")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        args = parser.parse_args(["run", *(argv if argv is not None else sys.argv[1:])])
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    raise SystemExit(main())
