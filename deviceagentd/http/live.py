"""The live stream's fan-out: one site feed subscription for every open `/api/stream`.

Each change is encoded once (as the Server-Sent Event it becomes) and handed to every stream
whose filter it matches. The feed calls us on the event loop, inside the ingest path, so
handing over is only an append to the stream's bounded queue: a stream that cannot keep up
loses its oldest waiting changes (never anybody else's, never the ingest's time) and is told
how many it missed by an `event: missed` before its next change.
"""

from __future__ import annotations

import asyncio
import json
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from deviceagentd.core.clock import iso_ms
from deviceagentd.core.feed import ChangeKind, SiteChange, SiteFeed
from deviceagentd.store.records import EventRecord

# Changes a stream may have waiting before its oldest are dropped: a few seconds of a busy
# site's changes, enough to ride out a slow network moment.
DEFAULT_QUEUE_LIMIT = 2000
ALL_KINDS = frozenset(ChangeKind)


@dataclass(frozen=True)
class StreamFilter:
    """What one stream wants; None = everything of that sort."""

    products: frozenset[str] | None = None
    devices: frozenset[str] | None = None
    kinds: frozenset[ChangeKind] = ALL_KINDS

    def matches(self, kind: ChangeKind, product_id: str, device_id: str) -> bool:
        return (kind in self.kinds
                and (self.products is None or product_id in self.products)
                and (self.devices is None or device_id in self.devices))


def sse_event(name: str, data: Any, event_id: int | None = None) -> bytes:
    """One Server-Sent Event; `id:` only for stored events, so a client's Last-Event-ID is
    always an event it can resume from."""
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {name}\ndata: {json.dumps(data, ensure_ascii=False, separators=(',', ':'))}\n\n".encode()


def change_json(change: SiteChange) -> dict[str, Any]:
    """A change as the stream sends it (docs: the `StreamState`, `StreamLifecycle`, ... schemas)."""
    if change.kind is ChangeKind.EVENT or change.kind is ChangeKind.COMMAND:
        return change.data
    body: dict[str, Any] = {"deviceId": change.device_id, "productId": change.product_id, "ts": iso_ms(change.ts_ms)}
    if change.kind is ChangeKind.STATE:
        body["state"] = change.data
    else:
        body.update(change.data)
        body["eventId"] = change.event_id
    return body


def stored_event(event: EventRecord, as_json: dict[str, Any]) -> tuple[ChangeKind, bytes]:
    """A stored event replayed to a resuming stream, as it was sent live."""
    if event.source == "gateway" and event.event in ("online", "offline"):
        body = {"deviceId": event.device_id, "productId": event.product_id, "ts": iso_ms(event.received_at_ms),
                "status": event.event, "reason": event.data.get("reason", ""), "eventId": event.id}
        return ChangeKind.LIFECYCLE, sse_event(ChangeKind.LIFECYCLE, body, event.id)
    return ChangeKind.EVENT, sse_event(ChangeKind.EVENT, as_json, event.id)


@dataclass(eq=False)
class StreamQueue:
    """The changes waiting for one stream's writer."""

    filter: StreamFilter
    limit: int = DEFAULT_QUEUE_LIMIT
    _items: deque[tuple[int | None, bytes]] = field(default_factory=deque)
    _ready: asyncio.Event = field(default_factory=asyncio.Event)
    missed: int = 0
    """Changes dropped since the writer last took the queue."""
    missed_total: int = 0
    closed: bool = False

    def offer(self, event_id: int | None, encoded: bytes) -> None:
        if len(self._items) >= self.limit:
            # Too slow: what waits is stale by now; keep the newest and say how much went.
            self.missed += len(self._items)
            self.missed_total += len(self._items)
            self._items.clear()
        self._items.append((event_id, encoded))
        self._ready.set()

    def close(self) -> None:
        self.closed = True
        self._ready.set()

    async def wait(self, timeout: float) -> bool:
        """True when something waits (or the stream was closed), False after `timeout`."""
        if not self._items and not self.closed:
            try:
                await asyncio.wait_for(self._ready.wait(), timeout)
            except TimeoutError:
                return False
        return True

    def take(self) -> tuple[list[tuple[int | None, bytes]], int]:
        """Everything waiting, and how many changes were dropped before it."""
        items = list(self._items)
        self._items.clear()
        self._ready.clear()
        missed, self.missed = self.missed, 0
        return items, missed


class LiveHub:
    def __init__(self, feed: SiteFeed, queue_limit: int = DEFAULT_QUEUE_LIMIT) -> None:
        self._feed = feed
        self._queue_limit = queue_limit
        self._queues: list[StreamQueue] = []
        self._unsubscribe: Callable[[], None] | None = None
        self._missed_closed = 0

    @property
    def clients(self) -> int:
        return len(self._queues)

    @property
    def missed_total(self) -> int:
        """Changes dropped for slow streams since start (closed streams included)."""
        return self._missed_closed + sum(queue.missed_total for queue in self._queues)

    def open(self, stream_filter: StreamFilter) -> StreamQueue:
        queue = StreamQueue(stream_filter, self._queue_limit)
        self._queues.append(queue)
        if self._unsubscribe is None:
            # Subscribed only while somebody listens: the ingest pays nothing otherwise.
            self._unsubscribe = self._feed.subscribe(self._on_change)
        return queue

    def close(self, queue: StreamQueue) -> None:
        if queue in self._queues:
            self._queues.remove(queue)
            self._missed_closed += queue.missed_total
        queue.close()
        if not self._queues and self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None

    def close_all(self) -> None:
        for queue in list(self._queues):
            self.close(queue)

    def _on_change(self, change: SiteChange) -> None:
        encoded: bytes | None = None
        for queue in self._queues:
            if queue.filter.matches(change.kind, change.product_id, change.device_id):
                if encoded is None:
                    encoded = sse_event(change.kind, change_json(change), change.event_id)
                queue.offer(change.event_id, encoded)


def parse_list(values: Iterable[str]) -> list[str]:
    """Repeated and comma-separated query values: `?kind=state&kind=event` = `?kind=state,event`."""
    return [part.strip() for value in values for part in value.split(",") if part.strip()]
