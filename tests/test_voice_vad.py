"""Voice activity: the webrtcvad + energy-gate classifier and the end-of-speech segmenter, on
espeak-ng speech, silence and white noise, in audio time (reference/voice-anchors.md §4.5)."""

from __future__ import annotations

import numpy as np
import pytest
import voice_samples as vs
from voice_samples import FRAME_S

from deviceagentd.voice.audio import FRAME_BYTES
from deviceagentd.voice.segmenter import (
    Discarded,
    Event,
    Segmenter,
    SegmenterConfig,
    SpeechEnded,
    SpeechFrame,
    SpeechStarted,
    State,
)
from deviceagentd.voice.vad import ClassifierConfig, FrameClassifier, Verdict

TOL_S = 1e-6


def classify(signal: vs.Signal, classifier: FrameClassifier | None = None) -> list[Verdict]:
    classifier = classifier or FrameClassifier()
    return [classifier.classify(frame) for _, frame in vs.frames(vs.pcm(signal))]


def run(signal: vs.Signal, segmenter: Segmenter | None = None, t0: float = 0.0,
        start: bool = True) -> list[tuple[float, Event]]:
    """Feed `signal` frame by frame from audio time t0; (end time of the frame, event) pairs."""
    segmenter = segmenter or Segmenter()
    if start:
        segmenter.start(t0)
    return [(t0 + t + FRAME_S, event) for t, frame in vs.frames(vs.pcm(signal))
            for event in segmenter.push(frame, t0 + t)]


def only(events: list[tuple[float, Event]], kind: type) -> list[tuple[float, Event]]:
    return [(t, e) for t, e in events if isinstance(e, kind)]


def state(segmenter: Segmenter) -> State:
    """The state, read through a call: mypy would otherwise keep it narrowed across pushes."""
    return segmenter.state


def control(events: list[tuple[float, Event]]) -> list[str]:
    """The events other than SpeechFrame, by name, in order."""
    return [type(e).__name__ for _, e in events if not isinstance(e, SpeechFrame)]


# ------------------------------------------------------------------------------- classifier


@pytest.mark.parametrize("signal", [vs.silence(5), vs.noise(5, vs.rms_for_dbfs(-60))], ids=["zeros", "-60dBFS"])
def test_silence_is_never_voiced(signal: vs.Signal) -> None:
    verdicts = classify(signal)
    assert not any(v.voiced for v in verdicts)
    assert all(v.noise_floor_dbfs >= -60.0 for v in verdicts)  # clamped, even on digital silence


@pytest.mark.parametrize("rms", [300, 1000, 3000])
def test_white_noise_is_not_speech_once_the_floor_has_adapted(rms: float) -> None:
    verdicts = classify(vs.noise(10, rms))
    adapted = verdicts[round(3 / FRAME_S):]
    assert sum(v.voiced for v in adapted) == 0
    level = 20 * np.log10(rms / 32768)
    assert abs(verdicts[-1].noise_floor_dbfs - level) < 3


def test_loud_noise_fools_webrtcvad_alone_and_the_gate_catches_it() -> None:
    """The reason for the energy gate (voice-anchors §4.4): webrtcvad calls RMS 3000 noise speech."""
    verdicts = classify(vs.noise(10, 3000))[round(3 / FRAME_S):]
    assert sum(v.webrtc_speech for v in verdicts) > 0.9 * len(verdicts)
    assert not any(v.voiced for v in verdicts)


def test_without_the_steady_noise_rule_loud_noise_stays_voiced() -> None:
    """§4.5's floor alone only learns from non-voiced frames, which RMS 3000 noise never is."""
    classifier = FrameClassifier(ClassifierConfig(stationary_window_s=0))
    verdicts = classify(vs.noise(10, 3000), classifier)
    assert all(v.voiced for v in verdicts[round(3 / FRAME_S):])


def test_noise_that_starts_in_a_quiet_room_is_learnt_within_two_seconds() -> None:
    """webrtcvad, once adapted to a quiet room, calls a new RMS 300 noise speech for seconds
    (here about five); the floor learns it from its steadiness, which §4.5's floor alone (fed by
    non-voiced frames only) cannot do until webrtcvad itself adapts."""
    signal = np.concatenate([vs.noise(5, vs.rms_for_dbfs(-60), seed=9), vs.noise(10, 300)])
    after = classify(signal)[round(5 / FRAME_S):]
    first_4_s = after[:round(4 / FRAME_S)]
    assert sum(v.webrtc_speech for v in first_4_s) > 0.9 * len(first_4_s)
    assert not any(v.voiced for v in after[round(2 / FRAME_S):])
    without = classify(signal, FrameClassifier(ClassifierConfig(stationary_window_s=0)))[round(5 / FRAME_S):]
    assert all(v.voiced for v in without[round(2 / FRAME_S):round(4 / FRAME_S)])


def test_speech_is_voiced_in_silence_and_in_moderate_noise() -> None:
    speech = vs.speech()
    for background in (vs.silence(6), vs.noise(6, 300)):
        signal = vs.mix(background, speech, at_s=2.0)
        start, end = vs.speech_bounds(vs.mix(vs.silence(6), speech, at_s=2.0))
        verdicts = classify(signal)
        inside = verdicts[round(start / FRAME_S):round(end / FRAME_S)]
        outside = verdicts[round(1.0 / FRAME_S):round(start / FRAME_S)] + verdicts[round(end / FRAME_S) + 5:]
        assert sum(v.voiced for v in inside) > 0.5 * len(inside)
        assert not any(v.voiced for v in outside)


def test_frames_must_be_exactly_30_ms() -> None:
    classifier = FrameClassifier()
    for size in (FRAME_BYTES - 2, FRAME_BYTES + 2, 640):
        with pytest.raises(ValueError, match="960 bytes"):
            classifier.classify(bytes(size))


def test_classifier_config_is_validated() -> None:
    with pytest.raises(ValueError, match="vad_mode"):
        ClassifierConfig(vad_mode=4)
    with pytest.raises(ValueError, match="noise_floor_tau_s"):
        ClassifierConfig(noise_floor_tau_s=0)
    assert FrameClassifier(ClassifierConfig(vad_mode=3)).config.vad_mode == 3


# -------------------------------------------------------------------------------- segmenter


@pytest.mark.parametrize("silence_ms", [200, 700, 1250])
def test_end_of_speech_comes_within_the_silence_window_plus_60_ms(silence_ms: int) -> None:
    signal = np.concatenate([vs.silence(1), vs.speech(), vs.silence(3)])
    true_start, true_end = vs.speech_bounds(signal)
    events = run(signal, Segmenter(SegmenterConfig(silence_ms=silence_ms)))
    assert control(events) == ["SpeechStarted", "SpeechEnded"]
    (started_at, started), = only(events, SpeechStarted)
    (ended_at, ended), = only(events, SpeechEnded)
    assert isinstance(started, SpeechStarted) and isinstance(ended, SpeechEnded)
    window = silence_ms / 1000
    # Measured from the last voiced frame, as the segmenter saw it, and from where the speech
    # really ends: both within the window + 60 ms, and never before the window has passed.
    assert window - TOL_S <= ended_at - ended.last_voiced_at_s <= window + 0.060
    assert window - TOL_S <= ended_at - true_end <= window + 0.060
    assert not ended.timed_out
    assert ended.voiced_s > 0.6 * (true_end - true_start)
    # The pre-roll is 600 ms and reaches back before the first audible frame.
    assert len(started.pre_roll) == 20 * FRAME_BYTES
    assert started_at - 0.6 <= true_start
    # Every frame between the start and the end reaches the ASR, in order, exactly once.
    frames = [e.frame for _, e in only(events, SpeechFrame) if isinstance(e, SpeechFrame)]
    audio = vs.pcm(signal)
    first = round(started_at / FRAME_S) * FRAME_BYTES - len(started.pre_roll)
    last = round(ended_at / FRAME_S) * FRAME_BYTES
    assert started.pre_roll + b"".join(frames) == audio[first:last]


def test_speech_in_moderate_noise_is_found_and_ended() -> None:
    speech = vs.speech()
    signal = vs.mix(vs.noise(10, 300), speech, at_s=4.0)
    true_start, true_end = vs.speech_bounds(vs.mix(vs.silence(10), speech, at_s=4.0))
    events = run(signal)
    assert control(events) == ["SpeechStarted", "SpeechEnded"]
    (started_at, _), = only(events, SpeechStarted)
    (ended_at, ended), = only(events, SpeechEnded)
    assert isinstance(ended, SpeechEnded)
    assert true_start < started_at < true_start + 1.0
    assert ended_at - ended.last_voiced_at_s <= 0.7 + 0.060
    assert true_end <= ended_at <= true_end + 0.7 + 0.120


@pytest.mark.parametrize("text", [
    "set the target temperature to twenty four", "turn off the lights in the living room",
    "what is the humidity in the bedroom", "open the curtains please", "is the front door locked",
    "please make it a little warmer in the kitchen",
])
def test_in_noise_the_end_is_neither_early_nor_late(text: str) -> None:
    """Inside words in noise the gate drops single frames; those dips must not eat the silence
    countdown, or the end comes early and a pause in the sentence cuts it."""
    speech = vs.speech(text)
    signal = vs.mix(vs.noise(10, 300, seed=len(text)), speech, at_s=4.0)
    _, true_end = vs.speech_bounds(vs.mix(vs.silence(10), speech, at_s=4.0))
    (ended_at, ended), = only(run(signal), SpeechEnded)
    assert isinstance(ended, SpeechEnded)
    assert 0.7 - TOL_S <= ended_at - ended.last_voiced_at_s <= 0.7 + 0.060
    assert ended_at >= true_end + 0.4


def test_louder_speech_in_louder_noise() -> None:
    signal = vs.mix(vs.noise(12, 1000), vs.speech(gain=3.0), at_s=5.0)
    events = run(signal)
    assert control(events) == ["SpeechStarted", "SpeechEnded"]


@pytest.mark.parametrize("rms", [300, 1000, 3000])
def test_steady_noise_gives_no_speech_after_adapting(rms: float) -> None:
    segmenter = Segmenter()
    run(vs.noise(4, rms, seed=3), segmenter)  # the room's noise before anyone listens
    events = run(vs.noise(10, rms, seed=4), segmenter, t0=4.0)
    assert control(events) == ["NoSpeech"]
    assert 12.0 <= events[-1][0] < 12.0 + FRAME_S


@pytest.mark.parametrize("signal", [vs.silence(10), vs.noise(10, vs.rms_for_dbfs(-60))], ids=["zeros", "-60dBFS"])
def test_no_speech_after_8_s(signal: vs.Signal) -> None:
    segmenter = Segmenter()
    events = run(signal, segmenter)
    assert [(type(e).__name__) for _, e in events] == ["NoSpeech"]
    assert 8.0 <= events[0][0] < 8.0 + FRAME_S
    assert segmenter.state is State.STOPPED
    assert segmenter.push(bytes(FRAME_BYTES), 10.0) == []  # ignores frames until start()


def test_a_talker_who_never_stops_times_out_at_15_s() -> None:
    # espeak's pauses between repetitions (< 0.5 s) never reach the 700 ms window.
    speech = vs.speech()
    signal = np.concatenate([vs.silence(1), *[speech] * 7])
    true_start, _ = vs.speech_bounds(signal)
    events = run(signal)
    assert control(events) == ["SpeechStarted", "SpeechEnded"]
    (ended_at, ended), = only(events, SpeechEnded)
    assert isinstance(ended, SpeechEnded) and ended.timed_out
    assert 15.0 - TOL_S <= ended_at - true_start <= 15.0 + 0.1  # counted from the first voiced frame


def test_a_short_word_is_discarded_and_listening_goes_on() -> None:
    """"No" has ~0.36 s of voiced audio: under min_voiced_s (0.5 s)."""
    signal = np.concatenate([vs.silence(1), vs.speech("no"), vs.silence(2), vs.speech(), vs.silence(2)])
    segmenter = Segmenter()
    events = run(signal, segmenter)
    assert control(events) == ["SpeechStarted", "Discarded", "SpeechStarted", "SpeechEnded"]
    (_, discarded), = only(events, Discarded)
    assert isinstance(discarded, Discarded) and discarded.voiced_s < 0.5
    relaxed = run(signal, Segmenter(SegmenterConfig(min_voiced_s=0.3)))
    assert control(relaxed)[:2] == ["SpeechStarted", "SpeechEnded"]


def test_an_utterance_cannot_end_before_one_second() -> None:
    """"Okay" lasts 0.54 s: with a 200 ms window it would end at ~0.75 s; the 1.0 s minimum,
    counted from the first voiced frame, holds it."""
    signal = np.concatenate([vs.silence(1), vs.speech("okay"), vs.silence(2)])
    true_start, true_end = vs.speech_bounds(signal)
    assert true_end - true_start + 0.21 < 1.0
    events = run(signal, Segmenter(SegmenterConfig(silence_ms=200, min_voiced_s=0.0)))
    (ended_at, ended), = only(events, SpeechEnded)
    assert isinstance(ended, SpeechEnded)
    assert 1.0 - TOL_S <= ended_at - true_start <= 1.0 + 0.060


def test_mute_while_our_tts_plays_plus_300_ms() -> None:
    speech = vs.speech()
    segmenter = Segmenter()
    segmenter.start(0.0)
    segmenter.mute_until(4.0)  # our TTS: speech from 0.5 s to ~3.5 s
    assert segmenter.muted(4.29) and not segmenter.muted(4.3)
    echo = run(vs.mix(vs.silence(4.5), speech, at_s=0.5), segmenter, start=False)
    assert echo == []
    # The no-speech timeout counts from the end of the mute (4.3 s), and speech is heard again.
    later = run(vs.mix(vs.silence(12), speech, at_s=7.0), segmenter, t0=4.5, start=False)
    assert control(later) == ["SpeechStarted", "SpeechEnded"]
    quiet = Segmenter()
    quiet.start(0.0)
    quiet.mute_until(4.0)
    events = run(vs.silence(14), quiet, start=False)
    assert control(events) == ["NoSpeech"]
    assert 12.3 - TOL_S <= events[0][0] < 12.3 + FRAME_S


def test_speech_that_straddles_the_end_of_the_mute_leaves_no_echo_in_the_pre_roll() -> None:
    signal = vs.mix(vs.silence(6), vs.speech(), at_s=0.5)
    segmenter = Segmenter()
    segmenter.start(0.0)
    segmenter.mute_until(1.2)
    events = run(signal, segmenter, start=False)
    (started_at, started), = only(events, SpeechStarted)
    assert isinstance(started, SpeechStarted)
    assert started_at - len(started.pre_roll) / 32000 >= 1.5 - TOL_S


def test_muting_during_an_utterance_sends_silence_and_ends_it() -> None:
    signal = np.concatenate([vs.silence(1), *[vs.speech()] * 2])
    segmenter = Segmenter()
    events = run(signal[:vs.samples(3.0)], segmenter)
    assert control(events) == ["SpeechStarted"]
    segmenter.mute_until(5.0)
    events = run(signal[vs.samples(3.0):], segmenter, t0=3.0, start=False)
    assert control(events) == ["SpeechEnded"]
    (ended_at, _), = only(events, SpeechEnded)
    assert ended_at <= 3.0 + 0.7 + 0.060
    assert all(e.frame == bytes(FRAME_BYTES) for _, e in only(events, SpeechFrame) if isinstance(e, SpeechFrame))


def test_start_forgets_the_utterance_in_progress_and_stop_ignores_frames() -> None:
    signal = np.concatenate([vs.silence(1), vs.speech(), vs.silence(2)])
    segmenter = Segmenter()
    assert state(segmenter) is State.STOPPED
    assert run(signal, segmenter, start=False) == []
    events = run(signal[:vs.samples(2.5)], segmenter)
    assert control(events) == ["SpeechStarted"]
    segmenter.start(2.5)  # a new `listen start` mid-utterance
    assert state(segmenter) is State.LISTENING
    assert only(run(vs.silence(1), segmenter, t0=2.5, start=False), SpeechEnded) == []
    run(signal[:vs.samples(2.5)], segmenter, t0=3.5, start=False)
    segmenter.stop()  # manual mode, abort
    assert state(segmenter) is State.STOPPED
    assert run(signal, segmenter, t0=6.0, start=False) == []


@pytest.mark.parametrize("silence_ms", [199, 1251, 0])
def test_silence_window_is_validated(silence_ms: int) -> None:
    with pytest.raises(ValueError, match="silence_ms"):
        SegmenterConfig(silence_ms=silence_ms)


def test_other_limits_are_validated() -> None:
    with pytest.raises(ValueError, match="window_voiced"):
        SegmenterConfig(window_voiced=11)
    with pytest.raises(ValueError, match="max_utterance_s"):
        SegmenterConfig(min_utterance_s=20.0)
    assert SegmenterConfig(silence_ms=200).silence_ms == 200
    assert SegmenterConfig(silence_ms=1250).silence_ms == 1250


def test_events_are_deterministic_in_audio_time() -> None:
    signal = vs.mix(vs.noise(10, 300), vs.speech(), at_s=2.0)
    first = run(signal, t0=100.0)
    second = run(signal, t0=100.0)
    assert first == second
    assert control(first) == ["SpeechStarted", "SpeechEnded"]
