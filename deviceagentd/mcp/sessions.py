"""Sessions of clients on the 2025 protocol versions (initialize handshake, `Mcp-Session-Id`).

A session belongs to the client (token) that opened it: another token presenting its id finds
nothing. Sessions idle longer than `idle_s` end; when `max_sessions` are open, a new one ends the
least recently used session that has no call running (its client gets 404 and initializes again,
as the protocol says).
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from deviceagentd.mcp.jsonrpc import RequestId


@dataclass
class Session:
    session_id: str
    protocol_version: str
    client: str
    client_info: dict[str, Any]
    last_used: float
    initialized: bool = False
    # Running tool calls by JSON-RPC id, so notifications/cancelled can stop one.
    inflight: dict[RequestId, asyncio.Task[Any]] = field(default_factory=dict)


class SessionsFull(Exception):
    pass


class Sessions:
    def __init__(self, max_sessions: int, idle_s: float, monotonic: Callable[[], float] = time.monotonic) -> None:
        self._max = max_sessions
        self._idle_s = idle_s
        self._monotonic = monotonic
        self._open: OrderedDict[str, Session] = OrderedDict()

    def __len__(self) -> int:
        return len(self._open)

    def open(self, protocol_version: str, client: str, client_info: dict[str, Any]) -> Session:
        self._expire()
        if len(self._open) >= self._max:
            idle = next((s for s in self._open.values() if not s.inflight), None)
            if idle is None:
                raise SessionsFull(f"{self._max} MCP sessions are busy; try again shortly")
            del self._open[idle.session_id]
        # Visible ASCII, unguessable (the spec's requirement for Mcp-Session-Id).
        session = Session(secrets.token_urlsafe(24), protocol_version, client, client_info, self._monotonic())
        self._open[session.session_id] = session
        return session

    def get(self, session_id: str, client: str) -> Session | None:
        self._expire()
        session = self._open.get(session_id)
        if session is None or session.client != client:
            return None
        session.last_used = self._monotonic()
        self._open.move_to_end(session_id)
        return session

    def close(self, session_id: str, client: str) -> bool:
        session = self.get(session_id, client)
        if session is None:
            return False
        del self._open[session_id]
        for task in session.inflight.values():
            task.cancel()
        return True

    def _expire(self) -> None:
        cutoff = self._monotonic() - self._idle_s
        while self._open:
            oldest = next(iter(self._open.values()))
            if oldest.last_used >= cutoff or oldest.inflight:
                return
            del self._open[oldest.session_id]
