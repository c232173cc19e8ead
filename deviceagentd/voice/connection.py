"""What the WebSocket handshake told us about a voice client, and the registry of open sessions.

Nothing here loads an audio module or imports the rest of voice/: the server (which adds
sessions), the service (which owns the registry and finds a speaker's session for an
announcement) and the sessions themselves all depend on this module, never on each other.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True)
class Connection:
    """What the handshake told us about the client."""

    version: int | None  # the Protocol-Version header; None when absent
    device_id: str  # the Device-Id header (a XiaoZhi speaker's MAC address), "" when absent
    client_id: str
    remote: str
    query: dict[str, str]  # hello field defaults (server.QUERY_DEFAULTS)


class OpenSession(Protocol):
    """An open /ws/voice connection as the rest of the gateway sees it."""

    def speaks_for(self, device_id: str) -> bool:
        """True when this session has said hello and belongs to `device_id` (its Device-Id
        header or its hello's deviceId)."""
        ...

    async def announce(self, text: str, language: str | None = None) -> bool:
        """Speak `text` outside any turn; see VoiceService.announce."""
        ...

    async def shutdown(self) -> None:
        """Close the connection (1001) and wait until its pipeline has stopped."""
        ...

    async def evict(self) -> None:
        """Close a connection that has not said hello, to make room for a newer one."""
        ...


def waiting_limit(max_sessions: int) -> int:
    """Connections allowed to wait for their hello at once."""
    return max(MIN_WAITING, 2 * max_sessions)


MIN_WAITING = 16


@dataclass
class SessionRegistry:
    """The voice connections: at most `max_sessions` that said hello (each holds a voice slot),
    in the order they opened, and at most `max_waiting` that have not said hello yet.

    A connection takes a voice slot only with its hello, so idle connections cannot hold the
    slots; when too many wait for their hello, the oldest waiting one is evicted (a speaker
    sends hello right after connecting, so only a connection that never will is hurt).
    """

    max_sessions: int
    max_waiting: int = 0
    """0: waiting_limit(max_sessions)."""
    _open: dict[OpenSession, None] = field(default_factory=dict)
    _waiting: dict[OpenSession, None] = field(default_factory=dict)
    _evicting: set[asyncio.Task[None]] = field(default_factory=set)

    def __post_init__(self) -> None:
        if self.max_waiting <= 0:
            self.max_waiting = waiting_limit(self.max_sessions)

    def __len__(self) -> int:
        """Sessions that said hello (holding a voice slot)."""
        return len(self._open)

    @property
    def waiting(self) -> int:
        """Connections that have not said hello yet."""
        return len(self._waiting)

    @property
    def full(self) -> bool:
        return len(self._open) >= self.max_sessions

    def add(self, session: OpenSession) -> None:
        """A new connection, waiting for its hello; the oldest waiting one is evicted if too
        many wait (in the background: its closing handshake must not delay the new one)."""
        self._waiting[session] = None
        if len(self._waiting) > self.max_waiting:
            oldest = next(iter(self._waiting))
            del self._waiting[oldest]
            task = asyncio.ensure_future(oldest.evict())
            self._evicting.add(task)
            task.add_done_callback(self._evicting.discard)

    def promote(self, session: OpenSession) -> bool:
        """The session said hello: it takes a voice slot, if one is free (else False)."""
        if self.full:
            return False
        self._waiting.pop(session, None)
        self._open[session] = None
        return True

    def discard(self, session: OpenSession) -> None:
        self._open.pop(session, None)
        self._waiting.pop(session, None)

    def for_device(self, device_id: str) -> OpenSession | None:
        """The newest session that said hello for this speaker (a speaker that reconnected may
        briefly have two), or None."""
        if not device_id:
            return None
        for session in reversed(self._open):
            if session.speaks_for(device_id):
                return session
        return None

    async def close_all(self) -> None:
        sessions = [*self._open, *self._waiting]
        if sessions or self._evicting:
            await asyncio.gather(*(s.shutdown() for s in sessions), *self._evicting, return_exceptions=True)
