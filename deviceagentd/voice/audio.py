"""PCM audio plumbing of a voice session: format checks, exact 30 ms framing, streaming
resampling and levels.

Everything here is PCM s16le mono. Client audio goes `InputAudio` → 30 ms frames at 16 kHz (what
webrtcvad and the ASR providers take); TTS audio goes `OutputAudio` → the session's output rate,
cut into frames of the session's frame duration.

Byte counts need not be even: a payload that ends in half a sample keeps that byte until the
next payload completes it (a TCP/HTTP chunk boundary may fall anywhere; WebSocket clients that
send whole samples never hit this).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from numpy.typing import NDArray

SAMPLE_RATE: Final = 16000  # what the VAD and ASR take
FRAME_MS: Final = 30  # webrtcvad accepts 10/20/30 ms; 30 ms is the cheapest per second
FRAME_SAMPLES: Final = SAMPLE_RATE * FRAME_MS // 1000  # 480
FRAME_BYTES: Final = FRAME_SAMPLES * 2  # 960
# Client (microphone) rates we accept; every one but 16 kHz is resampled to 16 kHz.
INPUT_RATES: Final = (8000, 16000, 24000, 48000)
# Rates a session may ask its TTS audio in.
OUTPUT_RATES: Final = (8000, 16000, 24000, 48000)
# TTS providers deliver what they like (espeak-ng 22050 Hz, OpenAI 24 kHz): any rate in here.
SOURCE_RATE_RANGE: Final = (8000, 48000)
FORMATS: Final = ("pcm", "s16le", "pcm_s16le")  # all mean PCM signed 16-bit little-endian
FRAME_DURATION_RANGE_MS: Final = (10, 1000)
OPUS: Final = "opus"
# What libopus decodes from and encodes at, and the packet durations it encodes (one per message).
OPUS_RATES: Final = (8000, 12000, 16000, 24000, 48000)
OPUS_FRAME_MS: Final = (10, 20, 40, 60, 80, 100, 120)
# One push larger than this is a client bug or an attack, not audio (1 MiB ≈ 33 s at 16 kHz);
# the WebSocket layer caps messages well below it already.
MAX_CHUNK_BYTES: Final = 1 << 20
SILENCE_DBFS: Final = -120.0  # level reported for digital silence instead of -inf

Int16Array = NDArray[np.int16]


class AudioFormatError(ValueError):
    """Audio the session cannot take: not PCM s16le mono, or an unsupported sample rate."""


@dataclass(frozen=True)
class AudioParams:
    """`audio_params` of a hello (and of ours): PCM s16le or Opus, mono."""

    sample_rate: int = SAMPLE_RATE
    frame_duration_ms: int = 60
    format: str = "pcm"
    channels: int = 1

    @property
    def frame_bytes(self) -> int:
        return self.sample_rate * self.frame_duration_ms // 1000 * 2

    def to_json(self) -> dict[str, object]:
        return {"format": self.format, "sample_rate": self.sample_rate, "channels": self.channels,
                "frame_duration": self.frame_duration_ms}


def parse_audio_params(params: object, rates: tuple[int, ...] = INPUT_RATES,
                       default: AudioParams = AudioParams()) -> AudioParams:
    """Check a hello's `audio_params` (`{format, sample_rate, channels, frame_duration}`); absent
    fields take `default`'s value. PCM at `rates`, or Opus at a rate libopus knows in packets of
    a duration it encodes. Raises AudioFormatError naming the first bad field."""
    if params is None:
        params = {}
    if not isinstance(params, Mapping):
        raise AudioFormatError("audio_params must be an object")
    fmt = params.get("format", default.format)
    if not isinstance(fmt, str) or fmt.lower() not in (*FORMATS, OPUS):
        raise AudioFormatError(f"audio format {fmt!r} is not supported: send 'pcm' (s16le mono) or 'opus'")
    opus = fmt.lower() == OPUS
    channels = _int_field(params, "channels", default.channels)
    if channels != 1:
        raise AudioFormatError(f"{channels} channels: only mono is supported")
    rate = _int_field(params, "sample_rate", default.sample_rate)
    frame_ms = _int_field(params, "frame_duration", default.frame_duration_ms)
    if opus:
        if rate not in OPUS_RATES:
            raise AudioFormatError(f"Opus at {rate} Hz cannot be served (use one of "
                                   f"{', '.join(str(r) for r in OPUS_RATES)})")
        if frame_ms not in OPUS_FRAME_MS:
            raise AudioFormatError(f"Opus frame_duration {frame_ms} ms cannot be served (use one of "
                                   f"{', '.join(str(ms) for ms in OPUS_FRAME_MS)})")
        return AudioParams(sample_rate=rate, frame_duration_ms=frame_ms, format=OPUS, channels=1)
    check_rate(rate, rates)
    low, high = FRAME_DURATION_RANGE_MS
    if not low <= frame_ms <= high:
        raise AudioFormatError(f"frame_duration {frame_ms} ms is outside {low}..{high} ms")
    return AudioParams(sample_rate=rate, frame_duration_ms=frame_ms, format="pcm", channels=1)


def _int_field(params: Mapping[str, object], name: str, default: int) -> int:
    value = params.get(name, default)
    # bool is an int in Python; `true` is not a sample rate.
    if isinstance(value, bool) or not isinstance(value, int):
        raise AudioFormatError(f"audio_params.{name} must be an integer, not {value!r}")
    return value


def check_rate(rate: int, rates: tuple[int, ...]) -> None:
    if rate not in rates:
        raise AudioFormatError(f"sample rate {rate} Hz is not supported (use one of "
                               f"{', '.join(str(r) for r in rates)})")


# ---------------------------------------------------------------------------------- framing


class Framer:
    """Re-chunks a byte stream into frames of exactly `frame_bytes`, whatever sizes it arrives in.

    The leftover (less than one frame, possibly an odd byte) waits for the next push. It never
    exceeds one frame because every push drains all whole frames, so a client cannot grow it;
    a single push is capped at `max_chunk_bytes`.
    """

    def __init__(self, frame_bytes: int, max_chunk_bytes: int = MAX_CHUNK_BYTES) -> None:
        if frame_bytes <= 0 or frame_bytes % 2:
            raise ValueError(f"frame_bytes must be a positive even number, not {frame_bytes}")
        self.frame_bytes = frame_bytes
        self.max_chunk_bytes = max_chunk_bytes
        self._pending = bytearray()

    @classmethod
    def for_duration(cls, sample_rate: int, frame_ms: int) -> Framer:
        samples, rest = divmod(sample_rate * frame_ms, 1000)
        if rest:
            raise ValueError(f"{frame_ms} ms at {sample_rate} Hz is not a whole number of samples")
        return cls(samples * 2)

    @property
    def pending_bytes(self) -> int:
        return len(self._pending)

    def push(self, data: bytes | bytearray | memoryview) -> list[bytes]:
        """The whole frames now available, oldest first (often none)."""
        if len(data) > self.max_chunk_bytes:
            raise ValueError(f"audio chunk of {len(data)} bytes exceeds {self.max_chunk_bytes}")
        pending = self._pending
        pending += data
        size = self.frame_bytes
        count = len(pending) // size
        if not count:
            return []
        with memoryview(pending) as view:  # one copy per frame; released before the resize below
            frames = [bytes(view[i * size:(i + 1) * size]) for i in range(count)]
        del pending[:count * size]
        return frames

    def flush(self, pad: bool = True) -> bytes:
        """The leftover as a last frame, padded with silence to a whole frame (`pad`) or as is
        (then truncated to whole samples); b"" when there is none. The framer is then empty."""
        data = bytes(self._pending)
        self._pending.clear()
        if not data:
            return b""
        if pad:
            return data + bytes(self.frame_bytes - len(data))
        return data[:len(data) // 2 * 2]

    def reset(self) -> None:
        self._pending.clear()


# ------------------------------------------------------------------------------- resampling

# Windowed-sinc low-pass shared by up- and down-sampling. The cut-off sits at 90 % of the lower
# Nyquist frequency so that the transition band lies below it: at 48→16 kHz the filter is flat
# to ~6 kHz (-3 dB at 7 kHz) and attenuates by ~70 dB from 8.3 kHz on, where content would
# otherwise fold back into the speech band.
_ROLLOFF: Final = 0.9
_ZERO_CROSSINGS: Final = 16  # per side; longer = steeper transition, more CPU
_KAISER_BETA: Final = 8.0  # ≈ 80 dB stop band


def _polyphase_bank(up: int, down: int) -> tuple[NDArray[np.float32], int]:
    """Filter bank `bank[phase, tap]` for an up/down ratio, and its group delay in input samples."""
    cutoff = _ROLLOFF * 0.5 / max(up, down)  # cycles per sample at the upsampled rate
    half = math.ceil(_ZERO_CROSSINGS / (2 * cutoff))
    n = np.arange(-half, half + 1, dtype=np.float64)
    taps = 2 * cutoff * np.sinc(2 * cutoff * n) * np.kaiser(2 * half + 1, _KAISER_BETA)
    taps *= up / taps.sum()  # unity gain at DC after the zero-stuffing by `up`
    per_phase = math.ceil(len(taps) / up)
    padded = np.zeros(per_phase * up, dtype=np.float64)
    padded[:len(taps)] = taps
    bank = padded.reshape(per_phase, up).T.astype(np.float32)  # bank[p, j] = taps[p + j*up]
    return np.ascontiguousarray(bank), math.ceil(half / up)


class Resampler:
    """Streaming rational resampler (polyphase FIR) for PCM s16le mono.

    State is carried across pushes (input history and output phase), so chunked output equals
    one-shot output sample for sample: no clicks at chunk boundaries. The low-pass in front of
    decimation keeps 48→16 and 24→16 kHz free of aliasing. The output lags the input by the
    filter's group delay (about 1 ms at 48→16 kHz); `flush()` drains it at the end of a stream.
    """

    def __init__(self, in_rate: int, out_rate: int) -> None:
        if in_rate <= 0 or out_rate <= 0:
            raise AudioFormatError(f"bad sample rates {in_rate} → {out_rate} Hz")
        self.in_rate = in_rate
        self.out_rate = out_rate
        g = math.gcd(in_rate, out_rate)
        self._up = out_rate // g
        self._down = in_rate // g
        self.passthrough = in_rate == out_rate
        if self.passthrough:
            self._bank = np.zeros((1, 1), dtype=np.float32)
            self._delay = 0
        else:
            self._bank, self._delay = _polyphase_bank(self._up, self._down)
        self._taps = self._bank.shape[1]
        # Taps newest-input-last, to match the windows over the input (see push_samples).
        self._reversed_bank = np.ascontiguousarray(self._bank[:, ::-1])
        self._odd = b""  # half a sample waiting for its other byte
        self.reset()

    def reset(self) -> None:
        self._history = np.zeros(self._taps - 1, dtype=np.float32)  # the last taps-1 inputs
        self._n_in = 0  # input samples seen since the start of the stream
        self._n_out = 0  # output samples produced
        self._odd = b""

    def push(self, data: bytes | bytearray | memoryview) -> bytes:
        """PCM bytes in, PCM bytes out; an odd trailing byte waits for the next push."""
        data = self._odd + bytes(data)
        whole = len(data) // 2 * 2
        self._odd = data[whole:]
        if self.passthrough:
            return data[:whole]
        samples = np.frombuffer(data, dtype="<i2", count=whole // 2)
        return self.push_samples(samples).tobytes()

    def push_samples(self, samples: NDArray[np.int16]) -> NDArray[np.int16]:
        if self.passthrough:
            return np.asarray(samples, dtype=np.int16)
        taps = self._taps
        first = self._n_in - (taps - 1)  # stream index of extended[0]
        extended = np.concatenate((self._history, samples.astype(np.float32)))
        self._n_in += len(samples)
        # Output n sits at upsampled time n*down = m*up + phase: it needs inputs m-taps+1 .. m,
        # so every n whose m has arrived can be produced now.
        end = -(-self._n_in * self._up // self._down)
        n = np.arange(self._n_out, end, dtype=np.int64)
        self._n_out = end
        if taps > 1:
            self._history = extended[len(extended) - (taps - 1):].copy()
        if not len(n):
            return np.zeros(0, dtype=np.int16)
        m, phase = np.divmod(n * self._down, self._up)
        # windows[i] = extended[i:i+taps] (a view); row m-first-(taps-1) ends at input m.
        windows = sliding_window_view(extended, taps)
        out = np.einsum("ij,ij->i", windows[m - first - (taps - 1)], self._reversed_bank[phase])
        result: NDArray[np.int16] = np.clip(np.rint(out), -32768, 32767).astype(np.int16)
        return result

    def flush(self) -> bytes:
        """The samples still inside the filter (end of a stream), then a clean state. A dangling
        half sample is dropped."""
        if self.passthrough:
            self.reset()
            return b""
        tail = self.push_samples(np.zeros(self._delay + 1, dtype=np.int16)).tobytes()
        self.reset()
        return tail


# ---------------------------------------------------------------------------- pipelines


class InputAudio:
    """Client audio at `sample_rate` → exact 30 ms frames of 16 kHz PCM (VAD and ASR input)."""

    def __init__(self, sample_rate: int) -> None:
        check_rate(sample_rate, INPUT_RATES)
        self.sample_rate = sample_rate
        self._resampler = Resampler(sample_rate, SAMPLE_RATE)
        self._framer = Framer(FRAME_BYTES)

    def push(self, payload: bytes | bytearray | memoryview) -> list[bytes]:
        if self._resampler.passthrough:
            return self._framer.push(payload)  # the framer keeps odd bytes itself
        return self._framer.push(self._resampler.push(payload))

    def reset(self) -> None:
        """Drop buffered audio (a new `listen`, an `abort`)."""
        self._resampler.reset()
        self._framer.reset()


class OutputAudio:
    """TTS audio at the provider's `source_rate` → the session's output rate, in frames of the
    session's frame duration (the last one padded with silence by `flush`)."""

    def __init__(self, source_rate: int, params: AudioParams) -> None:
        low, high = SOURCE_RATE_RANGE
        if not low <= source_rate <= high:
            raise AudioFormatError(f"TTS sample rate {source_rate} Hz is outside {low}..{high} Hz")
        check_rate(params.sample_rate, OUTPUT_RATES)
        self._resampler = Resampler(source_rate, params.sample_rate)
        self._framer = Framer.for_duration(params.sample_rate, params.frame_duration_ms)

    def push(self, pcm: bytes | bytearray | memoryview) -> list[bytes]:
        return self._framer.push(self._resampler.push(pcm))

    def flush(self) -> list[bytes]:
        """End of the reply: the resampler's tail and the last partial frame."""
        frames = self._framer.push(self._resampler.flush())
        last = self._framer.flush(pad=True)
        return [*frames, last] if last else frames

    def reset(self) -> None:
        """Drop buffered audio (barge-in)."""
        self._resampler.reset()
        self._framer.reset()


def frame_duration_s(frame: bytes, sample_rate: int = SAMPLE_RATE) -> float:
    return len(frame) / 2 / sample_rate


# ----------------------------------------------------------------------------------- levels


def rms(pcm: bytes | bytearray | memoryview) -> float:
    """Root mean square of PCM s16le samples (0..32768); 0.0 for no samples."""
    samples = np.frombuffer(pcm, dtype="<i2", count=len(pcm) // 2).astype(np.float32)
    if not len(samples):
        return 0.0
    return math.sqrt(float(np.dot(samples, samples)) / len(samples))


def to_dbfs(value: float) -> float:
    """RMS → dB relative to full scale (32768); digital silence → SILENCE_DBFS, not -inf."""
    if value <= 0.0:
        return SILENCE_DBFS
    return max(SILENCE_DBFS, 20.0 * math.log10(value / 32768.0))


def dbfs(pcm: bytes | bytearray | memoryview) -> float:
    return to_dbfs(rms(pcm))
