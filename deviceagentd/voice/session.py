"""One voice connection (SPEC §5): hello, listening in `auto` or `manual` mode, the turn pipeline
(ASR → agent → clauses → TTS → paced audio frames) and its teardown.

Client → server (text frames, or binary type-1 frames in protocol 2/3):
  hello {version?, audio_params, sessionId?, productId?, deviceId?, provider?, language?}
  listen {mode: auto|manual, state?: start|stop|detect, taskId?}; binary audio;
  stop {visionRefs?}; abort; goodbye
Server → client:
  hello {session_id, sessionId, version, transport, audio_params, provider}
  asr {text, definite, taskId?}; agent_reply {text, streaming}; tts {state, text?};
  binary TTS audio; tts_complete; error {code, message}

Pipeline of one utterance (one task, `_run_utterance`):
- auto: the Segmenter finds speech; SpeechStarted opens the ASR stream and replays the pre-roll,
  SpeechFrames follow, SpeechEnded calls `finish()`. Listening goes on by itself afterwards
  (muted while the reply is worked out and played, plus `tts_tail_ms`); a `listen start` from
  the client restarts it and is harmless. Discarded (a cough) closes the ASR stream unused.
- manual: `listen start` opens the ASR stream, every frame goes to it until `stop` or
  `listen stop`, or until `max_utterance_s` of audio (then it is processed as if stopped).
- The final transcript goes out as `asr definite:true` and to the agent, in the session named
  by hello (the same session store as /api/chat). Deltas go out as `agent_reply` and into the
  ClauseSplitter; each complete clause is synthesised at once (its own TTS stream, up to
  `tts_parallel` ahead of the one playing), announced with `tts sentence_start` right before
  its first audio, resampled to the output rate and sent in frames of the output duration,
  paced in real time after `prebuffer_ms`. When the agent is done and the audio has played:
  `tts stop`, then `tts_complete`.

Decisions where SPEC §5 is silent:
- `Protocol-Version` decides the framing; without the header, hello's `version` does (browsers
  cannot set headers), else 3. A hello whose version contradicts the header is refused.
- Anything but hello before hello: `error hello_required`; the connection keeps waiting for
  hello, for `hello_timeout_s` (10 s, the firmware's own wait), then closes (1008).
- A hello we cannot accept (bad audio_params → `unsupported_audio`, bad fields → `bad_hello`,
  an unknown or unconfigured provider → `unknown_provider` / `provider_not_configured`, the
  message naming the configured ones) gets an error and the connection waits for a corrected
  hello. No ASR configured at all → `asr_not_configured` and the close (1011): nothing the
  client can send fixes that. A second hello → `duplicate_hello`, ignored.
- An empty final transcript starts no turn: it is still sent (`asr {text: "", definite:
  true}`) so the client knows the utterance is over.
- `tts_complete` ends every turn that reached the agent, also when the agent or the TTS failed
  or no TTS is configured (then there is no `tts` message at all): the client's "turn over".
- Audio while not listening is counted (`deviceagentd_voice_dropped_audio_total`); `error
  not_listening` is sent once until the next `listen start`, and not at all for audio that
  merely trails an utterance (after `stop`, `abort`, a manual cut or `no_speech`).
- Binary frames whose header lies (`bad_frame`) or whose payload exceeds 65535 bytes
  (`frame_too_large`) are dropped with one error until the next `listen start`; a text message
  over `max_text_bytes` gets `message_too_large`; a WebSocket message over
  `max_message_bytes` makes aiohttp close the connection (1009).
- Odd byte counts are fine: half a sample waits for the next message.
- Auto mode with nothing said for `no_speech_timeout_s`: `error no_speech`, listening stops.
- `listen start` while a reply is being worked out or played is a barge-in: the reply is
  aborted (as by `abort`) and listening starts. `listen state:"detect"` (XiaoZhi wake word)
  is accepted and ignored; mode `realtime` is treated as `auto` (no echo cancellation here).
- `abort`: ASR, agent turn and TTS are cancelled and their connections closed before the
  answer `tts stop` (only if `tts start` had been sent); listening stops until `listen start`.
- Idle: nothing received for `idle_timeout_s` while no reply is in progress (audio counts only
  while listening) → close 1000 "idle timeout". `goodbye` → close 1000.
- Provider failures (`asr_failed`, `tts_failed`, `provider_timeout`, `provider_auth`, ...),
  agent failures (TurnFailed's code, e.g. `turn_timeout`, `internal_error`; `session_busy`
  when another channel is answering in the same session; `not_found` for an expired vision
  frame; `agent_failed` if the agent itself raises) become `error` messages; the session stays
  usable.
  A TTS failure stops the speech of that reply (its text still arrives as `agent_reply`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, Final, TypeVar

from aiohttp import WSCloseCode, WSMsgType, web

from deviceagentd.agent.runner import TurnDone, TurnFailed, TurnRequest
from deviceagentd.agent.types import Delta, ToolCallStarted
from deviceagentd.core.errors import Conflict, CoreError
from deviceagentd.voice.audio import (
    FRAME_MS,
    INPUT_RATES,
    AudioFormatError,
    AudioParams,
    InputAudio,
    OutputAudio,
    parse_audio_params,
)
from deviceagentd.voice.clauses import ClauseSplitter
from deviceagentd.voice.protocol import DEFAULT_VERSION, MAX_PAYLOAD, BinaryCodec, FrameType, ProtocolError
from deviceagentd.voice.providers.base import (
    ASR_FAILED,
    PROVIDER_TIMEOUT,
    TTS_FAILED,
    AsrProvider,
    AsrStream,
    TtsProvider,
    VoiceProviderError,
)
from deviceagentd.voice.segmenter import (
    Discarded,
    NoSpeech,
    Segmenter,
    SegmenterConfig,
    SpeechEnded,
    SpeechFrame,
    SpeechStarted,
)
from deviceagentd.voice.server import Connection
from deviceagentd.voice.service import ASR_NOT_CONFIGURED, ProviderChoiceError, SessionSettings, VoiceService
from deviceagentd.voice.vad import ClassifierConfig, FrameClassifier

log = logging.getLogger("deviceagentd.voice")

FRAME_S: Final = FRAME_MS / 1000
BYTES_PER_S: Final = 32000  # 16 kHz s16le: what the ASR gets
MAX_FIELD_CHARS: Final = 128
MAX_VISION_REFS: Final = 8
MODES: Final = ("auto", "manual")
# How hello's audio_params are read when fields are missing.
DEFAULT_INPUT: Final = AudioParams(sample_rate=16000, frame_duration_ms=60)
# Audio chunks of one clause waiting for the player (backpressure on the provider beyond).
CHUNKS_AHEAD: Final = 32
# Errors about binary input, sent once until the next `listen start`.
BINARY_WARNINGS: Final = frozenset({"not_listening", "bad_frame", "frame_too_large"})
MESSAGE_TYPES: Final = ("hello", "listen", "stop", "abort", "goodbye")

T = TypeVar("T")


class _Gone(Exception):
    """The client went away: a send failed."""


class _Refused(Exception):
    def __init__(self, code: str, message: str, fatal: bool = False) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.fatal = fatal


@dataclass(frozen=True)
class Hello:
    """What a successful hello settled."""

    version: int
    session_id: str
    product_id: str | None
    device_id: str | None
    language: str | None
    asr_name: str
    tts_name: str | None
    input_rate: int


@dataclass
class Utterance:
    """One utterance from its start to the end of its reply."""

    mode: str
    task_id: str | None
    audio: asyncio.Queue[bytes | None] = field(default_factory=asyncio.Queue)
    frame_ids: tuple[str, ...] = ()
    seconds: float = 0.0  # of 16 kHz audio fed
    ended: bool = False  # end of speech: no more audio
    answering: bool = False  # the agent turn has begun
    finished: bool = False  # the reply is over (about to send tts stop / tts_complete)
    task: asyncio.Task[None] | None = None

    def feed(self, pcm: bytes) -> None:
        if not self.ended:
            self.audio.put_nowait(pcm)
            self.seconds += len(pcm) / BYTES_PER_S

    def end(self) -> None:
        if not self.ended:
            self.ended = True
            self.audio.put_nowait(None)


class AudioOut:
    """Sends TTS frames paced in real time: `prebuffer_s` ahead of the device's playback, then
    one frame per frame duration. `play_end` (loop time) is when the device will have played
    everything sent, which is also what mutes the microphone."""

    def __init__(self, send: Callable[[bytes], Awaitable[None]], codec: BinaryCodec, params: AudioParams,
                 prebuffer_s: float) -> None:
        self.params = params
        self.play_end = 0.0
        self._send = send
        self._codec = codec
        self._frame_s = params.frame_duration_ms / 1000
        self._prebuffer_s = prebuffer_s
        self._timestamp_ms = 0

    async def send(self, frame: bytes) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        if self.play_end < now:
            self.play_end = now  # the device ran dry (or this is the first frame)
        ahead = self.play_end - now - self._prebuffer_s
        if ahead > 0:
            await asyncio.sleep(ahead)
        await self._send(self._codec.audio(frame, self._timestamp_ms))
        self.play_end += self._frame_s
        self._timestamp_ms = (self._timestamp_ms + self.params.frame_duration_ms) % (1 << 32)

    async def drain(self) -> None:
        """Until the device has played everything sent."""
        remaining = self.play_end - asyncio.get_running_loop().time()
        if remaining > 0:
            await asyncio.sleep(remaining)

    def stop(self) -> None:
        """Playback was aborted: nothing is playing any more."""
        self.play_end = min(self.play_end, asyncio.get_running_loop().time())


@dataclass
class _Clause:
    text: str
    chunks: asyncio.Queue[bytes | VoiceProviderError | None] = field(
        default_factory=lambda: asyncio.Queue(CHUNKS_AHEAD)
    )
    sample_rate: int = 0
    task: asyncio.Task[None] | None = None


class Speaker:
    """The speech of one reply: a TTS stream per clause, synthesised as soon as the clause is
    complete (at most `tts_parallel` at once), played strictly in order by one player task."""

    def __init__(self, session: VoiceSession, provider: TtsProvider, name: str) -> None:
        self._session = session
        self._provider = provider
        self._name = name
        self._settings = session.settings
        self._queue: asyncio.Queue[_Clause | None] = asyncio.Queue()
        self._clauses: list[_Clause] = []
        self._slots = asyncio.Semaphore(self._settings.tts_parallel)
        self._player: asyncio.Task[None] | None = None
        self._failed = False

    def say(self, text: str) -> None:
        if self._failed:
            return
        clause = _Clause(text)
        clause.task = self._session.spawn(self._synthesise(clause), "voice-tts")
        self._clauses.append(clause)
        self._queue.put_nowait(clause)
        if self._player is None:
            self._player = self._session.spawn(self._play(), "voice-player")

    async def finish(self) -> None:
        """No more clauses: wait until every one has been sent (or the speech failed)."""
        self._queue.put_nowait(None)
        if self._player is not None:
            await self._player

    async def close(self) -> None:
        """Stop everything (abort, disconnect); every TTS stream is closed when this returns."""
        tasks = [c.task for c in self._clauses if c.task is not None]
        if self._player is not None:
            tasks.append(self._player)
        await cancel_and_wait(tasks)

    async def _synthesise(self, clause: _Clause) -> None:
        stream = None
        try:
            async with self._slots:
                stream = await self._provider.start(self._session.voice_for(self._name, clause.text))
                clause.sample_rate = stream.sample_rate
                await stream.send_text(clause.text)
                await stream.finish()
                async for chunk in stream.audio():
                    await clause.chunks.put(chunk)
            await clause.chunks.put(None)
        except VoiceProviderError as exc:
            await clause.chunks.put(exc)
        except Exception as exc:
            log.warning("voice tts %s: %s", self._name, type(exc).__name__, exc_info=True)
            await clause.chunks.put(VoiceProviderError(TTS_FAILED, f"speech synthesis failed ({type(exc).__name__})"))
        finally:
            if stream is not None:
                await stream.close()

    async def _play(self) -> None:
        session = self._session
        settings = self._settings
        out: OutputAudio | None = None
        rate = 0
        try:
            while (clause := await self._queue.get()) is not None:
                first = True
                while True:
                    wait_s = settings.tts_first_audio_timeout_s if first else settings.tts_chunk_timeout_s
                    try:
                        async with asyncio.timeout(wait_s):
                            item = await clause.chunks.get()
                    except TimeoutError:
                        raise VoiceProviderError(
                            PROVIDER_TIMEOUT, f"no speech audio from {self._name} within {wait_s:g} s"
                        ) from None
                    if item is None:
                        break
                    if isinstance(item, VoiceProviderError):
                        raise item
                    if first:
                        first = False
                        if out is None or clause.sample_rate != rate:
                            # One resampler across the reply (no clicks between clauses).
                            if out is not None:
                                for frame in out.flush():
                                    await session.play(frame)
                            out = output_audio(clause.sample_rate, session.output_params)
                            rate = clause.sample_rate
                        await session.sentence_start(clause.text)
                    assert out is not None
                    for frame in out.push(item):
                        await session.play(frame)
            if out is not None:
                for frame in out.flush():
                    await session.play(frame)
        except VoiceProviderError as exc:
            self._failed = True
            for clause in self._clauses:
                if clause.task is not None:
                    clause.task.cancel()
            await session.provider_error(exc)


def output_audio(source_rate: int, params: AudioParams) -> OutputAudio:
    try:
        return OutputAudio(source_rate, params)
    except AudioFormatError as exc:
        raise VoiceProviderError(TTS_FAILED, str(exc)) from None


async def cancel_and_wait(tasks: list[asyncio.Task[Any]], timeout_s: float | None = None) -> None:
    pending = [task for task in tasks if not task.done()]
    for task in pending:
        task.cancel()
    if pending:
        await asyncio.wait(pending, timeout=timeout_s)


class VoiceSession:
    def __init__(self, ws: web.WebSocketResponse, service: VoiceService, connection: Connection) -> None:
        self.settings: SessionSettings = service.settings
        self._ws = ws
        self._service = service
        self._conn = connection
        self._clock = service.clock
        self._id = uuid.uuid4().hex[:8]
        self._connected_at = self._clock.monotonic()
        self._last_activity = self._connected_at
        self._closing = False
        self._finished = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._warned: set[str] = set()
        # Set by hello.
        self._hello: Hello | None = None
        self._codec = BinaryCodec(connection.version or DEFAULT_VERSION)
        self._input: InputAudio | None = None
        self._segmenter: Segmenter | None = None
        self._asr: AsrProvider | None = None
        self._tts: TtsProvider | None = None
        self.output_params = AudioParams(self.settings.output_sample_rate, self.settings.output_frame_ms)
        self._out = AudioOut(self._send_bytes, self._codec, self.output_params, self.settings.prebuffer_ms / 1000)
        # Listening.
        self._mode = "auto"
        self._listening = False
        self._task_id: str | None = None
        self._utterance: Utterance | None = None
        self._audio_t = 0.0  # input audio time (s) of the next 30 ms frame
        self._drop_quietly = False
        self._tts_started = False
        self._anchor_mute = False  # the reply is over: anchor the end of the mute on the next frame
        self.dropped_audio = 0

    @property
    def name(self) -> str:
        device = self._conn.device_id or "-"
        return f"{self._id} (device {device})"

    # ------------------------------------------------------------------ lifecycle

    async def run(self) -> None:
        log.info("voice session %s opened from %s (client %s, protocol %s)", self.name, self._conn.remote,
                 self._conn.client_id or "-", self._conn.version or "from hello")
        try:
            await self._receive_loop()
        except _Gone:
            pass
        finally:
            await self._teardown()
            if not self._ws.closed:
                with contextlib.suppress(Exception):
                    await self._ws.close()
            self._finished.set()
            log.info("voice session %s closed", self.name)

    async def shutdown(self) -> None:
        self._closing = True
        with contextlib.suppress(Exception):
            await self._ws.close(code=WSCloseCode.GOING_AWAY, message=b"gateway shutting down")
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.settings.abort_wait_s + 1.0):
                await self._finished.wait()

    def spawn(self, coro: Coroutine[Any, Any, T], name: str) -> asyncio.Task[T]:
        """A task of this session: cancelled and awaited when the connection ends."""
        task = asyncio.create_task(coro, name=f"{name}-{self._id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _teardown(self) -> None:
        self._listening = False
        self._utterance = None
        await cancel_and_wait(list(self._tasks), self.settings.abort_wait_s)

    async def _close(self, code: int, reason: str) -> None:
        self._closing = True
        with contextlib.suppress(Exception):
            await self._ws.close(code=code, message=reason.encode())

    def _touch(self) -> None:
        self._last_activity = self._clock.monotonic()

    @property
    def _busy(self) -> bool:
        """A reply is being worked out or played."""
        utt = self._utterance
        return utt is not None and utt.ended and not utt.finished

    async def _receive_loop(self) -> None:
        while not self._closing:
            if self._hello is None:
                deadline = self._connected_at + self.settings.hello_timeout_s
            else:
                deadline = self._last_activity + self.settings.idle_timeout_s
            timeout = deadline - self._clock.monotonic()
            if timeout <= 0:
                if await self._expired():
                    return
                continue
            try:
                msg = await self._ws.receive(timeout=timeout)
            except TimeoutError:
                continue
            if msg.type is WSMsgType.TEXT:
                await self._on_text(msg.data)
            elif msg.type is WSMsgType.BINARY:
                await self._on_binary(msg.data)
            elif msg.type is WSMsgType.ERROR:
                log.info("voice session %s: %s", self.name, msg.data)
                return
            else:
                return  # closed or closing

    async def _expired(self) -> bool:
        if self._hello is None:
            await self._error("hello_timeout", f"no hello within {self.settings.hello_timeout_s:g} s")
            await self._close(WSCloseCode.POLICY_VIOLATION, "hello timeout")
            return True
        if self._busy:
            self._touch()
            return False
        log.info("voice session %s: idle for %g s, closing", self.name, self.settings.idle_timeout_s)
        await self._close(WSCloseCode.OK, "idle timeout")
        return True

    # ------------------------------------------------------------------ sending

    async def _send(self, message: dict[str, Any]) -> None:
        if self._ws.closed:
            raise _Gone
        try:
            await self._ws.send_str(json.dumps(message, ensure_ascii=False))
        except ConnectionError as exc:
            raise _Gone from exc

    async def _send_bytes(self, data: bytes) -> None:
        if self._ws.closed:
            raise _Gone
        try:
            await self._ws.send_bytes(data)
        except ConnectionError as exc:
            raise _Gone from exc

    async def _error(self, code: str, message: str) -> None:
        self._service.stats.errors += 1
        log.info("voice session %s: error %s: %s", self.name, code, message)
        await self._send({"type": "error", "code": code, "message": message})

    async def _warn_once(self, code: str, message: str) -> None:
        if code not in self._warned:
            self._warned.add(code)
            await self._error(code, message)

    async def provider_error(self, exc: VoiceProviderError) -> None:
        await self._error(exc.code, exc.message)

    def _task_fields(self, task_id: str | None) -> dict[str, Any]:
        return {"taskId": task_id} if task_id is not None else {}

    # Used by the Speaker.

    def voice_for(self, tts_name: str, text: str) -> str | None:
        return self._service.tts_voice(tts_name, text)

    async def sentence_start(self, text: str) -> None:
        if not self._tts_started:
            self._tts_started = True
            await self._send({"type": "tts", "state": "start"})
        await self._send({"type": "tts", "state": "sentence_start", "text": text})

    async def play(self, frame: bytes) -> None:
        await self._out.send(frame)

    # ------------------------------------------------------------------ input

    async def _on_text(self, data: str) -> None:
        if len(data) > self.settings.max_text_bytes or len(data.encode()) > self.settings.max_text_bytes:
            await self._error("message_too_large",
                              f"control messages are limited to {self.settings.max_text_bytes} bytes")
            return
        try:
            message = json.loads(data)
        except ValueError:
            await self._error("bad_json", "the message is not valid JSON")
            return
        await self._on_message(message)

    async def _on_message(self, message: Any) -> None:
        if not isinstance(message, dict) or not isinstance(message.get("type"), str):
            await self._error("bad_message", "a control message is a JSON object with a string \"type\"")
            return
        self._touch()
        kind = message["type"]
        if kind == "hello":
            await self._on_hello(message)
        elif self._hello is None:
            await self._error("hello_required", f"send hello first (got {kind[:32]!r})")
        elif kind == "listen":
            await self._on_listen(message)
        elif kind == "stop":
            await self._on_stop(message)
        elif kind == "abort":
            await self._abort()
        elif kind == "goodbye":
            await self._close(WSCloseCode.OK, "goodbye")
        else:
            await self._error("unknown_type", f"unknown message type {kind[:32]!r} (known: {', '.join(MESSAGE_TYPES)})")

    async def _on_binary(self, data: bytes) -> None:
        if self._hello is None:
            await self._warn_once("hello_required", "send hello before any audio")
            return
        if len(data) - self._codec.header_size > MAX_PAYLOAD:
            await self._warn_once("frame_too_large", f"binary payloads are limited to {MAX_PAYLOAD} bytes")
            return
        try:
            frame = self._codec.decode(data)
        except ProtocolError as exc:
            await self._warn_once("bad_frame", f"binary frame dropped: {exc}")
            return
        if frame.type is FrameType.JSON:
            try:
                text = frame.payload.decode("utf-8")
            except UnicodeDecodeError:
                await self._error("bad_json", "the JSON frame is not UTF-8")
                return
            await self._on_text(text)
            return
        await self._on_audio(frame.payload)

    # ------------------------------------------------------------------ hello

    async def _on_hello(self, message: dict[str, Any]) -> None:
        if self._hello is not None:
            await self._error("duplicate_hello", "this connection has already said hello")
            return
        try:
            hello = self._parse_hello(message)
        except _Refused as exc:
            await self._error(exc.code, exc.message)
            if exc.fatal:
                await self._close(WSCloseCode.INTERNAL_ERROR, exc.code)
            return
        try:
            self._start(hello)
        except Exception:
            log.exception("voice session %s: could not set up the session", self.name)
            self._hello = None
            await self._error("internal_error", "the gateway could not set up the voice session; see its log")
            await self._close(WSCloseCode.INTERNAL_ERROR, "internal_error")
            return
        await self._send({
            "type": "hello",
            "session_id": hello.session_id,
            "sessionId": hello.session_id,
            "version": hello.version,
            "transport": "websocket",
            "audio_params": self.output_params.to_json(),
            "provider": hello.asr_name,
        })

    def _parse_hello(self, message: dict[str, Any]) -> Hello:
        provider = self._hello_text(message, "provider")
        try:
            choice = self._service.choose(provider)
        except ProviderChoiceError as exc:
            # Without any ASR there is nothing a client can correct: the connection closes.
            raise _Refused(exc.code, exc.message, fatal=exc.code == ASR_NOT_CONFIGURED) from None
        version = message.get("version")
        if version is not None and (isinstance(version, bool) or version not in (1, 2, 3)):
            raise _Refused("bad_hello", f"version must be 1, 2 or 3, not {version!r}")
        header = self._conn.version
        if header is not None and version is not None and version != header:
            raise _Refused("bad_hello", f"hello version {version} contradicts the Protocol-Version header ({header})")
        try:
            params = parse_audio_params(message.get("audio_params"), INPUT_RATES, DEFAULT_INPUT)
        except AudioFormatError as exc:
            raise _Refused("unsupported_audio", str(exc)) from None
        session_id = self._hello_text(message, "sessionId")
        if session_id is not None and not session_id.isprintable():
            raise _Refused("bad_hello", "sessionId must be printable text")
        return Hello(
            version=header or version or DEFAULT_VERSION,
            session_id=session_id or f"voice-{uuid.uuid4().hex[:16]}",
            product_id=self._hello_text(message, "productId"),
            device_id=self._hello_text(message, "deviceId"),
            language=self._hello_text(message, "language"),
            asr_name=choice.asr,
            tts_name=choice.tts,
            input_rate=params.sample_rate,
        )

    def _hello_text(self, message: dict[str, Any], name: str) -> str | None:
        value = message.get(name, self._conn.query.get(name))
        if value is None:
            return None
        if not isinstance(value, str) or not value or len(value) > MAX_FIELD_CHARS:
            raise _Refused("bad_hello", f"{name} must be a non-empty string of at most {MAX_FIELD_CHARS} characters")
        return value

    def _start(self, hello: Hello) -> None:
        s = self.settings
        self._hello = hello
        self._codec = BinaryCodec(hello.version)
        self._out = AudioOut(self._send_bytes, self._codec, self.output_params, s.prebuffer_ms / 1000)
        self._input = InputAudio(hello.input_rate)
        self._segmenter = Segmenter(
            SegmenterConfig(
                silence_ms=s.silence_ms,
                min_voiced_s=min(s.min_voiced_s, s.max_utterance_s / 2),
                max_utterance_s=s.max_utterance_s,
                no_speech_timeout_s=s.no_speech_timeout_s,
                mute_tail_ms=s.tts_tail_ms,
            ),
            FrameClassifier(ClassifierConfig(vad_mode=s.vad_mode, energy_margin_db=s.energy_margin_db)),
        )
        self._asr = self._service.asr(hello.asr_name)
        self._tts = self._service.tts(hello.tts_name) if hello.tts_name else None
        self._warned.clear()
        log.info("voice session %s: hello, agent session %s, protocol %d, %d Hz in, provider %s (tts %s)",
                 self.name, hello.session_id, hello.version, hello.input_rate, hello.asr_name,
                 hello.tts_name or "none")

    # ------------------------------------------------------------------ control

    async def _on_listen(self, message: dict[str, Any]) -> None:
        state = message.get("state", "start")
        if state == "stop":
            await self._on_stop(message)
            return
        if state == "detect":
            return  # XiaoZhi's wake-word notice: nothing to do
        if state != "start":
            await self._error("bad_message", "listen state must be start or stop")
            return
        mode = message.get("mode", self._mode)
        mode = "auto" if mode == "realtime" else mode
        task_id = message.get("taskId")
        if mode not in MODES:
            await self._error("bad_message", "listen mode must be auto or manual")
            return
        if task_id is not None and (not isinstance(task_id, str) or len(task_id) > MAX_FIELD_CHARS):
            await self._error("bad_message", f"taskId must be a string of at most {MAX_FIELD_CHARS} characters")
            return
        utt = self._utterance
        if utt is not None and not utt.finished:
            if utt.ended:
                await self._abort()  # barge-in: the reply in progress stops
            else:
                self._drop_utterance()  # a new listen drops the utterance being heard
        assert self._input is not None and self._segmenter is not None
        self._mode = mode
        self._task_id = task_id
        self._listening = True
        self._drop_quietly = False
        self._warned -= BINARY_WARNINGS
        self._input.reset()
        if mode == "auto":
            self._segmenter.start(self._audio_t)
        else:
            self._segmenter.stop()
            self._begin_utterance()

    async def _on_stop(self, message: dict[str, Any]) -> None:
        try:
            frame_ids = vision_refs(message.get("visionRefs"))
        except _Refused as exc:
            await self._error(exc.code, exc.message)
            return
        self._listening = False
        self._drop_quietly = True
        if self._segmenter is not None:
            self._segmenter.stop()
        utt = self._utterance
        if utt is not None and not utt.answering:
            if frame_ids:
                utt.frame_ids = frame_ids
            utt.end()

    async def _abort(self) -> None:
        """Stop ASR, the agent turn and TTS now; listening waits for the next listen start."""
        self._listening = False
        self._drop_quietly = True
        if self._segmenter is not None:
            self._segmenter.stop()
        if self._input is not None:
            self._input.reset()
        utt, self._utterance = self._utterance, None
        if utt is not None and utt.task is not None:
            # Its `finally` blocks close the ASR stream, the agent turn and every TTS stream.
            await cancel_and_wait([utt.task], self.settings.abort_wait_s)
        self._out.stop()
        self._anchor_mute = True
        if self._tts_started:
            self._tts_started = False
            await self._send({"type": "tts", "state": "stop"})

    # ------------------------------------------------------------------ audio

    async def _on_audio(self, payload: bytes) -> None:
        if not self._listening:
            self.dropped_audio += 1
            self._service.stats.dropped_audio += 1
            if not self._drop_quietly and not self._busy:
                await self._warn_once("not_listening", "audio received while not listening: send listen start first")
            return
        self._touch()
        assert self._input is not None
        for frame in self._input.push(payload):
            if not self._listening:
                break
            if self._mode == "manual":
                self._manual_frame(frame)
            else:
                await self._auto_frame(frame)

    def _manual_frame(self, frame: bytes) -> None:
        utt = self._utterance
        if utt is None or utt.ended:
            return
        utt.feed(frame)
        if utt.seconds >= self.settings.max_utterance_s - 1e-6:
            log.info("voice session %s: manual utterance reached %g s, processing it", self.name,
                     self.settings.max_utterance_s)
            utt.end()
            self._listening = False
            self._drop_quietly = True

    async def _auto_frame(self, frame: bytes) -> None:
        segmenter = self._segmenter
        assert segmenter is not None
        t = self._audio_t
        self._audio_t = t + FRAME_S
        self._mute(segmenter, t)
        for event in segmenter.push(frame, t):
            utt = self._utterance
            if isinstance(event, SpeechFrame):
                if utt is not None and not utt.ended:
                    utt.feed(event.frame)
            elif isinstance(event, SpeechStarted):
                self._begin_utterance().feed(event.pre_roll)
            elif isinstance(event, SpeechEnded):
                if utt is not None:
                    utt.end()
                if event.timed_out:
                    log.info("voice session %s: utterance reached %g s, processing it", self.name,
                             self.settings.max_utterance_s)
                segmenter.start(t + FRAME_S)  # listening goes on, muted while the reply plays
            elif isinstance(event, Discarded):
                self._drop_utterance()
            elif isinstance(event, NoSpeech):
                self._listening = False
                self._drop_quietly = True
                await self._error("no_speech", f"nothing was said for {self.settings.no_speech_timeout_s:g} s; "
                                               "send listen start to listen again")

    def _mute(self, segmenter: Segmenter, t: float) -> None:
        """Ignore the microphone while a reply is worked out and played, and tts_tail_ms after
        it (the segmenter adds the tail). The segmenter runs on audio time, playback on the wall
        clock: while busy the mute is pushed ahead frame by frame; at the first frame after the
        reply it is anchored once, at this frame's time plus what is left to play (negative when
        the reply ended earlier, e.g. while the device had its microphone off)."""
        if self._busy:
            segmenter.mute_until(t + FRAME_S)
            self._anchor_mute = True
        elif self._anchor_mute:
            self._anchor_mute = False
            segmenter.mute_until(t + self._out.play_end - asyncio.get_running_loop().time())

    def _begin_utterance(self) -> Utterance:
        self._drop_utterance()
        utt = Utterance(self._mode, self._task_id)
        self._utterance = utt
        utt.task = self.spawn(self._run_utterance(utt), "voice-utterance")
        return utt

    def _drop_utterance(self) -> None:
        """Forget the utterance being heard; its task closes the ASR stream as it ends."""
        utt, self._utterance = self._utterance, None
        if utt is not None and utt.task is not None and not utt.finished:
            utt.task.cancel()

    # ------------------------------------------------------------------ pipeline

    async def _run_utterance(self, utt: Utterance) -> None:
        try:
            text = await self._recognise(utt)
            if text is None:
                return
            await self._send({"type": "asr", "text": text, "definite": True, **self._task_fields(utt.task_id)})
            if text:
                await self._answer(utt, text)
        except _Gone:
            pass
        except Exception:
            log.exception("voice session %s: the pipeline failed", self.name)
            with contextlib.suppress(_Gone):
                await self._error("internal_error", "the voice pipeline failed; see the gateway log")
        finally:
            utt.finished = True
            if self._utterance is utt:
                self._utterance = None
                if not self._listening:
                    self._drop_quietly = False
            self._touch()

    async def _recognise(self, utt: Utterance) -> str | None:
        """Stream the utterance to the ASR; the final transcript, or None after an error."""
        assert self._asr is not None and self._hello is not None
        s = self.settings
        stream: AsrStream | None = None
        tasks: list[asyncio.Task[Any]] = []
        try:
            try:
                async with asyncio.timeout(s.asr_start_timeout_s):
                    stream = await self._asr.start(self._hello.language)
            except TimeoutError:
                raise VoiceProviderError(
                    PROVIDER_TIMEOUT, f"the speech recogniser did not start within {s.asr_start_timeout_s:g} s"
                ) from None
            reader = self.spawn(self._asr_results(stream, utt), "voice-asr-results")
            sender = self.spawn(self._asr_audio(stream, utt), "voice-asr-audio")
            tasks = [reader, sender]
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            if not reader.done() and sender.exception() is not None:
                # A failed send: the reader usually has the provider's own account of why.
                await asyncio.wait([reader], timeout=0.5)
                if not reader.done():
                    sender.result()
            if not reader.done():
                try:
                    async with asyncio.timeout(s.asr_final_timeout_s):
                        await asyncio.wait([reader])
                except TimeoutError:
                    raise VoiceProviderError(
                        PROVIDER_TIMEOUT, f"no final transcript within {s.asr_final_timeout_s:g} s of the end of speech"
                    ) from None
            return reader.result()
        except VoiceProviderError as exc:
            await self.provider_error(exc)
            return None
        finally:
            await cancel_and_wait(tasks)
            for task in tasks:  # outcomes retrieved: nothing logged as "never retrieved"
                if task.done() and not task.cancelled():
                    task.exception()
            if stream is not None:
                await stream.close()

    async def _asr_audio(self, stream: AsrStream, utt: Utterance) -> None:
        while (pcm := await utt.audio.get()) is not None:
            await stream.send_audio(pcm)
        await stream.finish()

    async def _asr_results(self, stream: AsrStream, utt: Utterance) -> str:
        async for result in stream.results():
            if result.final:
                return result.text.strip()
            if result.text:
                await self._send({"type": "asr", "text": result.text, "definite": False,
                                  **self._task_fields(utt.task_id)})
        raise VoiceProviderError(ASR_FAILED, "the speech recogniser ended without a final transcript")

    async def _answer(self, utt: Utterance, text: str) -> None:
        """The agent turn for a transcript and the speech of its reply; ends with tts_complete."""
        hello = self._hello
        assert hello is not None
        # Someone is standing at the speaker: its turn never waits behind a flood of chat.
        request = TurnRequest(message=text, session_id=hello.session_id, product_id=hello.product_id,
                              device_id=hello.device_id, frame_ids=utt.frame_ids, paced=False)
        speaker = Speaker(self, self._tts, hello.tts_name) if self._tts is not None and hello.tts_name else None
        try:
            await self._converse(utt, request, speaker)
            if speaker is not None:
                await speaker.finish()
            if self._tts_started:
                await self._out.drain()
        finally:
            if speaker is not None:
                await speaker.close()
        utt.finished = True  # from here on a listen start is no barge-in
        if self._tts_started:
            self._tts_started = False
            await self._send({"type": "tts", "state": "stop"})
        await self._send({"type": "tts_complete"})

    async def _converse(self, utt: Utterance, request: TurnRequest, speaker: Speaker | None) -> None:
        agent = self._service.agent
        splitter = ClauseSplitter()

        def say(clauses: list[str]) -> None:
            if speaker is not None:
                for clause in clauses:
                    speaker.say(clause)

        try:
            session_id, images = await agent.prepare(request)
            utt.answering = True
            self._service.stats.turns += 1
            events = agent.turn(request, session_id, images)
            try:
                async for event in events:
                    if isinstance(event, Delta):
                        await self._send({"type": "agent_reply", "text": event.text, "streaming": True})
                        say(splitter.push(event.text))
                    elif isinstance(event, ToolCallStarted):
                        say(splitter.flush())  # "Let me check" is spoken while the tool runs
                    elif isinstance(event, TurnDone):
                        if not event.interrupted:
                            say(splitter.flush())
                        await self._send({"type": "agent_reply", "text": event.text, "streaming": False})
                    elif isinstance(event, TurnFailed):
                        await self._error(event.code, event.message)
            finally:
                await events.aclose()
        except Conflict as exc:
            await self._error("session_busy", exc.message)
        except CoreError as exc:
            await self._error(exc.code, exc.message)
        except (_Gone, asyncio.CancelledError):
            raise
        except Exception:
            log.exception("voice session %s: the agent failed", self.name)
            await self._error("agent_failed", "the assistant failed to answer; see the gateway log")


def vision_refs(refs: Any) -> tuple[str, ...]:
    """`visionRefs` as in /api/chat: a list of {frameId} (at most 8)."""
    if refs is None:
        return ()
    if not isinstance(refs, list) or len(refs) > MAX_VISION_REFS:
        raise _Refused("bad_message", f"visionRefs must be a list of at most {MAX_VISION_REFS} frame references")
    ids = []
    for index, ref in enumerate(refs):
        frame_id = ref.get("frameId") if isinstance(ref, dict) else None
        if not isinstance(frame_id, str) or not frame_id or len(frame_id) > MAX_FIELD_CHARS:
            raise _Refused("bad_message", f"visionRefs[{index}].frameId is required (from /api/vision/frames)")
        ids.append(frame_id)
    return tuple(ids)
