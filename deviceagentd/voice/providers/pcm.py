"""The little PCM plumbing the providers need: WAV headers (built for uploads, parsed from
espeak-ng) and keeping chunks on whole 16-bit samples."""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

SAMPLE_WIDTH = 2  # s16le everywhere


def wav_bytes(pcm: bytes, sample_rate: int, channels: int = 1) -> bytes:
    """A canonical 44-byte-header PCM WAV file around `pcm` (s16le)."""
    block_align = channels * SAMPLE_WIDTH
    header = struct.pack(
        "<4sI4s4sIHHIIHH4sI",
        b"RIFF", 36 + len(pcm), b"WAVE",
        b"fmt ", 16, 1, channels, sample_rate, sample_rate * block_align, block_align, SAMPLE_WIDTH * 8,
        b"data", len(pcm),
    )  # fmt: skip
    return header + pcm


@dataclass(frozen=True)
class WavFormat:
    audio_format: int  # 1 = integer PCM
    channels: int
    sample_rate: int
    bits_per_sample: int


class WavError(ValueError):
    """The bytes are not a PCM WAV stream we can play."""


def parse_riff_header(head: bytes) -> None:
    """The first 12 bytes: "RIFF" <size> "WAVE"."""
    if len(head) != 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        raise WavError("not a RIFF/WAVE stream")


def parse_chunk_header(head: bytes) -> tuple[bytes, int]:
    """An 8-byte chunk header: (id, size)."""
    if len(head) != 8:
        raise WavError("truncated chunk header")
    chunk_id, size = struct.unpack("<4sI", head)
    return chunk_id, size


def parse_fmt(body: bytes) -> WavFormat:
    if len(body) < 16:
        raise WavError("fmt chunk too short")
    audio_format, channels, sample_rate, _byte_rate, _align, bits = struct.unpack("<HHIIHH", body[:16])
    return WavFormat(audio_format, channels, sample_rate, bits)


@dataclass
class WholeSamples:
    """Re-cuts a byte stream so every chunk holds whole s16 samples: HTTP and pipe reads split
    wherever they like, and a resampler downstream must never see half a sample."""

    _carry: bytes = field(default=b"")

    def feed(self, chunk: bytes) -> bytes:
        data = self._carry + chunk if self._carry else chunk
        cut = len(data) - len(data) % SAMPLE_WIDTH
        self._carry = data[cut:]
        return data[:cut]
