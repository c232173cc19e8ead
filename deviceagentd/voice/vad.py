"""Is this 30 ms frame voiced? webrtcvad AND an adaptive energy gate (reference/voice-anchors.md
§4.5).

webrtcvad alone calls loud steady noise speech (white noise at RMS 3000 is "speech" in every
mode), so a frame is voiced only if webrtcvad says speech *and* its level is at least
`energy_margin_db` above a noise floor. The floor is an EMA (in dB) of the level of non-voiced
frames, ~2 s time constant, never below `noise_floor_min_dbfs`.

One addition to §4.5, without which the floor cannot learn noise that webrtcvad calls speech
(RMS 3000 white noise always; a new RMS 300 noise in a room it had learnt as quiet, for about
5 s): that noise is "voiced" from its first frame, so an EMA over non-voiced frames alone does
not see it. Frames whose level stayed within `stationary_spread_db` over the last
`stationary_window_s` are steady noise, not speech (speech swings by 20 dB or more between
syllables within a second), so they also feed the floor, with the shorter `stationary_tau_s`
so that the gate closes within about 2 s of a loud noise starting instead of 4 (a held vowel
that lasts past the window nudges the floor a few dB at most). Set `stationary_window_s = 0`
for §4.5 exactly.

One classifier per audio stream: webrtcvad keeps state between frames, and so does the floor.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

import webrtcvad

from deviceagentd.voice.audio import FRAME_BYTES, FRAME_MS, SAMPLE_RATE, dbfs


@dataclass(frozen=True)
class ClassifierConfig:
    vad_mode: int = 2  # webrtcvad aggressiveness 0..3; 3 for noisy rooms
    energy_margin_db: float = 9.0  # voiced frames are at least this far above the noise floor
    noise_floor_tau_s: float = 2.0  # EMA time constant of the floor
    noise_floor_min_dbfs: float = -60.0  # the floor never goes below this (and starts here)
    stationary_window_s: float = 1.0  # 0 disables the steady-noise rule
    stationary_spread_db: float = 6.0
    stationary_tau_s: float = 0.5  # EMA time constant of the floor on steady frames

    def __post_init__(self) -> None:
        if self.vad_mode not in (0, 1, 2, 3):
            raise ValueError(f"vad_mode must be 0..3, not {self.vad_mode}")
        if not 0.0 <= self.energy_margin_db <= 40.0:
            raise ValueError(f"energy_margin_db must be 0..40, not {self.energy_margin_db}")
        if not self.noise_floor_tau_s > 0.0:
            raise ValueError(f"noise_floor_tau_s must be > 0, not {self.noise_floor_tau_s}")
        if not -100.0 <= self.noise_floor_min_dbfs <= 0.0:
            raise ValueError(f"noise_floor_min_dbfs must be -100..0, not {self.noise_floor_min_dbfs}")
        if not 0.0 <= self.stationary_window_s <= 10.0:
            raise ValueError(f"stationary_window_s must be 0..10, not {self.stationary_window_s}")
        if not self.stationary_spread_db > 0.0:
            raise ValueError(f"stationary_spread_db must be > 0, not {self.stationary_spread_db}")
        if not self.stationary_tau_s > 0.0:
            raise ValueError(f"stationary_tau_s must be > 0, not {self.stationary_tau_s}")


@dataclass(frozen=True, slots=True)
class Verdict:
    voiced: bool
    webrtc_speech: bool  # webrtcvad's own answer, before the energy gate
    level_dbfs: float
    noise_floor_dbfs: float  # the floor the frame was judged against


class FrameClassifier:
    """Classifies 30 ms frames of 16 kHz PCM s16le mono (exactly `FRAME_BYTES` each)."""

    def __init__(self, config: ClassifierConfig | None = None) -> None:
        self.config = config = config or ClassifierConfig()
        self._vad = webrtcvad.Vad(config.vad_mode)
        self._alpha = _ema_alpha(config.noise_floor_tau_s)
        self._steady_alpha = _ema_alpha(config.stationary_tau_s)
        self.noise_floor_dbfs = config.noise_floor_min_dbfs
        window = round(config.stationary_window_s * 1000 / FRAME_MS)
        self._levels: deque[float] | None = deque(maxlen=window) if window > 1 else None

    def classify(self, frame: bytes) -> Verdict:
        if len(frame) != FRAME_BYTES:
            raise ValueError(f"a VAD frame is {FRAME_BYTES} bytes ({FRAME_MS} ms at {SAMPLE_RATE} Hz), "
                             f"not {len(frame)}")
        config = self.config
        level = dbfs(frame)
        floor = self.noise_floor_dbfs
        speech = bool(self._vad.is_speech(frame, SAMPLE_RATE))
        voiced = speech and level >= floor + config.energy_margin_db
        steady = self._steady(level)  # updated on every frame, voiced or not
        if steady or not voiced:
            alpha = self._steady_alpha if steady else self._alpha
            self.noise_floor_dbfs = max(config.noise_floor_min_dbfs, floor + alpha * (level - floor))
        return Verdict(voiced, speech, level, floor)

    def _steady(self, level: float) -> bool:
        """Has the level stayed within `stationary_spread_db` for the whole window?"""
        levels = self._levels
        if levels is None:
            return False
        levels.append(level)
        return len(levels) == levels.maxlen and max(levels) - min(levels) <= self.config.stationary_spread_db


def _ema_alpha(tau_s: float) -> float:
    """Per-frame weight of an EMA with time constant `tau_s`."""
    return 1.0 - math.exp(-FRAME_MS / 1000 / tau_s)
