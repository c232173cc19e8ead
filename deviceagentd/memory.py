"""Handing freed heap memory back to the kernel (glibc's malloc_trim).

Start-up (imports, opening the database) and bursts (a flood of registrations, a chat load)
leave freed memory in the C heap that glibc keeps for reuse; on a small board it is better
returned. Elsewhere than glibc this does nothing.
"""

from __future__ import annotations

import ctypes

from deviceagentd.libc import libc_function


def trim_heap() -> bool:
    """Release free heap pages; True when glibc did something."""
    trim = libc_function("malloc_trim", [ctypes.c_size_t], ctypes.c_int)
    return trim is not None and bool(trim(0))
