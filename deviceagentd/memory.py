"""Handing freed heap memory back to the kernel (glibc's malloc_trim).

Start-up (imports, opening the database) and bursts (a flood of registrations, a chat load)
leave freed memory in the C heap that glibc keeps for reuse; on a small board it is better
returned. Elsewhere than glibc this does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util


def trim_heap() -> bool:
    """Release free heap pages; True when glibc did something."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim = libc.malloc_trim
    except (OSError, AttributeError):
        return False
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return bool(trim(0))
