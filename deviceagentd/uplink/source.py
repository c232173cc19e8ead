"""What the site does, as outbox rows: a SiteFeed subscriber.

Each change becomes one row in the store's outbox (committed with the same batch as the event it
comes from), in the order the changes happen. State changes are coalesced per device: at most one
state message per device per `state_min_interval_s`, carrying the values merged since the last
one. A device's pending state goes out before its next lifecycle or event row, so the cloud sees
a device's messages in the order they happened (the interval then starts again).

The feed calls us on the event loop inside the ingest path: adding a row is a dict insert under
the store's lock; nothing here waits.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from deviceagentd.config import UplinkConfig
from deviceagentd.core.clock import iso_ms
from deviceagentd.core.feed import ChangeKind, SiteChange
from deviceagentd.store.errors import StoreError
from deviceagentd.store.store import Store
from deviceagentd.uplink.requests_api import CloudReply
from deviceagentd.uplink.topics import SiteTopics

log = logging.getLogger("deviceagentd.uplink")

JSON = "application/json"


def encode(value: Any) -> bytes:
    try:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()
    except UnicodeEncodeError:
        # A lone surrogate a device sent has no UTF-8 form; the \u escape keeps it.
        return json.dumps(value, separators=(",", ":")).encode()


@dataclass
class _PendingState:
    product_id: str
    values: dict[str, Any] = field(default_factory=dict)
    ts_ms: int = 0
    due: float = 0.0
    queued: bool = False


class OutboxSource:
    def __init__(
        self,
        config: UplinkConfig,
        topics: SiteTopics,
        store: Store,
        wake: Callable[[], None],
        monotonic: Callable[[], float],
    ) -> None:
        self._config = config
        self._topics = topics
        self._store = store
        self._wake = wake
        self._monotonic = monotonic
        self._interval = config.state_min_interval_s
        # Per device: when its last state message went into the outbox (monotonic).
        self._last_state: dict[str, float] = {}
        self._pending: dict[str, _PendingState] = {}
        # Devices with pending state in due order (all intervals are equal: appending keeps it sorted).
        self._due: deque[str] = deque()
        self._timer = asyncio.Event()
        self.refused = 0
        """Changes the store refused (closing, or a value it cannot hold)."""

    # ------------------------------------------------------------------ the feed

    def on_change(self, change: SiteChange) -> None:
        cfg = self._config
        kind = change.kind
        if kind is ChangeKind.STATE:
            if cfg.forward_state:
                self._state(change)
            return
        if kind is ChangeKind.LIFECYCLE:
            if cfg.forward_lifecycle:
                self._flush_device(change.device_id)
                self._add("lifecycle", change.device_id, cfg.topics.lifecycle, {
                    "deviceId": change.device_id, "productId": change.product_id,
                    "status": change.data.get("status"), "reason": change.data.get("reason"),
                    "eventId": change.event_id, "ts": iso_ms(change.ts_ms),
                }, lifecycle=True)
        elif kind is ChangeKind.EVENT:
            if cfg.forward_events:
                self._flush_device(change.device_id)
                self._add("event", change.device_id, cfg.topics.events, change.data)
        elif kind is ChangeKind.COMMAND and cfg.forward_commands:
            self._add("command", change.device_id, cfg.topics.command_result, change.data)

    def add_reply(self, reply: CloudReply) -> int | None:
        """A reply to a cloud request, ordered with its device's other rows."""
        if reply.device_id:
            self._flush_device(reply.device_id)
        try:
            row_id = self._store.add_outbox("reply", reply.device_id, reply.topic, reply.payload,
                                            content_type=reply.content_type, correlation_data=reply.correlation_data)
        except (StoreError, TypeError, ValueError) as exc:
            self.refused += 1
            log.error("uplink reply on %s not queued: %s", reply.topic, exc)
            return None
        self._wake()
        return row_id

    # ------------------------------------------------------------------ state coalescing

    def _state(self, change: SiteChange) -> None:
        device_id = change.device_id
        now = self._monotonic()
        pending = self._pending.get(device_id)
        if pending is None:
            pending = self._pending[device_id] = _PendingState(change.product_id)
        pending.values.update(change.data)
        pending.ts_ms = change.ts_ms
        last = self._last_state.get(device_id)
        if last is None or now - last >= self._interval:
            self._flush_device(device_id)
            return
        if not pending.queued:
            pending.queued = True
            pending.due = last + self._interval
            self._due.append(device_id)
            self._timer.set()

    def _flush_device(self, device_id: str) -> None:
        pending = self._pending.pop(device_id, None)
        if pending is None or not pending.values:
            return
        self._last_state[device_id] = self._monotonic()
        self._add("state", device_id, self._config.topics.state, {
            "deviceId": device_id, "productId": pending.product_id, "state": pending.values,
            "ts": iso_ms(pending.ts_ms),
        })

    async def run(self) -> None:
        """Send coalesced state when it falls due."""
        while True:
            if not self._due:
                self._timer.clear()
                await self._timer.wait()
                continue
            device_id = self._due[0]
            pending = self._pending.get(device_id)
            if pending is None or not pending.queued:
                self._due.popleft()  # already sent before a lifecycle or event row
                continue
            wait = pending.due - self._monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
                continue
            self._due.popleft()
            self._flush_device(device_id)

    def flush_all(self) -> None:
        """Queue every device's pending state now (at shutdown, so nothing waits in memory)."""
        for device_id in list(self._pending):
            self._flush_device(device_id)
        self._due.clear()

    # ------------------------------------------------------------------ rows

    def _add(self, kind: str, device_id: str, template: str, body: dict[str, Any], *, lifecycle: bool = False) -> None:
        topic = self._topics.device(template, device_id)
        try:
            self._store.add_outbox(kind, device_id, topic, encode(body), lifecycle=lifecycle)
        except (StoreError, TypeError, ValueError) as exc:
            self.refused += 1
            log.error("uplink %s of %s not queued: %s", kind, device_id, exc)
            return
        self._wake()
