"""The speaker's voice pitch, and the frequency warp the recogniser uses for it.

pocketsphinx's en-us model hears high voices (most women's and children's) worse than low ones:
their formants sit higher than in most of its training speech. Vocal tract length normalisation
scales the frequency axis of the features back towards the model; how much is read from the
pitch of the start of the utterance (a high voice usually comes with a short vocal tract). On
the benchmark's female voice a warp of 1.2 took intent success from 65 to 80 % clean
(docs/benchmarks.md); a low voice is left as it is.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import numpy as np

SAMPLE_RATE: Final = 16000
FRAME_S: Final = 0.040
# Pitch of speech: 60–400 Hz covers deep male voices to children.
LOWEST_HZ: Final = 60
HIGHEST_HZ: Final = 400
# A frame counts when it is loud (within 10 dB of the utterance's loud frames, and above the
# floor of a quiet room) and clearly periodic (normalised autocorrelation peak).
LOUD_SHARE: Final = 0.3
QUIET_RMS: Final = 100.0
PERIODIC: Final = 0.45
MIN_VOICED_FRAMES: Final = 5
OCTAVE_SHARE: Final = 0.9


@dataclass(frozen=True)
class WarpSettings:
    # At or above this pitch a voice is warped; the voices of men are typically 85–155 Hz,
    # of women 165–255 Hz.
    high_voice_hz: float = 160.0
    # pocketsphinx's inverse-linear warp: frequencies are divided by this before the filterbank.
    high_voice_warp: float = 1.2

    def warp(self, pitch_hz: float | None) -> float:
        """The warp for a voice of this pitch (1.0: none; also when the pitch is unknown)."""
        if pitch_hz is None or pitch_hz < self.high_voice_hz:
            return 1.0
        return self.high_voice_warp


def voice_pitch_hz(pcm16k: bytes) -> float | None:
    """The median pitch of the voiced frames of 16 kHz s16le speech; None without enough voice."""
    samples = np.frombuffer(pcm16k[:len(pcm16k) // 2 * 2], dtype="<i2").astype(np.float64)
    size = int(SAMPLE_RATE * FRAME_S)
    frames = [samples[i:i + size] for i in range(0, len(samples) - size + 1, size // 2)]
    if not frames:
        return None
    loudness = np.array([np.sqrt(np.mean(frame ** 2)) for frame in frames])
    gate = max(float(np.percentile(loudness, 90)) * LOUD_SHARE, QUIET_RMS)
    shortest, longest = SAMPLE_RATE // HIGHEST_HZ, SAMPLE_RATE // LOWEST_HZ
    pitches: list[float] = []
    for frame, loud in zip(frames, loudness, strict=True):
        if loud < gate:
            continue
        frame = frame - frame.mean()
        # Lags 0..longest over the same stretch of the frame (not numpy.fft: another 0.5 MB of
        # daemon for a 40 ms frame).
        window = size - longest
        correlation = np.correlate(frame, frame[:window], "valid")
        # Normalised by both stretches' energy, so a longer lag is not favoured.
        squares = np.concatenate([[0.0], np.cumsum(frame ** 2)])
        energy = squares[window:window + longest + 1] - squares[:longest + 1]
        if energy[0] <= 0:
            continue
        candidates = correlation[shortest:longest] / np.sqrt(energy[0] * energy[shortest:longest] + 1e-9)
        best = float(candidates.max())
        if best < PERIODIC:
            continue
        # The shortest lag nearly as good as the best: two or three periods correlate as well as
        # one (better when the period is not a whole number of samples).
        lag = int(np.argmax(candidates >= OCTAVE_SHARE * best))
        while lag + 1 < len(candidates) and candidates[lag + 1] > candidates[lag]:
            lag += 1
        pitches.append(SAMPLE_RATE / (lag + shortest))
    if len(pitches) < MIN_VOICED_FRAMES:
        return None
    return float(np.median(pitches))
