"""Voice audio plumbing: framing of arbitrary chunks, streaming resampling, format checks, levels."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import voice_samples as vs

from deviceagentd.voice.audio import (
    FRAME_BYTES,
    MAX_CHUNK_BYTES,
    SILENCE_DBFS,
    AudioFormatError,
    AudioParams,
    Framer,
    InputAudio,
    OutputAudio,
    Resampler,
    dbfs,
    parse_audio_params,
    rms,
)


def chunked(data: bytes, sizes: list[int]) -> list[bytes]:
    """`data` cut into chunks of the given sizes, cycling through them."""
    out, pos, i = [], 0, 0
    while pos < len(data):
        out.append(data[pos:pos + sizes[i % len(sizes)]])
        pos += sizes[i % len(sizes)]
        i += 1
    return out


def random_pcm(seconds: float, seed: int = 5) -> bytes:
    return vs.pcm(vs.noise(seconds, 3000, seed=seed))


# ---------------------------------------------------------------------------------- framing


@pytest.mark.parametrize("sizes", [[1], [7], [959], [961], [10000], [1, 7, 959, 961, 10000, 2, 960]])
def test_any_chunking_gives_the_frames_of_one_big_chunk(sizes: list[int]) -> None:
    data = random_pcm(1.3) + b"\x01"  # not a whole number of frames, and an odd byte at the end
    whole = Framer(FRAME_BYTES).push(data)
    framer = Framer(FRAME_BYTES)
    frames = [f for chunk in chunked(data, sizes) for f in framer.push(chunk)]
    assert frames == whole
    assert all(len(f) == FRAME_BYTES for f in frames)
    assert b"".join(frames) == data[:len(frames) * FRAME_BYTES]
    assert framer.pending_bytes == len(data) % FRAME_BYTES < FRAME_BYTES


def test_random_chunk_sizes_including_empty_ones() -> None:
    rng = np.random.default_rng(11)
    data = random_pcm(3.0)
    framer = Framer(FRAME_BYTES)
    frames: list[bytes] = []
    pos = 0
    while pos < len(data):
        size = int(rng.integers(0, 3000))
        frames += framer.push(data[pos:pos + size])
        pos += size
    assert frames == Framer(FRAME_BYTES).push(data)


def test_odd_byte_counts_keep_the_half_sample_for_the_next_payload() -> None:
    framer = Framer(FRAME_BYTES)
    assert framer.push(b"\x01" * 959) == []
    assert framer.pending_bytes == 959
    (frame,) = framer.push(b"\x02\x03")
    assert frame == b"\x01" * 959 + b"\x02"
    assert framer.pending_bytes == 1


def test_flush_pads_the_last_frame_with_silence_or_returns_whole_samples() -> None:
    framer = Framer.for_duration(24000, 60)
    assert framer.frame_bytes == 2880
    framer.push(b"\x05" * 101)
    assert framer.flush(pad=True) == b"\x05" * 101 + bytes(2880 - 101)
    assert framer.flush() == b""
    framer.push(b"\x05" * 101)
    assert framer.flush(pad=False) == b"\x05" * 100


def test_a_huge_chunk_is_refused_and_the_leftover_stays_below_one_frame() -> None:
    framer = Framer(FRAME_BYTES)
    with pytest.raises(ValueError, match="exceeds"):
        framer.push(bytes(MAX_CHUNK_BYTES + 1))
    for _ in range(100):
        framer.push(bytes(12345))
        assert framer.pending_bytes < FRAME_BYTES
    with pytest.raises(ValueError):
        Framer(961)
    with pytest.raises(ValueError):
        Framer.for_duration(22050, 30)  # 661.5 samples


# ------------------------------------------------------------------------------- resampling


def peak_hz(signal: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(signal * np.hanning(len(signal))))
    return float(np.argmax(spectrum) * rate / len(signal))


def resample_chunked(samples_in: np.ndarray, in_rate: int, out_rate: int, sizes: list[int]) -> np.ndarray:
    resampler = Resampler(in_rate, out_rate)
    data = vs.pcm(samples_in)
    out = b"".join(resampler.push(chunk) for chunk in chunked(data, sizes)) + resampler.flush()
    return np.frombuffer(out, dtype="<i2").astype(np.float64)


@pytest.mark.parametrize("in_rate", [8000, 24000, 48000])
@pytest.mark.parametrize("freq", [440.0, 1000.0, 3000.0])
def test_resampling_to_16k_keeps_frequency_and_amplitude(in_rate: int, freq: float) -> None:
    tone = vs.sine(freq, 1.0, rate=in_rate, amplitude=10000.0)
    out = resample_chunked(tone, in_rate, 16000, [100000])
    assert 0 <= len(out) - 16000 <= 48  # one second, plus the filter's tail (< 3 ms)
    steady = out[400:15600]  # away from the start-up and the tail
    assert abs(peak_hz(steady, 16000) - freq) <= 2.0
    assert np.sqrt(np.mean(steady ** 2)) == pytest.approx(10000 / np.sqrt(2), rel=0.01)


@pytest.mark.parametrize(("in_rate", "out_rate"), [(8000, 16000), (24000, 16000), (48000, 16000),
                                                   (16000, 24000), (22050, 24000), (22050, 16000), (16000, 8000)])
def test_chunked_resampling_equals_one_shot(in_rate: int, out_rate: int) -> None:
    """No discontinuity at chunk boundaries: the state carried across pushes makes chunked output
    identical to one-shot output, odd byte counts included."""
    signal = vs.sine(440.0, 0.5, rate=in_rate) + vs.sine(2500.0, 0.5, rate=in_rate, amplitude=3000)
    one_shot = resample_chunked(signal, in_rate, out_rate, [10**9])
    for sizes in ([1], [7], [959], [961, 10000], [2, 3, 1000, 333]):
        pieces = resample_chunked(signal, in_rate, out_rate, sizes)
        assert len(pieces) == len(one_shot)
        assert np.max(np.abs(pieces - one_shot)) <= 1.0  # at most one LSB of rounding


def test_chunked_resampling_has_no_click_at_the_boundaries() -> None:
    """Per-chunk resampling without state (the bug this guards against) steps at every boundary;
    ours is as smooth across a boundary as inside a chunk."""
    tone = vs.sine(440.0, 1.0, rate=48000)
    out = resample_chunked(tone, 48000, 16000, [1920])  # 20 ms chunks
    steps = np.abs(np.diff(out[200:-200]))
    max_step = 10000 * 2 * np.pi * 440 / 16000  # the steepest a 440 Hz sine gets per sample
    assert steps.max() <= max_step * 1.01 + 1


@pytest.mark.parametrize(("in_rate", "freq"), [(48000, 12000.0), (48000, 9000.0), (24000, 10000.0)])
def test_decimation_filters_out_what_would_alias(in_rate: int, freq: float) -> None:
    tone = vs.sine(freq, 1.0, rate=in_rate, amplitude=10000.0)
    out = resample_chunked(tone, in_rate, 16000, [4096])
    aliased = np.sqrt(np.mean(out[400:-400] ** 2))
    assert 20 * np.log10(aliased / (10000 / np.sqrt(2)) + 1e-12) < -60


def test_output_audio_resamples_and_cuts_session_frames() -> None:
    params = parse_audio_params({"format": "pcm", "sample_rate": 24000, "channels": 1, "frame_duration": 60},
                                rates=(8000, 16000, 24000, 48000))
    out = OutputAudio(22050, params)  # espeak-ng's rate → the session's
    tone = vs.pcm(vs.sine(1000.0, 1.0, rate=22050))
    frames = [f for chunk in chunked(tone, [4097]) for f in out.push(chunk)] + out.flush()
    assert all(len(f) == params.frame_bytes == 2880 for f in frames)
    samples = np.frombuffer(b"".join(frames), dtype="<i2").astype(np.float64)
    assert 24000 <= len(samples) < 24000 + 1440 + 100
    assert abs(peak_hz(samples[500:23500], 24000) - 1000.0) <= 2.0


def test_input_audio_frames_every_rate_and_odd_payloads() -> None:
    for rate in (8000, 16000, 24000, 48000):
        data = vs.pcm(vs.sine(700.0, 1.0, rate=rate))
        whole = InputAudio(rate).push(data)
        audio = InputAudio(rate)
        pieces = [f for chunk in chunked(data, [7, 961, 1]) for f in audio.push(chunk)]
        assert pieces == whole
        assert len(whole) == 33 if rate == 16000 else 32 <= len(whole) <= 33
        assert all(len(f) == FRAME_BYTES for f in whole)


# --------------------------------------------------------------------------------- formats


@pytest.mark.parametrize(("params", "match"), [
    ({"format": "mp3"}, "format"),
    ({"format": "opus", "sample_rate": 44100}, "Opus at 44100 Hz"),
    ({"format": "opus", "frame_duration": 30}, "Opus frame_duration 30 ms"),
    ({"format": 3}, "format"),
    ({"channels": 2}, "mono"),
    ({"sample_rate": 44100}, "44100"),
    ({"sample_rate": 12000}, "not supported"),
    ({"sample_rate": True}, "integer"),
    ({"sample_rate": "16000"}, "integer"),
    ({"frame_duration": 0}, "frame_duration"),
    ([], "object"),
])
def test_unsupported_audio_is_a_clear_error(params: object, match: str) -> None:
    with pytest.raises(AudioFormatError, match=match):
        parse_audio_params(params)


@pytest.mark.parametrize(("rate", "frame_ms"), [(16000, 20), (16000, 60), (8000, 120), (24000, 40), (48000, 10)])
def test_opus_at_rates_and_durations_libopus_serves(rate: int, frame_ms: int) -> None:
    params = parse_audio_params({"format": "opus", "sample_rate": rate, "channels": 1, "frame_duration": frame_ms})
    assert params == AudioParams(sample_rate=rate, frame_duration_ms=frame_ms, format="opus", channels=1)


def test_audio_params_defaults_and_json() -> None:
    assert parse_audio_params(None) == AudioParams()
    params = parse_audio_params({"format": "pcm_s16le", "sample_rate": 48000})
    assert params == AudioParams(sample_rate=48000, frame_duration_ms=60)
    assert params.to_json() == {"format": "pcm", "sample_rate": 48000, "channels": 1, "frame_duration": 60}
    assert params.frame_bytes == 5760


def test_unsupported_rates_are_refused_by_the_pipelines() -> None:
    with pytest.raises(AudioFormatError, match="32000"):
        InputAudio(32000)
    with pytest.raises(AudioFormatError, match="TTS sample rate"):
        OutputAudio(96000, AudioParams())
    with pytest.raises(AudioFormatError, match="11025"):
        OutputAudio(16000, AudioParams(sample_rate=11025))


# ----------------------------------------------------------------------------------- levels


def test_rms_and_dbfs() -> None:
    assert rms(b"") == 0.0
    assert dbfs(bytes(960)) == SILENCE_DBFS
    full = np.array([32767, -32768] * 240, dtype="<i2").tobytes()
    assert dbfs(full) == pytest.approx(0.0, abs=0.01)
    tone = vs.pcm(vs.sine(1000.0, 0.03, amplitude=10000.0))
    assert rms(tone) == pytest.approx(10000 / np.sqrt(2), rel=0.01)
    assert dbfs(vs.pcm(vs.noise(1.0, 300))) == pytest.approx(20 * np.log10(300 / 32768), abs=0.2)


@pytest.mark.parametrize("module", ["deviceagentd.voice.protocol", "deviceagentd.daemon"])
def test_numpy_and_webrtcvad_stay_out_of_the_daemon_and_the_protocol_codec(module: str) -> None:
    """The daemon's idle RSS is measured without them; the session loads the audio modules."""
    code = f"import sys, {module}; print(sorted(m for m in ('numpy', 'webrtcvad') if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
