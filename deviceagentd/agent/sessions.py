"""Session history for the agent and the session routes, kept in the SQLite store.

Writes (`append`, `remember_device`) only enqueue, so the agent never waits on the disk;
reads see what was appended a moment ago even before it is committed. Each session keeps
its newest `max_messages` entries; sessions unused for `StoreSettings.sessions_max_age_days`
are deleted by the store's retention.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, replace
from typing import Any

from deviceagentd.agent.types import ChatMessage, Role, ToolCall, ToolResult
from deviceagentd.store import DEFAULT_SESSION_MAX_MESSAGES, SessionMessage, Store

log = logging.getLogger("deviceagentd.agent")

_ROLES: dict[str, Role] = {"user": "user", "assistant": "assistant"}


@dataclass
class SessionStore:
    store: Store
    max_messages: int = DEFAULT_SESSION_MAX_MESSAGES

    def __post_init__(self) -> None:
        if self.max_messages < 1:
            raise ValueError(f"max_messages must be at least 1, got {self.max_messages}")

    async def history(self, session_id: str, limit: int) -> list[ChatMessage]:
        """The newest `limit` messages (at most `max_messages`), oldest first."""
        records = await self.store.session_messages(session_id, limit=min(limit, self.max_messages))
        return [message for message in map(message_from_record, records) if message is not None]

    def append(self, session_id: str, message: ChatMessage) -> None:
        record = message_to_record(message)
        try:
            self.store.add_session_message(session_id, record, max_messages=self.max_messages)
        except (TypeError, ValueError) as exc:
            # History must not end a turn: a tool result JSON cannot hold, or text with a
            # lone surrogate, is stored as a readable approximation instead.
            log.warning("session %s: message stored approximately, it cannot be saved as is (%s)", session_id, exc)
            self.store.add_session_message(session_id, _storable(record), max_messages=self.max_messages)

    async def exists(self, session_id: str) -> bool:
        return await self.store.get_session(session_id) is not None

    async def delete(self, session_id: str) -> bool:
        """Delete the session's history; False if there was no such session."""
        if not await self.exists(session_id):
            return False
        self.store.delete_session(session_id)
        return True

    def remember_device(self, session_id: str, product_id: str | None, device_id: str | None) -> None:
        """Make this the device "it" refers to in the session's later turns."""
        self.store.set_session_device(session_id, product_id, device_id)

    async def default_device(self, session_id: str) -> tuple[str | None, str | None]:
        """(product_id, device_id) last remembered for the session, or (None, None)."""
        record = await self.store.get_session(session_id)
        if record is None:
            return None, None
        return record.product_id, record.device_id


def message_to_record(message: ChatMessage) -> SessionMessage:
    return SessionMessage(
        role=message.role,
        text=message.text,
        ts_ms=message.ts_ms,
        tool_calls=[call.to_json() for call in message.tool_calls],
        tool_results=[result.to_json() for result in message.tool_results],
        interrupted=message.interrupted,
    )


def message_from_record(record: SessionMessage) -> ChatMessage | None:
    """The agent's message, or None for a role this version does not know (written by a newer one)."""
    role = _ROLES.get(record.role)
    if role is None:
        return None
    return ChatMessage(
        role=role,
        text=record.text,
        ts_ms=record.ts_ms,
        tool_calls=[_tool_call(item) for item in record.tool_calls],
        tool_results=[_tool_result(item) for item in record.tool_results],
        interrupted=record.interrupted,
    )


def _tool_call(item: dict[str, Any]) -> ToolCall:
    arguments = item.get("arguments")
    return ToolCall(
        id=str(item.get("id", "")),
        name=str(item.get("name", "")),
        arguments=arguments if isinstance(arguments, dict) else {},
    )


def _tool_result(item: dict[str, Any]) -> ToolResult:
    error = item.get("error")
    return ToolResult(
        id=str(item.get("id", "")),
        name=str(item.get("name", "")),
        ok=bool(item.get("ok", False)),
        result=item.get("result"),
        error=None if error is None else str(error),
    )


def _storable(record: SessionMessage) -> SessionMessage:
    """A copy the store accepts: non-JSON values as their str(), lone surrogates as '?'."""

    def jsonable(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        value: list[dict[str, Any]] = json.loads(json.dumps(items, default=str))
        return value

    return replace(
        record,
        role=_utf8(record.role),
        text=_utf8(record.text),
        tool_calls=jsonable(record.tool_calls),
        tool_results=jsonable(record.tool_results),
    )


def _utf8(text: str) -> str:
    return text.encode("utf-8", errors="replace").decode("utf-8")
