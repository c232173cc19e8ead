"""The live stream's fan-out: one site feed subscription for every open `/api/stream`.

The feed calls us on the event loop, inside the ingest path, so taking a change costs the same
whatever the number of streams: it goes into one ring of recent changes, and streams that wait
for news are woken. Each stream's writer then reads the ring from its own cursor, keeps what its
filter wants, and writes it in one go; a change is encoded (as the Server-Sent Event it becomes)
at most once, by the first writer that needs it. A stream that falls more than the ring behind
has lost what was overwritten, and is told how many changes went by an `event: missed` before
its next one. It never slows the devices or the other streams.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from deviceagentd.core.clock import iso_ms
from deviceagentd.core.feed import ChangeKind, SiteChange, SiteFeed
from deviceagentd.store.records import EventRecord

# Recent changes kept for the streams: several seconds of a busy site's changes (about 1.5 MB
# when full, and only while a stream is open).
DEFAULT_RING_SIZE = 4096
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

    @property
    def everything(self) -> bool:
        return self.products is None and self.devices is None and self.kinds == ALL_KINDS


def sse_event(name: str, data: Any, event_id: int | None = None) -> bytes:
    """One Server-Sent Event; `id:` only for stored events, so a client's Last-Event-ID is
    always an event it can resume from."""
    head = f"id: {event_id}\n" if event_id is not None else ""
    text = f"{head}event: {name}\ndata: {json.dumps(data, ensure_ascii=False, separators=(',', ':'))}\n\n"
    try:
        return text.encode()
    except UnicodeEncodeError:
        # A lone surrogate a device sent has no UTF-8 form; the \u escape keeps it.
        return f"{head}event: {name}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


class _IsoClock:
    """iso_ms with the date and time of the last second kept: a busy site's changes come many
    per second, and formatting the date is most of encoding a state change."""

    def __init__(self) -> None:
        self._second = -1
        self._prefix = ""

    def __call__(self, epoch_ms: int) -> str:
        second, millis = divmod(epoch_ms, 1000)
        if second != self._second:
            self._second = second
            self._prefix = (iso_ms(second * 1000) or "")[:-4]
        return f"{self._prefix}{millis:03d}Z"


def stored_event(event: EventRecord, as_json: dict[str, Any]) -> tuple[ChangeKind, bytes]:
    """A stored event replayed to a resuming stream, as it was sent live."""
    if event.source == "gateway" and event.event in ("online", "offline"):
        body = {"deviceId": event.device_id, "productId": event.product_id, "ts": iso_ms(event.received_at_ms),
                "status": event.event, "reason": event.data.get("reason", ""), "eventId": event.id}
        return ChangeKind.LIFECYCLE, sse_event(ChangeKind.LIFECYCLE, body, event.id)
    return ChangeKind.EVENT, sse_event(ChangeKind.EVENT, as_json, event.id)


_DUMPS = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
_MAX_STATE_HEADS = 10_000


class ChangeEncoder:
    """Site changes as the Server-Sent Events the stream sends (docs: the `StreamState`,
    `StreamLifecycle`, ... schemas), with what repeats between changes kept."""

    def __init__(self) -> None:
        self._iso = _IsoClock()
        # `event: state\ndata: {"deviceId":…,"productId":…,"ts":"` per device: state changes are
        # most of a busy site's changes, and their head only depends on the device.
        self._state_heads: dict[tuple[str, str], str] = {}

    def change_json(self, change: SiteChange) -> dict[str, Any]:
        if change.kind is ChangeKind.EVENT or change.kind is ChangeKind.COMMAND:
            return change.data
        body: dict[str, Any] = {"deviceId": change.device_id, "productId": change.product_id,
                                "ts": self._iso(change.ts_ms)}
        if change.kind is ChangeKind.STATE:
            body["state"] = change.data
        else:
            body.update(change.data)
            body["eventId"] = change.event_id
        return body

    def encode(self, change: SiteChange) -> bytes:
        if change.kind is ChangeKind.STATE:
            return self._state_event(change)
        return sse_event(change.kind, self.change_json(change), change.event_id)

    def _state_event(self, change: SiteChange) -> bytes:
        """The same bytes as sse_event("state", change_json(change)), made faster."""
        key = (change.device_id, change.product_id)
        head = self._state_heads.get(key)
        if head is None:
            if len(self._state_heads) >= _MAX_STATE_HEADS:
                self._state_heads.clear()
            head = f'event: state\ndata: {{"deviceId":{_DUMPS(key[0])},"productId":{_DUMPS(key[1])},"ts":"'
            self._state_heads[key] = head
        try:
            return f'{head}{self._iso(change.ts_ms)}","state":{_DUMPS(change.data)}}}\n\n'.encode()
        except UnicodeEncodeError:
            return sse_event(ChangeKind.STATE, self.change_json(change))


@dataclass(slots=True)
class _Entry:
    change: SiteChange
    encoded: bytes | None = None

    def sse(self, encoder: ChangeEncoder) -> bytes:
        if self.encoded is None:
            self.encoded = encoder.encode(self.change)
        return self.encoded


@dataclass(eq=False)
class LiveStream:
    """One open stream: its filter and how far it has read."""

    filter: StreamFilter
    cursor: int
    closed: bool = False
    missed_total: int = 0
    skip_upto: int | None = None
    """Stored events up to this id were sent already (a resume replayed them): skip them."""
    _wake: asyncio.Future[None] | None = field(default=None, repr=False)


class LiveHub:
    def __init__(self, feed: SiteFeed, ring_size: int = DEFAULT_RING_SIZE) -> None:
        self._feed = feed
        self._size = ring_size
        self._ring: list[_Entry | None] = [None] * ring_size
        self._next = 0
        """The sequence number the next change gets."""
        self._streams: list[LiveStream] = []
        self._sleepers: list[LiveStream] = []
        self._unsubscribe: Callable[[], None] | None = None
        self._missed_closed = 0
        # The last range taken by a stream without a filter, encoded: the other unfiltered
        # streams writing on the same tick (see routes_stream) take the same bytes.
        self._shared: tuple[int, int, bytes] = (0, 0, b"")
        self._encoder = ChangeEncoder()

    @property
    def clients(self) -> int:
        return len(self._streams)

    @property
    def missed_total(self) -> int:
        """Changes lost to streams that read too slowly since start (closed ones included)."""
        return self._missed_closed + sum(stream.missed_total for stream in self._streams)

    def open(self, stream_filter: StreamFilter) -> LiveStream:
        stream = LiveStream(stream_filter, self._next)
        self._streams.append(stream)
        if self._unsubscribe is None:
            # Subscribed only while somebody listens: the ingest pays nothing otherwise.
            self._unsubscribe = self._feed.subscribe(self._on_change)
        return stream

    def close(self, stream: LiveStream) -> None:
        if stream in self._streams:
            self._streams.remove(stream)
            self._missed_closed += stream.missed_total
        stream.closed = True
        self._wake_up(stream)
        if not self._streams and self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
            self._ring = [None] * self._size  # nothing left to read: free the changes
            self._shared = (0, 0, b"")

    def close_all(self) -> None:
        for stream in list(self._streams):
            self.close(stream)

    def _on_change(self, change: SiteChange) -> None:
        self._ring[self._next % self._size] = _Entry(change)
        self._next += 1
        if self._sleepers:
            sleepers, self._sleepers = self._sleepers, []
            for stream in sleepers:
                self._wake_up(stream)

    @staticmethod
    def _wake_up(stream: LiveStream) -> None:
        wake = stream._wake
        if wake is not None and not wake.done():
            wake.set_result(None)

    async def wait(self, stream: LiveStream, timeout: float) -> bool:
        """True once there is something to take (or the stream was closed), False after `timeout`."""
        if stream.closed or stream.cursor < self._next:
            return True
        stream._wake = asyncio.get_running_loop().create_future()
        self._sleepers.append(stream)
        try:
            await asyncio.wait_for(stream._wake, timeout)
        except TimeoutError:
            return False
        finally:
            stream._wake = None
            with contextlib.suppress(ValueError):
                self._sleepers.remove(stream)
        return True

    def take(self, stream: LiveStream) -> tuple[bytes, int]:
        """The stream's changes since it last took them, encoded, and how many changes of the
        site went by unread because the stream was too slow."""
        oldest = max(0, self._next - self._size)
        missed = max(0, oldest - stream.cursor)
        stream.missed_total += missed
        start, end = max(stream.cursor, oldest), self._next
        stream.cursor = end
        skip, stream.skip_upto = stream.skip_upto, None
        if start == end:
            return b"", missed
        encoder = self._encoder
        if stream.filter.everything and skip is None:
            if self._shared[:2] != (start, end):
                self._shared = (start, end, b"".join(e.sse(encoder) for e in self._entries(start, end)))
            return self._shared[2], missed
        entries = self._entries(start, end)
        wanted = stream.filter.matches
        return b"".join(
            e.sse(encoder) for e in entries
            if wanted(e.change.kind, e.change.product_id, e.change.device_id)
            and (skip is None or e.change.event_id is None or e.change.event_id > skip)), missed

    def _entries(self, start: int, end: int) -> list[_Entry]:
        ring, size = self._ring, self._size
        return [entry for seq in range(start, end) if (entry := ring[seq % size]) is not None]


def parse_list(values: Iterable[str]) -> list[str]:
    """Repeated and comma-separated query values: `?kind=state&kind=event` = `?kind=state,event`."""
    return [part.strip() for value in values for part in value.split(",") if part.strip()]
