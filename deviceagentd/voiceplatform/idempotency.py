"""Retried execute calls: the same (speaker, message_id) within the window gets the first answer.

Speakers retry when a reply is slow; running "IncrementBrightness" twice would brighten the
light twice. A retry that arrives while the first call is still running waits for it instead of
starting a second command.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

Answer = dict[str, Any]


@dataclass
class _Entry:
    future: asyncio.Future[Answer]
    created: float


@dataclass
class IdempotencyCache:
    window_s: float
    # Bounds memory when a misbehaving speaker sends a new message_id per call at high rate.
    max_entries: int = 10_000
    monotonic: Callable[[], float] = time.monotonic
    _entries: OrderedDict[tuple[str, str], _Entry] = field(default_factory=OrderedDict)
    replays: int = 0

    def __len__(self) -> int:
        return len(self._entries)

    async def run(self, key: tuple[str, str], produce: Callable[[], Awaitable[Answer]]) -> Answer:
        """The first answer for `key` within the window, producing it at most once."""
        if self.window_s <= 0:
            return await produce()
        now = self.monotonic()
        self._expire(now)
        entry = self._entries.get(key)
        if entry is not None:
            self.replays += 1
            # shield: a retry whose client goes away must not cancel the first call's work.
            return await asyncio.shield(entry.future)
        future: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
        self._entries[key] = _Entry(future, now)
        if len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)
        try:
            answer = await produce()
        except BaseException as exc:
            # Nothing was answered (e.g. the client disconnected and the work was cancelled):
            # forget the key so a retry runs, and wake any waiting retry with the same error.
            self._entries.pop(key, None)
            if not future.done():
                future.set_exception(exc if isinstance(exc, Exception) else asyncio.CancelledError())
                future.exception()  # mark retrieved: no "never retrieved" warning when nobody waits
            raise
        future.set_result(answer)
        return answer

    def _expire(self, now: float) -> None:
        while self._entries:
            key, entry = next(iter(self._entries.items()))
            if now - entry.created < self.window_s:
                break
            del self._entries[key]
