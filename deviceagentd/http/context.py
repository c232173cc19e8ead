"""What the HTTP routes need from the rest of the daemon, passed in (no globals)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from aiohttp import web

from deviceagentd.agent.runner import Agent
from deviceagentd.agent.types import ChatMessage
from deviceagentd.core.catalog import Catalog
from deviceagentd.core.commands import CommandService
from deviceagentd.core.metrics import Metrics
from deviceagentd.core.registry import DeviceRegistry
from deviceagentd.store.records import EventRecord


class EventQueries(Protocol):
    @property
    def healthy(self) -> bool: ...

    async def query_events(self, device_id: str | None, *, limit: int, before: int | None = None,
                           event: str | None = None, since_ms: int | None = None,
                           levels: frozenset[str] | None = None) -> list[EventRecord]: ...


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


CONTEXT = web.AppKey("context", HttpContext)


def context_of(request: web.Request) -> HttpContext:
    return request.app[CONTEXT]


