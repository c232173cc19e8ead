"""Whether the kernel considers the system clock synchronised (NTP/chrony/timesyncd).

Read with adjtimex(2) in query mode: it returns TIME_ERROR while the clock is unsynchronised.
"""

from __future__ import annotations

import ctypes
import time
from dataclasses import dataclass, field

from deviceagentd.libc import libc_function

TIME_ERROR = 5
# struct timex is about 208 bytes on 64-bit Linux; a larger zeroed buffer keeps modes=0 (query).
_TIMEX_BUFFER = 512
RECHECK_S = 16.0


def kernel_clock_synced() -> bool:
    func = libc_function("adjtimex", [ctypes.c_void_p], ctypes.c_int)
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
