"""What the MCP server needs from the daemon, built at start without loading the server itself."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from deviceagentd.config import McpConfig
from deviceagentd.core.clock import Clock
from deviceagentd.core.commands import CommandService
from deviceagentd.core.metrics import Metrics
from deviceagentd.core.registry import DeviceRegistry
from deviceagentd.store.records import EventRecord, McpCallRecord

if TYPE_CHECKING:
    from deviceagentd.schedules.lazy import LazySchedules
    from deviceagentd.voiceplatform.rooms import Rooms


class McpStore(Protocol):
    async def query_events(self, device_id: str | None, *, limit: int, before: int | None = None,
                           event: str | None = None, since_ms: int | None = None,
                           levels: frozenset[str] | None = None) -> list[EventRecord]: ...

    def add_mcp_call(self, record: McpCallRecord) -> None: ...


@dataclass
class McpContext:
    config: McpConfig
    # Tokens of the rest of the API: they may call every tool.
    api_tokens: list[str]
    registry: DeviceRegistry
    commands: CommandService
    schedules: LazySchedules
    store: McpStore
    metrics: Metrics
    clock: Clock
    version: str
    rooms: Rooms | None = None
