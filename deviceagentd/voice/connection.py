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


@dataclass
class SessionRegistry:
    """The open voice sessions, at most `max_sessions`, in the order they opened."""

    max_sessions: int
    _open: dict[OpenSession, None] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self._open)

    @property
    def full(self) -> bool:
        return len(self._open) >= self.max_sessions

    def add(self, session: OpenSession) -> None:
        self._open[session] = None

    def discard(self, session: OpenSession) -> None:
        self._open.pop(session, None)

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
        sessions = list(self._open)
        if sessions:
            await asyncio.gather(*(s.shutdown() for s in sessions), return_exceptions=True)
