"""Binary frames of the voice WebSocket, protocol versions 1, 2 and 3 (SPEC §5)."""

from __future__ import annotations

import struct

import pytest

from deviceagentd.voice.protocol import (
    MAX_PAYLOAD,
    BinaryCodec,
    BinaryFrame,
    FrameType,
    ProtocolError,
    parse_version,
)

PCM = bytes(range(256)) * 7 + b"\x01"  # 1793 bytes, odd on purpose: the codec does not care


@pytest.mark.parametrize("version", [1, 2, 3])
@pytest.mark.parametrize("payload", [b"", b"\x00", PCM, bytes(MAX_PAYLOAD)], ids=["empty", "1", "pcm", "max"])
def test_audio_round_trips(version: int, payload: bytes) -> None:
    codec = BinaryCodec(version)
    message = codec.audio(payload)
    assert len(message) == codec.header_size + len(payload)
    assert codec.decode(message) == BinaryFrame(FrameType.AUDIO, payload)


@pytest.mark.parametrize("version", [2, 3])
def test_json_round_trips(version: int) -> None:
    codec = BinaryCodec(version)
    payload = b'{"type":"listen","state":"start"}'
    assert codec.decode(codec.encode(payload, FrameType.JSON)) == BinaryFrame(FrameType.JSON, payload)


def test_v3_layout_is_big_endian_type_reserved_length() -> None:
    message = BinaryCodec(3).audio(PCM)
    assert message[:4] == bytes([0, 0]) + struct.pack(">H", len(PCM))
    assert message[4:] == PCM
    assert BinaryCodec(3).encode(b"{}", FrameType.JSON)[:4] == b"\x01\x00\x00\x02"


def test_v2_layout_carries_version_and_timestamp() -> None:
    codec = BinaryCodec(2)
    message = codec.audio(PCM, timestamp_ms=123456)
    assert struct.unpack(">HHIII", message[:16]) == (2, 0, 0, 123456, len(PCM))
    assert codec.decode(message) == BinaryFrame(FrameType.AUDIO, PCM, 123456)
    wrapped = codec.audio(b"", timestamp_ms=2**32 + 5)  # a millisecond counter wraps
    assert codec.decode(wrapped).timestamp_ms == 5


def test_v1_is_the_bare_payload() -> None:
    codec = BinaryCodec(1)
    assert codec.audio(PCM) == PCM
    assert codec.decode(PCM).payload == PCM
    with pytest.raises(ProtocolError, match="audio only"):
        codec.encode(b"{}", FrameType.JSON)


@pytest.mark.parametrize("version", [2, 3])
@pytest.mark.parametrize("delta", [-1, 1, 1000])
def test_a_header_whose_length_lies_is_refused(version: int, delta: int) -> None:
    codec = BinaryCodec(version)
    message = codec.audio(PCM)
    if version == 3:
        lying = struct.pack(">BBH", 0, 0, len(PCM) + delta) + PCM
    else:
        lying = struct.pack(">HHIII", 2, 0, 0, 0, len(PCM) + delta) + PCM
    with pytest.raises(ProtocolError, match="announces"):
        codec.decode(lying)
    with pytest.raises(ProtocolError, match="announces"):
        codec.decode(message[:-1])  # truncated payload
    with pytest.raises(ProtocolError, match="announces"):
        codec.decode(message + b"\x00")  # trailing garbage


@pytest.mark.parametrize(("version", "size"), [(2, 15), (3, 3), (2, 0), (3, 0)])
def test_a_message_shorter_than_the_header_is_refused(version: int, size: int) -> None:
    with pytest.raises(ProtocolError, match="shorter"):
        BinaryCodec(version).decode(bytes(size))


@pytest.mark.parametrize("version", [1, 2, 3])
def test_oversize_payload_is_refused_both_ways(version: int) -> None:
    codec = BinaryCodec(version)
    with pytest.raises(ProtocolError, match="exceeds"):
        codec.audio(bytes(MAX_PAYLOAD + 1))
    small = BinaryCodec(version, max_payload=100)
    with pytest.raises(ProtocolError, match="exceeds"):
        small.decode(BinaryCodec(version).audio(bytes(101)))
    assert small.decode(small.audio(bytes(100))).payload == bytes(100)


@pytest.mark.parametrize(("version", "message"), [
    (3, struct.pack(">BBH", 2, 0, 1) + b"x"),
    (3, struct.pack(">BBH", 255, 0, 0)),
    (2, struct.pack(">HHIII", 2, 7, 0, 0, 1) + b"x"),
])
def test_unknown_frame_type_is_refused(version: int, message: bytes) -> None:
    with pytest.raises(ProtocolError, match="unknown frame type"):
        BinaryCodec(version).decode(message)
    with pytest.raises(ProtocolError, match="unknown frame type"):
        BinaryCodec(version).encode(b"x", 9)  # type: ignore[arg-type]


def test_v2_header_with_another_version_is_refused() -> None:
    with pytest.raises(ProtocolError, match="version 3"):
        BinaryCodec(2).decode(struct.pack(">HHIII", 3, 0, 0, 0, 0))


def test_protocol_version_header() -> None:
    assert parse_version(None) == 3
    assert parse_version("") == 3
    assert parse_version(" 2 ") == 2
    assert parse_version("1") == 1
    for bad in ("4", "0", "v3", "3.0"):
        with pytest.raises(ProtocolError, match="Protocol-Version"):
            parse_version(bad)


def test_codec_settings_are_validated() -> None:
    with pytest.raises(ProtocolError, match="version 4"):
        BinaryCodec(4)
    with pytest.raises(ValueError, match="max_payload"):
        BinaryCodec(3, max_payload=MAX_PAYLOAD + 1)
    with pytest.raises(ValueError, match="max_payload"):
        BinaryCodec(2, max_payload=0)
    assert BinaryCodec(2, max_payload=1 << 20).max_payload == 1 << 20
