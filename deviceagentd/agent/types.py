"""The agent's vocabulary: messages, tool calls, the events a turn produces, and the two
interfaces every provider works against (Tools, Provider)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

Role = Literal["user", "assistant"]


@dataclass
class ToolCall:
    id: str
    name: str
    arguments: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "arguments": self.arguments}


@dataclass(frozen=True)
class ToolFailure:
    """Why a tool call failed, as facts, for a provider that words it in the user's language
    (the offline engine answers Chinese requests wholly in Chinese). Not sent to clients."""

    kind: str
    """device_offline, timeout, broker_down, invalid_params, refused (the device answered an error
    code), no_device, other."""
    device_id: str | None = None
    product_id: str | None = None
    command: str | None = None
    code: int | None = None
    """The device's answer code (refused), or the seconds waited (timeout)."""
    detail: str | None = None
    """The device's own message (refused), or the reason in English."""


@dataclass
class ToolResult:
    """`result` when ok, else `error`: a sentence a user understands ("the thermostat did not answer")."""

    id: str
    name: str
    ok: bool
    result: Any = None
    error: str | None = None
    failure: ToolFailure | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id, "name": self.name, "ok": self.ok}
        if self.ok:
            out["result"] = self.result
        else:
            out["error"] = self.error
        return out


@dataclass
class ChatMessage:
    """One entry of a session's history."""

    role: Role
    text: str
    ts_ms: int
    tool_calls: list[ToolCall] = field(default_factory=list)
    tool_results: list[ToolResult] = field(default_factory=list)
    interrupted: bool = False


@dataclass(frozen=True)
class ToolSpec:
    """A tool as a model sees it: JSON Schema parameters (OpenAI function-calling shape)."""

    name: str
    description: str
    parameters: dict[str, Any]

    def to_openai(self) -> dict[str, Any]:
        return {
            "type": "function",
            "function": {"name": self.name, "description": self.description, "parameters": self.parameters},
        }


@dataclass(frozen=True)
class ImageInput:
    """A vision frame handed to a provider (already validated and loaded)."""

    frame_id: str
    mime_type: str
    data: bytes
    captured_at: str
    source: str


@dataclass
class TurnContext:
    session_id: str
    message: str
    # Earlier messages of the session, oldest first (the current message is not included).
    history: list[ChatMessage]
    # The session's default device ("it", "the temperature" refer to it), if any.
    product_id: str | None = None
    device_id: str | None = None
    images: list[ImageInput] = field(default_factory=list)
    # Tools this turn has besides the site's (a speaker's own, see agent/extra_tools.py).
    extra_tools: tuple[ToolSpec, ...] = ()
    # The Device-Id of the speaker a voice turn came from (alarms and reminders ring there).
    speaker_id: str | None = None


@dataclass(frozen=True)
class Delta:
    """A piece of reply text, in order."""

    text: str


@dataclass(frozen=True)
class ToolCallStarted:
    call: ToolCall


@dataclass(frozen=True)
class ToolCallFinished:
    result: ToolResult


TurnEvent = Delta | ToolCallStarted | ToolCallFinished


class Tools(Protocol):
    """What a provider may do with the site: built from the DeviceSpecs and the registry."""

    def specs(self) -> list[ToolSpec]: ...

    async def call(self, call: ToolCall, context: TurnContext) -> ToolResult:
        """Run one tool call. Never raises for bad arguments or device errors: those come back
        as ToolResult(ok=False, error=<words for a person>)."""
        ...


class Provider(Protocol):
    """Turns one user message into reply text, calling tools as needed.

    `run` yields events as they happen: ToolCallStarted before a tool runs, ToolCallFinished
    after, Delta for reply text. It runs the tool loop itself (bounded). Cancelling the
    iteration (interrupt, client gone) must stop all its work promptly.
    """

    name: str

    def run(self, context: TurnContext, tools: Tools) -> AsyncIterator[TurnEvent]: ...


class ProviderUnavailable(Exception):
    """The provider could not be reached (network, timeouts, 5xx after retries): the agent
    falls back to the local provider and says so."""


class ProviderError(Exception):
    """The provider answered, but with something unusable (malformed stream, endless tool
    loop); the turn ends with an `error` event carrying `code`."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


MAX_SESSION_ID_LEN = 128
# What the OpenAPI document says a sessionId is: 1-128 characters, no control characters.
_SESSION_ID = re.compile(rf"[^\x00-\x1f\x7f-\x9f]{{1,{MAX_SESSION_ID_LEN}}}")


def valid_session_id(value: str) -> bool:
    """1 to 128 characters without C0/C1 control characters (a session id names a row and shows
    up in logs; anything else a client picks is its business)."""
    return _SESSION_ID.fullmatch(value) is not None
