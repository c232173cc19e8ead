"""End of utterance in `auto` mode: a state machine over classified 30 ms frames
(reference/voice-anchors.md §4.5, after Home Assistant's VoiceCommandSegmenter).

Feed every frame with its audio time (seconds on the input stream's own clock, never the wall
clock: tests and replays stay deterministic); each call returns the events it caused:

    start(t) ─► LISTENING ──(≥ speech_start_ms of "speaking" frames, counted cumulatively,
                  │          reset by start_reset_ms of continuous non-speaking)──► IN_SPEECH
                  │            emits SpeechStarted(pre-roll), then SpeechFrame per frame
                  └─(no_speech_timeout_s, not while speaking)─► NoSpeech, STOPPED
    IN_SPEECH ──(silence countdown at 0 and utterance ≥ min_utterance_s)──► SpeechEnded, STOPPED
              ──(max_utterance_s)──► SpeechEnded(timed_out=True), STOPPED
              └─ either, with < min_voiced_s of voiced audio ──► Discarded, LISTENING again

Two signals, on purpose:
- "speaking" (≥ window_voiced of the last window_frames frames voiced) starts an utterance and
  says whether voice is continuous: the smoothing keeps a cough or a click, and webrtcvad's
  dips inside words, from deciding anything.
- the raw per-frame verdict counts the silence down: the smoothing would otherwise add up to
  four frames (120 ms) of hangover to every end of speech, and END must come within
  silence_ms + 60 ms of the last voiced frame.

Silence countdown, as in Home Assistant: non-voiced frames count it down; a voiced frame refills
it once the voice has been continuous ("speaking") for refill_voice_ms, counted from the first
voiced frame of the window that turned speaking on; a shorter blip only pauses it. Counting the
continuity on raw frames instead (a run of 10 voiced frames) is too strict in noise, where
webrtcvad and the gate drop single frames inside words: with espeak-ng sentences over RMS
300-1000 noise about half the utterances then ended well before silence_ms after their last
voiced frame, against one in seven this way.

Times: the utterance (min_utterance_s, max_utterance_s) runs from that same first voiced frame.
"""

from __future__ import annotations

import enum
import math
from collections import deque
from dataclasses import dataclass

from deviceagentd.voice.audio import FRAME_BYTES, FRAME_MS
from deviceagentd.voice.vad import FrameClassifier

SILENCE_MS_RANGE = (200, 1250)  # XiaoZhi ships 200, HA "aggressive" 250 ... HA "relaxed" 1250


@dataclass(frozen=True)
class SegmenterConfig:
    silence_ms: int = 700  # trailing non-voiced audio that ends an utterance
    speech_start_ms: int = 300  # cumulative speaking that starts one
    start_reset_ms: int = 1000  # continuous non-speaking that resets that count
    refill_voice_ms: int = 300  # continuous voice after which a voiced frame refills the countdown
    pre_roll_ms: int = 600  # audio before the start handed over with SpeechStarted
    window_frames: int = 10  # smoothing: "speaking" when ≥ window_voiced of the last window_frames
    window_voiced: int = 6
    min_utterance_s: float = 1.0  # an utterance cannot end before this
    max_utterance_s: float = 15.0  # hard cap: SpeechEnded(timed_out=True)
    no_speech_timeout_s: float = 8.0  # after start() (or the end of a mute): NoSpeech
    min_voiced_s: float = 0.5  # less voiced audio than this: Discarded, keep listening
    mute_tail_ms: int = 300  # mute_until(t) mutes until t + this (our TTS's echo and room tail)

    def __post_init__(self) -> None:
        low, high = SILENCE_MS_RANGE
        if not low <= self.silence_ms <= high:
            raise ValueError(f"silence_ms must be {low}..{high}, not {self.silence_ms}")
        for name in ("speech_start_ms", "start_reset_ms", "refill_voice_ms"):
            if not FRAME_MS <= getattr(self, name) <= 5000:
                raise ValueError(f"{name} must be {FRAME_MS}..5000 ms, not {getattr(self, name)}")
        if not 0 <= self.pre_roll_ms <= 5000:
            raise ValueError(f"pre_roll_ms must be 0..5000, not {self.pre_roll_ms}")
        if not 1 <= self.window_voiced <= self.window_frames <= 100:
            raise ValueError(f"need 1 <= window_voiced ({self.window_voiced}) <= window_frames "
                             f"({self.window_frames}) <= 100")
        if not 0.0 <= self.min_utterance_s < self.max_utterance_s <= 300.0:
            raise ValueError(f"need 0 <= min_utterance_s ({self.min_utterance_s}) < max_utterance_s "
                             f"({self.max_utterance_s}) <= 300")
        if not 0.0 < self.no_speech_timeout_s <= 300.0:
            raise ValueError(f"no_speech_timeout_s must be in (0, 300], not {self.no_speech_timeout_s}")
        if not 0.0 <= self.min_voiced_s < self.max_utterance_s:
            raise ValueError(f"min_voiced_s must be 0..max_utterance_s, not {self.min_voiced_s}")
        if not 0 <= self.mute_tail_ms <= 5000:
            raise ValueError(f"mute_tail_ms must be 0..5000, not {self.mute_tail_ms}")


# ----------------------------------------------------------------------------------- events


@dataclass(frozen=True, slots=True)
class SpeechStarted:
    # The last pre_roll_ms of audio up to and including the frame that started the utterance:
    # replay it to the ASR before the SpeechFrames that follow.
    pre_roll: bytes


@dataclass(frozen=True, slots=True)
class SpeechFrame:
    frame: bytes  # 30 ms of the utterance (trailing silence included; zeros while muted)


@dataclass(frozen=True, slots=True)
class SpeechEnded:
    timed_out: bool  # max_utterance_s reached, not silence
    voiced_s: float  # voiced audio in the utterance
    last_voiced_at_s: float  # audio time at the end of the last voiced frame


@dataclass(frozen=True, slots=True)
class NoSpeech:
    """Nothing was said within no_speech_timeout_s: send nothing to the ASR."""


@dataclass(frozen=True, slots=True)
class Discarded:
    """Too little voiced audio to be an utterance (a cough, a door): listening goes on."""

    voiced_s: float


Event = SpeechStarted | SpeechFrame | SpeechEnded | NoSpeech | Discarded


class State(enum.Enum):
    STOPPED = "stopped"  # ignores frames until start()
    LISTENING = "listening"
    IN_SPEECH = "in_speech"


# -------------------------------------------------------------------------------- segmenter


class Segmenter:
    """One per audio stream. Frames are exactly `FRAME_BYTES` (30 ms at 16 kHz).

    Durations are counted in whole frames (a threshold of 700 ms is 24 frames, 720 ms), which
    keeps float sums out of the comparisons; audio times only date events and deadlines.
    """

    def __init__(self, config: SegmenterConfig | None = None, classifier: FrameClassifier | None = None) -> None:
        self.config = config = config or SegmenterConfig()
        # Kept across utterances: the noise floor is a property of the room, not of one utterance.
        self.classifier = classifier or FrameClassifier()
        self._speech_start = _frames(config.speech_start_ms)
        self._start_reset = _frames(config.start_reset_ms)
        self._refill = _frames(config.refill_voice_ms)
        self._silence = _frames(config.silence_ms)
        self._min_utterance = _frames(config.min_utterance_s * 1000)
        self._max_utterance = _frames(config.max_utterance_s * 1000)
        self._window: deque[bool] = deque(maxlen=config.window_frames)
        self._pre_roll: deque[bytes] = deque(maxlen=config.pre_roll_ms // FRAME_MS)
        self._silent_frame = bytes(FRAME_BYTES)
        self._min_voiced = _frames(config.min_voiced_s * 1000)
        self.state = State.STOPPED
        self._listen_start_s = 0.0
        self._muted_until_s = float("-inf")
        self._reset_utterance()

    # ------------------------------------------------------------------------- control

    def start(self, t: float) -> None:
        """Listen from audio time `t` (a `listen start`); forgets any utterance in progress."""
        self.state = State.LISTENING
        self._listen_start_s = t
        self._reset_utterance()

    def stop(self) -> None:
        """Stop listening (manual mode, abort): frames are ignored until start()."""
        self.state = State.STOPPED
        self._reset_utterance()

    def mute_until(self, t: float) -> None:
        """Our TTS plays until audio time `t`: ignore the microphone until t + mute_tail_ms.
        Replaces any earlier mute (a barge-in may shorten it). The no-speech timeout counts from
        the end of the mute."""
        self._muted_until_s = t + self.config.mute_tail_ms / 1000

    def muted(self, t: float) -> bool:
        return t < self._muted_until_s - _EPSILON_S

    # --------------------------------------------------------------------------- frames

    def push(self, frame: bytes, t: float) -> list[Event]:
        """One 30 ms frame starting at audio time `t` (seconds). Returns the events it caused."""
        if self.state is State.STOPPED:
            return []
        end = t + FRAME_MS / 1000
        if self.muted(t):
            return self._muted_frame(end)
        voiced = self.classifier.classify(frame).voiced
        window = self._window
        window.append(voiced)
        speaking = sum(window) >= self.config.window_voiced
        if self.state is State.LISTENING:
            return self._listening(frame, end, voiced, speaking)
        return self._in_speech(frame, end, voiced, speaking)

    def _listening(self, frame: bytes, end: float, voiced: bool, speaking: bool) -> list[Event]:
        u = self._u
        self._pre_roll.append(frame)
        if voiced:
            u.voiced += 1
            u.last_voiced_s = end
        if speaking:
            if not u.speech:
                # The utterance began at the first voiced frame of the window that made us
                # speaking, 5+ frames ago: its length (min and max) counts from there.
                u.frames = self._voice_so_far() - 1
            u.speech += 1
            u.frames += 1
            u.quiet = 0
            if u.speech >= self._speech_start:
                self.state = State.IN_SPEECH
                pre_roll = b"".join(self._pre_roll)
                self._pre_roll.clear()
                return [SpeechStarted(pre_roll)]
            return []
        if u.speech:
            u.frames += 1
        u.quiet += 1
        if u.quiet >= self._start_reset:
            u.speech = u.voiced = u.frames = u.quiet = 0
        deadline = max(self._listen_start_s, self._muted_until_s) + self.config.no_speech_timeout_s
        if end >= deadline - _EPSILON_S:
            self.stop()
            return [NoSpeech()]
        return []

    def _in_speech(self, frame: bytes, end: float, voiced: bool, speaking: bool) -> list[Event]:
        u = self._u
        events: list[Event] = [SpeechFrame(frame)]
        u.frames += 1
        if voiced:
            u.voiced += 1
            u.last_voiced_s = end
        if not speaking:
            u.speaking_run = 0
        elif u.speaking_run:
            u.speaking_run += 1
        else:
            u.speaking_run = self._voice_so_far()
        if not voiced:
            u.silence_left -= 1
        elif u.speaking_run >= self._refill:
            u.silence_left = self._silence
        if u.frames >= self._max_utterance:
            events.append(self._finish(timed_out=True))
        elif u.silence_left <= 0 and u.frames >= self._min_utterance:
            events.append(self._finish(timed_out=False))
        return events

    def _voice_so_far(self) -> int:
        """Frames since the first voiced frame in the smoothing window (speaking just began)."""
        return len(self._window) - self._window.index(True)

    def _muted_frame(self, end: float) -> list[Event]:
        """While our TTS plays the microphone hears it: nothing it picks up may start, extend or
        be sent as an utterance. An utterance already running hears silence."""
        if self.state is State.LISTENING:
            self._reset_utterance()  # no echo in the counters or the pre-roll
            return []
        self._window.append(False)
        return self._in_speech(self._silent_frame, end, voiced=False, speaking=False)

    def _finish(self, timed_out: bool) -> Event:
        u = self._u
        voiced_s = u.voiced * FRAME_MS / 1000
        if u.voiced < self._min_voiced:
            self._reset_utterance()
            self.state = State.LISTENING
            return Discarded(voiced_s)
        event = SpeechEnded(timed_out, voiced_s, u.last_voiced_s)
        self.stop()
        return event

    def _reset_utterance(self) -> None:
        self._window.clear()
        self._pre_roll.clear()
        self._u = _Utterance(silence_left=self._silence)


@dataclass
class _Utterance:
    """Counters of the utterance being found, in frames; a new one for every utterance."""

    silence_left: int  # the silence countdown
    speech: int = 0  # speaking frames while listening (cumulative)
    quiet: int = 0  # continuous non-speaking frames while listening
    voiced: int = 0  # voiced frames, from before the start on (reset with the speech count)
    frames: int = 0  # frames since the utterance began
    speaking_run: int = 0  # continuous speaking frames inside the utterance
    last_voiced_s: float = 0.0  # audio time at the end of the last voiced frame


_EPSILON_S = 1e-6  # audio times are float sums; a microsecond is far below one sample (62 µs)


def _frames(ms: float) -> int:
    """A duration in whole 30 ms frames, rounded up (700 ms → 24 frames)."""
    return math.ceil(ms / FRAME_MS - 1e-9)
