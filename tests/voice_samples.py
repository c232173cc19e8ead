"""Test audio for the voice front end: speech from espeak-ng, silence, white noise and sines, all
PCM s16le mono at 16 kHz unless told otherwise, as float64 numpy arrays (mix freely, then
`pcm()` clips and packs them).

espeak-ng (Debian package `espeak-ng`) is installed by scripts/setup. Without it the speech
tests skip on a developer's machine and fail under CI, so a missing install step cannot hide.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import tempfile
import wave
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from numpy.typing import NDArray

from deviceagentd.voice.audio import FRAME_BYTES, FRAME_MS, SAMPLE_RATE, Resampler, dbfs

Signal = NDArray[np.float64]
SENTENCE = "set the target temperature to twenty four"
FRAME_S = FRAME_MS / 1000


def require_espeak() -> str:
    path = shutil.which("espeak-ng")
    if path is None:
        message = "espeak-ng is not installed (apt-get install espeak-ng; scripts/setup does it)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


@functools.cache
def _espeak_pcm(text: str, words_per_minute: int) -> bytes:
    """espeak-ng's WAV (22050 Hz) resampled to 16 kHz by our own resampler."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "speech.wav"
        subprocess.run([require_espeak(), "-w", str(out), "-s", str(words_per_minute), text],
                       check=True, capture_output=True, timeout=30)
        with wave.open(str(out), "rb") as wav:
            assert (wav.getnchannels(), wav.getsampwidth()) == (1, 2), "espeak-ng: expected 16-bit mono"
            rate = wav.getframerate()
            raw = wav.readframes(wav.getnframes())
    resampler = Resampler(rate, SAMPLE_RATE)
    return resampler.push(raw) + resampler.flush()


def speech(text: str = SENTENCE, words_per_minute: int = 150, gain: float = 1.0) -> Signal:
    """Synthetic speech at 16 kHz (espeak-ng's own level is about RMS 3000, -21 dBFS)."""
    return np.frombuffer(_espeak_pcm(text, words_per_minute), dtype="<i2").astype(np.float64) * gain


def silence(seconds: float) -> Signal:
    return np.zeros(samples(seconds))


def noise(seconds: float, rms: float, seed: int = 1) -> Signal:
    """White Gaussian noise with the given RMS (300 ≈ -41 dBFS, 1000 ≈ -30, 3000 ≈ -21)."""
    return np.random.default_rng(seed).normal(0.0, rms, samples(seconds))


def rms_for_dbfs(level: float) -> float:
    return 32768.0 * 10 ** (level / 20)


def sine(freq: float, seconds: float, rate: int = SAMPLE_RATE, amplitude: float = 10000.0) -> Signal:
    t = np.arange(round(seconds * rate)) / rate
    return amplitude * np.sin(2 * np.pi * freq * t)


def samples(seconds: float, rate: int = SAMPLE_RATE) -> int:
    return round(seconds * rate)


def mix(background: Signal, foreground: Signal, at_s: float) -> Signal:
    """`foreground` added onto a copy of `background` starting at `at_s`."""
    out = background.copy()
    start = samples(at_s)
    out[start:start + len(foreground)] += foreground[:len(out) - start]
    return out


def pcm(signal: Signal) -> bytes:
    return np.clip(np.rint(signal), -32768, 32767).astype("<i2").tobytes()


def frames(audio: bytes) -> Iterator[tuple[float, bytes]]:
    """(start time in s, 30 ms frame) for every whole frame."""
    for i in range(len(audio) // FRAME_BYTES):
        yield i * FRAME_S, audio[i * FRAME_BYTES:(i + 1) * FRAME_BYTES]


def speech_bounds(signal: Signal, threshold_dbfs: float = -50.0) -> tuple[float, float]:
    """(start of the first, end of the last) 30 ms frame louder than `threshold_dbfs`: where the
    speech really is, independent of the VAD under test."""
    loud = [t for t, frame in frames(pcm(signal)) if dbfs(frame) > threshold_dbfs]
    assert loud, "no audible frame"
    return loud[0], loud[-1] + FRAME_S
