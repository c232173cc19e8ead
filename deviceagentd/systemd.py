"""systemd notify protocol: READY, STATUS, WATCHDOG, STOPPING (a no-op outside systemd)."""

from __future__ import annotations

import os
from pathlib import Path

import sdnotify

UNIT = "deviceagentd.service"
# sd_booted(): systemd creates this directory when it is the init system.
BOOTED_MARKER = Path("/run/systemd/system")
UNIT_DIRS = (Path("/etc/systemd/system"), Path("/lib/systemd/system"), Path("/usr/lib/systemd/system"))


def managed_by_systemd(booted_marker: Path = BOOTED_MARKER, unit_dirs: tuple[Path, ...] = UNIT_DIRS) -> bool:
    """This machine runs systemd and has the deviceagentd unit (the .deb installs it): operators
    start and stop the daemon with systemctl. Elsewhere (a checkout, a container) they run it
    themselves, and messages must not send them to systemctl."""
    return booted_marker.is_dir() and any((directory / UNIT).is_file() for directory in unit_dirs)


class Notifier:
    def __init__(self, environ: dict[str, str] | None = None) -> None:
        env = dict(os.environ) if environ is None else environ
        self.enabled = bool(env.get("NOTIFY_SOCKET"))
        self._notifier = sdnotify.SystemdNotifier() if self.enabled else None
        watchdog_usec = env.get("WATCHDOG_USEC", "")
        watchdog_pid = env.get("WATCHDOG_PID", "")
        pid_matches = not watchdog_pid or watchdog_pid == str(os.getpid())
        # systemd asks for a ping at least every WATCHDOG_USEC; ping at half that.
        self.watchdog_interval_s = (
            int(watchdog_usec) / 2_000_000 if watchdog_usec.isdigit() and int(watchdog_usec) > 0 and pid_matches
            else 0.0
        )
        self.last_status = ""

    def _send(self, message: str) -> None:
        if self._notifier is not None:
            self._notifier.notify(message)

    def ready(self, status: str) -> None:
        self.last_status = status
        self._send(f"READY=1\nSTATUS={status}")

    def status(self, status: str) -> None:
        if status != self.last_status:
            self.last_status = status
            self._send(f"STATUS={status}")

    def watchdog(self) -> None:
        self._send("WATCHDOG=1")

    def stopping(self) -> None:
        self._send("STOPPING=1\nSTATUS=stopping")
