"""Throttling failed token requests of the voice platform, per speaker and per client.

With signing off (the default) a brand code is the only secret of a token request, so
guessing it must be slow: after `limit` failures within `window_s` for one voice_id, or from
one client address, further token requests for it (from it) are refused without being
checked until the oldest failure leaves the window. A speaker whose id is being attacked
keeps its live token meanwhile (obtaining a new one never revokes it, see tokens.py).
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Callable

# Distinct keys remembered at most; the least recently failing are forgotten first.
MAX_KEYS = 10_000


class FailureThrottle:
    def __init__(self, limit: int, window_s: float, monotonic: Callable[[], float]) -> None:
        if limit < 1 or window_s <= 0:
            raise ValueError("limit must be at least 1 and window_s positive")
        self._limit = limit
        self._window_s = window_s
        self._monotonic = monotonic
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()

    def retry_after(self, key: str) -> float | None:
        """Seconds until `key` may try again, or None when it may try now."""
        times = self._failures.get(key)
        if times is None:
            return None
        now = self._monotonic()
        while times and now - times[0] >= self._window_s:
            times.popleft()
        if not times:
            del self._failures[key]
            return None
        if len(times) < self._limit:
            return None
        return self._window_s - (now - times[0])

    def failed(self, key: str) -> None:
        times = self._failures.get(key)
        if times is None:
            times = self._failures[key] = deque(maxlen=self._limit)
            while len(self._failures) > MAX_KEYS:
                self._failures.popitem(last=False)
        self._failures.move_to_end(key)
        times.append(self._monotonic())
