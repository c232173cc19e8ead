"""Whether the kernel considers the system clock synchronised (NTP/chrony/timesyncd).

Read with adjtimex(2) in query mode: it returns TIME_ERROR while the clock is unsynchronised.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

TIME_ERROR = 5
# struct timex is about 208 bytes on 64-bit Linux; a larger zeroed buffer keeps modes=0 (query).
_TIMEX_BUFFER = 512
RECHECK_S = 16.0


def _load_adjtimex() -> Callable[[Any], int] | None:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6", use_errno=True)
        func = libc.adjtimex
    except (OSError, AttributeError):
        return None
    func.argtypes = [ctypes.c_void_p]
    func.restype = ctypes.c_int
    adjtimex: Callable[[Any], int] = func
    return adjtimex


def kernel_clock_synced() -> bool:
    func = _load_adjtimex()
    if func is None:
        return False
    buffer = ctypes.create_string_buffer(_TIMEX_BUFFER)
    state = func(buffer)
    # -1 = not permitted (seccomp) or unsupported: we cannot vouch for the clock.
    return state not in (-1, TIME_ERROR)


@dataclass
class ClockSyncState:
    """Cached so the NTP responder reads a bool, not a syscall, per request."""

    synced: bool = False
    checked_at: float = field(default=-1e9)

    def current(self) -> bool:
        now = time.monotonic()
        if now - self.checked_at >= RECHECK_S:
            self.synced = kernel_clock_synced()
            self.checked_at = now
        return self.synced
