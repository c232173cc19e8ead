"""SQLite storage: devices, events, commands; batched writes on one writer thread."""

from deviceagentd.store.errors import SchemaTooNewError, StoreError
from deviceagentd.store.records import CommandRecord, DeviceRecord, EventRecord, NewEvent
from deviceagentd.store.settings import StoreSettings
from deviceagentd.store.store import Store, StoreStats, wall_clock_ms

__all__ = [
    "CommandRecord",
    "DeviceRecord",
    "EventRecord",
    "NewEvent",
    "SchemaTooNewError",
    "Store",
    "StoreError",
    "StoreSettings",
    "StoreStats",
    "wall_clock_ms",
]
