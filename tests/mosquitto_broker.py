"""Throw-away Mosquitto brokers for tests.

Imported as a top-level module (``import mosquitto_broker``), never as
``tests.mosquitto_broker``: gmqtt's wheel installs its own top-level ``tests``
package into site-packages, so ``tests.*`` imports can resolve to the wrong
package. pytest finds this file via ``pythonpath = ["tests"]``.

Every broker gets its own directory::

    <workdir>/mosquitto.conf   written by write_config() (or start() if missing)
    <workdir>/mosquitto.log    the broker's log (log_dest file)
    <workdir>/mosquitto.out    the broker's stdout/stderr (messages logged before
                               the log file is opened, e.g. config errors)
    <workdir>/data/            persistence (mosquitto.db), survives restart()

Mosquitto started as root drops privileges to user ``mosquitto`` unless the
config says ``user root``. pytest's tmp directories are mode 0700 and owned by
root, so the dropped broker could neither open its log nor save its
persistence file (the latter only fails at shutdown, silently losing every
session). Hence ``user root`` is written when we run as root (checked with
Debian's mosquitto 2.0.11); otherwise the broker simply runs as us.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["MosquittoBroker", "MosquittoError", "find_mosquitto", "free_port", "start_broker"]

START_TIMEOUT = 10.0  # seconds until the port must accept TCP connections
STOP_TIMEOUT = 5.0  # seconds between SIGTERM and SIGKILL

# Brokers whose process may still be alive; reaped at interpreter exit as a last
# line of defence (fixture finalizers are the first).
_live: set[MosquittoBroker] = set()


class MosquittoError(RuntimeError):
    """The broker could not be found, started or stopped."""


def find_mosquitto() -> str:
    """Path of the mosquitto binary ($MOSQUITTO, then PATH, then the sbin dirs)."""
    candidates = [os.environ.get("MOSQUITTO"), shutil.which("mosquitto")]
    candidates += ["/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto"]
    for cand in candidates:
        if cand and os.path.isfile(cand) and os.access(cand, os.X_OK):
            return cand
    raise MosquittoError(
        "mosquitto binary not found (looked at $MOSQUITTO, PATH, /usr/sbin, /usr/local/sbin). "
        "Run scripts/setup (installs Debian's mosquitto) or `apt-get install mosquitto`."
    )


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free right now on ``host`` (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def _port_accepts(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def _tail(path: Path, lines: int = 30) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return f"<{path.name}: {exc.strerror}>"
    return "\n".join(text.splitlines()[-lines:]) or f"<{path.name} is empty>"


@dataclass(eq=False)  # identity hash/eq: instances live in the _live set
class MosquittoBroker:
    host: str
    port: int
    workdir: Path
    extra_conf: str = ""
    _proc: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)

    # -- paths -------------------------------------------------------------
    @property
    def conf_path(self) -> Path:
        return self.workdir / "mosquitto.conf"

    @property
    def log_path(self) -> Path:
        return self.workdir / "mosquitto.log"

    @property
    def out_path(self) -> Path:
        return self.workdir / "mosquitto.out"

    @property
    def data_dir(self) -> Path:
        return self.workdir / "data"

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self.is_running and self._proc else None

    @property
    def is_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    # -- config ------------------------------------------------------------
    def config_text(self) -> str:
        if any(ch.isspace() for ch in str(self.workdir.resolve())):
            # mosquitto.conf has no quoting: a path with blanks would be cut.
            raise MosquittoError(f"broker workdir must not contain whitespace: {self.workdir}")
        lines = []
        if os.geteuid() == 0:
            # Stay root instead of dropping to user `mosquitto` (see module docstring).
            lines.append("user root")
        lines += [
            f"listener {self.port} {self.host}",
            "allow_anonymous true",
            # Without it small messages wait on Nagle's algorithm (~40 ms per hop on loopback).
            "set_tcp_nodelay true",
            "persistence true",
            f"persistence_location {self.data_dir.resolve()}/",
            "autosave_interval 1",
            f"log_dest file {self.log_path.resolve()}",
            # One type per line: mosquitto reads only the first word of a
            # `log_type a b c` line, which would silently log errors only.
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
            "max_queued_messages 100000",
        ]
        if self.extra_conf:
            # Later lines override earlier ones for single-valued options.
            lines += ["# extra_conf", self.extra_conf.strip()]
        return "\n".join(lines) + "\n"

    def write_config(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.data_dir.mkdir(exist_ok=True)
        self.conf_path.write_text(self.config_text())

    # -- lifecycle ---------------------------------------------------------
    def start(self) -> None:
        """Launch the broker and wait until its port accepts TCP connections."""
        if self.is_running:
            raise MosquittoError(f"broker already running (pid {self.pid}) on {self.url}")
        binary = find_mosquitto()
        if not self.conf_path.exists():
            self.write_config()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if _port_accepts(self.host, self.port):
            raise MosquittoError(
                f"port {self.host}:{self.port} is already in use by another process"
            )

        with self.out_path.open("ab") as out:
            self._proc = subprocess.Popen(
                [binary, "-c", str(self.conf_path)],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.workdir,
            )
        _live.add(self)

        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if self._proc.poll() is not None:
                rc = self._proc.returncode
                _live.discard(self)
                raise MosquittoError(
                    f"mosquitto exited with code {rc} during start\n{self._diag()}"
                )
            if _port_accepts(self.host, self.port):
                return
            if time.monotonic() > deadline:
                self._signal_and_wait(signal.SIGKILL, STOP_TIMEOUT)
                raise MosquittoError(
                    f"mosquitto did not accept connections on {self.host}:{self.port} "
                    f"within {START_TIMEOUT:.0f} s\n{self._diag()}"
                )
            time.sleep(0.02)

    def stop(self) -> None:
        """SIGTERM (the broker saves its persistence file), SIGKILL after 5 s. Idempotent."""
        if self._proc is None:
            return
        if self._proc.poll() is None:
            try:
                self._signal_and_wait(signal.SIGTERM, STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self._signal_and_wait(signal.SIGKILL, STOP_TIMEOUT)
        _live.discard(self)

    def kill(self) -> None:
        """SIGKILL: simulates a broker crash (only what autosave wrote survives)."""
        if self._proc is None:
            return
        if self._proc.poll() is None:
            self._signal_and_wait(signal.SIGKILL, STOP_TIMEOUT)
        _live.discard(self)

    def restart(self) -> None:
        """stop() + start() on the same port, keeping the persistence directory."""
        self.stop()
        self.start()

    def log_tail(self, lines: int = 30) -> str:
        return _tail(self.log_path, lines)

    def _signal_and_wait(self, sig: signal.Signals, timeout: float) -> None:
        assert self._proc is not None
        with contextlib.suppress(ProcessLookupError):
            self._proc.send_signal(sig)
        self._proc.wait(timeout=timeout)

    def _diag(self) -> str:
        return (
            f"--- {self.out_path} ---\n{_tail(self.out_path)}\n"
            f"--- {self.log_path} ---\n{_tail(self.log_path)}\n"
            f"--- {self.conf_path} ---\n{_tail(self.conf_path, 50)}"
        )

    def __enter__(self) -> MosquittoBroker:
        if not self.is_running:
            self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def start_broker(
    workdir: Path, *, extra_conf: str = "", host: str = "127.0.0.1"
) -> MosquittoBroker:
    """Write a config into ``workdir`` for a fresh free port and start the broker."""
    broker = MosquittoBroker(
        host=host, port=free_port(host), workdir=Path(workdir), extra_conf=extra_conf
    )
    broker.write_config()
    broker.start()
    return broker


@atexit.register
def _reap_leftovers() -> None:
    for broker in list(_live):
        with contextlib.suppress(Exception):
            broker.kill()
