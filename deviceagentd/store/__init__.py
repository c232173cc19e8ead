"""SQLite storage: devices, events, commands, session history, voice platform tokens; batched writes on
one writer thread."""

from deviceagentd.store.errors import SchemaTooNewError, StoreError
from deviceagentd.store.records import (
    CommandRecord,
    DeviceRecord,
    EventRecord,
    NewEvent,
    SessionMessage,
    SessionRecord,
    VoiceTokenRecord,
)
from deviceagentd.store.settings import StoreSettings
from deviceagentd.store.store import DEFAULT_SESSION_MAX_MESSAGES, Store, StoreStats, wall_clock_ms

__all__ = [
    "DEFAULT_SESSION_MAX_MESSAGES",
    "CommandRecord",
    "DeviceRecord",
    "EventRecord",
    "NewEvent",
    "SchemaTooNewError",
    "SessionMessage",
    "SessionRecord",
    "Store",
    "StoreError",
    "StoreSettings",
    "StoreStats",
    "VoiceTokenRecord",
    "wall_clock_ms",
]
