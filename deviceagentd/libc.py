"""C library functions the daemon calls through ctypes (adjtimex, malloc_trim).

Looked up in the process's own symbols (libc is already loaded), never with
ctypes.util.find_library, which runs ldconfig in a subprocess: ~12 ms of blocked event loop,
and the clock-sync check sits on the time-sync answer path.
"""

from __future__ import annotations

import ctypes
import functools
from collections.abc import Callable
from typing import Any


@functools.cache
def _symbols() -> ctypes.CDLL | None:
    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None


def libc_function(name: str, argtypes: list[Any], restype: Any) -> Callable[..., int] | None:
    """The named C function with its signature set, or None where it does not exist."""
    symbols = _symbols()
    func = getattr(symbols, name, None) if symbols is not None else None
    if func is None:
        return None
    func.argtypes = argtypes
    func.restype = restype
    typed: Callable[..., int] = func
    return typed
