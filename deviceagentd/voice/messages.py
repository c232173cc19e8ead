"""The control messages a voice client sends, one small dataclass each, and `parse()`.

Every check is strict and bounded: a message that does not fit raises `BadMessage(code,
message)`, which the session sends back as an `error` (the connection goes on). hello is parsed
by `parse_hello` (its provider is chosen by the service first, see VoiceSession).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from deviceagentd.agent.types import valid_session_id
from deviceagentd.voice.audio import INPUT_RATES, AudioFormatError, AudioParams, parse_audio_params
from deviceagentd.voice.protocol import DEFAULT_VERSION

MAX_FIELD_CHARS: Final = 128
MAX_VISION_REFS: Final = 8
MODES: Final = ("auto", "manual")
MESSAGE_TYPES: Final = ("hello", "listen", "stop", "abort", "goodbye", "mcp", "iot", "ping")
# XiaoZhi messages accepted and not answered: `iot` (descriptors and states of firmware before
# 1.8; MCP replaced it) and `ping` (xiaozhi-esp32-server answers it only when configured to).
QUIET_TYPES: Final = ("iot", "ping")
# How hello's audio_params are read when fields are missing.
DEFAULT_INPUT: Final = AudioParams(sample_rate=16000, frame_duration_ms=60)


class BadMessage(Exception):
    """A message we cannot take; `code` and `message` go to the client."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class Hello:
    """What a hello asks for (the provider is settled separately)."""

    version: int
    session_id: str
    product_id: str | None
    device_id: str | None
    language: str | None
    audio: AudioParams
    xiaozhi: bool = False  # the client speaks the XiaoZhi dialect (see `speaks_xiaozhi`)
    mcp: bool = False  # features.mcp: the client is an MCP server of its own tools


@dataclass(frozen=True)
class ListenStart:
    mode: str | None  # auto | manual; None: the session's current mode
    task_id: str | None


@dataclass(frozen=True)
class WakeWord:
    """`listen {state: "detect"}`: a XiaoZhi device heard its wake word (or sends typed text)."""

    text: str | None


@dataclass(frozen=True)
class Stop:
    """`stop`, or `listen {state: "stop"}`: the end of a manual utterance."""

    frame_ids: tuple[str, ...]


@dataclass(frozen=True)
class Abort:
    pass


@dataclass(frozen=True)
class Goodbye:
    pass


@dataclass(frozen=True)
class Mcp:
    """`{"type": "mcp", "payload": <JSON-RPC 2.0>}`: the device's side of the MCP session (checked
    by the MCP client, mcp.py)."""

    payload: Any


@dataclass(frozen=True)
class Quiet:
    """A message accepted and not answered (QUIET_TYPES)."""

    kind: str


ClientMessage = ListenStart | WakeWord | Stop | Abort | Goodbye | Mcp | Quiet


def message_type(message: Any) -> str:
    """The `type` of a control message; BadMessage when it is not a JSON object with one."""
    if not isinstance(message, dict) or not isinstance(message.get("type"), str):
        raise BadMessage("bad_message", "a control message is a JSON object with a string \"type\"")
    kind: str = message["type"]
    return kind


def parse(message: dict[str, Any]) -> ClientMessage:
    """Any message but hello (see `message_type` for the envelope)."""
    kind = message["type"]
    if kind == "listen":
        return _listen(message)
    if kind == "stop":
        return Stop(vision_refs(message.get("visionRefs")))
    if kind == "abort":
        return Abort()
    if kind == "goodbye":
        return Goodbye()
    if kind == "mcp":
        return Mcp(message.get("payload"))
    if kind in QUIET_TYPES:
        return Quiet(kind)
    raise BadMessage("unknown_type", f"unknown message type {kind[:32]!r} (known: {', '.join(MESSAGE_TYPES)})")


def _listen(message: dict[str, Any]) -> ClientMessage:
    state = message.get("state", "start")
    if state == "stop":
        return Stop(vision_refs(message.get("visionRefs")))
    if state == "detect":
        text = message.get("text")
        return WakeWord(text if isinstance(text, str) and text.strip() else None)
    if state != "start":
        raise BadMessage("bad_message", "listen state must be start or stop")
    mode = message.get("mode")
    mode = "auto" if mode == "realtime" else mode  # XiaoZhi's realtime: no echo cancellation here
    if mode is not None and mode not in MODES:
        raise BadMessage("bad_message", "listen mode must be auto or manual")
    task_id = message.get("taskId")
    if task_id is not None and (not isinstance(task_id, str) or len(task_id) > MAX_FIELD_CHARS):
        raise BadMessage("bad_message", f"taskId must be a string of at most {MAX_FIELD_CHARS} characters")
    return ListenStart(mode, task_id)


def vision_refs(refs: Any) -> tuple[str, ...]:
    """`visionRefs` as in /api/chat: a list of {frameId} (at most 8)."""
    if refs is None:
        return ()
    if not isinstance(refs, list) or len(refs) > MAX_VISION_REFS:
        raise BadMessage("bad_message", f"visionRefs must be a list of at most {MAX_VISION_REFS} frame references")
    ids = []
    for index, ref in enumerate(refs):
        frame_id = ref.get("frameId") if isinstance(ref, dict) else None
        if not isinstance(frame_id, str) or not frame_id or len(frame_id) > MAX_FIELD_CHARS:
            raise BadMessage("bad_message", f"visionRefs[{index}].frameId is required (from /api/vision/frames)")
        ids.append(frame_id)
    return tuple(ids)


# ---------------------------------------------------------------------------------- hello


def hello_text(message: dict[str, Any], name: str, defaults: Mapping[str, str]) -> str | None:
    """A short text field of hello, else its default from the query string."""
    value = message.get(name, defaults.get(name))
    if value is None:
        return None
    if not isinstance(value, str) or not value or len(value) > MAX_FIELD_CHARS:
        raise BadMessage("bad_hello", f"{name} must be a non-empty string of at most {MAX_FIELD_CHARS} characters")
    return value


def speaks_xiaozhi(message: dict[str, Any]) -> bool:
    """A hello from XiaoZhi firmware or py-xiaozhi: both send `features` (EMQX-style clients do
    not; `transport: "websocket"` alone says nothing, scripts/voice-client sends it too)."""
    return isinstance(message.get("features"), dict)


def parse_hello(message: dict[str, Any], header_version: int | None, defaults: Mapping[str, str]) -> Hello:
    """The hello's fields. `header_version` is the Protocol-Version header (None when absent),
    which decides the framing; hello's `version` may not contradict it."""
    version = message.get("version")
    if version is not None and (isinstance(version, bool) or version not in (1, 2, 3)):
        raise BadMessage("bad_hello", f"version must be 1, 2 or 3, not {version!r}")
    if header_version is not None and version is not None and version != header_version:
        raise BadMessage("bad_hello",
                         f"hello version {version} contradicts the Protocol-Version header ({header_version})")
    try:
        audio = parse_audio_params(message.get("audio_params"), INPUT_RATES, DEFAULT_INPUT)
    except AudioFormatError as exc:
        raise BadMessage("unsupported_audio", str(exc)) from None
    session_id = hello_text(message, "sessionId", defaults)
    if session_id is not None and not valid_session_id(session_id):
        raise BadMessage("bad_hello", "sessionId must be text without control characters")
    features = message.get("features")

    return Hello(
        version=header_version or version or DEFAULT_VERSION,
        session_id=session_id or f"voice-{uuid.uuid4().hex[:16]}",
        product_id=hello_text(message, "productId", defaults),
        device_id=hello_text(message, "deviceId", defaults),
        language=hello_text(message, "language", defaults),
        audio=audio,
        xiaozhi=speaks_xiaozhi(message),
        mcp=isinstance(features, dict) and features.get("mcp") is True,
    )
