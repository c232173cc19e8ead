"""systemd notify protocol: READY, STATUS, WATCHDOG, STOPPING (a no-op outside systemd)."""

from __future__ import annotations

import os

import sdnotify


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
