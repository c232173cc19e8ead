"""The extension point for requests from the cloud (commands, chat): the uplink subscribes to
the handler's topics on its connection and hands it every message that arrives there; a reply
goes into the outbox (so it survives a WAN loss) and out with its correlation data."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True)
class CloudReply:
    topic: str
    payload: bytes
    correlation_data: bytes | None = None
    content_type: str = "application/json"
    device_id: str = ""   # the outbox orders replies with that device's other rows


class CloudRequestHandler(Protocol):
    def subscriptions(self) -> list[str]: ...

    async def handle(self, topic: str, payload: bytes, properties: dict[str, Any]) -> CloudReply | None: ...
