"""What the HTTP routes need from the rest of the daemon, passed in (no globals)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from aiohttp import web

from deviceagentd.agent.runner import Agent
from deviceagentd.agent.types import ChatMessage
from deviceagentd.core.catalog import Catalog
from deviceagentd.core.commands import CommandService
from deviceagentd.core.metrics import Metrics
from deviceagentd.core.registry import DeviceRegistry
from deviceagentd.http.live import LiveHub
from deviceagentd.store.records import CommandRecord, EventRecord

if TYPE_CHECKING:
    from deviceagentd.mcp.context import McpContext
    from deviceagentd.schedules.lazy import LazySchedules


class EventQueries(Protocol):
    """The reads the HTTP routes make (the Store)."""

    @property
    def healthy(self) -> bool: ...

    async def query_events(self, device_id: str | None, *, limit: int, before: int | None = None,
                           event: str | None = None, since_ms: int | None = None,
                           levels: frozenset[str] | None = None) -> list[EventRecord]: ...

    async def events_after(self, after: int, *, limit: int, device_ids: frozenset[str] | None = None,
                           product_ids: frozenset[str] | None = None) -> list[EventRecord]: ...

    async def device_commands(self, device_id: str, *, limit: int,
                              before: tuple[int, str] | None = None) -> list[CommandRecord]: ...


class BrokerState(Protocol):
    @property
    def is_connected(self) -> bool: ...


class SessionAdmin(Protocol):
    async def exists(self, session_id: str) -> bool: ...
    async def history(self, session_id: str, limit: int) -> list[ChatMessage]: ...
    async def delete(self, session_id: str) -> bool: ...


class FrameUploads(Protocol):
    async def add(self, session_id: str, device_id: str | None, mime_type: str, image_base64: str,
                  source: str | None) -> Any: ...


class VoicePlatformView(Protocol):
    """The voice platform as the console shows it (voiceplatform.console.VoicePlatformConsole)."""

    def overview(self) -> dict[str, Any]: ...

    def scene(self, scene_id: str) -> Any | None: ...

    async def run_scene(self, scene: Any) -> dict[str, Any]: ...


@dataclass
class AgentContext:
    """What /api/chat, the session routes and /api/vision/frames need (on both ports)."""

    agent: Agent
    sessions: SessionAdmin
    frames: FrameUploads
    # Vision uploads are larger than other bodies: base64 of the frame limit plus the JSON around it.
    vision_body_bytes: int


@dataclass
class HttpContext:
    version: str
    catalog: Catalog
    registry: DeviceRegistry
    commands: CommandService
    store: EventQueries
    metrics: Metrics
    broker: BrokerState
    # Extra facts about the broker connection for /api/health (state, last error, ...).
    broker_detail: Callable[[], dict[str, Any]]
    # Storage facts for /api/health; a false "ok" makes the gateway degraded (see daemon.py).
    storage_detail: Callable[[], dict[str, Any]] = field(default=lambda: {"ok": True})
    tokens: list[str] = field(default_factory=list)
    max_body_bytes: int = 1048576
    agent: AgentContext | None = None
    started_monotonic: float = field(default_factory=time.monotonic)
    # Timers, alarms and recurring actions (/api/schedules).
    schedules: LazySchedules | None = None
    # The MCP server at /mcp; None when mcp.enabled is false.
    mcp: McpContext | None = None
    # What the console needs to know of the gateway beyond health: the voice port and whether it
    # and this port serve TLS, the site's time zone, the agent's provider.
    gateway_detail: Callable[[], dict[str, Any]] = dict
    # The uplink's health section; None while the uplink is off.
    uplink_detail: Callable[[], dict[str, Any]] | None = None
    voice_platform: VoicePlatformView | None = None
    # The fan-out of /api/stream (None: the app makes its own, for tests).
    live: LiveHub | None = None


CONTEXT = web.AppKey("context", HttpContext)


def context_of(request: web.Request) -> HttpContext:
    return request.app[CONTEXT]


