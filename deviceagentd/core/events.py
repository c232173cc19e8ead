"""Device events: checked, levelled and handed to the store (SPEC §2 "Events")."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from deviceagentd.core.clock import Clock, iso_ms
from deviceagentd.core.feed import ChangeKind, SiteChange
from deviceagentd.core.registry import DeviceRegistry, Rejected
from deviceagentd.core.spec import EVENT_TYPES
from deviceagentd.store.records import EventRecord, NewEvent

# Device timestamps before this are not real epoch milliseconds (seconds, or an unset clock).
_MIN_PLAUSIBLE_TS_MS = 1_000_000_000_000
# A device clock more than a day ahead of ours is wrong; we keep our receive time instead.
_MAX_AHEAD_MS = 24 * 3600 * 1000


class EventStore(Protocol):
    def add_event(self, event: NewEvent) -> EventRecord: ...


@dataclass
class EventRecorder:
    registry: DeviceRegistry
    store: EventStore
    clock: Clock

    def accept(self, product_id: str, device_id: str, body: dict[str, Any], encoding: str) -> EventRecord:
        data = body.get("data")
        if not isinstance(data, dict):
            raise Rejected("bad_event", "an event needs an object `data`")
        name = data.get("event")
        if not isinstance(name, str) or not name.strip():
            raise Rejected("event_without_name", "an event needs a non-empty string data.event")
        spec, device = self.registry.resolve(product_id, device_id, body.get("metadata"))
        device = self.registry.heard_from(spec, device_id, device, encoding)
        event_spec = spec.events.get(name)
        level = data.get("level")
        if level not in EVENT_TYPES:
            level = event_spec.event_type if event_spec is not None else "info"
        fields = {k: v for k, v in data.items() if k not in ("event", "level")}
        now_ms = self.clock.wall_ms()
        ts = body.get("ts")
        if isinstance(ts, bool) or not isinstance(ts, int) or not _MIN_PLAUSIBLE_TS_MS <= ts <= now_ms + _MAX_AHEAD_MS:
            ts = now_ms
        stored = self.store.add_event(
            NewEvent(
                device_id=device.device_id,
                product_id=device.product_id,
                event=name,
                level=level,
                declared=event_spec is not None,
                data=fields,
                ts_ms=ts,
                received_at_ms=now_ms,
                source="device",
            )
        )
        feed = self.registry.feed
        if feed.listening:
            feed.publish(SiteChange(ChangeKind.EVENT, stored.device_id, stored.product_id, now_ms,
                                    event_to_json(stored), event_id=stored.id))
        return stored


def event_to_json(event: EventRecord) -> dict[str, Any]:
    return {
        "id": event.id,
        "deviceId": event.device_id,
        "productId": event.product_id,
        "event": event.event,
        "level": event.level,
        "declared": event.declared,
        "source": event.source,
        "data": event.data,
        "ts": iso_ms(event.ts_ms),
        "receivedAt": iso_ms(event.received_at_ms),
    }
