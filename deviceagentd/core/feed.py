"""What changes on the site, as it happens, for whoever listens.

The registry, the event recorder and the command service publish one `SiteChange` per change:
a device's state values changed, it went online or offline, it raised an event, a command to it
finished. Consumers (the live stream `/api/stream`, the uplink to a central broker, ...)
subscribe a callback. Publishing is synchronous on the event loop, so a callback must be quick
and must never block: put the change on a bounded queue of your own and return.

When nobody listens, the publishers skip building changes (`SiteFeed.listening`), so the ingest
hot path pays nothing for a feature that is off.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

log = logging.getLogger("deviceagentd.feed")


class ChangeKind(StrEnum):
    STATE = "state"
    """`data`: the telemetry fields whose value changed, name → new value."""
    LIFECYCLE = "lifecycle"
    """`data`: `{"status": "online"|"offline", "reason": str}`; `event_id` is the stored event."""
    EVENT = "event"
    """`data`: the stored event as the HTTP API serves it; `event_id` is its id."""
    COMMAND = "command"
    """`data`: a command that finished (answered, failed, timed out, cancelled or answered late)."""


@dataclass(frozen=True, slots=True)
class SiteChange:
    kind: ChangeKind
    device_id: str
    product_id: str
    ts_ms: int
    """When the gateway saw the change (wall clock, epoch ms)."""
    data: dict[str, Any] = field(default_factory=dict)
    event_id: int | None = None
    """The id of the stored event for lifecycle and event changes, else None."""


Subscriber = Callable[[SiteChange], None]


class SiteFeed:
    def __init__(self) -> None:
        self._subscribers: list[Subscriber] = []

    @property
    def listening(self) -> bool:
        return bool(self._subscribers)

    def subscribe(self, subscriber: Subscriber) -> Callable[[], None]:
        """Call `subscriber` with every change from now on; returns the function that stops it."""
        self._subscribers.append(subscriber)

        def unsubscribe() -> None:
            if subscriber in self._subscribers:
                self._subscribers.remove(subscriber)

        return unsubscribe

    def publish(self, change: SiteChange) -> None:
        # A copy: a subscriber may unsubscribe itself (or another) while being called.
        for subscriber in list(self._subscribers):
            try:
                subscriber(change)
            except Exception:
                # One broken consumer must not cost a device message or the other consumers.
                log.exception("a site feed subscriber failed on a %s change of %s", change.kind, change.device_id)
