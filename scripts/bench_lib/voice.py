"""`voice`: the realtime voice channel (`/ws/voice`) of a daemon subprocess, end to end, with the
DashScope double of the tests (`tests/voice_doubles.py`) as ASR and TTS and the `local` agent.

The double runs in the benchmark process and answers at once (ASR: the final on `finish-task`;
TTS: every chunk of a clause back to back). It stamps, with `time.perf_counter_ns` (the clock
the clients in the same process read), when it receives `finish-task`, when it sends the ASR
`task-finished` (the DashScope client hands the final over on it) and when it sends the first
binary chunk of every TTS task.

1. Gateway overhead of speech output: double's first binary TTS chunk sent → the client's first
   binary audio frame of that reply received. p50 target ≤ 5 ms. Baseline: the bench client
   running a TTS task on the double directly, the same stamps (one loopback WebSocket hop).
2. End of speech → ASR final handed to the agent, provider answering at once: the double's
   `task-finished` sent → the client's `asr definite:true` received (the session sends it right
   before it starts the agent turn). p50 target ≤ 20 ms. Also, client-visible: the last audio
   frame sent before `finish-task` reached the double (the frame that completed the silence
   window; silence is paced in real time in 30 ms frames) → `asr definite`. Baseline: an ASR task
   run directly on the double, `task-finished` sent → received.
3. 16 voice sessions (the default `voice.max_sessions`) streaming 60 ms frames in real time, a
   few utterances each, while the `ingest` section's publisher sends N telemetry messages: no
   audio dropped (`deviceagentd_voice_dropped_audio_total`), no `error` message, every utterance
   answered; ingest rate with the voice load / without it, target ≥ 0.8. Twice: PCM, then Opus
   (60 ms packets as XiaoZhi firmware encodes them: complexity 0, DTX; replies in Opus too).
4. XiaoZhi dialect, Opus: `tts start` (sent with the transcript, before the agent runs) → the
   client's first binary audio frame, and → its first frame that decodes at the rate and
   duration the server hello announced (the firmware's decoder). Information.

Its own daemon subprocess (the shared one has no voice provider configured).
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import shutil
import signal
import time
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import aiohttp
import numpy as np
from aiohttp import web

from bench_lib import procs, voice_opus
from bench_lib.mqttc import BenchClient
from bench_lib.procs import DaemonClient
from bench_lib.publisher import telemetry_payload
from bench_lib.report import Row
from bench_lib.scenarios import TELEMETRY, THERMOSTATS, client_id, publisher_spec, run_publisher, telemetry_topics
from bench_lib.stats import median, percentile
from bench_lib.voice_vad import espeak
from deviceagentd.voice.protocol import BinaryCodec, FrameType

if TYPE_CHECKING:
    from bench_lib.scenarios import Bench

# The loopback double lives with the tests; procs put tests/ on sys.path.
from mosquitto_broker import free_port
from voice_doubles import AsrScript, DashScopeDouble, DashScopeTask, TtsScript, _chunks

TRANSCRIPT = "what is the current temperature"
DEVICE = "bench-thermostat-000"
SESSIONS = 16  # the default voice.max_sessions
OUT_FRAME_MS = 60  # what the client sends per message in part 3 (XiaoZhi)
PACE_FRAME_MS = 30  # paced silence at the end of a part-2 utterance
TTS_OVERHEAD_TARGET_MS = 5.0
ASR_FINAL_TARGET_MS = 20.0
INGEST_RATIO_TARGET = 0.8
SILENCE_MS = 700  # the product default voice.silence_ms
WAIT_S = 15.0
NS = 1_000_000  # ns per ms


@dataclass(frozen=True)
class VoiceSizes:
    turns: int = 30
    warmup: int = 3
    direct: int = 30
    utterances: int = 3  # per concurrent session, at least
    ingest_messages: int = 50_000
    ingest_rounds: int = 2

    @classmethod
    def quick(cls) -> VoiceSizes:
        return cls(turns=10, warmup=2, direct=10, utterances=2, ingest_messages=20_000, ingest_rounds=1)


# =========================================================================== the timed double


class TimedDashScope(DashScopeDouble):
    """The test double, stamping (perf_counter_ns) finish-task received, the ASR task-finished
    sent and the first binary TTS chunk sent, per task."""

    def __init__(self) -> None:
        super().__init__()
        self.finish_ns: dict[str, int] = {}
        self.final_ns: dict[str, int] = {}
        self.tts_first_ns: dict[str, int] = {}

    def _parse_command(self, text: str, task: DashScopeTask) -> tuple[str, dict[str, Any]]:
        action, payload = super()._parse_command(text, task)
        if action == "finish-task" and task.kind == "asr":
            self.finish_ns[task.task_id] = time.perf_counter_ns()
        return action, payload

    async def _send_event(self, ws: web.WebSocketResponse, task: DashScopeTask, event: str,
                          payload: dict[str, Any] | None = None, **header: str) -> None:
        if event == "task-finished" and task.kind == "asr":
            self.final_ns[task.task_id] = time.perf_counter_ns()
        await super()._send_event(ws, task, event, payload, **header)

    async def _speak(self, ws: web.WebSocketResponse, task: DashScopeTask, index: int, text: str, rate: int) -> None:
        # voice_doubles.DashScopeDouble._speak, with the first binary chunk stamped.
        script = self.tts
        output: dict[str, Any] = {"sentence": {"index": index, "words": []}, "type": "sentence-begin",
                                  "original_text": text}
        await self._send_event(ws, task, "result-generated", {"output": output})
        for chunk in _chunks(self.tts_pcm(text, rate), script.chunk_bytes):
            output = {"sentence": {"index": index, "words": []}, "type": "sentence-synthesis"}
            await self._send_event(ws, task, "result-generated", {"output": output})
            self.tts_first_ns.setdefault(task.task_id, time.perf_counter_ns())
            await ws.send_bytes(chunk)
            if script.chunk_delay_s:
                await asyncio.sleep(script.chunk_delay_s)
        output = {"sentence": {"index": index, "words": []}, "type": "sentence-end", "original_text": text}
        await self._send_event(ws, task, "result-generated", {"output": output, "usage": {"characters": len(text)}})


def asr_script() -> AsrScript:
    # No sentence closes on its own: the final comes on finish-task, i.e. at our end of speech.
    return AsrScript(sentences=[TRANSCRIPT], bytes_per_sentence=10**9, partial_every_bytes=6400)


# =========================================================================== a voice client


class Client:
    """One /ws/voice connection, protocol 3; every message received is stamped on arrival."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.codec = BinaryCodec(3)
        self.events: list[tuple[int, str, Any]] = []  # (perf_counter_ns, "json" | "audio", dict | bytes)
        self.changed = asyncio.Event()
        self.closed = False
        self.reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        try:
            while True:
                msg = await self.ws.receive()
                now = time.perf_counter_ns()
                if msg.type is aiohttp.WSMsgType.TEXT:
                    self.events.append((now, "json", json.loads(msg.data)))
                elif msg.type is aiohttp.WSMsgType.BINARY:
                    frame = self.codec.decode(msg.data)
                    self.events.append((now, "audio" if frame.type is FrameType.AUDIO else "json", frame.payload))
                else:
                    return
                self.changed.set()
        finally:
            self.closed = True
            self.changed.set()

    async def send(self, message: dict[str, Any]) -> None:
        await self.ws.send_str(json.dumps(message))

    async def audio(self, pcm: bytes) -> None:
        await self.ws.send_bytes(self.codec.audio(pcm))

    def find(self, kind: str, after: int = 0, **fields: Any) -> int | None:
        for i in range(after, len(self.events)):
            _, tag, data = self.events[i]
            if tag == "json" and data.get("type") == kind and all(data.get(k) == v for k, v in fields.items()):
                return i
        return None

    async def wait(self, kind: str, after: int = 0, timeout_s: float = WAIT_S, **fields: Any) -> int:
        async with asyncio.timeout(timeout_s):
            while (i := self.find(kind, after, **fields)) is None:
                if self.closed:
                    raise RuntimeError(f"voice connection closed before {kind} {fields}: {self.jsons(after)}")
                self.changed.clear()
                await self.changed.wait()
        return i

    def jsons(self, after: int = 0, kind: str | None = None) -> list[dict[str, Any]]:
        return [d for _, t, d in self.events[after:] if t == "json" and (kind is None or d.get("type") == kind)]

    def audio_bytes(self, after: int = 0) -> int:
        return sum(len(d) for _, t, d in self.events[after:] if t == "audio")

    def audio_ms(self, opus: bool) -> float:
        """Reply audio received: PCM by its bytes, Opus by its packets (one frame each)."""
        if opus:
            return sum(OUT_FRAME_MS for _, t, _ in self.events if t == "audio")
        return self.audio_bytes() / 32

    async def close(self) -> None:
        if not self.ws.closed:
            await self.ws.close()
        await asyncio.gather(self.reader, return_exceptions=True)


async def connect(session: aiohttp.ClientSession, url: str, session_id: str, fmt: str = "pcm",
                  xiaozhi: bool = False) -> Client:
    ws = await session.ws_connect(url, headers={"Protocol-Version": "3"}, max_msg_size=0)
    client = Client(ws)
    hello: dict[str, Any] = {
        "type": "hello", "version": 3, "sessionId": session_id, "productId": "thermostat", "deviceId": DEVICE,
        "audio_params": {"format": fmt, "sample_rate": 16000, "channels": 1, "frame_duration": OUT_FRAME_MS}}
    if xiaozhi:
        hello.update(features={"mcp": False}, transport="websocket")
    await client.send(hello)
    await client.wait("hello")
    return client


def pcm16(signal: Any) -> bytes:
    return np.clip(np.rint(signal), -32768, 32767).astype("<i2").tobytes()


def silence(ms: int) -> bytes:
    return bytes(32 * ms)


# =========================================================================== the section


async def voice(b: Bench) -> None:
    if shutil.which("espeak-ng") is None:
        b.report.add(Row("voice gateway overhead", math.nan, "ms", ok=False,
                         note="espeak-ng is not installed (apt-get install espeak-ng): no speech to send"))
        return
    sizes = VoiceSizes.quick() if b.report.mode == "quick" else VoiceSizes()
    speech = pcm16(await asyncio.to_thread(espeak, TRANSCRIPT))
    async with TimedDashScope() as double:
        double.asr = asr_script()
        double.tts = TtsScript(ms_per_char=10, chunk_bytes=3200)
        voice_port = free_port()
        overrides = {**procs.daemon_overrides(), "voice_aliyun_api_key": double.api_key,
                     "voice_aliyun_url": double.url, "voice_listen": f"127.0.0.1:{voice_port}"}
        proc = procs.spawn_daemon(b.broker.url, b.workdir / "voice-state", **overrides)
        try:
            await asyncio.to_thread(proc.wait_http, 30.0)
            daemon = DaemonClient(proc, b.session)
            await daemon.wait_subscribed(b.broker.url)
            await register_thermostats(b, daemon)
            url = f"http://127.0.0.1:{voice_port}/ws/voice"
            turns = await sequential_turns(double, url, speech, sizes)
            await direct_baselines(b, double, sizes, turns)
            await concurrent_sessions(b, daemon, double, url, speech, sizes)
            await concurrent_sessions(b, daemon, double, url, speech, sizes, opus=True)
            await xiaozhi_turns(b, double, url, speech, sizes)
        finally:
            await asyncio.to_thread(proc.terminate, signal.SIGTERM)
        if double.problems:
            raise RuntimeError(f"the DashScope double saw protocol problems: {double.problems[:3]}")


async def register_thermostats(b: Bench, daemon: DaemonClient) -> None:
    """The ingest publisher's 100 thermostats, so its messages are all plain state updates."""
    before = (await daemon.scrape()).value("deviceagentd_devices_total")
    client = BenchClient(b.broker.url, client_id("voice-register"))
    await client.connect()
    for i, topic in enumerate(telemetry_topics()):
        client.publish0(topic, telemetry_payload(i))
    await client.drain()
    await client.disconnect()
    _, total = await daemon.wait_counter("deviceagentd_devices_total", before + THERMOSTATS, stall_s=5.0)
    if total < before + THERMOSTATS:
        raise RuntimeError(f"only {total - before:.0f} of {THERMOSTATS} thermostats registered")


# --------------------------------------------------------------------------- 1 + 2. sequential turns


@dataclass
class TurnStamps:
    tts_ms: float  # double's first TTS byte → client's first audio frame
    final_ms: float  # double's task-finished sent → client's asr definite
    frame_ms: float  # last audio frame sent before finish-task → asr definite
    segment_ms: float  # that frame sent → finish-task at the double
    audio_ms: float  # received reply audio


async def one_turn(client: Client, double: TimedDashScope, speech: bytes) -> TurnStamps:
    """listen start; lead silence, the sentence and window − 200 ms of silence at once (the
    session works in audio time); then 30 ms silence frames in real time until asr definite."""
    asr_before = {t.task_id for t in double.tasks if t.kind == "asr"}
    tts_before = {t.task_id for t in double.tasks if t.kind == "tts"}
    mark = len(client.events)
    await client.send({"type": "listen", "state": "start", "mode": "auto"})
    burst = silence(300) + speech + silence(SILENCE_MS - 200)
    for i in range(0, len(burst), 1920):
        await client.audio(burst[i:i + 1920])
    sent: list[int] = []
    frame = silence(PACE_FRAME_MS)
    next_at = time.perf_counter()
    while client.find("asr", mark, definite=True) is None:
        if len(sent) * PACE_FRAME_MS > 3000:
            raise RuntimeError(f"no asr definite 3 s after the end of the sentence: {client.jsons(mark)}")
        sent.append(time.perf_counter_ns())
        await client.audio(frame)
        next_at += PACE_FRAME_MS / 1000
        # The reader task stamps asr definite on arrival; this loop only paces the frames.
        await asyncio.sleep(max(0.0, next_at - time.perf_counter()))
    i_final = await client.wait("asr", mark, definite=True)
    t_final_rx, _, final = client.events[i_final]
    if final.get("text") != TRANSCRIPT:
        raise RuntimeError(f"unexpected transcript {final}")
    i_done = await client.wait("tts_complete", i_final)
    errors = client.jsons(mark, "error")
    if errors:
        raise RuntimeError(f"voice turn failed: {errors}")
    asr = [t for t in double.tasks if t.kind == "asr" and t.task_id not in asr_before]
    tts = [t for t in double.tasks if t.kind == "tts" and t.task_id not in tts_before]
    if len(asr) != 1 or not tts:
        raise RuntimeError(f"expected one ASR task and TTS tasks in a turn, got {len(asr)} and {len(tts)}")
    finish = double.finish_ns[asr[0].task_id]
    final_sent = double.final_ns[asr[0].task_id]
    first_tts = double.tts_first_ns[tts[0].task_id]  # the first clause: the first TTS task opened
    first_audio = next(t for t, tag, _ in client.events[i_final:i_done] if tag == "audio")
    before_finish = [t for t in sent if t <= finish]
    last_frame = before_finish[-1] if before_finish else math.nan
    return TurnStamps((first_audio - first_tts) / NS, (t_final_rx - final_sent) / NS, (t_final_rx - last_frame) / NS,
                      (finish - last_frame) / NS, client.audio_bytes(i_final) / 32)


async def sequential_turns(double: TimedDashScope, url: str, speech: bytes, sizes: VoiceSizes) -> list[TurnStamps]:
    turns: list[TurnStamps] = []
    async with aiohttp.ClientSession() as session:
        client = await connect(session, url, "bench-voice-seq")
        try:
            for i in range(sizes.warmup + sizes.turns):
                stamps = await one_turn(client, double, speech)
                if i >= sizes.warmup:
                    turns.append(stamps)
        finally:
            await client.close()
    return turns


# --------------------------------------------------------------------------- baselines: the double directly


async def direct_task(session: aiohttp.ClientSession, double: TimedDashScope, kind: str) -> float:
    """One ASR or TTS task run by the bench client on the double itself: stamp → receipt, ms."""
    task_id = uuid.uuid4().hex
    headers = {"Authorization": f"Bearer {double.api_key}"}

    def command(action: str, payload: dict[str, Any]) -> str:
        return json.dumps({"header": {"action": action, "task_id": task_id, "streaming": "duplex"},
                           "payload": payload})

    if kind == "asr":
        run = {"task_group": "audio", "task": "asr", "function": "recognition", "model": "paraformer-realtime-v2",
               "parameters": {"format": "pcm", "sample_rate": 16000}, "input": {}}
    else:
        run = {"task_group": "audio", "task": "tts", "function": "SpeechSynthesizer", "model": "cosyvoice-v2",
               "parameters": {"text_type": "PlainText", "voice": "longxiaochun_v2", "format": "pcm",
                              "sample_rate": 24000}, "input": {}}
    async with session.ws_connect(double.url, headers=headers) as ws:
        await ws.send_str(command("run-task", run))
        msg = await ws.receive()
        if json.loads(msg.data)["header"]["event"] != "task-started":
            raise RuntimeError(f"direct {kind} task did not start: {msg.data}")
        if kind == "asr":
            await ws.send_bytes(bytes(9600))
            await ws.send_str(command("finish-task", {"input": {}}))
            while True:
                msg = await ws.receive()
                if msg.type is aiohttp.WSMsgType.TEXT and json.loads(msg.data)["header"]["event"] == "task-finished":
                    received = time.perf_counter_ns()
                    stamp = double.final_ns[task_id]
                    break
        else:
            await ws.send_str(command("continue-task", {"input": {"text": "It is 21 degrees."}}))
            while True:
                msg = await ws.receive()
                if msg.type is aiohttp.WSMsgType.BINARY:
                    received = time.perf_counter_ns()
                    stamp = double.tts_first_ns[task_id]
                    break
            await ws.send_str(command("finish-task", {"input": {}}))
            while True:  # the rest of the audio, then task-finished
                msg = await ws.receive()
                if msg.type is aiohttp.WSMsgType.BINARY:
                    continue
                if msg.type is not aiohttp.WSMsgType.TEXT or json.loads(msg.data)["header"]["event"] == "task-finished":
                    break
        await ws.close()
    return (received - stamp) / NS


async def direct_baselines(b: Bench, double: TimedDashScope, sizes: VoiceSizes, turns: list[TurnStamps]) -> None:
    tts: list[float] = []
    asr: list[float] = []
    async with aiohttp.ClientSession() as session:
        for _ in range(sizes.direct):
            tts.append(await direct_task(session, double, "tts"))
            asr.append(await direct_task(session, double, "asr"))
    n = len(turns)
    tts_ms = [t.tts_ms for t in turns]
    final_ms = [t.final_ms for t in turns]
    frame_ms = [t.frame_ms for t in turns if not math.isnan(t.frame_ms)]
    segment_ms = [t.segment_ms for t in turns if not math.isnan(t.segment_ms)]
    p50, base = percentile(tts_ms, 50), percentile(tts, 50)
    b.report.add(Row(f"voice first TTS byte → client's first audio frame p50 ({n} turns)", p50, "ms", base, p50 / base,
                     f"≤ {TTS_OVERHEAD_TARGET_MS:g} ms", p50 <= TTS_OVERHEAD_TARGET_MS,
                     f"the double (bench process) sends its first binary chunk of the reply's first clause (24 kHz, "
                     f"3,200-byte chunks back to back) → the bench client receives the first binary audio frame "
                     f"(16 kHz, 60 ms) of /ws/voice; p99 {percentile(tts_ms, 99):.2f} ms, max {max(tts_ms):.2f} ms; "
                     f"local agent, one session, sequential; baseline: a TTS task run by the bench client on the "
                     f"double directly, first chunk sent → received (one loopback WebSocket hop; the gateway path "
                     f"has two), p99 {percentile(tts, 99):.2f} ms"))
    p50, base = percentile(final_ms, 50), percentile(asr, 50)
    b.report.add(Row(f"voice ASR final → asr definite (handed to the agent) p50 ({n} turns)", p50, "ms", base,
                     p50 / base, f"≤ {ASR_FINAL_TARGET_MS:g} ms", p50 <= ASR_FINAL_TARGET_MS,
                     "the double answers finish-task at once; its task-finished (on which the DashScope client "
                     "hands over the final) sent → the client receives `asr definite:true`, which the session sends "
                     f"right before it starts the agent turn; p99 {percentile(final_ms, 99):.2f} ms; baseline: an ASR "
                     f"task run on the double directly, task-finished sent → received; "
                     f"p99 {percentile(asr, 99):.2f} ms"))
    f50 = percentile(frame_ms, 50)
    b.report.add(Row("  client-visible: frame completing the silence window → asr definite p50", f50, "ms",
                     note=f"{len(frame_ms)} turns; silence paced in real time in {PACE_FRAME_MS} ms frames after the "
                     f"sentence and {SILENCE_MS - 200} ms of silence sent at once; the frame is the last one sent "
                     "before finish-task reached the double; of which that frame → finish-task (framing, VAD, "
                     f"end of speech, ASR finish) p50 {percentile(segment_ms, 50):.2f} ms; p99 "
                     f"{percentile(frame_ms, 99):.2f} ms; information only (the same with 60 ms paced frames, so it is "
                     "not a frame late)"))


# --------------------------------------------------------------------------- 3. concurrent sessions


@dataclass
class VoiceLoad:
    sessions: int
    min_utterances: int
    utterances: list[int] = field(default_factory=list)  # asr definite per session
    completes: list[int] = field(default_factory=list)  # tts_complete per session
    errors: list[str] = field(default_factory=list)
    frames_sent: int = 0
    audio_received_ms: float = 0.0
    late_ms: list[float] = field(default_factory=list)  # how late each paced send was
    warm: asyncio.Event = field(default_factory=asyncio.Event)
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    warm_count: int = 0

    def __post_init__(self) -> None:
        self.utterances = [0] * self.sessions
        self.completes = [0] * self.sessions


async def streaming_client(session: aiohttp.ClientSession, url: str, k: int, program: bytes, load: VoiceLoad,
                           packets: list[bytes] | None = None) -> None:
    """A device with its microphone open: 60 ms frames in real time, the program (lead silence,
    the sentence, silence long enough for the reply) over and over, until told to stop and
    `min_utterances` have been answered (tts_complete). With `packets`: the program as Opus
    packets, one per message, and the session in Opus both ways."""
    client = await connect(session, url, f"bench-voice-load-{k:02d}", "opus" if packets else "pcm")
    try:
        await client.send({"type": "listen", "state": "start", "mode": "auto"})
        frame_bytes = 32 * OUT_FRAME_MS
        frames = packets or [program[i:i + frame_bytes] for i in range(0, len(program) - frame_bytes + 1, frame_bytes)]
        # Sessions start spread over one program, as devices would.
        await asyncio.sleep(random.Random(k).random() * 0.5)
        start = time.perf_counter()
        n = 0
        warm = False
        while True:
            completes = len(client.jsons(kind="tts_complete"))
            if load.stop.is_set() and completes >= load.min_utterances and n % len(frames) == 0:
                break
            at = start + n * OUT_FRAME_MS / 1000
            delay = at - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            else:
                load.late_ms.append(-delay * 1000)
            await client.audio(frames[n % len(frames)])
            n += 1
            if client.closed:
                raise RuntimeError(f"session {k} closed: {client.jsons()[-3:]}")
            if not warm and client.find("asr", definite=True) is not None:
                warm = True
                load.warm_count += 1
                if load.warm_count == load.sessions:
                    load.warm.set()
        # The last reply has been played out; what is still in flight is a trailing partial.
        await asyncio.sleep(0.2)
        load.frames_sent += n
        load.utterances[k] = sum(1 for m in client.jsons(kind="asr") if m["definite"])
        load.completes[k] = len(client.jsons(kind="tts_complete"))
        load.audio_received_ms += client.audio_ms(packets is not None)
        load.errors.extend(f"session {k}: {m}" for m in client.jsons(kind="error"))
        wrong = [m["text"] for m in client.jsons(kind="asr") if m["definite"] and m["text"] != TRANSCRIPT]
        load.errors.extend(f"session {k}: transcript {t!r}" for t in wrong)
    finally:
        await client.close()


@dataclass
class IngestRun:
    rate: float
    received: int
    daemon_cpu: float


async def ingest_run(b: Bench, daemon: DaemonClient, n: int, load_start: Any = None) -> IngestRun:
    before = await daemon.counter(TELEMETRY, kind="telemetry")
    marks: dict[str, float] = {}

    async def before_go() -> None:
        if load_start is not None:
            await load_start()
        marks["cpu"] = procs.cpu_seconds(daemon.pid)
        marks["t"] = time.monotonic()

    pub = await run_publisher(publisher_spec(b, "voice-ingest", "telemetry", telemetry_topics(), count=n),
                              before_go=before_go)
    done_at, value = await daemon.wait_counter(TELEMETRY, before + n, labels={"kind": "telemetry"})
    cpu = procs.cpu_seconds(daemon.pid) - marks["cpu"]
    wall = time.monotonic() - marks["t"]
    sent = await pub.result()
    received = int(value - before)
    return IngestRun(received / (done_at - sent["t_first"]), received, cpu / wall)


async def concurrent_sessions(b: Bench, daemon: DaemonClient, double: TimedDashScope, url: str, speech: bytes,
                              sizes: VoiceSizes, opus: bool = False) -> None:
    # Lead 0.3 s, the sentence, then the end-of-speech window, the reply (~1 s of audio at 10 ms
    # per character), the mute tail and a margin before the next sentence.
    program = silence(300) + speech + silence(2700)
    program += bytes(-len(program) % (32 * OUT_FRAME_MS))
    program_s = len(program) / 32000
    packets = voice_opus.packets_of(program, 16000) if opus else None
    what = "Opus" if opus else "PCM"
    n = sizes.ingest_messages
    alone: list[IngestRun] = []
    loaded: list[IngestRun] = []
    loads: list[VoiceLoad] = []
    scrape0 = await daemon.scrape()
    tts_before = len([t for t in double.tasks if t.kind == "tts"])
    for r in range(sizes.ingest_rounds):
        # Odd rounds measure the baseline after the voice load instead of before: no order effect.
        if r % 2 == 0:
            alone.append(await ingest_run(b, daemon, n))
        load = VoiceLoad(SESSIONS, sizes.utterances)
        session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=SESSIONS + 4))
        tasks: list[asyncio.Task[None]] = []

        async def start_load(load: VoiceLoad = load, session: aiohttp.ClientSession = session,
                             tasks: list[asyncio.Task[None]] = tasks) -> None:
            tasks.extend(asyncio.create_task(streaming_client(session, url, k, program, load, packets))
                         for k in range(SESSIONS))
            # Every session has had its first utterance recognised: the load is in its steady state.
            await asyncio.wait_for(load.warm.wait(), program_s + 10)

        try:
            loaded.append(await ingest_run(b, daemon, n, start_load))
            load.stop.set()
            results = await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True),
                                             (sizes.utterances + 2) * program_s + 10)
            load.errors.extend(repr(r) for r in results if isinstance(r, BaseException))
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await session.close()
        loads.append(load)
        if r % 2 == 1:
            alone.append(await ingest_run(b, daemon, n))
    scrape1 = await daemon.scrape()
    dropped = scrape1.value("deviceagentd_voice_dropped_audio_total") - scrape0.value(
        "deviceagentd_voice_dropped_audio_total")
    voice_errors = scrape1.value("deviceagentd_voice_errors_total") - scrape0.value("deviceagentd_voice_errors_total")
    tts_tasks = [t for t in double.tasks if t.kind == "tts"][tts_before:]
    tts_ms = sum(len(double.tts_pcm(text, 24000)) for t in tts_tasks for text in t.texts) / 48
    received_ms = sum(load.audio_received_ms for load in loads)
    completes = [c for load in loads for c in load.completes]
    utterances = [u for load in loads for u in load.utterances]
    errors = [e for load in loads for e in load.errors]
    frames = sum(load.frames_sent for load in loads)
    late = [x for load in loads for x in load.late_ms]
    ratios = [d.rate / a.rate for d, a in zip(loaded, alone, strict=True)]
    ratio = median(ratios)
    rounds = sizes.ingest_rounds
    # Every reply's audio arrives whole: at least what the double synthesised, at most one
    # padded frame (plus the resampler's tail) more per reply.
    audio_ok = tts_ms - 1 <= received_ms <= tts_ms + sum(completes) * OUT_FRAME_MS
    ok = dropped == 0 and not errors and voice_errors == 0 and min(completes) >= sizes.utterances and audio_ok
    b.report.add(Row(f"voice: audio dropped or errors, {SESSIONS} {what} sessions streaming in real time",
                     dropped + len(errors), "count", target="= 0", ok=ok,
                     note=f"{frames:,} frames of {OUT_FRAME_MS} ms sent in {rounds} round(s); "
                     f"deviceagentd_voice_dropped_audio_total +{dropped:.0f}, voice_errors_total +{voice_errors:.0f}, "
                     f"{len(errors)} error message(s)/failures at the clients"
                     + (f" (first: {errors[0]})" if errors else "")
                     + f"; utterances recognised per session {min(utterances)}–{max(utterances)}, answered "
                     f"(tts_complete) {min(completes)}–{max(completes)} (at least {sizes.utterances} required); "
                     f"reply audio received {received_ms / 1000:.2f} s of {tts_ms / 1000:.2f} s synthesised by the "
                     f"double ({'within' if audio_ok else 'NOT within'} one padded frame per reply); client sends late "
                     f"by > 10 ms: "
                     f"{sum(1 for x in late if x > 10)}, max {max(late, default=0):.1f} ms"))
    rate, base = median([r.rate for r in loaded]), median([r.rate for r in alone])
    b.report.add(Row(f"telemetry ingest rate during {SESSIONS} {what} voice sessions ({n:,} msgs, median of {rounds})",
                     rate, "msg/s", base, ratio, f"ratio ≥ {INGEST_RATIO_TARGET:g}", ratio >= INGEST_RATIO_TARGET,
                     "the ingest section's publisher, as fast as it goes, started once every session has had an "
                     "utterance recognised; baseline: the same without voice, before (odd rounds: after); per round "
                     "with / without: "
                     + ", ".join(f"{d.rate:,.0f} / {a.rate:,.0f} ({d.rate / a.rate:.2f})"
                                 for d, a in zip(loaded, alone, strict=True))
                     + f" msg/s; daemon on a CPU {median([r.daemon_cpu for r in loaded]):.0%} with voice vs "
                     f"{median([r.daemon_cpu for r in alone]):.0%} without"))


# --------------------------------------------------------------------------- 4. XiaoZhi: tts start → audio


async def xiaozhi_turns(b: Bench, double: TimedDashScope, url: str, speech: bytes, sizes: VoiceSizes) -> None:
    import opuslib_next

    start_to_audio: list[float] = []
    start_to_decoded: list[float] = []
    async with aiohttp.ClientSession() as session:
        client = await connect(session, url, "bench-voice-xiaozhi", "opus", xiaozhi=True)
        _, _, hello = client.events[await client.wait("hello")]
        rate, frame_ms = hello["audio_params"]["sample_rate"], hello["audio_params"]["frame_duration"]
        decoder = opuslib_next.Decoder(rate, 1)
        burst = voice_opus.packets_of(silence(300) + speech + silence(SILENCE_MS + 600), 16000)
        try:
            for i in range(sizes.warmup + sizes.turns):
                mark = len(client.events)
                await client.send({"type": "listen", "state": "start", "mode": "auto"})
                for packet in burst:
                    await client.audio(packet)
                i_start = await client.wait("tts", mark, state="start")
                i_stop = await client.wait("tts", i_start, state="stop")
                if client.jsons(mark, "error"):
                    raise RuntimeError(f"xiaozhi turn failed: {client.jsons(mark, 'error')}")
                t_start = client.events[i_start][0]
                audio = [(t, data) for t, tag, data in client.events[i_start:i_stop] if tag == "audio"]
                decoded_at = None
                for t, data in audio:
                    try:
                        if len(decoder.decode(data, rate // 1000 * frame_ms)) == rate // 1000 * frame_ms * 2:
                            decoded_at = t
                            break
                    except opuslib_next.OpusError:
                        continue
                if i >= sizes.warmup and audio and decoded_at is not None:
                    start_to_audio.append((audio[0][0] - t_start) / NS)
                    start_to_decoded.append((decoded_at - t_start) / NS)
        finally:
            await client.close()
    n = len(start_to_audio)
    for label, values in (("first audio frame", start_to_audio), ("first decodable frame", start_to_decoded)):
        b.report.add(Row(f"voice XiaoZhi/Opus: tts start → the client's {label} p50 ({n} turns)",
                         percentile(values, 50) if values else math.nan, "ms",
                         note=f"tts start goes out with the transcript, before the agent runs (firmware enters its "
                         f"Speaking state on it, asynchronously); this is the local agent + the double's first TTS "
                         f"chunk + resampling + Opus encoding at {rate} Hz in {frame_ms} ms packets; p99 "
                         f"{percentile(values, 99) if values else math.nan:.2f} ms; decodable: by a decoder at the "
                         "announced rate and duration, as the firmware's; information"))
