"""One voice connection (SPEC §5): its lifecycle, the receive loop, hello, listening in `auto`
or `manual` mode (framing, the VAD segmenter, muting our own speech), listen/stop/abort, and
announcements. The turn itself (ASR → agent → TTS) is turn.py; what the client hears is said
by its dialect (dialect.py); audio comes and goes through its codec (codec.py).

Client → server (text frames, or binary type-1 frames in protocol 2/3):
  hello {version?, audio_params, sessionId?, productId?, deviceId?, provider?, language?}
  listen {mode: auto|manual, state?: start|stop|detect, taskId?}; binary audio;
  stop {visionRefs?}; abort; goodbye

Listening:
- auto: the Segmenter finds speech; SpeechStarted begins an utterance (its turn opens the ASR
  stream and gets the pre-roll), SpeechFrames follow, SpeechEnded ends it. Listening goes on by
  itself afterwards (muted while the reply is worked out and played, plus `tts_tail_ms`); a
  `listen start` from the client restarts it and is harmless. Discarded (a cough) drops the
  utterance (its turn closes the ASR stream unused).
- manual: `listen start` begins an utterance, every frame goes to it until `stop` or `listen
  stop`, or until `max_utterance_s` of audio (then it is processed as if stopped).

Decisions where SPEC §5 is silent:
- `Protocol-Version` decides the framing; without the header, hello's `version` does (browsers
  cannot set headers), else 3. A hello whose version contradicts the header is refused.
- Anything but hello before hello: `error hello_required`; the connection keeps waiting for
  hello, for `hello_timeout_s` (5 s: clients send hello as soon as they connect), then closes
  (1008). Only a hello takes a voice slot (`max_sessions`); if they are all taken by then, the
  hello gets `too_many_sessions` and the close (1013).
- A hello we cannot accept (bad audio_params → `unsupported_audio`, bad fields → `bad_hello`,
  an unknown or unconfigured provider → `unknown_provider` / `provider_not_configured`, the
  message naming the configured ones) gets an error and the connection waits for a corrected
  hello. No ASR configured at all → `asr_not_configured` and the close (1011): nothing the
  client can send fixes that. A second hello → `duplicate_hello`, ignored.
- Audio while not listening is counted (`deviceagentd_voice_dropped_audio_total`); `error
  not_listening` is sent once until the next `listen start`, and not at all for audio that
  merely trails an utterance (after `stop`, `abort`, a manual cut or `no_speech`).
- Binary frames whose header lies (`bad_frame`), whose payload exceeds 65535 bytes
  (`frame_too_large`) or whose Opus packet does not decode (`bad_audio`, counted in
  `deviceagentd_voice_bad_audio_total`) are dropped with one error until the next `listen start`; a text message
  over `max_text_bytes` gets `message_too_large`; a WebSocket message over
  `max_message_bytes` makes aiohttp close the connection (1009).
- Auto mode with nothing said for `no_speech_timeout_s`: `error no_speech`, listening stops.
- `listen start` while a reply is being worked out or played is a barge-in: the reply is
  aborted (as by `abort`) and listening starts. Mode `realtime` is treated as `auto` (no echo
  cancellation here).
- `listen {state: "detect", text}` (XiaoZhi): a wake word (`voice.xiaozhi.wake_words`) is
  greeted with a short phrase, or not at all (`wake_greeting = false`); any other text is a
  request (py-xiaozhi sends typed text this way), answered like a transcript, stopping a reply
  in progress first.
- The client's dialect (dialect.py) is XiaoZhi when hello has `features` (an object), else
  EMQX-style. XiaoZhi clients are never told `not_listening` (the firmware sends its wake word's
  audio before `listen start`); their `iot` and `ping` are accepted unanswered. With
  `features.mcp` the session is MCP client of the device's tools (mcp.py), offered to its turns.
- `abort`: ASR, agent turn, TTS and any announcement are cancelled and their connections closed
  before the answer (`tts stop`, only if `tts start` had been sent); listening stops until
  `listen start`.
- Idle: nothing received for `idle_timeout_s` while no reply is in progress (audio counts only
  while listening) → close 1000 "idle timeout". `goodbye` → close 1000.
- Announcements (`announce`) wait for a reply being spoken, then speak like a reply without a
  turn (no `tts_complete`), muting the microphone the same way. `abort` stops one; `listen
  start` does not (XiaoZhi firmware sends it after every `tts stop`, so it may arrive just after
  an announcement began); a manual utterance started meanwhile is answered after it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from collections.abc import Coroutine
from typing import Any, Final, TypeVar

from aiohttp import WSCloseCode, WSMsgType, web

from deviceagentd import strictjson
from deviceagentd.core.language import written_in_chinese
from deviceagentd.voice import messages
from deviceagentd.voice.audio import FRAME_MS, OPUS, AudioParams
from deviceagentd.voice.clauses import ClauseSplitter
from deviceagentd.voice.codec import AudioCodec, CodecError, CodecUnavailable, PcmCodec, open_codec
from deviceagentd.voice.connection import Connection
from deviceagentd.voice.dialect import Dialect, EmqxDialect, XiaozhiDialect
from deviceagentd.voice.events import TurnError, TurnEvent, TurnOver
from deviceagentd.voice.mcp import DeviceMcp, DeviceToolset
from deviceagentd.voice.messages import BadMessage
from deviceagentd.voice.playback import AudioOut
from deviceagentd.voice.protocol import DEFAULT_VERSION, MAX_PAYLOAD, BinaryCodec, FrameType, ProtocolError
from deviceagentd.voice.providers.tasks import stop_tasks
from deviceagentd.voice.segmenter import (
    Discarded,
    NoSpeech,
    Segmenter,
    SegmenterConfig,
    SpeechEnded,
    SpeechFrame,
    SpeechStarted,
)
from deviceagentd.voice.service import ASR_NOT_CONFIGURED, ESPEAK, OFFLINE, ProviderChoiceError, VoiceService
from deviceagentd.voice.settings import SessionSettings, wake_key
from deviceagentd.voice.speech import Speaker, Voice
from deviceagentd.voice.turn import ClientGone, Turn, TurnSetup, Utterance
from deviceagentd.voice.vad import ClassifierConfig, FrameClassifier

log = logging.getLogger("deviceagentd.voice")

FRAME_S: Final = FRAME_MS / 1000
# Errors about binary input, sent once until the next `listen start`.
BINARY_WARNINGS: Final = frozenset({"not_listening", "bad_frame", "frame_too_large", "bad_audio"})
# What a wake word is greeted with (voice.xiaozhi.wake_greeting).
GREETING_ZH: Final = "我在，请说。"
GREETING_EN: Final = "I'm listening."

T = TypeVar("T")


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
        self._dialect: Dialect = EmqxDialect()
        # Set by hello.
        self._hello: messages.Hello | None = None
        self._setup: TurnSetup | None = None
        self._mcp: DeviceMcp | None = None
        self._framing = BinaryCodec(connection.version or DEFAULT_VERSION)
        self._segmenter: Segmenter | None = None
        output = AudioParams(self.settings.output_sample_rate, self.settings.output_frame_ms)
        self._codec: AudioCodec = PcmCodec(messages.DEFAULT_INPUT, output)
        self._out = AudioOut(self._send_bytes, self._framing, self._codec, self.settings.prebuffer_ms / 1000)
        # Listening.
        self._mode = "auto"
        self._listening = False
        self._task_id: str | None = None
        self._utterance: Utterance | None = None
        self._audio_t = 0.0  # input audio time (s) of the next 30 ms frame
        self._drop_quietly = False
        self._anchor_mute = False  # the reply is over: anchor the end of the mute on the next frame
        # Speaking: one reply or announcement at a time.
        self._speech = asyncio.Lock()
        self._announcement: asyncio.Task[Any] | None = None  # set while one is being spoken
        self.dropped_audio = 0
        self.bad_audio = 0

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
        except ClientGone:
            pass
        finally:
            await self._teardown()
            if not self._ws.closed:
                with contextlib.suppress(Exception):
                    await self._ws.close()
            self._finished.set()
            log.info("voice session %s closed", self.name)

    async def evict(self) -> None:
        if self._hello is not None or self._closing:
            return
        with contextlib.suppress(ClientGone):
            await self._error("too_many_connections",
                              "too many connections are waiting to say hello; send hello right after connecting")
        await self._close(WSCloseCode.TRY_AGAIN_LATER, "too_many_connections")

    async def shutdown(self) -> None:
        self._closing = True
        with contextlib.suppress(Exception):
            await self._ws.close(code=WSCloseCode.GOING_AWAY, message=b"gateway shutting down")
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.settings.abort_wait_s + 1.0):
                await self._finished.wait()

    def speaks_for(self, device_id: str) -> bool:
        hello = self._hello
        return hello is not None and not self._closing and device_id in (self._conn.device_id, hello.device_id)

    def spawn(self, coro: Coroutine[Any, Any, T], name: str) -> asyncio.Task[T]:
        """A task of this session: cancelled and awaited when the connection ends."""
        task = asyncio.create_task(coro, name=f"{name}-{self._id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _teardown(self) -> None:
        self._listening = False
        self._utterance = None
        if self._mcp is not None:
            self._mcp.close()  # a tool call waiting for the device fails now
        await stop_tasks(list(self._tasks), self.settings.abort_wait_s)

    async def _close(self, code: int, reason: str) -> None:
        self._closing = True
        with contextlib.suppress(Exception):
            await self._ws.close(code=code, message=reason.encode())

    def _touch(self) -> None:
        self._last_activity = self._clock.monotonic()

    @property
    def _busy(self) -> bool:
        """A reply is being worked out or played, or an announcement is."""
        utt = self._utterance
        return (utt is not None and utt.ended and not utt.finished) or self._announcement is not None

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

    # ------------------------------------------------------------------ sending (TurnSink)

    async def _send(self, message: dict[str, Any]) -> None:
        if self._ws.closed:
            raise ClientGone
        try:
            await self._ws.send_str(json.dumps(message, ensure_ascii=False))
        except ConnectionError as exc:
            raise ClientGone from exc

    async def _send_all(self, items: list[dict[str, Any]]) -> None:
        for message in items:
            await self._send(message)

    async def _send_bytes(self, data: bytes) -> None:
        if self._ws.closed:
            raise ClientGone
        try:
            await self._ws.send_bytes(data)
        except ConnectionError as exc:
            raise ClientGone from exc

    async def emit(self, event: TurnEvent) -> None:
        if isinstance(event, TurnError):
            self._count_error(event.code, event.message)
        await self._send_all(self._dialect.messages(event))

    async def play(self, frame: bytes) -> None:
        await self._out.send(frame)

    async def drain(self) -> None:
        await self._out.drain()

    def turn_started(self) -> None:
        self._service.stats.turns += 1

    def _count_error(self, code: str, message: str) -> None:
        self._service.stats.errors += 1
        log.info("voice session %s: error %s: %s", self.name, code, message)

    async def _error(self, code: str, message: str) -> None:
        self._count_error(code, message)
        await self._send_all(self._dialect.error(code, message))

    async def _warn_once(self, code: str, message: str) -> None:
        if code not in self._warned:
            self._warned.add(code)
            await self._error(code, message)

    # ------------------------------------------------------------------ input

    async def _on_text(self, data: str) -> None:
        if len(data) > self.settings.max_text_bytes or len(data.encode()) > self.settings.max_text_bytes:
            await self._error("message_too_large",
                              f"control messages are limited to {self.settings.max_text_bytes} bytes")
            return
        try:
            message = strictjson.loads(data)
        except strictjson.JsonInputError as exc:
            await self._error("bad_json", f"the message is not valid JSON: {exc.detail}")
            return
        await self._on_message(message)

    async def _on_message(self, message: Any) -> None:
        try:
            kind = messages.message_type(message)
            self._touch()
            if kind == "hello":
                await self._on_hello(message)
                return
            if self._hello is None:
                await self._error("hello_required", f"send hello first (got {kind[:32]!r})")
                return
            parsed = messages.parse(message)
        except BadMessage as exc:
            await self._error(exc.code, exc.message)
            return
        if isinstance(parsed, messages.ListenStart):
            await self._on_listen(parsed)
        elif isinstance(parsed, messages.Stop):
            self._on_stop(parsed)
        elif isinstance(parsed, messages.Abort):
            await self._abort()
        elif isinstance(parsed, messages.Goodbye):
            await self._close(WSCloseCode.OK, "goodbye")
        elif isinstance(parsed, messages.WakeWord):
            await self._on_wake_word(parsed)
        elif isinstance(parsed, messages.Mcp):
            if self._mcp is not None:
                self._mcp.receive(parsed.payload)
            else:
                log.info("voice session %s: mcp message without features.mcp in hello, ignored", self.name)
        # messages.Quiet (iot, ping): accepted, not answered

    async def _on_binary(self, data: bytes) -> None:
        if self._hello is None:
            await self._warn_once("hello_required", "send hello before any audio")
            return
        if len(data) - self._framing.header_size > MAX_PAYLOAD:
            await self._warn_once("frame_too_large", f"binary payloads are limited to {MAX_PAYLOAD} bytes")
            return
        try:
            frame = self._framing.decode(data)
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
        service = self._service
        self._dialect = XiaozhiDialect() if messages.speaks_xiaozhi(message) else EmqxDialect()
        try:
            provider = messages.hello_text(message, "provider", self._conn.query)
            try:
                choice = service.choose(provider)
            except ProviderChoiceError as exc:
                await self._error(exc.code, exc.message)
                if exc.code == ASR_NOT_CONFIGURED:
                    # Without any ASR there is nothing a client can correct: the connection closes.
                    await self._close(WSCloseCode.INTERNAL_ERROR, exc.code)
                return
            hello = messages.parse_hello(message, self._conn.version, self._conn.query)
            codec = self._open_codec(hello.audio)
        except BadMessage as exc:
            await self._error(exc.code, exc.message)
            return
        if not service.sessions.promote(self):
            await self._error("too_many_sessions", f"the gateway already has {service.sessions.max_sessions} "
                              "voice sessions; try again later")
            await self._close(WSCloseCode.TRY_AGAIN_LATER, "too_many_sessions")
            return
        try:
            self._start(hello, codec, choice.asr, choice.tts)
        except Exception:
            log.exception("voice session %s: could not set up the session", self.name)
            self._hello = None
            await self._error("internal_error", "the gateway could not set up the voice session; see its log")
            await self._close(WSCloseCode.INTERNAL_ERROR, "internal_error")
            return
        await self._send(self._dialect.hello(hello.session_id, hello.version, self._codec.output, choice.asr))
        if choice.asr == OFFLINE:
            # Load the grammar and a decoder while the speaker is still getting ready to talk.
            self.spawn(service.prepare_offline(), "voice-offline-prepare")
        if self._mcp is not None:
            self.spawn(self._mcp.start(), "voice-mcp")

    def _open_codec(self, audio: AudioParams) -> AudioCodec:
        """The codec for hello's audio_params: we answer in the client's format, at our output
        rate; PCM in frames of `output_frame_ms`, Opus in packets of the client's own duration
        (the firmware decodes exactly the duration the server hello announces)."""
        s = self.settings
        frame_ms = audio.frame_duration_ms if audio.format == OPUS else s.output_frame_ms
        output = AudioParams(s.output_sample_rate, frame_ms, format=audio.format)
        try:
            return open_codec(audio, output)
        except CodecUnavailable as exc:
            log.warning("voice session %s: %s", self.name, exc)
            raise BadMessage("unsupported_audio", str(exc)) from None

    def _start(self, hello: messages.Hello, codec: AudioCodec, asr_name: str, tts_name: str | None) -> None:
        s = self.settings
        service = self._service
        self._framing = BinaryCodec(hello.version)
        self._codec = codec
        self._out = AudioOut(self._send_bytes, self._framing, self._codec, s.prebuffer_ms / 1000)
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
        tools = None
        if hello.mcp:
            self._mcp = DeviceMcp(self._send, self.name, service.mcp_stats, list_timeout_s=s.mcp_list_timeout_s,
                                  call_timeout_s=s.tool_timeout_s, max_tools=s.max_tools)
            tools = DeviceToolset(self._mcp, self._conn.device_id or hello.device_id or "")
        # The speaker's own key (its voice and room, for the offline recogniser's adaptation).
        speaker_key = self._conn.device_id or hello.device_id or self.name
        self._setup = TurnSetup(
            settings=s,
            agent=service.agent,
            asr=service.session_asr(asr_name, speaker_key),
            voice=self._voice(tts_name, hello.language) if tts_name else None,
            apology=self._voice(ESPEAK, hello.language) if service.has_tts(ESPEAK) else None,
            session_id=hello.session_id,
            product_id=hello.product_id,
            device_id=hello.device_id,
            language=hello.language,
            name=self.name,
            tools=tools,
            speaker_id=self._conn.device_id or hello.device_id,
        )
        self._hello = hello
        self._warned.clear()
        log.info("voice session %s: hello, agent session %s, protocol %d, %s %d Hz in, provider %s (tts %s)",
                 self.name, hello.session_id, hello.version, hello.audio.format, hello.audio.sample_rate, asr_name,
                 tts_name or "none")

    def _voice(self, tts_name: str, language: str | None) -> Voice:
        service = self._service
        return Voice(service.tts(tts_name), tts_name, self._codec.output,
                     lambda text: service.tts_voice(tts_name, text, language))

    # ------------------------------------------------------------------ control

    async def _on_listen(self, listen: messages.ListenStart) -> None:
        utt = self._utterance
        if utt is not None and not utt.finished:
            if utt.ended:
                await self._abort()  # barge-in: the reply in progress stops
            else:
                self._drop_utterance()  # a new listen drops the utterance being heard
        assert self._segmenter is not None
        self._mode = listen.mode or self._mode
        self._task_id = listen.task_id
        self._listening = True
        self._drop_quietly = False
        self._warned -= BINARY_WARNINGS
        self._codec.reset()
        if self._mode == "auto":
            self._segmenter.start(self._audio_t)
        else:
            self._segmenter.stop()
            self._begin_utterance()

    async def _on_wake_word(self, wake: messages.WakeWord) -> None:
        """`listen detect`: the device heard its wake word (greeted, if so configured, while it
        goes on to `listen start`), or sends typed text (py-xiaozhi), answered as a request."""
        text = wake.text
        if text is None:
            return
        if wake_key(text) in self.settings.wake_words:
            setup = self._setup
            if self.settings.wake_greeting and setup is not None and setup.voice is not None:
                greeting = GREETING_ZH if written_in_chinese(text) else GREETING_EN
                self.spawn(self._announce(setup.voice, greeting, None, "greeting"), "voice-greeting")
            return
        utt = self._utterance
        if (utt is not None and utt.ended and not utt.finished) or self._announcement is not None:
            await self._abort()  # a new request while one is answered: that one stops
        self._begin_utterance(text)

    def _on_stop(self, stop: messages.Stop) -> None:
        self._listening = False
        self._drop_quietly = True
        if self._segmenter is not None:
            self._segmenter.stop()
        utt = self._utterance
        if utt is not None and not utt.answering:
            if stop.frame_ids:
                utt.frame_ids = stop.frame_ids
            utt.end()

    async def _abort(self) -> None:
        """Stop ASR, the agent turn, TTS and any announcement now; listening waits for the next
        listen start."""
        self._listening = False
        self._drop_quietly = True
        if self._segmenter is not None:
            self._segmenter.stop()
        self._codec.reset()
        utt, self._utterance = self._utterance, None
        tasks = [task for task in (utt.task if utt is not None else None, self._announcement) if task is not None]
        # Their `finally` blocks close the ASR stream, the agent turn and every TTS stream.
        await stop_tasks(tasks, self.settings.abort_wait_s)
        self._out.stop()
        self._anchor_mute = True
        await self._send_all(self._dialect.aborted())

    # ------------------------------------------------------------------ audio

    async def _on_audio(self, payload: bytes) -> None:
        if not self._listening:
            self.dropped_audio += 1
            self._service.stats.dropped_audio += 1
            if not self._drop_quietly and not self._busy and self._dialect.reports_idle_audio:
                await self._warn_once("not_listening", "audio received while not listening: send listen start first")
            return
        self._touch()
        try:
            frames = self._codec.decode(payload)
        except CodecError as exc:
            self.bad_audio += 1
            self._service.stats.bad_audio += 1
            await self._warn_once("bad_audio", f"audio dropped: {exc}")
            return
        for frame in frames:
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

    def _begin_utterance(self, text: str | None = None) -> Utterance:
        self._drop_utterance()
        utt = Utterance(self._mode, self._task_id)
        self._utterance = utt
        utt.task = self.spawn(self._run_utterance(utt, text), "voice-utterance")
        return utt

    def _drop_utterance(self) -> None:
        """Forget the utterance being heard; its task closes the ASR stream as it ends."""
        utt, self._utterance = self._utterance, None
        if utt is not None and utt.task is not None and not utt.finished:
            utt.task.cancel()

    async def _run_utterance(self, utt: Utterance, text: str | None) -> None:
        assert self._setup is not None
        try:
            async with self._speech:
                turn = Turn(self._setup, self)
                await (turn.run(utt) if text is None else turn.run_text(utt, text))
        finally:
            utt.finished = True
            if self._utterance is utt:
                self._utterance = None
                if not self._listening:
                    self._drop_quietly = False
            self._touch()

    # ------------------------------------------------------------------ announcements

    async def announce(self, text: str, language: str | None = None) -> bool:
        setup = self._setup
        if setup is None or setup.voice is None or self._closing:
            return False
        task = self.spawn(self._announce(setup.voice, text, language, "announcement"), "voice-announcement")
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            caller = asyncio.current_task()
            if task.cancelled() and (caller is None or not caller.cancelling()):
                return False  # stopped by the client's abort or by the session ending
            task.cancel()
            raise

    async def _announce(self, voice: Voice, text: str, language: str | None, what: str) -> bool:
        if language is not None:
            voice = self._voice(voice.name, language)
        async with self._speech:
            self._announcement = asyncio.current_task()
            speaker = Speaker(self, voice, self.settings)
            try:
                splitter = ClauseSplitter()
                for clause in [*splitter.push(text), *splitter.flush()]:
                    speaker.say(clause)
                await speaker.finish()
                if speaker.played:
                    await self._out.drain()
                spoken = speaker.played and not speaker.failed
                log.info("voice session %s: %s of %d characters %s", self.name, what, len(text),
                         "spoken" if spoken else "failed")
                await self.emit(TurnOver(answered=False))
                return spoken
            except ClientGone:
                return False
            finally:
                await speaker.close()
                self._announcement = None
                self._touch()
