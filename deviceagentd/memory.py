"""Keeping the daemon's resident memory small on a small board.

* `trim_heap` hands freed C-heap memory back to the kernel (glibc's malloc_trim). Start-up
  (imports, opening the database) and bursts (a flood of registrations, a chat load) leave
  freed memory that glibc keeps for reuse; `HeapTrimmer` decides when.
* `limit_malloc_arenas` stops glibc from giving every thread its own heap (by default up to
  8 per core, each keeping its own free memory).
* `deferred_ca_bundle` keeps aiohttp from parsing the whole CA bundle at import.

Elsewhere than glibc the first two do nothing.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import ssl
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from deviceagentd.libc import libc_function

# mallopt parameter number of M_ARENA_MAX in glibc's malloc.h.
M_ARENA_MAX = -8
# The event loop's thread keeps the main heap; every other thread (the SQLite writer, the
# to_thread pool, libuv's resolver) shares one more, so the loop never waits on their lock.
DEFAULT_ARENAS = 2
# OpenSSL's hashed-directory names: <8 hex digits of the subject hash>.<n>
_HASHED_NAME = re.compile(r"[0-9a-f]{8}\.\d+")
_PEM_BEGIN = b"-----BEGIN CERTIFICATE-----"


def trim_heap() -> bool:
    """Release free heap pages; True when glibc did something."""
    trim = libc_function("malloc_trim", [ctypes.c_size_t], ctypes.c_int)
    return trim is not None and bool(trim(0))


def limit_malloc_arenas(arenas: int = DEFAULT_ARENAS) -> bool:
    """Cap glibc's malloc arenas; call before starting threads. True when glibc took it."""
    mallopt = libc_function("mallopt", [ctypes.c_int, ctypes.c_int], ctypes.c_int)
    return mallopt is not None and bool(mallopt(M_ARENA_MAX, arenas))


@dataclass
class HeapTrimmer:
    """When to trim: every `every_s`, and once a burst of registrations has settled.

    `tick` is called from the daemon's periodic tick with the loop time and the number of
    registered devices; a burst is a count `burst_devices` or more away from the one at the
    last trim (registrations, or deletions), settled when a tick sees the same count as the
    one before.
    """

    every_s: float = 300.0
    burst_devices: int = 100
    trim: Callable[[], bool] = field(default=trim_heap, repr=False)
    _next_at: float | None = field(default=None, init=False)
    _devices_at_trim: int = field(default=0, init=False)
    _devices_seen: int = field(default=0, init=False)

    def tick(self, now: float, devices: int) -> bool:
        """Trim when due; True when it trimmed."""
        if self._next_at is None:  # the first tick: the trim after READY was just done
            self._restart(now, devices)
            return False
        settled = devices == self._devices_seen
        self._devices_seen = devices
        burst = abs(devices - self._devices_at_trim) >= self.burst_devices
        if now < self._next_at and not (burst and settled):
            return False
        self.trim()
        self._restart(now, devices)
        return True

    def _restart(self, now: float, devices: int) -> None:
        self._next_at = now + self.every_s
        self._devices_at_trim = devices
        self._devices_seen = devices


@contextlib.contextmanager
def deferred_ca_bundle() -> Iterator[bool]:
    """Import aiohttp inside this block: its client's default TLS contexts then look CA
    certificates up in the hashed directory when a connection is verified, instead of parsing
    the whole bundle at import (two contexts, ~2 MB of the idle daemon's memory; a daemon
    without a cloud provider never makes a TLS client connection).

    OpenSSL reads the default bundle's name from SSL_CERT_FILE each time a context loads its
    defaults, so it is pointed at an empty file for the block. Only done when the directory
    holds every certificate of the bundle (Debian's update-ca-certificates writes both); with
    a bundle of its own elsewhere nothing changes. Contexts created later (MQTT over TLS, a
    provider's own) load the bundle as usual. Yields whether the bundle was deferred.
    """
    if not _bundle_in_hashed_dir(ssl.get_default_verify_paths()):
        yield False
        return
    saved = os.environ.get("SSL_CERT_FILE")
    os.environ["SSL_CERT_FILE"] = os.devnull
    try:
        yield True
    finally:
        if saved is None:
            os.environ.pop("SSL_CERT_FILE", None)
        else:
            os.environ["SSL_CERT_FILE"] = saved


def _bundle_in_hashed_dir(paths: ssl.DefaultVerifyPaths) -> bool:
    """True when the default bundle lies in the default hashed directory and the directory
    has at least as many hashed names as the bundle has certificates."""
    if not paths.cafile or not paths.capath:
        return False
    bundle = Path(paths.cafile).resolve()
    directory = Path(paths.capath).resolve()
    if bundle.parent != directory:
        return False
    try:
        certificates = bundle.read_bytes().count(_PEM_BEGIN)
        hashed = sum(1 for name in os.listdir(directory) if _HASHED_NAME.fullmatch(name))
    except OSError:
        return False
    return certificates > 0 and hashed >= certificates
