"""When the registry hands devices to the store: registrations, online/offline and metadata at
once; state values and last-seen time only every `routine_save_s` (SD card wear); all of it
when the registry stops."""

from __future__ import annotations

import asyncio
from pathlib import Path

from deviceagentd.core.catalog import load_catalog
from deviceagentd.core.metrics import Metrics
from deviceagentd.core.registry import DeviceRegistry
from deviceagentd.store.records import DeviceRecord, EventRecord, NewEvent

PRODUCTS = Path(__file__).resolve().parent.parent / "etc" / "deviceagentd" / "products"


class RecordingStore:
    def __init__(self) -> None:
        self.saved: list[DeviceRecord] = []

    def save_device(self, record: DeviceRecord) -> None:
        self.saved.append(record)

    def add_event(self, event: NewEvent) -> EventRecord:
        return EventRecord(**vars(event), id=1)

    def take(self) -> list[DeviceRecord]:
        saved, self.saved = self.saved, []
        return saved


def state(temperature: float) -> dict[str, object]:
    return {"type": "state", "data": {"temperature": temperature}}


def make_registry(store: RecordingStore, routine_save_s: float = 60.0) -> DeviceRegistry:
    return DeviceRegistry(load_catalog(PRODUCTS), store, Metrics(), offline_after_s=0, routine_save_s=routine_save_s)


def test_a_new_device_is_saved_at_the_next_tick_but_a_state_report_waits_for_the_routine_save() -> None:
    store = RecordingStore()
    registry = make_registry(store)
    registry.accept_telemetry("thermostat", "t-1", state(20.0), "json")
    assert registry.persist_changes(routine=False) == 1
    assert [(r.device_id, r.online, r.state) for r in store.take()] == [("t-1", True, {"temperature": 20.0})]

    registry.accept_telemetry("thermostat", "t-1", state(21.0), "json")
    registry.accept_telemetry("thermostat", "t-1", state(22.0), "json")
    assert registry.persist_changes(routine=False) == 0
    assert store.take() == []

    assert registry.persist_changes(routine=True) == 1
    assert [r.state for r in store.take()] == [{"temperature": 22.0}]
    assert registry.persist_changes(routine=True) == 0


def test_going_offline_and_new_metadata_are_not_held_back() -> None:
    store = RecordingStore()
    registry = make_registry(store)
    registry.accept_telemetry("thermostat", "t-1", state(20.0), "json")
    registry.persist_changes(routine=False)
    store.take()

    registry.accept_telemetry("thermostat", "t-1", {"type": "status", "data": {"status": "offline"}}, "json")
    assert registry.persist_changes(routine=False) == 1
    assert [r.online for r in store.take()] == [False]

    registry.accept_telemetry("thermostat", "t-1", {**state(20.5), "metadata": {"room": "101"}}, "json")
    assert registry.persist_changes(routine=False) == 1
    assert [(r.online, r.metadata) for r in store.take()] == [(True, {"room": "101"})]
    # the whole row was written: nothing left for the routine save
    assert registry.persist_changes(routine=True) == 0


def test_a_new_encoding_is_saved_at_once() -> None:
    store = RecordingStore()
    registry = make_registry(store)
    registry.accept_telemetry("thermostat", "t-1", state(20.0), "json")
    registry.persist_changes(routine=False)
    store.take()
    registry.accept_telemetry("thermostat", "t-1", state(20.0), "cbor")
    assert registry.persist_changes(routine=False) == 1
    assert [r.encoding for r in store.take()] == ["cbor"]


async def test_run_saves_routine_changes_on_schedule_and_everything_when_stopped() -> None:
    store = RecordingStore()
    registry = make_registry(store, routine_save_s=0.2)
    registry.accept_telemetry("thermostat", "t-1", state(20.0), "json")
    task = asyncio.create_task(registry.run(persist_every_s=0.01))
    try:
        async with asyncio.timeout(5):
            while not store.saved:
                await asyncio.sleep(0.01)
        store.take()
        registry.accept_telemetry("thermostat", "t-1", state(21.0), "json")
        async with asyncio.timeout(5):
            while not store.saved:  # the routine save comes round
                await asyncio.sleep(0.01)
        assert [r.state for r in store.take()] == [{"temperature": 21.0}]
    finally:
        registry.accept_telemetry("thermostat", "t-1", state(23.0), "json")
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert [r.state for r in store.take()] == [{"temperature": 23.0}]


async def test_routine_save_of_zero_saves_with_every_tick() -> None:
    store = RecordingStore()
    registry = make_registry(store, routine_save_s=0.0)
    registry.accept_telemetry("thermostat", "t-1", state(20.0), "json")
    task = asyncio.create_task(registry.run(persist_every_s=0.01))
    try:
        for value in (21.0, 22.0):
            async with asyncio.timeout(5):
                while not store.saved:
                    await asyncio.sleep(0.005)
            store.take()
            registry.accept_telemetry("thermostat", "t-1", state(value), "json")
        async with asyncio.timeout(5):
            while not store.saved:
                await asyncio.sleep(0.005)
        assert store.take()[-1].state == {"temperature": 22.0}
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
