"""Command line: `deviceagentd run | check-config` (more operator commands come with packaging)."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from deviceagentd import __version__
from deviceagentd.config import CONFIG_PATH_ENV, Config, ConfigError, effective_config, load_config, to_toml
from deviceagentd.core.catalog import Catalog, load_catalog
from deviceagentd.core.spec import SpecError

EXIT_OK = 0
EXIT_BAD_CONFIG = 1

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


def load_everything(config_arg: str | None) -> tuple[Config, Catalog]:
    """Config and products, or print every problem to stderr and exit 1."""
    path = _config_path(config_arg)
    try:
        config = load_config(path)
    except ConfigError as exc:
        where = str(path) if path else "defaults + environment"
        print(f"deviceagentd: configuration problems ({where}):", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        raise SystemExit(EXIT_BAD_CONFIG) from None
    try:
        catalog = load_catalog(Path(config.products.dir))
    except SpecError as exc:
        print(f"deviceagentd: product (DeviceSpec) problems in {config.products.dir}:", file=sys.stderr)
        for spec_problem in exc.problems:
            print(f"  products.dir: {spec_problem}", file=sys.stderr)
        raise SystemExit(EXIT_BAD_CONFIG) from None
    return config, catalog


def cmd_check_config(args: argparse.Namespace) -> int:
    config, catalog = load_everything(args.config)
    print(f"# effective configuration ({config.source}; secrets masked)")
    print(to_toml(effective_config(config)))
    print(f"\n# {len(catalog.products)} products in {config.products.dir}: "
          + ", ".join(sorted(catalog.products)))
    return EXIT_OK


def cmd_run(args: argparse.Namespace) -> int:
    config, catalog = load_everything(args.config)
    setup_logging(config.log.level)
    import uvloop

    from deviceagentd.daemon import run_daemon

    uvloop.run(run_daemon(config, catalog))
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="deviceagentd", description="Edge gateway daemon for a site's devices.")
    parser.add_argument("--version", action="version", version=f"deviceagentd {__version__}")
    sub = parser.add_subparsers(dest="command")
    for name, func, text in (
        ("run", cmd_run, "run the daemon (default)"),
        ("check-config", cmd_check_config, "check the configuration and products, print the effective config"),
    ):
        command = sub.add_parser(name, help=text, description=text)
        command.add_argument("-c", "--config",
                             help=f"TOML config file (default: ${CONFIG_PATH_ENV}, else built-in defaults)")
        command.set_defaults(func=func)
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
