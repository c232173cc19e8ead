"""Who asked for something: a schedule's `createdBy`, and a command's `origin` in the command log.

One shape for both, so a client reads the agent's session and speaker, or an MCP client's name,
the same way wherever it meets them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Origin:
    """Who asked: the channel, and for the agent the session and speaker it came from (so "cancel
    my alarm" finds that speaker's alarms), for MCP the client's name."""

    channel: str  # http | mcp | agent (a command's origin also: schedule, voiceplatform, uplink)
    session_id: str | None = None
    speaker: str | None = None
    client: str | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"channel": self.channel}
        for key, value in (("sessionId", self.session_id), ("speaker", self.speaker), ("client", self.client)):
            if value is not None:
                out[key] = value
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Origin:
        return cls(str(data.get("channel", "http")), data.get("sessionId"), data.get("speaker"), data.get("client"))
