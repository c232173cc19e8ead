"""Command line of the device simulator: `python -m deviceagentd.simulator --product thermostat`.

Installers use it to check a gateway, so it prints one short line per thing that happened and
takes a few typed commands on stdin (`help` lists them).
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import logging
import os
import signal
import stat
import sys
import threading
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

from deviceagentd.core.spec import ProductSpec, SpecError, load_spec_file
from deviceagentd.simulator.device import SimulatedDevice, SimulatorOptions

T = TypeVar("T")

INSTALLED_PRODUCTS_DIR = Path("/etc/deviceagentd/products")
STDIN_HELP = """commands:
  event <name> [json-fields]   send an event, e.g. event temperature_alert {"temperature": 38.5}
  state <field>=<value> ...    change the state and report it, e.g. state temperature=30.5 mode="cool"
  ntp                          sync the clock with the gateway now
  offline                      publish offline status and disconnect (then: online)
  kill                         drop the connection without goodbye: the broker sends the last will
  online                       connect again after offline or kill
  quit                         publish offline status, disconnect and exit"""


def default_products_dir() -> Path:
    """The checkout's etc/deviceagentd/products, else the installed /etc/deviceagentd/products."""
    in_repo = Path(__file__).resolve().parents[2] / "etc" / "deviceagentd" / "products"
    return in_repo if in_repo.is_dir() else INSTALLED_PRODUCTS_DIR


def find_product(product: str, products_dir: Path) -> ProductSpec:
    """`product` is a productId in `products_dir` or a path to a DeviceSpec .json file."""
    if product.endswith(".json") or os.sep in product:
        return load_spec_file(Path(product))
    path = products_dir / f"{product}.json"
    if not path.is_file():
        known = sorted(p.stem for p in products_dir.glob("*.json")) if products_dir.is_dir() else []
        hint = f"known products: {', '.join(known)}" if known else f"{products_dir} has no product files"
        raise FileNotFoundError(f"no product {product!r} in {products_dir} ({hint})")
    return load_spec_file(path)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="simulate-device",
        description="Simulate one device of a product on the gateway's MQTT broker (SPEC §2).",
        epilog=STDIN_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--product", required=True, help="productId (file stem in --products-dir) or a .json path")
    parser.add_argument("--id", dest="device_id", help="deviceId (default: <productId>-001)")
    parser.add_argument("--products-dir", type=Path, help="where product files are (default: the repo's)")
    parser.add_argument("--url", default="mqtt://127.0.0.1:1883", help="broker, mqtt://host:port or mqtts://")
    parser.add_argument("--username", help="broker user name")
    parser.add_argument("--password", help="broker password")
    parser.add_argument("--insecure", action="store_true", help="mqtts: do not check the broker's certificate")
    parser.add_argument("--client-id", help="MQTT client id (default: sim-<deviceId>)")
    parser.add_argument("--protocol", type=int, choices=(5, 4), default=5, help="MQTT 5 or 4 (3.1.1)")
    parser.add_argument("--encoding", choices=("json", "cbor"), default="json", help="payload encoding")
    parser.add_argument("--qos", type=int, choices=(0, 1), default=0, help="QoS of state telemetry")
    parser.add_argument("--heartbeat-s", type=_seconds, default=30.0, help="online heartbeat (0 = off)")
    parser.add_argument("--state-interval-s", type=_seconds, default=0.0, help="report drifting state (0 = off)")
    parser.add_argument("--random-events-s", type=_seconds, default=0.0, help="random event on average every N s")
    parser.add_argument("--ntp-interval-s", type=_seconds, default=10.0, help="time sync every N s (0 = once)")
    parser.add_argument("--no-ntp", action="store_true", help="no time sync unless typed")
    parser.add_argument("--answer-delay-ms", type=int, default=0, help="wait before answering a command")
    parser.add_argument("--no-answer", action="store_true", help="take commands but never answer them")
    parser.add_argument("--seed", type=int, help="random seed, for repeatable runs")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug output, gmqtt's included")
    return parser


def _seconds(text: str) -> float:
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must be 0 or more")
    return value


def options_from(args: argparse.Namespace) -> SimulatorOptions:
    return SimulatorOptions(
        url=args.url,
        username=args.username,
        password=args.password,
        client_id=args.client_id,
        protocol=args.protocol,
        tls_insecure=args.insecure,
        encoding=args.encoding,
        qos=args.qos,
        heartbeat_s=args.heartbeat_s,
        state_interval_s=args.state_interval_s,
        random_events_s=args.random_events_s,
        ntp_interval_s=None if args.no_ntp else args.ntp_interval_s,
        answer_delay_ms=max(0, args.answer_delay_ms),
        answer=not args.no_answer,
        seed=args.seed,
    )


def parse_state_assignments(words: list[str]) -> dict[str, Any]:
    """`temperature=30.5 mode=cool` → {"temperature": 30.5, "mode": "cool"}; a value that is
    not JSON is taken as a string, so quotes are optional."""
    fields: dict[str, Any] = {}
    for word in words:
        name, sep, raw = word.partition("=")
        if not sep or not name:
            raise ValueError(f"{word!r} is not field=value")
        try:
            fields[name] = json.loads(raw)
        except json.JSONDecodeError:
            fields[name] = raw
    return fields


async def handle_line(device: SimulatedDevice, line: str) -> bool:
    """Do what a typed line asks; False when the user wants to quit."""
    log = device.log
    verb, _, rest = line.strip().partition(" ")
    rest = rest.strip()
    if verb in ("quit", "exit"):
        return False
    if verb == "":
        return True
    try:
        if verb == "event":
            name, _, raw = rest.partition(" ")
            if not name:
                raise ValueError("event needs a name, e.g. event " + next(iter(device.spec.events), "alarm"))
            fields = json.loads(raw) if raw.strip() else None
            if fields is not None and not isinstance(fields, dict):
                raise ValueError("event fields must be a JSON object")
            await device.emit_event(name, device.model.event_fields(name, fields))
        elif verb == "state":
            await device.report_state(**parse_state_assignments(rest.split()))
        elif verb == "ntp":
            await device.sync_clock()
        elif verb == "offline":
            await device.stop(publish_offline=True)
        elif verb == "kill":
            await device.kill()
        elif verb == "online":
            if device.connected:
                log.info("already online")
            else:
                await device.start()
        elif verb in ("help", "?"):
            print(STDIN_HELP, flush=True)
        else:
            log.warning("unknown command %r (type help)", verb)
    except (ValueError, json.JSONDecodeError) as exc:
        log.warning("%s", exc)
    except TimeoutError:
        log.warning("no NTP answer from the gateway (is deviceagentd running?)")
    except RuntimeError as exc:
        log.warning("%s", exc)
    return True


def _stdin_is_interactive() -> bool:
    # Only a terminal or a pipe carries typed commands; /dev/null (systemd, `&`) does not.
    try:
        return sys.stdin.isatty() or stat.S_ISFIFO(os.fstat(sys.stdin.fileno()).st_mode)
    except (OSError, ValueError):
        return False


def _read_stdin(loop: asyncio.AbstractEventLoop, lines: asyncio.Queue[str | None]) -> None:
    # A daemon thread, not the loop's reader: it works the same for a TTY and a pipe, leaves
    # the terminal in blocking mode, and never keeps the process alive on exit.
    try:
        for line in sys.stdin:
            loop.call_soon_threadsafe(lines.put_nowait, line)
        loop.call_soon_threadsafe(lines.put_nowait, None)
    except (RuntimeError, OSError, ValueError):
        pass  # the loop is closed or stdin went away: we are exiting


async def _until(coro: Coroutine[Any, Any, T], stop: asyncio.Event) -> tuple[bool, T | None]:
    """Run `coro` unless `stop` is set first; (finished, result)."""
    task = asyncio.ensure_future(coro)
    stopper = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopper.cancel()
    if task.done():
        return True, task.result()
    task.cancel()
    await asyncio.wait({task})  # let it unwind; unlike `await task` this does not raise
    if not task.cancelled():
        task.exception()  # retrieved, so asyncio does not warn about it
    return False, None


async def run(args: argparse.Namespace) -> int:
    try:
        spec = find_product(args.product, args.products_dir or default_products_dir())
        device = SimulatedDevice(spec, args.device_id or f"{spec.product_id}-001", options_from(args))
    except (SpecError, FileNotFoundError, ValueError) as exc:
        print(f"simulate-device: {exc}", file=sys.stderr)
        return 2

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    lines: asyncio.Queue[str | None] = asyncio.Queue()
    interactive = _stdin_is_interactive()
    if interactive:
        threading.Thread(target=_read_stdin, args=(loop, lines), name="stdin", daemon=True).start()

    device.log.info("%s (%s): connecting to %s", spec.name, spec.product_id, device.address.url)
    started, _ = await _until(device.start(), stop)
    if not started:
        device.log.info("stopped before connecting")
        return 0
    if sys.stdin.isatty():
        device.log.info("type help for commands")
    reading = interactive
    try:
        while not stop.is_set():
            if not reading:
                await stop.wait()
                break
            got, line = await _until(lines.get(), stop)
            if not got:
                break
            if line is None:
                reading = False  # stdin ended; keep simulating until a signal
                continue
            finished, keep_going = await _until(handle_line(device, line), stop)
            if not finished or not keep_going:
                break
    finally:
        await device.stop(publish_offline=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if isinstance(sys.stdout, io.TextIOWrapper):
        sys.stdout.reconfigure(line_buffering=True)  # one line at a time, even into a pipe
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stdout,
    )
    # gmqtt's own warnings repeat what we already say in plainer words.
    logging.getLogger("gmqtt").setLevel(logging.DEBUG if args.verbose else logging.CRITICAL)
    try:
        return asyncio.run(run(args))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
