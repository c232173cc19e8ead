"""Keeping the journal readable when something repeats: a global limit per kind of log line.

A kind is one logger, level and message template ("rejected %s from %s: %s"), whatever its
arguments: a flood of rejections from a new device id each time is one kind, so it cannot
write megabytes a minute and push journald into its own rate limit, which would hide every
other line. The first `burst` lines of a kind in each `interval_s` go through; the rest are
counted, and the first line let through afterwards says how many were left out. Metrics count
every occurrence, so nothing is lost but the repetition.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

DEFAULT_BURST = 10
DEFAULT_INTERVAL_S = 60.0
# Kinds are few (one per log call site); a bound keeps a bug that builds templates from
# growing the table.
MAX_KINDS = 2000


@dataclass
class _Window:
    started: float
    passed: int = 0
    suppressed: int = 0


class RateLimitFilter(logging.Filter):
    """Attach to a handler: at most `burst` records of each kind per `interval_s`."""

    def __init__(self, burst: int = DEFAULT_BURST, interval_s: float = DEFAULT_INTERVAL_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        if burst < 1 or interval_s <= 0:
            raise ValueError("burst must be at least 1 and interval_s positive")
        self._burst = burst
        self._interval_s = interval_s
        self._clock = clock
        self._windows: OrderedDict[tuple[str, int, str], _Window] = OrderedDict()

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.name, record.levelno, str(record.msg))
        now = self._clock()
        window = self._windows.get(key)
        if window is None:
            window = self._windows[key] = _Window(now)
            while len(self._windows) > MAX_KINDS:
                self._windows.popitem(last=False)
        elif now - window.started >= self._interval_s:
            left_out = window.suppressed
            window.started, window.passed, window.suppressed = now, 0, 0
            if left_out:
                _note_left_out(record, left_out)
        self._windows.move_to_end(key)
        if window.passed >= self._burst:
            window.suppressed += 1
            return False
        window.passed += 1
        return True


def _note_left_out(record: logging.LogRecord, left_out: int) -> None:
    record.msg = f"{record.getMessage()} ({left_out} more like this were left out before it)"
    record.args = None
