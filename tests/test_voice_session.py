"""The voice WebSocket (/ws/voice, SPEC §5) end to end on loopback: real WebSocket connections to
an aiohttp app built with `add_routes`, a real Agent with a scripted provider and in-memory
sessions, espeak-ng speech, and the DashScope / OpenAI doubles as the speech providers.

Audio is sent faster than real time unless a test needs otherwise: the server works in audio
time (the segmenter) and paces only its own TTS output."""

from __future__ import annotations

import asyncio
import json
import struct
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest
import voice_samples as vs
from aiohttp import web
from test_agent_runner import MemorySessions
from voice_doubles import AsrScript, DashScopeDouble, DashScopeTask, OpenAiAudioDouble, TtsScript

from deviceagentd.agent.runner import Agent, TurnRequest
from deviceagentd.agent.types import (
    Delta,
    ImageInput,
    ProviderError,
    ToolCall,
    ToolCallFinished,
    ToolCallStarted,
    ToolResult,
    Tools,
    ToolSpec,
    TurnContext,
    TurnEvent,
)
from deviceagentd.config import VoiceAliyunConfig, VoiceConfig, VoiceOpenAIConfig
from deviceagentd.core.clock import Clock
from deviceagentd.core.errors import NotFound
from deviceagentd.core.metrics import Metrics
from deviceagentd.voice.audio import Resampler
from deviceagentd.voice.clauses import ClauseSplitter, speakable
from deviceagentd.voice.protocol import BinaryCodec, FrameType
from deviceagentd.voice.server import add_routes
from deviceagentd.voice.service import VoiceService
from deviceagentd.voice.settings import SessionSettings

WAIT_S = 15.0  # generous: only a broken pipeline takes this long
TRANSCRIPT = "what is the current temperature"
CLAUSE_1 = "It is 21 degrees in the living room."
CLAUSE_2 = "The target is 24 degrees."
VOICE_DIR = str(Path(__file__).resolve().parent.parent / "deviceagentd" / "voice")
# Shorter than the defaults, still far above what a working pipeline needs on loopback.
TEST_SETTINGS = {
    "hello_timeout_s": 5.0,
    "asr_start_timeout_s": 5.0,
    "asr_final_timeout_s": 5.0,
    "tts_first_audio_timeout_s": 5.0,
    "tts_chunk_timeout_s": 5.0,
}


# ------------------------------------------------------------------------------ the agent side


@dataclass
class DictFrames:
    frames: dict[str, ImageInput] = field(default_factory=dict)

    async def load_image(self, frame_id: str) -> ImageInput:
        if frame_id not in self.frames:
            raise NotFound(f"vision frame {frame_id!r} is unknown or has expired", {"frameId": frame_id})
        return self.frames[frame_id]


class EchoTools:
    def specs(self) -> list[ToolSpec]:
        return []

    async def call(self, call: ToolCall, context: TurnContext) -> ToolResult:
        return ToolResult(call.id, call.name, True, result={"temperature": 21})


Script = Callable[["ScriptedProvider", TurnContext], AsyncIterator[TurnEvent]]


async def two_sentences(provider: ScriptedProvider, context: TurnContext) -> AsyncIterator[TurnEvent]:
    yield Delta(CLAUSE_1 + " ")
    yield Delta(CLAUSE_2)


@dataclass
class ScriptedProvider:
    """The agent's provider: runs `script`, records what it saw and whether it was cancelled."""

    name: str = "scripted"
    script: Script = two_sentences
    contexts: list[TurnContext] = field(default_factory=list)
    release: asyncio.Event = field(default_factory=asyncio.Event)
    cancelled: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(self, context: TurnContext, tools: Tools) -> AsyncIterator[TurnEvent]:
        self.contexts.append(context)
        try:
            async for event in self.script(self, context):
                yield event
        except (asyncio.CancelledError, GeneratorExit):
            self.cancelled.set()
            raise


# ------------------------------------------------------------------------------ the rig


@dataclass
class Rig:
    service: VoiceService
    agent: Agent
    provider: ScriptedProvider
    sessions: MemorySessions
    frames: DictFrames
    ds: DashScopeDouble
    oa: OpenAiAudioDouble
    runner: web.AppRunner
    http: aiohttp.ClientSession
    url: str
    conns: list[VoiceConn] = field(default_factory=list)

    async def connect(self, version: int | None = 3, headers: dict[str, str] | None = None,
                      query: str = "") -> VoiceConn:
        all_headers = dict(headers or {})
        if version is not None:
            all_headers.setdefault("Protocol-Version", str(version))
        ws = await self.http.ws_connect(self.url + query, headers=all_headers)
        conn = VoiceConn(ws, BinaryCodec(version or 3))
        self.conns.append(conn)
        return conn

    async def close(self) -> None:
        for conn in self.conns:
            await conn.close()
        await self.service.close()
        await self.runner.cleanup()
        await self.http.close()
        await self.ds.stop()
        await self.oa.stop()


async def start_rig(*, aliyun: bool = True, openai: bool = True, tokens: tuple[str, ...] = (),
                    settings: dict[str, Any] | None = None, agent: dict[str, Any] | None = None,
                    ds: DashScopeDouble | None = None, **voice: Any) -> Rig:
    ds = ds or DashScopeDouble()
    oa = OpenAiAudioDouble()
    await ds.start()
    await oa.start()
    ds.asr = AsrScript(sentences=[TRANSCRIPT], bytes_per_sentence=32000, partial_every_bytes=6400)
    ds.tts = TtsScript(ms_per_char=10)
    oa.transcription.text = TRANSCRIPT
    oa.speech.ms_per_char = 10
    aliyun_config = voice.pop("aliyun_config", {})
    openai_config = voice.pop("openai_config", {})
    config = VoiceConfig(
        aliyun=VoiceAliyunConfig(api_key=ds.api_key if aliyun else "", url=ds.url, **aliyun_config),
        openai=VoiceOpenAIConfig(base_url=oa.base_url if openai else "", api_key=oa.api_key or "", **openai_config),
        **voice,
    )
    provider = ScriptedProvider()
    sessions = MemorySessions()
    frames = DictFrames()
    the_agent = Agent(provider, provider, EchoTools(), sessions, frames, **(agent or {}))
    session_settings = replace(SessionSettings.from_config(config), **{**TEST_SETTINGS, **(settings or {})})
    service = VoiceService(config, the_agent, Metrics(), Clock(), tokens=tokens, environ={},
                           settings=session_settings)
    app = web.Application()
    add_routes(app.router, service)
    runner = web.AppRunner(app, access_log=None, handler_cancellation=True, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    return Rig(service, the_agent, provider, sessions, frames, ds, oa, runner, aiohttp.ClientSession(),
               f"http://127.0.0.1:{port}/ws/voice")


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    the_rig = await start_rig()
    try:
        yield the_rig
    finally:
        await the_rig.close()
    assert the_rig.ds.problems == [] and the_rig.oa.problems == []


class VoiceConn:
    """A test client: records everything the server sends, in order."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, codec: BinaryCodec) -> None:
        self.ws = ws
        self.codec = codec
        self.events: list[tuple[str, Any]] = []  # ("json", dict) | ("audio", bytes)
        self.close_code: int | None = None
        self.closed = asyncio.Event()
        self._changed = asyncio.Condition()
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        while True:
            msg = await self.ws.receive()
            if msg.type is aiohttp.WSMsgType.TEXT:
                event: tuple[str, Any] = ("json", json.loads(msg.data))
            elif msg.type is aiohttp.WSMsgType.BINARY:
                frame = self.codec.decode(msg.data)
                assert frame.type is FrameType.AUDIO
                event = ("audio", frame.payload)
            else:
                self.close_code = self.ws.close_code
                self.closed.set()
                async with self._changed:
                    self._changed.notify_all()
                return
            async with self._changed:
                self.events.append(event)
                self._changed.notify_all()

    async def close(self) -> None:
        if not self.ws.closed:
            await self.ws.close()
        self._reader.cancel()
        await asyncio.gather(self._reader, return_exceptions=True)

    async def send(self, message: dict[str, Any]) -> None:
        await self.ws.send_str(json.dumps(message))

    async def send_audio(self, pcm: bytes, frame_bytes: int = 1920, pace_s: float = 0.0) -> None:
        for i in range(0, len(pcm), frame_bytes):
            await self.ws.send_bytes(self.codec.audio(pcm[i:i + frame_bytes]))
            if pace_s:
                await asyncio.sleep(pace_s)

    def messages(self, kind: str | None = None, after: int = 0) -> list[dict[str, Any]]:
        return [data for tag, data in self.events[after:] if tag == "json" and (kind is None or data["type"] == kind)]

    def audio(self, after: int = 0, before: int | None = None) -> bytes:
        return b"".join(data for tag, data in self.events[after:before] if tag == "audio")

    def index(self, predicate: Callable[[dict[str, Any]], bool], after: int = 0) -> int | None:
        for i in range(after, len(self.events)):
            tag, data = self.events[i]
            if tag == "json" and predicate(data):
                return i
        return None

    async def wait(self, kind: str, after: int = 0, timeout: float = WAIT_S,
                   **fields: Any) -> tuple[int, dict[str, Any]]:
        """The first message of `kind` (with these field values) at or after event `after`."""

        def match(data: dict[str, Any]) -> bool:
            return data["type"] == kind and all(data.get(k) == v for k, v in fields.items())

        async def found() -> int:
            async with self._changed:
                while (i := self.index(match, after)) is None:
                    if self.closed.is_set():
                        raise AssertionError(f"closed ({self.close_code}) before {kind} {fields}: {self.messages()}")
                    await self._changed.wait()
                return i

        try:
            i = await asyncio.wait_for(found(), timeout)
        except TimeoutError:
            raise AssertionError(f"no {kind} {fields} within {timeout} s; got {self.messages(after=after)}") from None
        return i, self.events[i][1]

    async def wait_closed(self, timeout: float = WAIT_S) -> int | None:
        await asyncio.wait_for(self.closed.wait(), timeout)
        return self.close_code

    async def hello(self, **fields: Any) -> dict[str, Any]:
        message = {"type": "hello", "version": self.codec.version,
                   "audio_params": {"format": "pcm", "sample_rate": 16000, "channels": 1, "frame_duration": 60},
                   **fields}
        mark = len(self.events)
        await self.send(message)
        _, reply = await self.wait("hello", after=mark)
        return reply

    async def say(self, pcm: bytes, mode: str = "auto", **listen: Any) -> int:
        """listen start, then the audio; returns the event index before it all."""
        mark = len(self.events)
        await self.send({"type": "listen", "state": "start", "mode": mode, **listen})
        await self.send_audio(pcm)
        return mark

    async def turn(self, pcm: bytes) -> tuple[int, int]:
        """A whole auto-mode turn: (index before, index of tts_complete)."""
        mark = await self.say(pcm)
        end, _ = await self.wait("tts_complete", after=mark)
        return mark, end


def said(text: str = TRANSCRIPT, lead_s: float = 0.3, tail_s: float = 1.5, noise_seed: int | None = None) -> bytes:
    """16 kHz s16le: silence (or faint noise), the sentence, silence."""
    signal = np.concatenate([vs.silence(lead_s), vs.speech(text), vs.silence(tail_s)])
    if noise_seed is not None:
        signal = signal + vs.noise(len(signal) / 16000, 40, seed=noise_seed)[: len(signal)]
    return vs.pcm(signal)


def expected_audio(pcm: bytes, source_rate: int, rate: int, frame_ms: int) -> bytes:
    """What the session must send for `pcm` from the TTS: resampled, padded to whole frames."""
    resampler = Resampler(source_rate, rate)
    out = resampler.push(pcm) + resampler.flush()
    frame = rate * frame_ms // 1000 * 2
    return out + bytes(-len(out) % frame)


def voice_tasks() -> list[asyncio.Task[Any]]:
    """Tasks still running code of deviceagentd/voice (sessions and providers)."""
    alive = []
    for task in asyncio.all_tasks():
        code = getattr(task.get_coro(), "cr_code", None)
        if not task.done() and code is not None and code.co_filename.startswith(VOICE_DIR):
            alive.append(task)
    return alive


async def assert_no_voice_tasks(rig: Rig) -> None:
    for _ in range(200):
        if not voice_tasks() and rig.service.open_sessions == 0:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"left running: {voice_tasks()}, open sessions {rig.service.open_sessions}")


async def all_closed(tasks: list[DashScopeTask]) -> None:
    for task in tasks:
        await task.wait_closed()


# ------------------------------------------------------------------------------ handshake


@pytest.mark.parametrize("version", [1, 2, 3])
async def test_hello_and_a_whole_turn_on_each_protocol_version(rig: Rig, version: int) -> None:
    vs.require_espeak()
    conn = await rig.connect(version)
    reply = await conn.hello(sessionId="demo-session")
    assert reply == {"type": "hello", "session_id": "demo-session", "sessionId": "demo-session", "version": version,
                     "transport": "websocket", "provider": "aliyun",
                     "audio_params": {"format": "pcm", "sample_rate": 16000, "channels": 1, "frame_duration": 60}}
    mark, end = await conn.turn(said())
    assert conn.messages("asr", mark)[-1] == {"type": "asr", "text": TRANSCRIPT, "definite": True}
    sizes = {len(data) for tag, data in conn.events[mark:end] if tag == "audio"}
    assert sizes == {1920}  # 60 ms at 16 kHz, each frame in this version's framing


async def test_without_the_header_the_hello_version_decides_and_absent_means_3(rig: Rig) -> None:
    conn = await rig.connect(None)
    conn.codec = BinaryCodec(1)
    assert (await conn.hello(version=1))["version"] == 1
    other = await rig.connect(None)
    reply = await other.hello(version=None)
    assert reply["version"] == 3


async def test_a_hello_contradicting_the_header_is_refused_and_a_good_one_accepted(rig: Rig) -> None:
    conn = await rig.connect(3)
    await conn.send({"type": "hello", "version": 1, "audio_params": {"format": "pcm", "sample_rate": 16000}})
    _, error = await conn.wait("error")
    assert error["code"] == "bad_hello" and "Protocol-Version" in error["message"]
    assert (await conn.hello())["version"] == 3
    mark = len(conn.events)
    await conn.send({"type": "hello", "version": 3})
    _, error = await conn.wait("error", after=mark)
    assert error["code"] == "duplicate_hello"


async def test_hello_fields_come_from_the_query_string_for_browsers(rig: Rig) -> None:
    conn = await rig.connect(None, query="?device-id=aa:bb&client-id=c1&sessionId=from-query&provider=openai")
    reply = await conn.hello()
    assert reply["sessionId"] == "from-query" and reply["provider"] == "openai"


async def test_a_bad_protocol_version_header_is_refused(rig: Rig) -> None:
    conn = await rig.connect(None, headers={"Protocol-Version": "7"})
    _, error = await conn.wait("error")
    assert error["code"] == "unsupported_protocol_version"
    assert await conn.wait_closed() == aiohttp.WSCloseCode.PROTOCOL_ERROR


async def test_bearer_token_in_the_header_or_the_query_string() -> None:
    token = "voice-token-0123456789"
    rig = await start_rig(tokens=(token,))
    try:
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await rig.connect()
        assert refused.value.status == 401
        with pytest.raises(aiohttp.WSServerHandshakeError):
            await rig.connect(headers={"Authorization": "Bearer wrong-token-0123456789"})
        conn = await rig.connect(headers={"Authorization": f"Bearer {token}"})
        assert (await conn.hello())["type"] == "hello"
        browser = await rig.connect(None, query=f"?authorization=Bearer%20{token}")
        assert (await browser.hello())["type"] == "hello"
    finally:
        await rig.close()


async def test_sessions_beyond_max_sessions_are_refused_until_one_closes() -> None:
    rig = await start_rig(max_sessions=2)
    try:
        first, second = await rig.connect(), await rig.connect()
        await first.hello()
        await second.hello()
        third = await rig.connect()
        _, error = await third.wait("error")
        assert error["code"] == "too_many_sessions"
        assert await third.wait_closed() == aiohttp.WSCloseCode.TRY_AGAIN_LATER
        await first.close()
        for _ in range(100):
            if rig.service.open_sessions < 2:
                break
            await asyncio.sleep(0.02)
        fourth = await rig.connect()
        assert (await fourth.hello())["type"] == "hello"
    finally:
        await rig.close()


# ------------------------------------------------------------------------------ auto mode


@pytest.mark.parametrize(("rate", "frame_ms"), [(16000, 60), (24000, 40)])
async def test_auto_mode_end_to_end_and_speech_starts_on_the_first_clause(rate: int, frame_ms: int) -> None:
    vs.require_espeak()
    rig = await start_rig(output_sample_rate=rate, output_frame_ms=frame_ms)
    produced_second = asyncio.Event()

    async def script(provider: ScriptedProvider, context: TurnContext) -> AsyncIterator[TurnEvent]:
        yield Delta("It is 21 degrees ")
        yield Delta("in the living room. ")
        await asyncio.wait_for(provider.release.wait(), WAIT_S)  # held until clause 1 is announced
        produced_second.set()
        yield Delta(CLAUSE_2)

    rig.provider.script = script
    try:
        conn = await rig.connect()
        reply = await conn.hello(sessionId="living-room", productId="thermostat", deviceId="thermostat-001")
        assert reply["audio_params"] == {"format": "pcm", "sample_rate": rate, "channels": 1,
                                         "frame_duration": frame_ms}
        mark = await conn.say(said(), taskId="t-1")
        first, sentence = await conn.wait("tts", after=mark, state="sentence_start")
        assert sentence["text"] == CLAUSE_1
        # The first clause is being spoken while the agent has not produced the second one yet.
        assert not produced_second.is_set()
        assert conn.index(lambda m: m["type"] == "agent_reply" and m["text"] == CLAUSE_2, mark) is None
        rig.provider.release.set()
        end, _ = await conn.wait("tts_complete", after=mark)

        kinds = [(m["type"], m.get("state"), m.get("definite"), m.get("streaming")) for m in conn.messages(after=mark)]
        partials = [m for m in conn.messages("asr", mark) if not m["definite"]]
        assert partials and all(m["taskId"] == "t-1" for m in partials)
        assert all(TRANSCRIPT.startswith(m["text"].strip()) for m in partials)
        asr_final = conn.messages("asr", mark)[-1]
        assert asr_final == {"type": "asr", "text": TRANSCRIPT, "definite": True, "taskId": "t-1"}
        replies = conn.messages("agent_reply", mark)
        assert [m["text"] for m in replies if m["streaming"]] == ["It is 21 degrees ", "in the living room. ", CLAUSE_2]
        assert replies[-1] == {"type": "agent_reply", "text": f"{CLAUSE_1} {CLAUSE_2}", "streaming": False}
        tts = [m for m in conn.messages("tts", mark)]
        assert [m["state"] for m in tts] == ["start", "sentence_start", "sentence_start", "stop"]
        assert [m["text"] for m in tts if m["state"] == "sentence_start"] == [CLAUSE_1, CLAUSE_2]
        assert kinds[-2:] == [("tts", "stop", None, None), ("tts_complete", None, None, None)]
        # Audio: after sentence_start, in frames of the session's duration, at its rate, exactly the
        # providers' audio of both clauses resampled (not buffered whole: clause 2 came later).
        first_audio = next(i for i in range(mark, end) if conn.events[i][0] == "audio")
        assert first < first_audio
        frames = [data for tag, data in conn.events[mark:end] if tag == "audio"]
        assert {len(f) for f in frames} == {rate * frame_ms // 1000 * 2}
        source = rig.ds.tts_pcm(CLAUSE_1, 24000) + rig.ds.tts_pcm(CLAUSE_2, 24000)
        assert b"".join(frames) == expected_audio(source, 24000, rate, frame_ms)
        # One ASR task that heard the utterance, one TTS task per clause; every one closed.
        asr = [t for t in rig.ds.tasks if t.kind == "asr"]
        tts_tasks = [t for t in rig.ds.tasks if t.kind == "tts"]
        assert len(asr) == 1 and asr[0].finish_received and asr[0].parameters["max_sentence_silence"] == 700
        assert [t.texts for t in tts_tasks] == [[CLAUSE_1], [CLAUSE_2]]
        await all_closed(rig.ds.tasks)
        # The transcript went to the agent in hello's session, with the device, like chat.
        context = rig.provider.contexts[0]
        assert (context.session_id, context.message) == ("living-room", TRANSCRIPT)
        assert (context.product_id, context.device_id) == ("thermostat", "thermostat-001")
        history = rig.sessions.messages["living-room"]
        assert [(m.role, m.text) for m in history] == [("user", TRANSCRIPT), ("assistant", f"{CLAUSE_1} {CLAUSE_2}")]
        assert rig.service.stats.turns == 1 and rig.service.stats.errors == 0
    finally:
        await rig.close()
    assert rig.ds.problems == []


async def test_our_own_speech_is_not_heard_while_it_plays_and_listening_goes_on(rig: Rig) -> None:
    vs.require_espeak()
    rig.ds.tts = TtsScript(ms_per_char=30)  # about 2 s of reply
    conn = await rig.connect()
    await conn.hello()
    mark = await conn.say(said())
    await conn.wait("tts", after=mark, state="start")
    # The microphone hears our reply (an echo): it must not start an utterance.
    await conn.send_audio(said(tail_s=0.2), pace_s=0.02)
    end, _ = await conn.wait("tts_complete", after=mark)
    assert len([t for t in rig.ds.tasks if t.kind == "asr"]) == 1
    # After the reply (and its 300 ms tail) speech is heard again, without a new listen start.
    await asyncio.sleep(0.5)
    await conn.send_audio(said())
    await conn.wait("tts_complete", after=end + 1)
    assert len([t for t in rig.ds.tasks if t.kind == "asr"]) == 2
    assert len(rig.provider.contexts) == 2


async def test_a_tool_call_speaks_the_text_before_it(rig: Rig) -> None:
    vs.require_espeak()

    async def script(provider: ScriptedProvider, context: TurnContext) -> AsyncIterator[TurnEvent]:
        yield Delta("Let me check the thermostat")
        call = ToolCall("c1", "get_device_state", {"deviceId": "thermostat-001"})
        yield ToolCallStarted(call)
        await asyncio.wait_for(provider.release.wait(), WAIT_S)
        yield ToolCallFinished(ToolResult("c1", "get_device_state", True, {"temperature": 21}))
        yield Delta(". It is 21 degrees.")

    rig.provider.script = script
    conn = await rig.connect()
    await conn.hello()
    mark = await conn.say(said())
    _, sentence = await conn.wait("tts", after=mark, state="sentence_start")
    assert sentence["text"] == "Let me check the thermostat"
    rig.provider.release.set()
    await conn.wait("tts_complete", after=mark)
    sentences = [m["text"] for m in conn.messages("tts", mark) if m["state"] == "sentence_start"]
    assert sentences == ["Let me check the thermostat", "It is 21 degrees."]


async def test_an_empty_transcript_starts_no_turn(rig: Rig) -> None:
    vs.require_espeak()
    rig.ds.asr = AsrScript(sentences=[""], bytes_per_sentence=10**9)
    conn = await rig.connect()
    await conn.hello()
    mark = await conn.say(said())
    _, final = await conn.wait("asr", after=mark, definite=True)
    assert final["text"] == ""
    await asyncio.sleep(0.3)
    assert rig.provider.contexts == [] and conn.messages("tts_complete", mark) == []


async def test_nothing_said_ends_listening_with_no_speech(rig: Rig) -> None:
    conn = await rig.connect()
    await conn.hello()
    mark = await conn.say(vs.pcm(vs.silence(9.0)))
    _, error = await conn.wait("error", after=mark)
    assert error["code"] == "no_speech"
    assert rig.ds.tasks == []


# ------------------------------------------------------------------------------ manual mode


@pytest.mark.parametrize("how", ["stop", "listen stop"])
async def test_manual_mode_ends_on_stop_and_passes_vision_refs(rig: Rig, how: str) -> None:
    vs.require_espeak()
    rig.frames.frames["frame-a"] = ImageInput("frame-a", "image/png", b"\x89PNG", "2026-01-01T00:00:00.000Z", "test")
    conn = await rig.connect()
    await conn.hello(sessionId="manual-session")
    speech = vs.pcm(vs.speech(TRANSCRIPT))  # no trailing silence: the end is the client's stop
    mark = await conn.say(speech, mode="manual")
    await asyncio.sleep(0.2)
    assert conn.messages("asr", mark) == [] or not conn.messages("asr", mark)[-1]["definite"]
    stop: dict[str, Any] = {"type": "stop"} if how == "stop" else {"type": "listen", "state": "stop"}
    await conn.send({**stop, "visionRefs": [{"frameId": "frame-a"}]})
    await conn.wait("tts_complete", after=mark)
    assert conn.messages("asr", mark)[-1]["text"] == TRANSCRIPT
    context = rig.provider.contexts[0]
    assert [image.frame_id for image in context.images] == ["frame-a"]
    asr = rig.ds.tasks[0]
    assert asr.kind == "asr" and len(asr.audio) == len(speech) // 960 * 960  # every whole 30 ms frame


async def test_manual_stop_with_an_unknown_vision_frame_is_an_error(rig: Rig) -> None:
    vs.require_espeak()
    conn = await rig.connect()
    await conn.hello()
    mark = await conn.say(vs.pcm(vs.speech(TRANSCRIPT)), mode="manual")
    await conn.send({"type": "stop", "visionRefs": [{"frameId": "frame-gone"}]})
    _, error = await conn.wait("error", after=mark)
    assert error["code"] == "not_found" and "frame-gone" in error["message"]
    await conn.wait("tts_complete", after=mark)
    mark = len(conn.events)
    await conn.send({"type": "stop", "visionRefs": "frame-a"})
    _, error = await conn.wait("error", after=mark)
    assert error["code"] == "bad_message"


# ------------------------------------------------------------------------------ abort, goodbye, idle


async def test_abort_mid_reply_stops_audio_closes_providers_and_the_next_listen_works(rig: Rig) -> None:
    vs.require_espeak()
    rig.ds.tts = TtsScript(ms_per_char=200, chunk_bytes=1600)  # a long reply: 7 s of audio

    async def script(provider: ScriptedProvider, context: TurnContext) -> AsyncIterator[TurnEvent]:
        yield Delta(CLAUSE_1 + " ")
        await asyncio.sleep(60)  # the agent is still "thinking" when the abort comes
        yield Delta(CLAUSE_2)

    rig.provider.script = script
    conn = await rig.connect()
    await conn.hello(sessionId="abort-session")
    mark = await conn.say(said())
    await conn.wait("tts", after=mark, state="start")
    for _ in range(200):
        if len(conn.audio(mark)) >= 5 * 1920:
            break
        await asyncio.sleep(0.01)
    abort_at = len(conn.events)
    await conn.send({"type": "abort"})
    stop, _ = await conn.wait("tts", after=abort_at, state="stop")
    await asyncio.sleep(0.3)
    assert conn.audio(stop) == b""  # no audio after tts stop
    assert conn.messages("tts_complete", mark) == []
    await asyncio.wait_for(rig.provider.cancelled.wait(), WAIT_S)
    await all_closed(rig.ds.tasks)
    assert all(t.client_closed for t in rig.ds.tasks)
    history = rig.sessions.messages["abort-session"]
    assert history[-1].role == "assistant" and history[-1].interrupted
    # The next listen starts clean and the session answers normally.
    rig.provider.script = two_sentences
    rig.ds.tts = TtsScript(ms_per_char=10)
    mark, _ = await conn.turn(said())
    assert conn.messages("asr", mark)[-1]["text"] == TRANSCRIPT
    assert conn.messages("agent_reply", mark)[-1]["text"] == f"{CLAUSE_1} {CLAUSE_2}"


async def test_abort_while_the_agent_thinks_and_listen_start_barges_in(rig: Rig) -> None:
    vs.require_espeak()

    async def script(provider: ScriptedProvider, context: TurnContext) -> AsyncIterator[TurnEvent]:
        await asyncio.sleep(60)
        yield Delta("never")

    rig.provider.script = script
    conn = await rig.connect()
    await conn.hello()
    mark = await conn.say(said())
    await conn.wait("asr", after=mark, definite=True)
    await asyncio.sleep(0.1)
    # A listen start while the reply is being worked out aborts it (barge-in).
    await conn.send({"type": "listen", "state": "start", "mode": "auto"})
    await asyncio.wait_for(rig.provider.cancelled.wait(), WAIT_S)
    assert conn.messages("tts", mark) == []  # nothing was spoken, so no tts stop either
    rig.provider.script = two_sentences
    await conn.send_audio(said())
    await conn.wait("tts_complete", after=mark)


async def test_a_speakers_turn_is_not_paced_behind_a_flood_of_chat() -> None:
    vs.require_espeak()
    # One start slot per 1,000 s: a paced turn beyond the burst would wait for the whole test.
    rig = await start_rig(agent={"max_turns_per_s": 0.001})
    chats_may_end = asyncio.Event()

    async def script(provider: ScriptedProvider, context: TurnContext) -> AsyncIterator[TurnEvent]:
        if context.session_id.startswith("chat-"):
            await chats_may_end.wait()
            yield Delta("later")
            return
        async for event in two_sentences(provider, context):
            yield event

    async def chat(i: int) -> None:
        request = TurnRequest(f"question {i}", session_id=f"chat-{i}")
        session_id, images = await rig.agent.prepare(request)
        async for _ in rig.agent.turn(request, session_id, images):
            pass

    rig.provider.script = script
    chats = [asyncio.create_task(chat(i)) for i in range(8)]
    try:
        async with asyncio.timeout(WAIT_S):
            while rig.agent.waiting_turns < 2:
                await asyncio.sleep(0.01)
        conn = await rig.connect()
        await conn.hello()
        mark, _ = await conn.turn(said())
        assert conn.messages("asr", mark)[-1]["definite"] is True
        assert rig.agent.waiting_turns >= 2  # the chat turns still wait their slot
    finally:
        chats_may_end.set()
        for task in chats:
            task.cancel()
        await asyncio.gather(*chats, return_exceptions=True)
        await rig.close()


async def test_goodbye_closes_the_connection(rig: Rig) -> None:
    conn = await rig.connect()
    await conn.hello()
    await conn.send({"type": "goodbye"})
    assert await conn.wait_closed() == aiohttp.WSCloseCode.OK
    await assert_no_voice_tasks(rig)


async def test_idle_sessions_are_closed() -> None:
    rig = await start_rig(settings={"idle_timeout_s": 0.5, "hello_timeout_s": 0.5})
    try:
        idle = await rig.connect()
        await idle.hello()
        silent = await rig.connect()  # never says hello
        assert await idle.wait_closed(5.0) == aiohttp.WSCloseCode.OK
        _, error = await silent.wait("error")
        assert error["code"] == "hello_timeout"
        assert await silent.wait_closed(5.0) == aiohttp.WSCloseCode.POLICY_VIOLATION
        await assert_no_voice_tasks(rig)
    finally:
        await rig.close()


async def test_a_reply_in_progress_is_not_idle() -> None:
    vs.require_espeak()
    rig = await start_rig(settings={"idle_timeout_s": 0.5})

    async def script(provider: ScriptedProvider, context: TurnContext) -> AsyncIterator[TurnEvent]:
        await asyncio.sleep(1.5)  # longer than the idle timeout
        yield Delta(CLAUSE_1)

    rig.provider.script = script
    try:
        conn = await rig.connect()
        await conn.hello()
        mark = await conn.say(said())
        await conn.wait("tts_complete", after=mark)
        assert await conn.wait_closed(5.0) == aiohttp.WSCloseCode.OK  # and then it is
    finally:
        await rig.close()


# ------------------------------------------------------------------------------ providers


async def test_hello_picks_the_provider(rig: Rig) -> None:
    vs.require_espeak()
    conn = await rig.connect()
    assert (await conn.hello(provider="openai"))["provider"] == "openai"
    mark, end = await conn.turn(said())
    assert conn.messages("asr", mark) == [{"type": "asr", "text": TRANSCRIPT, "definite": True}]  # no partials
    upload = rig.oa.transcriptions[0]
    assert (upload.sample_rate, upload.channels, upload.sample_width) == (16000, 1, 2) and len(upload.pcm) > 32000
    assert [s.body["input"] for s in rig.oa.speeches] == [CLAUSE_1, CLAUSE_2]
    source = rig.oa.speech_pcm(CLAUSE_1) + rig.oa.speech_pcm(CLAUSE_2)
    assert conn.audio(mark, end) == expected_audio(source, 24000, 16000, 60)
    assert rig.ds.tasks == []


async def test_an_unknown_or_unconfigured_provider_is_an_error_naming_the_configured_ones() -> None:
    rig = await start_rig(openai=False)
    try:
        conn = await rig.connect()
        await conn.send({"type": "hello", "provider": "azure"})
        _, error = await conn.wait("error")
        assert error["code"] == "unknown_provider" and "aliyun" in error["message"]
        mark = len(conn.events)
        await conn.send({"type": "hello", "provider": "openai"})
        _, error = await conn.wait("error", after=mark)
        assert error["code"] == "provider_not_configured" and "configured: aliyun" in error["message"]
        mark = len(conn.events)
        await conn.send({"type": "hello", "provider": "espeak"})
        _, error = await conn.wait("error", after=mark)
        assert error["code"] == "provider_not_configured"
        # The connection stays open for a corrected hello.
        assert (await conn.hello(provider="aliyun"))["provider"] == "aliyun"
    finally:
        await rig.close()


async def test_without_any_asr_hello_gets_a_clear_error_and_the_close() -> None:
    rig = await start_rig(aliyun=False, openai=False)
    try:
        conn = await rig.connect()
        await conn.send({"type": "hello"})
        _, error = await conn.wait("error")
        assert error["code"] == "asr_not_configured" and "DASHSCOPE_API_KEY" in error["message"]
        assert await conn.wait_closed() == aiohttp.WSCloseCode.INTERNAL_ERROR
    finally:
        await rig.close()


async def test_tts_falls_back_to_espeak_when_the_provider_has_none() -> None:
    vs.require_espeak()
    rig = await start_rig(aliyun=False, openai_config={"tts_model": ""})
    try:
        conn = await rig.connect()
        await conn.hello()
        mark, end = await conn.turn(said())
        assert rig.oa.speeches == [] and len(rig.oa.transcriptions) == 1
        frames = [data for tag, data in conn.events[mark:end] if tag == "audio"]
        assert len(frames) > 10 and {len(f) for f in frames} == {1920}
        assert [m["text"] for m in conn.messages("tts", mark) if m["state"] == "sentence_start"] == [CLAUSE_1, CLAUSE_2]
    finally:
        await rig.close()


async def test_credentials_come_from_the_environment_and_are_never_logged(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("DEBUG")
    async with DashScopeDouble() as ds:
        config = VoiceConfig(aliyun=VoiceAliyunConfig(url=ds.url), openai=VoiceOpenAIConfig())
        provider = ScriptedProvider()
        agent = Agent(provider, provider, EchoTools(), MemorySessions(), DictFrames())
        service = VoiceService(config, agent, Metrics(), Clock(), environ={"DASHSCOPE_API_KEY": ds.api_key})
        assert service.asr_providers == ("aliyun",)
        assert service.choose(None).asr == "aliyun"
        ds.asr = AsrScript(sentences=[TRANSCRIPT])
        stream = await service.asr("aliyun").start()
        await stream.close()
        await service.close()
        assert ds.tasks[0].headers["Authorization"] == f"Bearer {ds.api_key}"
    assert ds.api_key not in caplog.text and "DASHSCOPE_API_KEY" in caplog.text


# ------------------------------------------------------------------------------ bad input


async def test_messages_before_hello_are_refused_and_hello_still_works(rig: Rig) -> None:
    conn = await rig.connect()
    await conn.send({"type": "listen", "state": "start", "mode": "auto"})
    await conn.ws.send_bytes(conn.codec.audio(bytes(1920)))
    await conn.ws.send_bytes(conn.codec.audio(bytes(1920)))
    await conn.wait("error", code="hello_required")
    await asyncio.sleep(0.1)
    assert [m["code"] for m in conn.messages("error")] == ["hello_required", "hello_required"]  # binary: once
    assert (await conn.hello())["type"] == "hello"


async def test_unknown_types_bad_json_and_bad_messages_are_errors_and_the_session_goes_on(rig: Rig) -> None:
    vs.require_espeak()
    conn = await rig.connect()
    await conn.hello()
    for raw, code in [("{not json", "bad_json"), ("[1, 2]", "bad_message"), ('{"type": 5}', "bad_message"),
                      ('{"type": "dance"}', "unknown_type"), ('{"type": "listen", "mode": "sometimes"}', "bad_message"),
                      ('{"type": "listen", "state": "maybe"}', "bad_message")]:
        mark = len(conn.events)
        await conn.ws.send_str(raw)
        _, error = await conn.wait("error", after=mark)
        assert error["code"] == code, raw
    mark, _ = await conn.turn(said())
    assert conn.messages("asr", mark)[-1]["text"] == TRANSCRIPT


@pytest.mark.parametrize("version", [2, 3])
async def test_binary_frames_whose_header_lies_are_dropped(rig: Rig, version: int) -> None:
    vs.require_espeak()
    conn = await rig.connect(version)
    await conn.hello()
    await conn.send({"type": "listen", "state": "start", "mode": "auto"})
    if version == 3:
        liar = struct.pack(">BBH", 0, 0, 1000) + bytes(500)
    else:
        liar = struct.pack(">HHIII", 2, 0, 0, 0, 1000) + bytes(500)
    await conn.ws.send_bytes(liar)
    await conn.ws.send_bytes(liar)
    _, error = await conn.wait("error", code="bad_frame")
    assert "1000" in error["message"]
    if version == 2:
        mark = len(conn.events)
        await conn.send({"type": "listen", "state": "start", "mode": "auto"})  # warnings are re-armed
        await conn.ws.send_bytes(struct.pack(">HHIII", 7, 0, 0, 0, 4) + bytes(4))
        _, error = await conn.wait("error", after=mark, code="bad_frame")
        assert "version 7" in error["message"]
    await asyncio.sleep(0.1)
    assert len(conn.messages("error")) == (1 if version == 3 else 2)  # once per listen
    mark, _ = await conn.turn(said())
    assert conn.messages("asr", mark)[-1]["text"] == TRANSCRIPT


async def test_json_inside_a_binary_frame_is_a_control_message(rig: Rig) -> None:
    conn = await rig.connect(3)
    await conn.hello()
    payload = json.dumps({"type": "dance"}).encode()
    await conn.ws.send_bytes(BinaryCodec(3).encode(payload, FrameType.JSON))
    _, error = await conn.wait("error")
    assert error["code"] == "unknown_type"


async def test_audio_while_not_listening_is_counted_and_reported_once(rig: Rig) -> None:
    conn = await rig.connect()
    await conn.hello()
    await conn.send_audio(bytes(1920 * 5))
    await conn.wait("error", code="not_listening")
    await asyncio.sleep(0.1)
    assert len(conn.messages("error")) == 1
    assert rig.service.stats.dropped_audio == 5
    assert rig.ds.tasks == []


async def test_odd_byte_counts_reach_the_asr_unchanged(rig: Rig) -> None:
    vs.require_espeak()
    pcm = said()
    heard = []
    for size in (1920, 961, 333):
        conn = await rig.connect()
        await conn.hello()
        mark = len(conn.events)
        await conn.send({"type": "listen", "state": "start", "mode": "auto"})
        await conn.send_audio(pcm, frame_bytes=size)
        await conn.wait("tts_complete", after=mark)
        heard.append(bytes([t for t in rig.ds.tasks if t.kind == "asr"][-1].audio))
        await conn.close()
    assert heard[0] and heard[0] == heard[1] == heard[2]
    assert pcm.find(heard[0]) >= 0


@pytest.mark.parametrize(("params", "words"), [
    ({"format": "mp3", "sample_rate": 16000}, "'mp3'"),
    ({"format": "opus", "sample_rate": 44100}, "44100"),
    ({"format": "opus", "sample_rate": 16000, "frame_duration": 25}, "25 ms"),
    ({"format": "pcm", "sample_rate": 44100}, "44100"),
    ({"format": "pcm", "sample_rate": 16000, "channels": 2}, "mono"),
    ({"format": "pcm", "sample_rate": "16k"}, "sample_rate"),
])
async def test_unsupported_audio_in_hello_is_refused(rig: Rig, params: dict[str, Any], words: str) -> None:
    conn = await rig.connect()
    await conn.send({"type": "hello", "version": 3, "audio_params": params})
    _, error = await conn.wait("error")
    assert error["code"] == "unsupported_audio" and words in error["message"]
    assert not conn.closed.is_set()


async def test_other_sample_rates_are_resampled_for_the_asr(rig: Rig) -> None:
    vs.require_espeak()
    conn = await rig.connect()
    await conn.hello(audio_params={"format": "pcm", "sample_rate": 48000, "channels": 1, "frame_duration": 20})
    resampler = Resampler(16000, 48000)
    pcm48 = resampler.push(said()) + resampler.flush()
    mark = len(conn.events)
    await conn.send({"type": "listen", "state": "start", "mode": "auto"})
    await conn.send_audio(pcm48, frame_bytes=1920)
    await conn.wait("tts_complete", after=mark)
    assert conn.messages("asr", mark)[-1]["text"] == TRANSCRIPT


async def test_oversized_messages(rig: Rig) -> None:
    conn = await rig.connect(1)
    await conn.hello()
    await conn.send({"type": "listen", "state": "start", "mode": "auto"})
    await conn.ws.send_bytes(bytes(70000))  # over the 65535-byte payload limit
    await conn.wait("error", code="frame_too_large")
    await conn.ws.send_str(json.dumps({"type": "listen", "pad": "x" * 70000}))
    await conn.wait("error", code="message_too_large")
    assert not conn.closed.is_set()
    await conn.ws.send_bytes(bytes(300_000))  # over the WebSocket message limit: the connection ends
    assert await conn.wait_closed() == aiohttp.WSCloseCode.MESSAGE_TOO_BIG
    await assert_no_voice_tasks(rig)


async def test_a_manual_talker_who_never_stops_is_cut_at_max_utterance_and_answered() -> None:
    vs.require_espeak()
    rig = await start_rig(max_utterance_s=2.0)
    try:
        conn = await rig.connect()
        await conn.hello()
        speech = vs.pcm(np.concatenate([vs.speech(TRANSCRIPT)] * 3))
        mark = await conn.say(speech, mode="manual")
        await conn.wait("tts_complete", after=mark)
        assert 2 * 32000 <= len(rig.ds.tasks[0].audio) < 2 * 32000 + 960  # cut after the 30 ms frame reaching 2 s
        assert conn.messages("asr", mark)[-1]["text"] == TRANSCRIPT
        await conn.send({"type": "stop"})  # late: nothing left to stop, no error
        await asyncio.sleep(0.1)
        assert conn.messages("error") == []
    finally:
        await rig.close()


async def test_an_auto_talker_who_never_stops_is_cut_at_max_utterance_and_answered() -> None:
    vs.require_espeak()
    rig = await start_rig(max_utterance_s=2.5)
    try:
        conn = await rig.connect()
        await conn.hello()
        speech = vs.pcm(np.concatenate([vs.silence(0.3), *[vs.speech(TRANSCRIPT)] * 4]))
        mark = await conn.say(speech)
        await conn.wait("tts_complete", after=mark)
        asr = rig.ds.tasks[0]
        assert asr.finish_received and len(asr.audio) <= (2.5 + 0.7) * 32000  # cut, pre-roll included
        assert len([t for t in rig.ds.tasks if t.kind == "asr"]) == 1
    finally:
        await rig.close()


@pytest.mark.parametrize("stage", ["asr", "agent", "tts"])
async def test_a_client_that_disconnects_mid_turn_leaves_nothing_running(rig: Rig, stage: str) -> None:
    vs.require_espeak()
    rig.ds.tts = TtsScript(ms_per_char=200)

    async def slow(provider: ScriptedProvider, context: TurnContext) -> AsyncIterator[TurnEvent]:
        yield Delta(CLAUSE_1 + " ")
        await asyncio.sleep(60)
        yield Delta(CLAUSE_2)

    async def thinking(provider: ScriptedProvider, context: TurnContext) -> AsyncIterator[TurnEvent]:
        await asyncio.sleep(60)
        yield Delta("never")

    rig.provider.script = thinking if stage == "agent" else slow
    conn = await rig.connect()
    await conn.hello(sessionId="gone")
    if stage == "asr":
        await conn.say(vs.pcm(vs.speech(TRANSCRIPT)), mode="manual")
        await conn.wait("asr", definite=False)
    else:
        mark = await conn.say(said())
        await conn.wait("asr", after=mark, definite=True)
        if stage == "tts":
            await conn.wait("tts", after=mark, state="start")
        else:
            await asyncio.sleep(0.2)
    await conn.ws.close()
    await all_closed(rig.ds.tasks)
    assert rig.ds.tasks and all(t.client_closed for t in rig.ds.tasks)
    if stage != "asr":
        await asyncio.wait_for(rig.provider.cancelled.wait(), WAIT_S)
        assert not rig.agent.busy("gone")
    await assert_no_voice_tasks(rig)


async def test_a_client_that_disconnects_while_openai_speaks_leaves_nothing_running(rig: Rig) -> None:
    vs.require_espeak()
    rig.oa.speech.chunk_delay_s = 0.05  # a slow server: the response is still streaming
    rig.oa.speech.ms_per_char = 100
    conn = await rig.connect()
    await conn.hello(provider="openai")
    mark = await conn.say(said())
    await conn.wait("tts", after=mark, state="start")
    await conn.ws.close()
    await rig.oa.wait_speech_disconnected(0)
    await assert_no_voice_tasks(rig)


async def test_openai_failures_are_errors_with_codes(rig: Rig) -> None:
    vs.require_espeak()
    conn = await rig.connect()
    await conn.hello(provider="openai")
    rig.oa.transcription.status = 500
    mark = await conn.say(said())
    _, error = await conn.wait("error", after=mark)
    assert error["code"] == "asr_failed" and "500" in error["message"]
    rig.oa.transcription.status = 200
    rig.oa.speech.status = 401
    mark, _ = await conn.turn(said())
    assert [e["code"] for e in conn.messages("error", mark)] == ["provider_auth"]
    assert conn.messages("agent_reply", mark)[-1]["text"] == f"{CLAUSE_1} {CLAUSE_2}"
    assert rig.oa.api_key is not None and rig.oa.api_key not in json.dumps(conn.messages())


# ------------------------------------------------------------------------------ provider failures


async def test_asr_failures_are_errors_and_the_session_stays_usable() -> None:
    vs.require_espeak()
    rig = await start_rig(settings={"asr_start_timeout_s": 1.0, "asr_final_timeout_s": 1.0})
    good = rig.ds.asr
    try:
        conn = await rig.connect()
        await conn.hello()
        cases = [
            (AsrScript(sentences=[TRANSCRIPT], fail=("InternalError", "the model crashed"), fail_after_bytes=9600),
             "asr_failed", "InternalError"),
            (AsrScript(sentences=[TRANSCRIPT], fail=("Throttling", "slow down"), fail_after_bytes=0),
             "provider_rate_limited", "Throttling"),
            (AsrScript(sentences=[TRANSCRIPT], hang_before_start=True), "provider_timeout", "did not start"),
            (AsrScript(sentences=[TRANSCRIPT], hang_after_finish=True), "provider_timeout", "final transcript"),
            (AsrScript(sentences=[TRANSCRIPT], drop_after_bytes=9600), "asr_failed", "closed"),
        ]
        for script, code, words in cases:
            rig.ds.asr = script
            mark = await conn.say(said())
            _, error = await conn.wait("error", after=mark)
            assert (error["code"], words in error["message"]) == (code, True), error
            await asyncio.sleep(0.2)
            assert conn.messages("tts_complete", mark) == []
        rig.ds.asr = good
        rig.ds.api_key = "sk-rotated-9876543210"  # the gateway's key is now wrong
        mark = await conn.say(said())
        _, error = await conn.wait("error", after=mark)
        assert error["code"] == "provider_auth" and "sk-dashscope" not in error["message"]
        rig.ds.api_key = rig.service.config.aliyun.api_key
        mark, _ = await conn.turn(said())
        assert conn.messages("asr", mark)[-1]["text"] == TRANSCRIPT
        await all_closed(rig.ds.tasks)
    finally:
        await rig.close()


async def test_tts_failures_are_errors_the_text_still_arrives_and_the_session_stays_usable() -> None:
    vs.require_espeak()
    rig = await start_rig(settings={"tts_first_audio_timeout_s": 1.0})
    try:
        conn = await rig.connect()
        await conn.hello()
        rig.ds.tts = TtsScript(ms_per_char=10, fail=("InternalError", "no voice today"), fail_after_texts=1)
        mark, _ = await conn.turn(said())
        errors = conn.messages("error", mark)
        assert [e["code"] for e in errors] == ["tts_failed"] and "no voice today" in errors[0]["message"]
        assert conn.messages("agent_reply", mark)[-1]["text"] == f"{CLAUSE_1} {CLAUSE_2}"
        assert conn.messages("tts", mark) == [] and conn.audio(mark) == b""
        # The second clause fails after the first was spoken: tts stop still closes the speech.
        rig.ds.tts = TtsScript(ms_per_char=10, fail=("InternalError", "second"), fail_after_texts=1)
        original = rig.ds.tts

        async def fail_second(provider: ScriptedProvider, context: TurnContext) -> AsyncIterator[TurnEvent]:
            rig.ds.tts = TtsScript(ms_per_char=10)
            yield Delta(CLAUSE_1 + " ")
            await asyncio.sleep(0.3)
            rig.ds.tts = original
            yield Delta(CLAUSE_2)

        rig.provider.script = fail_second
        mark, end = await conn.turn(said())
        assert [e["code"] for e in conn.messages("error", mark)] == ["tts_failed"]
        assert [m["state"] for m in conn.messages("tts", mark)] == ["start", "sentence_start", "stop"]
        assert conn.audio(mark, end)
        rig.provider.script = two_sentences
        rig.ds.tts = TtsScript(ms_per_char=10, hang_before_start=True)
        mark, _ = await conn.turn(said())
        assert [e["code"] for e in conn.messages("error", mark)] == ["provider_timeout"]
        rig.ds.tts = TtsScript(ms_per_char=10)
        mark, end = await conn.turn(said())
        assert conn.messages("error", mark) == [] and conn.audio(mark, end)
        await all_closed(rig.ds.tasks)
    finally:
        await rig.close()


async def test_agent_failures_are_errors_and_the_session_stays_usable() -> None:
    vs.require_espeak()
    rig = await start_rig(agent={"turn_timeout_s": 1.0})
    try:
        conn = await rig.connect()
        await conn.hello(sessionId="agent-errors")

        async def bad_stream(provider: ScriptedProvider, context: TurnContext) -> AsyncIterator[TurnEvent]:
            yield Delta("Hm")
            raise ProviderError("bad_stream", "the model sent garbage")

        async def too_slow(provider: ScriptedProvider, context: TurnContext) -> AsyncIterator[TurnEvent]:
            await asyncio.sleep(10)
            yield Delta("late")

        async def crash(provider: ScriptedProvider, context: TurnContext) -> AsyncIterator[TurnEvent]:
            raise RuntimeError("bug")
            yield Delta("unreachable")

        for script, code in [(bad_stream, "bad_stream"), (too_slow, "turn_timeout"), (crash, "internal_error")]:
            rig.provider.script = script
            mark, _ = await conn.turn(said())
            assert [e["code"] for e in conn.messages("error", mark)] == [code]
        # Another channel answering in the same session: the voice turn is refused, not queued.
        rig.provider.script = two_sentences
        request = TurnRequest("hello", session_id="agent-errors")
        chat = rig.agent.turn(request, *(await rig.agent.prepare(request)))
        await chat.__anext__()  # TurnStarted: the session is busy until the chat turn ends
        mark, _ = await conn.turn(said())
        assert [e["code"] for e in conn.messages("error", mark)] == ["session_busy"]
        await chat.aclose()
        mark, end = await conn.turn(said())
        assert conn.messages("error", mark) == [] and conn.audio(mark, end)
    finally:
        await rig.close()


# ------------------------------------------------------------------------------ many sessions


class PerSessionAsr(DashScopeDouble):
    """Recognises whose audio it hears: the transcript names the session whose sent audio
    contains what this task received (every session's audio is unique: faint noise, own seed)."""

    def __init__(self) -> None:
        super().__init__()
        self.said: dict[int, bytes] = {}

    def transcript_for(self, audio: bytes) -> str:
        owners = [n for n, pcm in self.said.items() if pcm.find(audio[:3840]) >= 0]
        return f"what is the temperature in room {owners[0]}" if len(owners) == 1 else f"ambiguous {owners}"

    async def _sentence(self, ws: web.WebSocketResponse, task: DashScopeTask, index: int, text: str,
                        *, final: bool) -> None:  # fmt: skip
        await super()._sentence(ws, task, index, self.transcript_for(bytes(task.audio)), final=final)


async def test_sixteen_concurrent_sessions_are_isolated() -> None:
    vs.require_espeak()
    ds = PerSessionAsr()
    rig = await start_rig(ds=ds)

    async def echo(provider: ScriptedProvider, context: TurnContext) -> AsyncIterator[TurnEvent]:
        yield Delta(f"Session {context.session_id} asked ")
        await asyncio.sleep(0.05)
        yield Delta(f"{context.message}.")

    rig.provider.script = echo
    try:
        count = rig.service.config.max_sessions
        assert count == 16
        conns = [await rig.connect() for _ in range(count)]
        for n, conn in enumerate(conns):
            await conn.hello(sessionId=f"room-{n}")
            ds.said[n] = said(noise_seed=100 + n)

        async def run(n: int, conn: VoiceConn) -> None:
            mark = await conn.say(ds.said[n])
            await conn.wait("tts_complete", after=mark, timeout=60)

        await asyncio.gather(*(run(n, conn) for n, conn in enumerate(conns)))
        refused = await rig.connect()
        _, error = await refused.wait("error")
        assert error["code"] == "too_many_sessions"
        for n, conn in enumerate(conns):
            transcript = f"what is the temperature in room {n}"
            assert conn.messages("asr")[-1]["text"] == transcript
            reply = f"Session room-{n} asked {transcript}."
            assert conn.messages("agent_reply")[-1]["text"] == reply
            assert [(m.role, m.text) for m in rig.sessions.messages[f"room-{n}"]] == [
                ("user", transcript), ("assistant", reply)]
            assert conn.audio() == expected_audio(rig.ds.tts_pcm(reply, 24000), 24000, 16000, 60)
        assert len([t for t in rig.ds.tasks if t.kind == "asr"]) == count
        await all_closed(rig.ds.tasks)
    finally:
        await rig.close()
    assert rig.ds.problems == []


# ------------------------------------------------------------------------------ clauses


@pytest.mark.parametrize(("deltas", "clauses"), [
    (["It is 21", ".5 degrees. ", "The target", " is 24."], ["It is 21.5 degrees.", "The target is 24."]),
    (["Sure", ", the living room is warm, and the target is 24. Done"],
     ["Sure, the living room is warm,", "and the target is 24.", "Done"]),
    (["Yes, it is. ", "Anything else?"], ["Yes, it is.", "Anything else?"]),
    (["客厅现在", "二十一度，目标温度是", "二十四度。还需要", "别的吗？"],
     ["客厅现在二十一度，", "目标温度是二十四度。", "还需要别的吗？"]),
    (["At 10:30 it costs 1,000 yuan", " and 3.5 kWh. ", "Fine!"],
     ["At 10:30 it costs 1,000 yuan and 3.5 kWh.", "Fine!"]),
    (["**Done**! 👍 Here:\n", "1. Lights off\n", "2. Door locked"],
     ["Done!", "Here:", "1. Lights off", "2. Door locked"]),
    (["..."], []),
])
def test_clause_splitting(deltas: list[str], clauses: list[str]) -> None:
    splitter = ClauseSplitter()
    out: list[str] = []
    for delta in deltas:
        out += splitter.push(delta)
    out += splitter.flush()
    assert out == clauses


def test_a_long_clause_without_marks_is_cut_at_a_space() -> None:
    splitter = ClauseSplitter(max_chars=40)
    out = splitter.push("word " * 20)
    assert out and all(len(c) <= 40 for c in out)
    assert " ".join(out + splitter.flush()) == speakable("word " * 20)
