"""The live device registry: which devices exist, their state, and whether they are online.

Devices register themselves with their first accepted message for a known product. Online on
any accepted message; offline on `status: offline` or after `offline_after_s` of silence.
Every transition is stored as a lifecycle event. All of it lives in memory (a gateway has
hundreds, not millions, of devices); the store gets coalesced upserts.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any, Protocol

from deviceagentd.core.catalog import Catalog
from deviceagentd.core.clock import Clock, iso_ms
from deviceagentd.core.feed import ChangeKind, SiteChange, SiteFeed
from deviceagentd.core.ids import device_id_problem
from deviceagentd.core.metrics import Metrics
from deviceagentd.core.spec import ProductSpec
from deviceagentd.core.values import check_value
from deviceagentd.store.records import DeviceRecord, EventRecord, NewEvent

log = logging.getLogger("deviceagentd.devices")


class DeviceStore(Protocol):
    def save_device(self, record: DeviceRecord) -> None: ...
    def add_event(self, event: NewEvent) -> EventRecord: ...


@dataclass(slots=True)
class Device:
    device_id: str
    product_id: str
    online: bool
    state: dict[str, Any]
    metadata: dict[str, Any]
    first_seen_ms: int
    last_seen_ms: int
    encoding: str = "json"
    # Monotonic time of the last accepted message, for the offline timer (wall time can jump).
    heard_at: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "deviceId": self.device_id,
            "productId": self.product_id,
            "status": "online" if self.online else "offline",
            "online": self.online,
            "state": self.state,
            "lastSeen": iso_ms(self.last_seen_ms),
            "firstSeen": iso_ms(self.first_seen_ms),
            "metadata": self.metadata,
        }

    @classmethod
    def from_record(cls, record: DeviceRecord, heard_at: float = 0.0) -> Device:
        return cls(
            device_id=record.device_id,
            product_id=record.product_id,
            online=record.online,
            state=dict(record.state),
            metadata=dict(record.metadata),
            first_seen_ms=record.first_seen_ms,
            last_seen_ms=record.last_seen_ms,
            encoding=record.encoding,
            heard_at=heard_at,
        )

    def to_record(self) -> DeviceRecord:
        return DeviceRecord(
            device_id=self.device_id,
            product_id=self.product_id,
            online=self.online,
            state=dict(self.state),
            metadata=dict(self.metadata),
            first_seen_ms=self.first_seen_ms,
            last_seen_ms=self.last_seen_ms,
            encoding=self.encoding,
        )


class Rejected(Exception):
    """A device message the registry will not accept; `reason` is a stable snake_case name."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass
class TelemetryResult:
    device: Device
    dropped_fields: list[tuple[str, str]] = field(default_factory=list)


class DeviceRegistry:
    def __init__(
        self,
        catalog: Catalog,
        store: DeviceStore,
        metrics: Metrics,
        offline_after_s: float,
        clock: Clock | None = None,
        routine_save_s: float = 0.0,
        feed: SiteFeed | None = None,
    ) -> None:
        self.catalog = catalog
        # State changes and online/offline transitions are published here as they happen.
        self.feed = feed or SiteFeed()
        self._routine_save_s = routine_save_s
        self._store = store
        self._metrics = metrics
        self._offline_after_s = offline_after_s
        self._clock = clock or Clock()
        self._devices: dict[str, Device] = {}
        # Devices changed since they were last handed to the store, in two sets. `_dirty`:
        # registration, online/offline, metadata, saved at the next persist tick. `_routine`:
        # only state values and last-seen time changed, saved every `routine_save_s` (every
        # device at once): on an SD card, rewriting each device's row every time it reports
        # would dominate the disk writes, and devices report their state again anyway.
        self._dirty: set[str] = set()
        self._routine: set[str] = set()
        self._online_count = 0
        # Bumped when a device registers or its metadata changes, so consumers (the offline
        # engine's device index) can cache what they derive from the device set.
        self.version = 0

    # ------------------------------------------------------------------ reading

    def get(self, device_id: str) -> Device | None:
        return self._devices.get(device_id)

    def devices(self, product_id: str | None = None, online: bool | None = None) -> list[Device]:
        return [
            d
            for d in self._devices.values()
            if (product_id is None or d.product_id == product_id) and (online is None or d.online == online)
        ]

    @property
    def total(self) -> int:
        return len(self._devices)

    @property
    def online_count(self) -> int:
        return self._online_count

    # ------------------------------------------------------------------ loading

    def load(self, records: list[DeviceRecord]) -> None:
        """Restore devices at start. Their offline timer restarts now: a device that kept
        talking while we were down is not marked offline, and one that left goes offline
        after offline_after_s."""
        now = self._clock.monotonic()
        for rec in records:
            if rec.product_id not in self.catalog:
                log.warning("device %s belongs to product %s, which is no longer configured; kept but not served",
                            rec.device_id, rec.product_id)
            self._devices[rec.device_id] = Device.from_record(rec, heard_at=now)
        self._online_count = sum(1 for d in self._devices.values() if d.online)
        self.version += 1

    # ------------------------------------------------------------------ accepting messages

    def resolve(self, product_id: str, device_id: str, metadata: Any = None) -> tuple[ProductSpec, Device | None]:
        """The product a message belongs to and the device if already registered.

        A topic productId of `_` (the EMQX SDK's "unknown product") is resolved from the
        registered device or from metadata.productId.
        """
        device = self._devices.get(device_id)
        if product_id == "_":
            if device is not None:
                product_id = device.product_id
            elif isinstance(metadata, dict) and isinstance(metadata.get("productId"), str):
                product_id = metadata["productId"]
        spec = self.catalog.get(product_id)
        if spec is None:
            raise Rejected("unknown_product", f"product {product_id!r} is not configured on this gateway")
        if device is not None and device.product_id != product_id:
            raise Rejected(
                "product_mismatch",
                f"device {device_id!r} is registered as product {device.product_id!r}, not {product_id!r}",
            )
        return spec, device

    def heard_from(self, spec: ProductSpec, device_id: str, device: Device | None, encoding: str) -> Device:
        """Register if new, mark online, note the time and the encoding the device uses."""
        now_ms = self._clock.wall_ms()
        if device is None:
            problem = device_id_problem(device_id)
            if problem is not None:  # the MQTT topic parser refuses these first
                raise Rejected("bad_device_id", f"device id {device_id[:80]!r} {problem}")
            device = Device(
                device_id=device_id,
                product_id=spec.product_id,
                online=False,
                state={},
                metadata={},
                first_seen_ms=now_ms,
                last_seen_ms=now_ms,
                encoding=encoding,
            )
            self._devices[device_id] = device
            self.version += 1
            self._dirty.add(device_id)
            log.info("device %s registered (product %s)", device_id, spec.product_id)
        elif device.encoding != encoding:
            self._dirty.add(device_id)
        device.last_seen_ms = now_ms
        device.heard_at = self._clock.monotonic()
        device.encoding = encoding
        self._routine.add(device_id)
        if not device.online:
            self._set_online(device, True, "message received")
        return device

    def accept_telemetry(self, product_id: str, device_id: str, body: dict[str, Any], encoding: str) -> TelemetryResult:
        kind = body.get("type")
        if not isinstance(kind, str) or not kind:
            raise Rejected("bad_telemetry", "telemetry needs a string field `type` (status, state, ...)")
        data = body.get("data")
        if not isinstance(data, dict):
            raise Rejected("bad_telemetry", f"telemetry of type {kind!r} needs an object `data`")
        metadata = body.get("metadata")
        snapshot: Any
        going_offline = False
        if kind == "status":
            status = data.get("status")
            if status not in ("online", "offline"):
                raise Rejected("bad_status", "status telemetry needs data.status online or offline")
            snapshot = data.get("state")
            if snapshot is not None and not isinstance(snapshot, dict):
                raise Rejected("bad_status", "data.state must be an object when present")
            going_offline = status == "offline"
        else:
            snapshot = data
        spec, device = self.resolve(product_id, device_id, metadata)
        if device is None and going_offline:
            # Typically the last will of a device we never saw online: nothing to record.
            raise Rejected("not_registered", f"offline status from {device_id!r}, which never registered")
        device = self.heard_from(spec, device_id, device, encoding)
        result = TelemetryResult(device)
        if snapshot:
            # Only built when somebody listens: this is the ingest hot path.
            changed: dict[str, Any] | None = {} if self.feed.listening else None
            state = device.state
            for name, value in snapshot.items():
                field_spec = spec.telemetry.get(name)
                reason = check_value(field_spec, value, check_range=False) if field_spec is not None else None
                if reason is not None:
                    result.dropped_fields.append((name, reason))
                    continue
                if changed is not None and (name not in state or state[name] != value):
                    changed[name] = value
                state[name] = value
            if changed:
                self.feed.publish(SiteChange(ChangeKind.STATE, device.device_id, device.product_id,
                                             device.last_seen_ms, changed))
        if isinstance(metadata, dict) and metadata != device.metadata:
            device.metadata = metadata
            self.version += 1
            self._dirty.add(device_id)
        if going_offline:
            self._set_online(device, False, "device reported offline")
        if result.dropped_fields:
            self._metrics.validation_warnings.inc({"product": spec.product_id}, len(result.dropped_fields))
        return result

    # ------------------------------------------------------------------ online / offline

    def _set_online(self, device: Device, online: bool, why: str) -> None:
        if device.online == online:
            return
        device.online = online
        self._online_count += 1 if online else -1
        now_ms = self._clock.wall_ms()
        word = "online" if online else "offline"
        log.info("device %s is %s (%s)", device.device_id, word, why)
        stored = self._store.add_event(
            NewEvent(
                device_id=device.device_id,
                product_id=device.product_id,
                event=word,
                level="info",
                declared=True,
                data={"reason": why},
                ts_ms=now_ms,
                received_at_ms=now_ms,
                source="gateway",
            )
        )
        self._dirty.add(device.device_id)
        if self.feed.listening:
            self.feed.publish(SiteChange(ChangeKind.LIFECYCLE, device.device_id, device.product_id, now_ms,
                                         {"status": word, "reason": why}, event_id=stored.id))

    def expire_silent(self) -> int:
        """Mark offline every online device silent for longer than offline_after_s."""
        if self._offline_after_s <= 0:
            return 0
        deadline = self._clock.monotonic() - self._offline_after_s
        silent = [d for d in self._devices.values() if d.online and d.heard_at < deadline]
        for device in silent:
            self._set_online(device, False, f"no message for {self._offline_after_s:g} s")
        return len(silent)

    def persist_changes(self, *, routine: bool = True) -> int:
        """Hand changed devices to the store: those with registration, online/offline or
        metadata changes, and with `routine` also those whose state or last-seen time
        changed. Returns how many."""
        dirty, self._dirty = self._dirty, set()
        if routine:
            dirty |= self._routine
            self._routine = set()
        else:
            self._routine -= dirty  # their whole row is written now
        for device_id in dirty:
            device = self._devices.get(device_id)
            if device is not None:
                self._store.save_device(device.to_record())
        return len(dirty)

    async def run(self, persist_every_s: float = 0.25, expire_every_s: float = 1.0) -> None:
        """Persist changed devices and expire silent ones, until cancelled; everything
        changed is persisted when cancelled."""
        loop = asyncio.get_running_loop()
        next_expiry = loop.time() + expire_every_s
        next_routine = loop.time() + self._routine_save_s
        try:
            while True:
                await asyncio.sleep(persist_every_s)
                routine = loop.time() >= next_routine
                self.persist_changes(routine=routine)
                if routine:
                    next_routine = loop.time() + self._routine_save_s
                if loop.time() >= next_expiry:
                    self.expire_silent()
                    next_expiry = loop.time() + expire_every_s
        finally:
            self.persist_changes()
