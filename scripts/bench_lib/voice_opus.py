"""`voice_opus`: what Opus costs a voice session, in-process (no broker or daemon).

* CPU: 30 s (quick: 10 s) of espeak-ng speech with the silence between sentences, as a XiaoZhi
  speaker sends it (16 kHz, 60 ms packets, complexity 0, DTX: encoded once beforehand), through
  `OpusCodec.decode` (→ 30 ms frames for the VAD), plus the same duration of TTS speech through
  `OpusCodec.encode` at the output rate in 60 ms packets (16 kHz, and 24 kHz as
  xiaozhi-esp32-server sends). Thread CPU time / audio time, best of 5: the real-time factor
  of one session, both directions. Target ≤ 0.02. Baseline: the same audio through `PcmCodec`
  (framing only), so the ratio is what Opus adds.
* RSS: a fresh interpreter's VmRSS after importing the session's audio modules (numpy,
  webrtcvad, the codec module), then after loading the binding and libopus and creating one
  decoder and one encoder: what the first Opus session adds. Information (no target).

Run alone: `PYTHONPATH=scripts .venv/bin/python -m bench_lib.voice_opus [--quick]`.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from bench_lib.report import Report, Row
from bench_lib.voice_vad import SENTENCES, espeak
from deviceagentd.voice.audio import AudioParams
from deviceagentd.voice.codec import PcmCodec
from deviceagentd.voice.opus import OpusCodec

if TYPE_CHECKING:
    from bench_lib.scenarios import Bench

RTF_TARGET = 0.02
CPU_ROUNDS = 5
PACKET_MS = 60
RSS_SCRIPT = """
import sys
def rss():
    for line in open('/proc/self/status'):
        if line.startswith('VmRSS:'):
            return int(line.split()[1])
import numpy, webrtcvad, deviceagentd.voice.codec, deviceagentd.voice.session
before = rss()
from deviceagentd.voice.audio import AudioParams
from deviceagentd.voice.opus import OpusCodec
codec = OpusCodec(AudioParams(16000, 60, format='opus'), AudioParams(16000, 60, format='opus'))
print(before, rss())
"""


def speech_pcm(seconds: float) -> bytes:
    """Sentences with 1 s of silence between them, 16 kHz s16le, `seconds` long."""
    pieces: list[Any] = []
    total = 0
    while total < seconds * 16000:
        for text in SENTENCES:
            clip = espeak(text)
            pieces += [clip, np.zeros(16000)]
            total += len(clip) + 16000
    signal = np.concatenate(pieces)[: int(seconds * 16000)]
    pcm: bytes = np.clip(np.rint(signal), -32768, 32767).astype("<i2").tobytes()
    return pcm


def packets_of(pcm: bytes, rate: int) -> list[bytes]:
    """What a XiaoZhi speaker sends: audio_service.h AS_OPUS_ENC_CONFIG (60 ms, complexity 0, DTX)."""
    import opuslib_next

    encoder = opuslib_next.Encoder(rate, 1, "audio")
    encoder.complexity = 0
    encoder.dtx = 1
    size = rate * PACKET_MS // 1000 * 2
    return [encoder.encode(pcm[i:i + size], size // 2) for i in range(0, len(pcm) - size + 1, size)]


def frames_at(pcm16k: bytes, rate: int) -> list[bytes]:
    """TTS output frames of 60 ms at `rate` (resampled with numpy: the cost is not measured)."""
    samples = np.frombuffer(pcm16k, dtype="<i2").astype(np.float64)
    if rate != 16000:
        positions = np.arange(0, len(samples), 16000 / rate)
        samples = np.interp(positions, np.arange(len(samples)), samples)
    out = np.clip(np.rint(samples), -32768, 32767).astype("<i2").tobytes()
    size = rate * PACKET_MS // 1000 * 2
    return [out[i:i + size] for i in range(0, len(out) - size + 1, size)]


def best_cpu_s(work: Callable[[], None]) -> float:
    runs = []
    for _ in range(CPU_ROUNDS):
        started = time.thread_time()
        work()
        runs.append(time.thread_time() - started)
    return min(runs)


def session_work(codec_of: Callable[[int], Any], packets: list[bytes], frames: list[bytes],
                 rate: int) -> Callable[[], None]:
    def work() -> None:
        codec = codec_of(rate)
        for packet in packets:
            codec.decode(packet)
        for frame in frames:
            codec.encode(frame)

    return work


def opus_codec(rate: int) -> OpusCodec:
    return OpusCodec(AudioParams(16000, PACKET_MS, format="opus"), AudioParams(rate, PACKET_MS, format="opus"))


def pcm_codec(rate: int) -> PcmCodec:
    return PcmCodec(AudioParams(16000, PACKET_MS), AudioParams(rate, PACKET_MS))


def measure(report: Report, seconds: float) -> None:
    pcm = speech_pcm(seconds)
    audio_s = len(pcm) / 32000
    packets = packets_of(pcm, 16000)
    dtx = sum(1 for p in packets if len(p) <= 3)
    for rate in (16000, 24000):
        frames = frames_at(pcm, rate)
        # The PCM baseline sends PCM payloads of the same 60 ms.
        pcm_payloads = [pcm[i:i + 1920] for i in range(0, len(pcm) - 1919, 1920)]
        opus_s = best_cpu_s(session_work(opus_codec, packets, frames, rate))
        pcm_s = best_cpu_s(session_work(pcm_codec, pcm_payloads, frames, rate))
        rtf = opus_s / audio_s
        report.add(Row(f"voice Opus decode + encode CPU per second of session audio ({rate // 1000} kHz out)",
                       rtf, "RTF", pcm_s / audio_s, rtf / (pcm_s / audio_s) if pcm_s else None, f"≤ {RTF_TARGET:g}",
                       rtf <= RTF_TARGET,
                       f"{audio_s:.0f} s of espeak-ng speech and silence in: {len(packets)} packets of {PACKET_MS} ms "
                       f"(complexity 0, DTX: {dtx} silence packets of ≤ 3 bytes) decoded to 16 kHz 30 ms frames; "
                       f"{audio_s:.0f} s out: {len(frames)} frames encoded at {rate} Hz (complexity 5); thread CPU, "
                       f"best of {CPU_ROUNDS}; {opus_s * 1000 / audio_s:.2f} ms per second; baseline: PcmCodec "
                       "(framing only)"))


def rss(report: Report) -> None:
    out = subprocess.run([sys.executable, "-c", RSS_SCRIPT], capture_output=True, text=True, check=True, timeout=60)
    before, after = (int(x) for x in out.stdout.split())
    report.add(Row("voice: RSS the Opus binding adds when loaded (libopus + one decoder + one encoder)",
                   (after - before) / 1024, "MB", note=f"a fresh interpreter with the voice session modules loaded: "
                   f"VmRSS {before / 1024:.1f} MB before, {after / 1024:.1f} MB after; information"))


async def voice_opus(b: Bench) -> None:
    seconds = 10.0 if b.report.mode == "quick" else 30.0
    await asyncio.to_thread(measure, b.report, seconds)
    await asyncio.to_thread(rss, b.report)


def main(argv: list[str] | None = None) -> int:
    quick = "--quick" in (sys.argv[1:] if argv is None else argv)
    report = Report(mode="quick" if quick else "full")
    started = time.monotonic()
    measure(report, 10.0 if quick else 30.0)
    rss(report)
    report.duration_s = time.monotonic() - started
    print(report.table())
    return 1 if report.missed else 0


if __name__ == "__main__":
    raise SystemExit(main())
