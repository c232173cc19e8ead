"""Binary WebSocket messages of the voice channel, protocol versions 1, 2 and 3 (SPEC §5,
reference/voice-anchors.md §1.5). The same codec reads the client's frames and builds ours.

    v1: the message is the payload (always audio)
    v2: ">HHIII" version=2, type, reserved, timestamp ms, payload length; then the payload
    v3: ">BBH"   type, reserved, payload length; then the payload

Headers are big-endian; the PCM inside stays little-endian. A header whose length disagrees with
the message is refused (ProtocolError), never trusted: the firmware trusts it, we must not.
No numpy here: the session can parse frames before it loads the audio modules.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass
from typing import Final

PROTOCOL_VERSIONS: Final = (1, 2, 3)
DEFAULT_VERSION: Final = 3  # when the client sends no Protocol-Version header
V2_HEADER: Final = struct.Struct(">HHIII")
V3_HEADER: Final = struct.Struct(">BBH")
MAX_PAYLOAD: Final = 65535  # v3's length field is 16 bits; also our default cap for v1/v2
_U32: Final = 1 << 32


class FrameType(enum.IntEnum):
    AUDIO = 0
    JSON = 1


class ProtocolError(ValueError):
    """A binary message that does not follow the negotiated protocol version."""


@dataclass(frozen=True, slots=True)
class BinaryFrame:
    type: FrameType
    payload: bytes
    timestamp_ms: int = 0  # v2 only (the client's clock, for echo cancellation); 0 otherwise


def parse_version(header: str | None) -> int:
    """The `Protocol-Version` header: "1", "2" or "3"; absent or blank → 3."""
    if header is None or not header.strip():
        return DEFAULT_VERSION
    text = header.strip()
    if text not in ("1", "2", "3"):
        raise ProtocolError(f"Protocol-Version {header!r} is not supported (1, 2 or 3)")
    return int(text)


@dataclass(frozen=True)
class BinaryCodec:
    """Encodes and decodes one connection's binary messages."""

    version: int = DEFAULT_VERSION
    max_payload: int = MAX_PAYLOAD  # larger payloads are refused both ways

    def __post_init__(self) -> None:
        if self.version not in PROTOCOL_VERSIONS:
            raise ProtocolError(f"protocol version {self.version} is not supported (1, 2 or 3)")
        limit = MAX_PAYLOAD if self.version == 3 else _U32 - 1
        if not 0 < self.max_payload <= limit:
            raise ValueError(f"max_payload must be 1..{limit} for protocol {self.version}, not {self.max_payload}")

    @property
    def header_size(self) -> int:
        return {1: 0, 2: V2_HEADER.size, 3: V3_HEADER.size}[self.version]

    def encode(self, payload: bytes | bytearray | memoryview, frame_type: FrameType = FrameType.AUDIO,
               timestamp_ms: int = 0) -> bytes:
        """One binary message. `timestamp_ms` (v2) wraps at 2**32 like the client's own counter."""
        size = len(payload)
        if size > self.max_payload:
            raise ProtocolError(f"payload of {size} bytes exceeds the maximum of {self.max_payload}")
        frame_type = _frame_type(frame_type)
        if self.version == 1:
            if frame_type is not FrameType.AUDIO:
                raise ProtocolError("protocol 1 carries audio only; send JSON as a text message")
            return bytes(payload)
        if self.version == 2:
            return V2_HEADER.pack(2, frame_type, 0, timestamp_ms % _U32, size) + payload
        return V3_HEADER.pack(frame_type, 0, size) + payload

    def audio(self, pcm: bytes | bytearray | memoryview, timestamp_ms: int = 0) -> bytes:
        """An audio message (server → client TTS audio)."""
        return self.encode(pcm, FrameType.AUDIO, timestamp_ms)

    def decode(self, message: bytes | bytearray | memoryview) -> BinaryFrame:
        """Parse one binary message; ProtocolError when it is not a valid frame."""
        data = bytes(message)
        if self.version == 1:
            self._check_size(len(data))
            return BinaryFrame(FrameType.AUDIO, data)
        header = V2_HEADER if self.version == 2 else V3_HEADER
        if len(data) < header.size:
            raise ProtocolError(f"message of {len(data)} bytes is shorter than the {header.size}-byte "
                                f"protocol {self.version} header")
        timestamp = 0
        if self.version == 2:
            version, raw_type, _reserved, timestamp, size = V2_HEADER.unpack_from(data)
            if version != 2:
                raise ProtocolError(f"protocol 2 header carries version {version}")
        else:
            raw_type, _reserved, size = V3_HEADER.unpack_from(data)
        actual = len(data) - header.size
        if size != actual:
            raise ProtocolError(f"header announces a {size}-byte payload but the message carries {actual}")
        self._check_size(size)
        return BinaryFrame(_frame_type(raw_type), data[header.size:], timestamp)

    def _check_size(self, size: int) -> None:
        if size > self.max_payload:
            raise ProtocolError(f"payload of {size} bytes exceeds the maximum of {self.max_payload}")


def _frame_type(value: int) -> FrameType:
    try:
        return FrameType(value)
    except ValueError:
        raise ProtocolError(f"unknown frame type {value} (0 audio, 1 JSON)") from None
