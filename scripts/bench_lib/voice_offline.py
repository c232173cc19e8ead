"""`voice_offline`: the offline recogniser (voice/recognizer/), on speech this section makes itself.

1. Accuracy, in-process, through the real streaming provider (`OfflineAsr`) and the real offline
   agent (`agent/local`) over the test site of tests/local_corpus.py. The spoken test set: the
   first 30 English requests of the corpus (commands and questions over the example products)
   that the site's grammar covers and that name their device or are asked in a device's session,
   each spoken by espeak-ng voices en-us, en (British) and en-us+f3 (female) at 150 and 190 words
   per minute, clean (faint room noise) and with white noise mixed in at 10 dB SNR (against the
   speech's active level); plus 10 requests the site cannot do, in the same voices, speeds and
   conditions. A (voice, speed, condition) group is one speaker session (its cepstral mean
   carries over from one request to the next, as in a real session).
   - intent success: the transcript makes the offline agent plan exactly the tool calls it plans
     for the text as written (the right command sent, the right state read). Targets: ≥ 90 %
     clean, ≥ 80 % at 10 dB.
   - out-of-vocabulary rejected: refused by the recogniser, or a transcript on which the agent
     calls no tool (nothing sent, nothing read). Target ≥ 80 %. The share refused by the
     recogniser itself is in the note.
   - real-time factor and CPU per request: process CPU time during the decoding / audio time.
2. The whole daemon, offline (no key anywhere): 1,000 registered devices with names and rooms,
   /ws/voice sessions asking "what is the current temperature" in real time (60 ms frames).
   - end of speech → first TTS audio frame at the client: from when the client sends the frame
     that completes the silence window (the last speech frame + voice.silence_ms: the earliest
     the gateway can know) to the first binary audio frame of the reply. Targets p50 ≤ 400 ms,
     p95 ≤ 800 ms. Baseline: the same span for the first turn's transcript (asr definite), to
     show the recogniser's share.
   - RSS (VmRSS): the daemon idle with its 1,000 devices before any speaker, after the turns with
     the recogniser loaded (target ≤ 100 MB), and after it unloaded (voice.offline.unload_after_s).
3. Building the vocabulary (grammar + pronunciations) for 1,000 devices with their own names and
   rooms, in-process: seconds and peak Python allocation (tracemalloc), baseline the 7-device
   test site. Information (the build runs on a worker thread when the first speaker says hello).

Run alone: `PYTHONPATH=scripts:tests .venv/bin/python -m bench_lib.voice_offline [--quick]`.
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import tracemalloc
import wave
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
import numpy as np
from numpy.typing import NDArray

from bench_lib import procs
from bench_lib.mqttc import BenchClient
from bench_lib.procs import DaemonClient, proc_status_kib
from bench_lib.report import Report, Row
from bench_lib.stats import median, percentile
from deviceagentd.agent.local import Vocabulary, plan
from deviceagentd.agent.types import TurnContext
from deviceagentd.voice.audio import SAMPLE_RATE, Resampler
from deviceagentd.voice.protocol import BinaryCodec, FrameType
from deviceagentd.voice.providers.offline_asr import OfflineAsr
from deviceagentd.voice.recognizer.engine import EngineSettings, OfflineEngine
from deviceagentd.voice.recognizer.grammar import build_grammar
from deviceagentd.voice.recognizer.pronounce import build_lexicon
from deviceagentd.voice.recognizer.site import DeviceNames, registry_site

if TYPE_CHECKING:
    from bench_lib.scenarios import Bench
    from deviceagentd.core.registry import DeviceRegistry

# tests/ is on sys.path (procs): the corpus, its site and the offline agent's test registry.
from local_corpus import CORPUS, HELD_OUT, SITE, Case
from mosquitto_broker import free_port

VOICES = ("en-us", "en", "en-us+f3")
SPEEDS = (150, 190)
SNR_DB = 10.0
REQUESTS = 30
OOV = (
    "tell me a joke", "order a pizza for dinner", "play some jazz music", "lock the front door",
    "what's the weather like tomorrow", "good morning how are you", "what time is it",
    "set an alarm for seven tomorrow", "turn on the television", "call my mother please",
)
CLEAN_TARGET, NOISY_TARGET, OOV_TARGET = 0.90, 0.80, 0.80
P50_TARGET_MS, P95_TARGET_MS, RSS_TARGET_MB = 400.0, 800.0, 100.0
LATENCY_TEXT = "what is the current temperature"
SILENCE_MS = 700  # the product default voice.silence_ms
FRAME_MS = 60
DEVICES = 1000
PRODUCTS = ("thermostat", "light", "switch", "curtain", "air_conditioner")
NAMES = ("lamp", "ceiling light", "desk lamp", "reading light", "heater", "fan", "kettle", "coffee machine",
         "radiator", "tv plug", "blinds", "bedside lamp", "floor lamp", "towel rail", "boiler")
ROOMS = ("living room", "bedroom", "kitchen", "office", "bathroom", "hallway", "study", "garage", "dining room",
         "balcony", "nursery", "attic", "cellar", "guest room", "laundry")
Signal = NDArray[np.float64]


@dataclass(frozen=True)
class Clip:
    case: Case | None  # None: out of vocabulary
    text: str
    voice: str
    speed: int
    noisy: bool
    pcm: bytes

    @property
    def seconds(self) -> float:
        return len(self.pcm) / 2 / SAMPLE_RATE


# =========================================================================== speech


def espeak(text: str, voice: str, speed: int) -> Signal:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "speech.wav"
        subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-w", str(out), text], check=True,
                       capture_output=True, timeout=30)
        with wave.open(str(out), "rb") as wav:
            rate, raw = wav.getframerate(), wav.readframes(wav.getnframes())
    resampler = Resampler(rate, SAMPLE_RATE)
    return np.frombuffer(resampler.push(raw) + resampler.flush(), dtype="<i2").astype(np.float64)


def with_room(speech: Signal, rng: np.random.Generator, snr_db: float | None) -> bytes:
    """0.3 s before and 0.8 s after the speech; faint room noise (RMS 20), or white noise at
    `snr_db` below the speech's active level (samples above -50 dBFS)."""
    signal = np.concatenate([np.zeros(4800), speech, np.zeros(12800)])
    if snr_db is None:
        noise_rms = 20.0
    else:
        active = speech[np.abs(speech) > 32768 * 10 ** (-50 / 20)]
        noise_rms = float(np.sqrt(np.mean(active ** 2) / 10 ** (snr_db / 10)))
    signal = signal + rng.normal(0.0, noise_rms, len(signal))
    return np.clip(np.rint(signal), -32768, 32767).astype("<i2").tobytes()


def test_set(quick: bool, cases: list[Case]) -> list[Clip]:
    voices, speeds = (VOICES[:2], SPEEDS[:1]) if quick else (VOICES, SPEEDS)
    rng = np.random.default_rng(12)
    clips: list[Clip] = []
    for voice in voices:
        for speed in speeds:
            for noisy in (False, True):
                snr = SNR_DB if noisy else None
                for case in cases:
                    clips.append(Clip(case, case.text, voice, speed, noisy,
                                      with_room(espeak(case.text, voice, speed), rng, snr)))
                for text in OOV:
                    clips.append(Clip(None, text, voice, speed, noisy, with_room(espeak(text, voice, speed), rng, snr)))
    return clips


def requests(registry: DeviceRegistry, vocabulary: Vocabulary, accepts: Any) -> list[Case]:
    """The first REQUESTS English corpus requests the grammar covers and the agent gets right
    when they are typed (so a miss here is the recogniser's)."""
    chosen = []
    for case in (*CORPUS, *HELD_OUT):
        if not case.calls or any("\u4e00" <= c <= "\u9fff" or (c.isdigit() and "-" in case.text) for c in case.text):
            continue
        if accepts(spoken_words(case.text)) and intent(registry, vocabulary, case.text, case.device) == case.calls:
            chosen.append(case)
    return chosen[:REQUESTS]


def spoken_words(text: str) -> list[str]:
    """The corpus text as the grammar has it (digits as words, % as percent): for selection only."""
    from deviceagentd.voice.recognizer.grammar import spoken

    return spoken(text.replace("%", " percent").replace("°C", " degrees").replace("'s", " is")).split()


# =========================================================================== 1. accuracy


def intent(registry: DeviceRegistry, vocabulary: Vocabulary, text: str, device: str | None) -> list[Any]:
    """The tool calls the offline agent plans for `text` in a session about `device`."""
    product = None
    if device is not None and (found := registry.get(device)) is not None:
        product = found.product_id
    context = TurnContext("bench", text, [], product, device, [])
    steps = plan(text, context, registry, vocabulary).steps
    return [step.tool_call() for step in steps if hasattr(step, "tool_call")]


async def accuracy(report: Report, quick: bool) -> None:
    from test_local_engine import make_registry

    registry = make_registry()
    vocabulary = Vocabulary.build(registry.catalog)
    engine = OfflineEngine(registry_site(registry), EngineSettings(max_decoders=1))
    provider = OfflineAsr(engine)
    try:
        loaded = await engine.prepare()
        cases = requests(registry, vocabulary, loaded.grammar.automaton.accepts)
        clips = await asyncio.to_thread(test_set, quick, cases)
        results: dict[tuple[bool, bool], list[bool]] = {}
        refused_oov = 0
        cpu = 0.0
        audio = 0.0
        cpu_per_turn: list[float] = []
        for clip in clips:
            session = f"{clip.voice}-{clip.speed}-{clip.noisy}"
            started = time.process_time()
            stream = await provider.start("en", session)
            try:
                for i in range(0, len(clip.pcm), 960):
                    await stream.send_audio(clip.pcm[i:i + 960])
                await stream.finish()
                final = [r async for r in stream.results()][-1]
            finally:
                await stream.close()
            spent = time.process_time() - started
            cpu += spent
            audio += clip.seconds
            cpu_per_turn.append(spent * 1000)
            if clip.case is not None:
                expected = intent(registry, vocabulary, clip.case.text, clip.case.device)
                got = intent(registry, vocabulary, final.text, clip.case.device) if final.text else None
                results.setdefault((True, clip.noisy), []).append(got == expected)
            else:
                refused_oov += final.refused
                safe = final.refused or not intent(registry, vocabulary, final.text, None)
                results.setdefault((False, clip.noisy), []).append(safe)
    finally:
        await provider.close()
    groups = f"{len(clips) // (2 * (len(cases) + len(OOV)))} voice × speed groups"
    for noisy, target in ((False, CLEAN_TARGET), (True, NOISY_TARGET)):
        hits = results.get((True, noisy), [])
        share = sum(hits) / max(1, len(hits))
        report.add(Row(f"offline ASR intent success, {'10 dB SNR white noise' if noisy else 'clean'}", share * 100, "%",
                       target=f"≥ {target * 100:.0f} %", ok=share >= target,
                       note=f"{sum(hits)} of {len(hits)}: {len(cases)} requests × {groups} (espeak-ng "
                            f"{', '.join(VOICES[:2] if quick else VOICES)} at "
                            f"{', '.join(map(str, SPEEDS[:1] if quick else SPEEDS))} wpm); the agent's tool calls on "
                            "the transcript = on the text as written"))
    oov = results.get((False, False), []) + results.get((False, True), [])
    share = sum(oov) / max(1, len(oov))
    report.add(Row("offline ASR out-of-vocabulary rejected", share * 100, "%", target=f"≥ {OOV_TARGET * 100:.0f} %",
                   ok=share >= OOV_TARGET,
                   note=f"{sum(oov)} of {len(oov)} ({len(OOV)} requests the site cannot do, clean and at 10 dB); "
                        f"{refused_oov} refused by the recogniser itself, the rest heard as something the agent "
                        "does nothing with"))
    report.add(Row("offline ASR real-time factor", cpu / audio, "", note=f"process CPU / audio over {len(clips)} "
                   f"utterances ({audio:.0f} s of audio), decoding on a worker thread"))
    report.add(Row("offline ASR CPU per request (median)", median(cpu_per_turn), "ms",
                   note=f"p95 {percentile(cpu_per_turn, 95):.0f} ms; utterances of "
                        f"{audio / len(clips):.1f} s on average"))


# =========================================================================== 2. the daemon


async def register_devices(b: Bench, daemon: DaemonClient) -> None:
    """DEVICES devices of the example products, each with a name and a room."""
    rng = random.Random(3)
    client = BenchClient(b.broker.url, f"bench-offline-{rng.randrange(10**6)}")
    await client.connect()
    for i in range(DEVICES):
        product = PRODUCTS[i % len(PRODUCTS)]
        device = "thermostat-001" if i == 0 else f"{product.replace('_', '-')}-{i:04d}"
        metadata = {"name": rng.choice(NAMES), "room": rng.choice(ROOMS)}
        body = {"type": "status", "data": {"status": "online", "state": {}}, "metadata": metadata}
        if product == "thermostat":
            body["data"]["state"] = {"temperature": 21.5, "humidity": 45, "mode": "auto", "target_temperature": 22}
        client.publish0(f"v1/{product}/{device}/telemetry", json.dumps(body).encode())
    await client.drain()
    await client.disconnect()
    _, total = await daemon.wait_counter("deviceagentd_devices_total", DEVICES, stall_s=10.0)
    if total < DEVICES:
        raise RuntimeError(f"only {total:.0f} of {DEVICES} devices registered")


async def one_turn(ws: aiohttp.ClientWebSocketResponse, codec: BinaryCodec, speech: bytes,
                   inbox: asyncio.Queue[tuple[int, str, Any]]) -> tuple[float, float, str]:
    """listen start, then the speech and silence in real time (60 ms frames) until the gateway
    heard the end. Returns (ms from the frame that completed the silence window to asr definite,
    ... to the first reply audio frame, the transcript)."""
    await ws.send_str(json.dumps({"type": "listen", "state": "start", "mode": "auto"}))
    frame_bytes = SAMPLE_RATE * FRAME_MS // 1000 * 2
    body = speech + bytes(frame_bytes * 50)  # at most 3 s of silence after the speech
    window_frame = last_voiced_frame(speech, frame_bytes) + math.ceil(SILENCE_MS / FRAME_MS)
    heard = asyncio.Event()
    end_ns = 0

    async def send() -> None:
        nonlocal end_ns
        t0 = time.perf_counter()
        for index in range(math.ceil(len(body) / frame_bytes)):
            if heard.is_set():
                return
            delay = t0 + index * FRAME_MS / 1000 - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            await ws.send_bytes(codec.audio(body[index * frame_bytes:(index + 1) * frame_bytes]))
            if index == window_frame:
                end_ns = time.perf_counter_ns()

    sender = asyncio.create_task(send())
    final_ns = reply_ns = 0
    transcript = ""
    try:
        async with asyncio.timeout(30):
            while True:
                stamp, kind, data = await inbox.get()
                if kind == "audio":
                    if final_ns and not reply_ns:
                        reply_ns = stamp
                    continue
                if data.get("type") == "asr" and data.get("definite"):
                    final_ns, transcript = stamp, str(data.get("text", ""))
                    heard.set()
                elif data.get("type") == "error":
                    raise RuntimeError(f"voice turn failed: {data}")
                elif data.get("type") == "tts_complete":
                    break
    finally:
        heard.set()
        await sender
    if not (end_ns and final_ns and reply_ns):
        raise RuntimeError(f"incomplete turn (transcript {transcript!r}, silence window end sent: {bool(end_ns)}, "
                           f"reply audio: {bool(reply_ns)})")
    return (final_ns - end_ns) / 1e6, (reply_ns - end_ns) / 1e6, transcript


def last_voiced_frame(speech: bytes, frame_bytes: int, threshold_dbfs: float = -45.0) -> int:
    """The index of the last frame with speech in it (espeak-ng ends its clips with silence)."""
    samples = np.frombuffer(speech, dtype="<i2").astype(np.float64)
    per_frame = frame_bytes // 2
    last = 0
    for index in range(math.ceil(len(samples) / per_frame)):
        frame = samples[index * per_frame:(index + 1) * per_frame]
        if frame.size and 20 * math.log10(math.sqrt(float(np.mean(frame ** 2))) / 32768 + 1e-12) > threshold_dbfs:
            last = index
    return last


async def daemon_part(b: Bench, turns: int) -> None:
    voice_port = free_port()
    overrides = {**procs.daemon_overrides(), "voice_listen": f"127.0.0.1:{voice_port}",
                 "voice_offline_unload_after_s": 10}
    proc = procs.spawn_daemon(b.broker.url, b.workdir / "offline-voice-state", **overrides)
    try:
        await asyncio.to_thread(proc.wait_http, 30.0)
        daemon = DaemonClient(proc, b.session)
        await daemon.wait_subscribed(b.broker.url)
        await register_devices(b, daemon)
        idle_mb = proc_status_kib(daemon.pid, "VmRSS") / 1024
        # The question alone (espeak-ng's own trailing silence is ~0.1 s): the silence the
        # gateway waits for is sent by one_turn, so the frame completing its window is known.
        said = await asyncio.to_thread(espeak, LATENCY_TEXT, "en-us", 175)
        speech = np.clip(np.rint(np.concatenate([np.zeros(4800), said])), -32768, 32767).astype("<i2").tobytes()
        finals: list[float] = []
        replies: list[float] = []
        wrong = 0
        for turn in range(turns + 1):
            ws = await b.session.ws_connect(f"http://127.0.0.1:{voice_port}/ws/voice",
                                            headers={"Protocol-Version": "3"})
            inbox: asyncio.Queue[tuple[int, str, Any]] = asyncio.Queue()
            codec = BinaryCodec(3)

            async def read(ws: aiohttp.ClientWebSocketResponse = ws, inbox: asyncio.Queue[Any] = inbox,
                           codec: BinaryCodec = codec) -> None:
                async for msg in ws:
                    now = time.perf_counter_ns()
                    if msg.type is aiohttp.WSMsgType.TEXT:
                        inbox.put_nowait((now, "json", json.loads(msg.data)))
                    elif msg.type is aiohttp.WSMsgType.BINARY and codec.decode(msg.data).type is FrameType.AUDIO:
                        inbox.put_nowait((now, "audio", None))

            reader = asyncio.create_task(read())
            try:
                await ws.send_str(json.dumps({"type": "hello", "version": 3, "deviceId": "thermostat-001",
                                              "audio_params": {"format": "pcm", "sample_rate": 16000, "channels": 1,
                                                               "frame_duration": FRAME_MS}}))
                _, _, hello = await asyncio.wait_for(inbox.get(), 10)
                if hello.get("provider") != "offline":
                    raise RuntimeError(f"expected the offline recogniser, got hello {hello}")
                await asyncio.sleep(3.0 if turn == 0 else 0.3)  # a speaker's wake word, then the request
                final_ms, reply_ms, transcript = await one_turn(ws, codec, speech, inbox)
                if turn:  # the first turn warms the daemon's own caches
                    finals.append(final_ms)
                    replies.append(reply_ms)
                    wrong += transcript != LATENCY_TEXT
            finally:
                await ws.close()
                reader.cancel()
                await asyncio.gather(reader, return_exceptions=True)
        active_mb = proc_status_kib(daemon.pid, "VmRSS") / 1024
        peak_mb = proc_status_kib(daemon.pid, "VmHWM") / 1024
        await asyncio.sleep(12.0)  # voice.offline.unload_after_s = 10 here
        unloaded_mb = proc_status_kib(daemon.pid, "VmRSS") / 1024
    finally:
        await asyncio.to_thread(proc.terminate, signal.SIGTERM)
    p50, p95 = median(replies), percentile(replies, 95)
    report = b.report
    report.add(Row("offline voice end of speech → first TTS audio frame (p50)", p50, "ms", median(finals),
                   p50 / median(finals), f"≤ {P50_TARGET_MS:g} ms", p50 <= P50_TARGET_MS,
                   f"{len(replies)} turns of a {len(speech) / 32000:.1f} s question in real time, whole daemon, "
                   "no key; "
                   f"from the frame completing the {SILENCE_MS} ms silence window; baseline: to asr definite "
                   f"(recognised, p95 {percentile(finals, 95):.0f} ms); {wrong} transcript(s) not exact"))
    report.add(Row("offline voice end of speech → first TTS audio frame (p95)", p95, "ms",
                   target=f"≤ {P95_TARGET_MS:g} ms", ok=p95 <= P95_TARGET_MS))
    report.add(Row("daemon RSS with the offline recogniser loaded", active_mb, "MB", idle_mb, active_mb / idle_mb,
                   f"≤ {RSS_TARGET_MB:g} MB", active_mb <= RSS_TARGET_MB,
                   f"{DEVICES} devices with names and rooms; baseline: the same daemon idle before any speaker; "
                   f"peak (VmHWM) {peak_mb:.1f} MB; {unloaded_mb:.1f} MB after voice.offline.unload_after_s"))


# =========================================================================== 3. vocabulary


def vocabulary_build(report: Report) -> None:
    from test_local_engine import make_registry

    catalog = make_registry().catalog
    small = [DeviceNames(d.product_id, (d.metadata["name"],), (d.metadata["room"],)) for d in SITE]
    rng = random.Random(7)
    large = [DeviceNames(PRODUCTS[i % len(PRODUCTS)], (f"{rng.choice(ROOMS)} {rng.choice(NAMES)}",),
                         (rng.choice(ROOMS),)) for i in range(DEVICES)]
    from deviceagentd.voice.recognizer.decoder import ModelFiles

    dictionary = ModelFiles.packaged().dictionary

    def build(devices: list[DeviceNames]) -> tuple[float, float, int, int]:
        tracemalloc.start()
        started = time.perf_counter()
        grammar = build_grammar(catalog, devices)
        build_lexicon(grammar.words, dictionary)
        seconds = time.perf_counter() - started
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        return seconds, peak / 1e6, grammar.automaton.states, grammar.automaton.transitions

    small_s, _, _, _ = build(small)
    large_s, peak_mb, states, arcs = build(large)
    report.add(Row(f"offline ASR vocabulary build, {DEVICES} devices", large_s * 1000, "ms", small_s * 1000,
                   large_s / small_s,
                   note=f"grammar + pronunciations (espeak-ng for missing words and accents), {states} states, "
                        f"{arcs} word transitions, peak Python allocation {peak_mb:.1f} MB (tracemalloc, which also "
                        f"slows it); baseline: the {len(small)}-device test site"))


# =========================================================================== the section


async def voice_offline(b: Bench) -> None:
    if shutil.which("espeak-ng") is None:
        b.report.add(Row("offline ASR intent success", math.nan, "%", ok=False,
                         note="espeak-ng is not installed (apt-get install espeak-ng): no speech to test"))
        return
    quick = b.report.mode == "quick"
    await accuracy(b.report, quick)
    await daemon_part(b, 5 if quick else 20)
    await asyncio.to_thread(vocabulary_build, b.report)


def main(argv: list[str] | None = None) -> int:
    quick = "--quick" in (sys.argv[1:] if argv is None else argv)
    report = Report(mode="quick" if quick else "full")
    started = time.monotonic()
    asyncio.run(accuracy(report, quick))
    vocabulary_build(report)
    report.duration_s = time.monotonic() - started
    print(report.table())
    return 1 if report.missed else 0


if __name__ == "__main__":
    raise SystemExit(main())
