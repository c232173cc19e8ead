"""Loopback speech services for tests, speaking the real wire protocols.

`DashScopeDouble` — the DashScope inference WebSocket (`/api-ws/v1/inference`): the task
protocol (run-task → task-started → … → finish-task → task-finished | task-failed) for realtime
ASR (Paraformer: binary audio in, result-generated partials and `sentence_end` finals out) and
CosyVoice TTS (continue-task text in, binary PCM out). A bad key is refused at the upgrade with
HTTP 401 like the real service.

    async with DashScopeDouble() as ds:
        ds.asr = AsrScript(sentences=["打开空调。"], bytes_per_sentence=32000)
        settings = DashScopeAsrSettings(api_key=ds.api_key, url=ds.url)
        ...
        ds.tasks[0].audio          # what the client streamed
        await ds.tasks[0].wait_closed()

`OpenAiAudioDouble` — `POST /v1/audio/transcriptions` (multipart WAV → `{"text"}`) and
`POST /v1/audio/speech` (`response_format: pcm` → chunked raw s16le at 24 kHz).

Both check what the client sends the way the real service does and list any deviation in
`problems` (a test asserts it stays empty); both record every request/connection, including
when the client went away. The synthesised audio is a deterministic tone per text
(`tone_pcm`), so a test can compare bytes exactly.
"""

from __future__ import annotations

import asyncio
import io
import json
import math
import struct
import time
import uuid
import wave
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import aiohttp
from aiohttp import web

DASHSCOPE_PATH = "/api-ws/v1/inference"
TTS_RATES = frozenset({8000, 16000, 22050, 24000, 44100, 48000})
OPENAI_TTS_RATE = 24000


def tone_pcm(text: str, sample_rate: int, ms_per_char: int) -> bytes:
    """s16le mono: a tone whose pitch depends on the text, `ms_per_char` per character."""
    samples = len(text) * ms_per_char * sample_rate // 1000
    freq = 200 + sum(text.encode("utf-8")) % 600
    return b"".join(
        struct.pack("<h", int(8000 * math.sin(2 * math.pi * freq * i / sample_rate))) for i in range(samples)
    )


def _chunks(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


# =============================================================================== DashScope


@dataclass
class AsrScript:
    """How the ASR task behaves. Sentence i ends (`sentence_end: true`) once
    (i + 1) * bytes_per_sentence bytes of audio have arrived; before that, partials reveal its
    text in proportion every `partial_every_bytes`. finish-task closes the sentence being heard."""

    sentences: list[str] = field(default_factory=lambda: ["hello world"])
    bytes_per_sentence: int = 64000
    partial_every_bytes: int = 6400
    # (error_code, error_message): answer run-task (fail_after_bytes == 0) or the audio with task-failed.
    fail: tuple[str, str] | None = None
    fail_after_bytes: int = 0
    hang_before_start: bool = False  # never send task-started
    hang_after_finish: bool = False  # never answer finish-task
    drop_after_bytes: int | None = None  # close the socket abruptly
    heartbeats: bool = True  # interleave heartbeat results (the client must skip them)


@dataclass
class TtsScript:
    ms_per_char: int = 40
    chunk_bytes: int = 3200
    chunk_delay_s: float = 0.0
    # (error_code, error_message): on run-task (fail_after_texts == 0) or after that many texts.
    fail: tuple[str, str] | None = None
    fail_after_texts: int = 0
    hang_before_start: bool = False
    hang_after_finish: bool = False


@dataclass
class DashScopeTask:
    """One connection: what the client sent and how it ended."""

    headers: dict[str, str]
    kind: str = ""  # "asr" | "tts"
    task_id: str = ""
    run_task: dict[str, Any] = field(default_factory=dict)
    audio: bytearray = field(default_factory=bytearray)
    texts: list[str] = field(default_factory=list)
    finish_received: bool = False
    # True when the client closed or dropped the socket (not the double).
    client_closed: bool = False
    closed_at: float | None = None
    _closed: asyncio.Event = field(default_factory=asyncio.Event)

    async def wait_closed(self, timeout_s: float = 5.0) -> None:
        try:
            await asyncio.wait_for(self._closed.wait(), timeout_s)
        except TimeoutError:
            raise AssertionError(f"the client did not close its connection within {timeout_s} s") from None

    @property
    def parameters(self) -> dict[str, Any]:
        params: dict[str, Any] = self.run_task.get("payload", {}).get("parameters", {})
        return params


class _ClientGone(Exception):
    pass


class DashScopeDouble:
    def __init__(self, *, api_key: str = "sk-dashscope-test-0123456789") -> None:
        self.api_key = api_key
        self.asr = AsrScript()
        self.tts = TtsScript()
        self.tasks: list[DashScopeTask] = []
        self.problems: list[str] = []
        self.rejected_upgrades = 0
        self._runner: web.AppRunner | None = None
        self._port = 0

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self._port}{DASHSCOPE_PATH}"

    def tts_pcm(self, text: str, sample_rate: int) -> bytes:
        return tone_pcm(text, sample_rate, self.tts.ms_per_char)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get(DASHSCOPE_PATH, self._handle)
        self._runner = web.AppRunner(app, shutdown_timeout=1.0, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self._port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> DashScopeDouble:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    # ------------------------------------------------------------------ connection

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        if request.headers.get("Authorization") != f"Bearer {self.api_key}":
            self.rejected_upgrades += 1
            body = {"code": "InvalidApiKey", "message": "Invalid API-key provided.", "request_id": str(uuid.uuid4())}
            return web.json_response(body, status=401)
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        task = DashScopeTask(headers=dict(request.headers))
        self.tasks.append(task)
        try:
            await self._run(ws, task)
        except (_ClientGone, ConnectionError):
            task.client_closed = True
        finally:
            task.closed_at = time.monotonic()
            task._closed.set()
            if not ws.closed:
                await ws.close()
        return ws

    async def _receive(self, ws: web.WebSocketResponse) -> aiohttp.WSMessage:
        msg = await ws.receive()
        if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.CLOSED,
                        aiohttp.WSMsgType.ERROR):  # fmt: skip
            raise _ClientGone
        return msg

    async def _command(self, ws: web.WebSocketResponse, task: DashScopeTask) -> tuple[str, dict[str, Any]]:
        """The next text frame as (action, payload); binary frames are not expected here."""
        while True:
            msg = await self._receive(ws)
            if msg.type is aiohttp.WSMsgType.TEXT:
                return self._parse_command(msg.data, task)
            self.problems.append(f"unexpected {msg.type.name} frame")

    def _parse_command(self, text: str, task: DashScopeTask) -> tuple[str, dict[str, Any]]:
        data = json.loads(text)
        header = data.get("header", {})
        action = header.get("action", "")
        if task.task_id and header.get("task_id") != task.task_id:
            self.problems.append(f"{action}: task_id {header.get('task_id')!r} is not the run-task's")
        if header.get("streaming") != "duplex":
            self.problems.append(f"{action}: header.streaming must be 'duplex'")
        payload = data.get("payload")
        if not isinstance(payload, dict):
            self.problems.append(f"{action}: no payload")
            payload = {}
        return action, payload

    async def _send_event(
        self, ws: web.WebSocketResponse, task: DashScopeTask, event: str, payload: dict[str, Any] | None = None,
        **header: str,
    ) -> None:  # fmt: skip
        message = {
            "header": {"task_id": task.task_id, "event": event, "attributes": {}, **header},
            "payload": payload if payload is not None else {},
        }
        await ws.send_str(json.dumps(message, ensure_ascii=False))

    async def _fail(self, ws: web.WebSocketResponse, task: DashScopeTask, fail: tuple[str, str]) -> None:
        await self._send_event(ws, task, "task-failed", error_code=fail[0], error_message=fail[1])

    async def _hang(self, ws: web.WebSocketResponse, task: DashScopeTask) -> None:
        """Answer nothing more; keep recording until the client goes away."""
        while True:
            msg = await self._receive(ws)
            if msg.type is aiohttp.WSMsgType.BINARY:
                task.audio += msg.data

    async def _run(self, ws: web.WebSocketResponse, task: DashScopeTask) -> None:
        msg = await self._receive(ws)
        if msg.type is not aiohttp.WSMsgType.TEXT:
            self.problems.append("the first frame is not run-task")
            return
        run = json.loads(msg.data)
        task.run_task = run
        header = run.get("header", {})
        task.task_id = str(header.get("task_id", ""))
        if header.get("action") != "run-task" or not task.task_id or header.get("streaming") != "duplex":
            self.problems.append(f"bad run-task header: {header}")
        payload = run.get("payload", {})
        task.kind = str(payload.get("task", ""))
        if payload.get("task_group") != "audio" or payload.get("input") != {} or not payload.get("model"):
            self.problems.append(f"bad run-task payload: {payload}")
        if task.kind == "asr":
            await self._run_asr(ws, task, payload)
        elif task.kind == "tts":
            await self._run_tts(ws, task, payload)
        else:
            self.problems.append(f"unknown task {task.kind!r}")
            await self._fail(ws, task, ("InvalidParameter", f"unknown task {task.kind}"))

    async def _wait_for_client_close(self, ws: web.WebSocketResponse, task: DashScopeTask) -> None:
        # After task-finished the real service keeps the socket for another task; the client closes.
        try:
            async with asyncio.timeout(10):
                while True:
                    msg = await self._receive(ws)
                    self.problems.append(f"frame after task-finished: {msg.type.name}")
        except TimeoutError:
            self.problems.append("the client kept the socket open 10 s after task-finished")

    # ------------------------------------------------------------------ ASR

    def _check_asr(self, payload: dict[str, Any]) -> None:
        params = payload.get("parameters", {})
        if payload.get("function") != "recognition":
            self.problems.append("asr: function must be 'recognition'")
        if params.get("format") != "pcm" or params.get("sample_rate") != 16000:
            self.problems.append(f"asr: expected pcm at 16000 Hz, got {params}")
        silence = params.get("max_sentence_silence")
        if silence is not None and not (isinstance(silence, int) and 200 <= silence <= 6000):
            self.problems.append(f"asr: max_sentence_silence {silence!r} outside [200, 6000]")
        hints = params.get("language_hints")
        if hints is not None and not (isinstance(hints, list) and all(isinstance(h, str) for h in hints)):
            self.problems.append(f"asr: language_hints must be a list of strings, got {hints!r}")

    async def _run_asr(self, ws: web.WebSocketResponse, task: DashScopeTask, payload: dict[str, Any]) -> None:
        script = self.asr
        self._check_asr(payload)
        if script.hang_before_start:
            await self._hang(ws, task)
        if script.fail is not None and script.fail_after_bytes == 0:
            await self._fail(ws, task, script.fail)
            return
        await self._send_event(ws, task, "task-started")
        per = script.bytes_per_sentence
        ended = 0  # sentences closed so far
        next_partial = script.partial_every_bytes
        while True:
            msg = await self._receive(ws)
            if msg.type is aiohttp.WSMsgType.BINARY:
                task.audio += msg.data
                heard = len(task.audio)
                if script.fail is not None and heard >= script.fail_after_bytes:
                    await self._fail(ws, task, script.fail)
                    return
                if script.drop_after_bytes is not None and heard >= script.drop_after_bytes:
                    await ws.close()
                    return
                while ended < len(script.sentences) and heard >= (ended + 1) * per:
                    await self._sentence(ws, task, ended, script.sentences[ended], final=True)
                    ended += 1
                if heard >= next_partial:
                    next_partial += script.partial_every_bytes
                    if script.heartbeats:
                        await self._heartbeat(ws, task)
                    if ended < len(script.sentences):
                        text = script.sentences[ended]
                        shown = text[: max(1, len(text) * (heard - ended * per) // per)]
                        await self._sentence(ws, task, ended, shown, final=False)
                continue
            action, _ = self._parse_command(msg.data, task)
            if action != "finish-task":
                self.problems.append(f"asr: unexpected {action}")
                continue
            task.finish_received = True
            if script.hang_after_finish:
                await self._hang(ws, task)
            if ended < len(script.sentences) and len(task.audio) > ended * per:
                await self._sentence(ws, task, ended, script.sentences[ended], final=True)
            usage = {"duration": math.ceil(len(task.audio) / 32000)}
            await self._send_event(ws, task, "task-finished", {"output": {}, "usage": usage})
            await self._wait_for_client_close(ws, task)
            return

    async def _sentence(self, ws: web.WebSocketResponse, task: DashScopeTask, index: int, text: str,
                        *, final: bool) -> None:  # fmt: skip
        begin = index * self.asr.bytes_per_sentence // 32
        sentence: dict[str, Any] = {
            "begin_time": begin,
            "end_time": len(task.audio) // 32 if final else None,
            "text": text,
            "heartbeat": False,
            "sentence_end": final,
            "words": [],
        }
        usage = {"duration": math.ceil(len(task.audio) / 32000)} if final else None
        await self._send_event(ws, task, "result-generated", {"output": {"sentence": sentence}, "usage": usage})

    async def _heartbeat(self, ws: web.WebSocketResponse, task: DashScopeTask) -> None:
        sentence: dict[str, Any] = {"begin_time": 0, "end_time": None, "text": "", "heartbeat": True,
                                    "sentence_end": False}  # fmt: skip
        await self._send_event(ws, task, "result-generated", {"output": {"sentence": sentence}, "usage": None})

    # ------------------------------------------------------------------ TTS

    def _check_tts(self, payload: dict[str, Any]) -> int:
        params = payload.get("parameters", {})
        if payload.get("function") != "SpeechSynthesizer":
            self.problems.append("tts: function must be 'SpeechSynthesizer'")
        if params.get("text_type") != "PlainText" or not params.get("voice"):
            self.problems.append(f"tts: text_type PlainText and a voice are required, got {params}")
        if params.get("format") != "pcm":
            self.problems.append(f"tts: expected format pcm, got {params.get('format')!r}")
        rate = params.get("sample_rate")
        if rate not in TTS_RATES:
            self.problems.append(f"tts: unsupported sample_rate {rate!r}")
            return 24000
        return int(rate)

    async def _run_tts(self, ws: web.WebSocketResponse, task: DashScopeTask, payload: dict[str, Any]) -> None:
        script = self.tts
        rate = self._check_tts(payload)
        if script.hang_before_start:
            await self._hang(ws, task)
        if script.fail is not None and script.fail_after_texts == 0:
            await self._fail(ws, task, script.fail)
            return
        await self._send_event(ws, task, "task-started")
        index = 0
        while True:
            action, body = await self._command(ws, task)
            if action == "continue-task":
                text = body.get("input", {}).get("text")
                if not isinstance(text, str) or not text:
                    self.problems.append(f"tts: continue-task without payload.input.text: {body}")
                    continue
                task.texts.append(text)
                if script.fail is not None and len(task.texts) >= script.fail_after_texts:
                    await self._fail(ws, task, script.fail)
                    return
                await self._speak(ws, task, index, text, rate)
                index += 1
            elif action == "finish-task":
                task.finish_received = True
                if script.hang_after_finish:
                    await self._hang(ws, task)
                usage = {"characters": sum(len(t) for t in task.texts)}
                await self._send_event(ws, task, "task-finished", {"output": {}, "usage": usage})
                await self._wait_for_client_close(ws, task)
                return
            else:
                self.problems.append(f"tts: unexpected {action}")

    async def _speak(self, ws: web.WebSocketResponse, task: DashScopeTask, index: int, text: str, rate: int) -> None:
        script = self.tts
        output: dict[str, Any] = {"sentence": {"index": index, "words": []}, "type": "sentence-begin",
                                  "original_text": text}  # fmt: skip
        await self._send_event(ws, task, "result-generated", {"output": output})
        for chunk in _chunks(self.tts_pcm(text, rate), script.chunk_bytes):
            output = {"sentence": {"index": index, "words": []}, "type": "sentence-synthesis"}
            await self._send_event(ws, task, "result-generated", {"output": output})
            await ws.send_bytes(chunk)
            if script.chunk_delay_s:
                await asyncio.sleep(script.chunk_delay_s)
        output = {"sentence": {"index": index, "words": []}, "type": "sentence-end", "original_text": text}
        await self._send_event(ws, task, "result-generated", {"output": output, "usage": {"characters": len(text)}})


# =============================================================================== OpenAI audio


@dataclass
class TranscriptionScript:
    text: str = "hello world"
    status: int = 200
    error_message: str = "the double was told to fail"
    delay_s: float = 0.0


@dataclass
class SpeechScript:
    ms_per_char: int = 40
    chunk_bytes: int = 4800  # odd sizes split samples across chunks, as real servers do
    chunk_delay_s: float = 0.0
    status: int = 200
    error_message: str = "the double was told to fail"
    delay_before_headers_s: float = 0.0


@dataclass
class TranscriptionRequest:
    headers: dict[str, str]
    fields: dict[str, str]
    filename: str = ""
    content_type: str = ""
    channels: int = 0
    sample_width: int = 0
    sample_rate: int = 0
    pcm: bytes = b""


@dataclass
class SpeechRequest:
    headers: dict[str, str]
    body: dict[str, Any]
    started_at: float
    finished_at: float | None = None  # the whole body was written
    disconnected_at: float | None = None  # the client went away first


class OpenAiAudioDouble:
    def __init__(self, *, api_key: str | None = "sk-openai-test-0123456789") -> None:
        # None: no Authorization required (a LAN server).
        self.api_key = api_key
        self.transcription = TranscriptionScript()
        self.speech = SpeechScript()
        self.transcriptions: list[TranscriptionRequest] = []
        self.speeches: list[SpeechRequest] = []
        self.problems: list[str] = []
        self._runner: web.AppRunner | None = None
        self._port = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._port}/v1"

    def speech_pcm(self, text: str) -> bytes:
        return tone_pcm(text, OPENAI_TTS_RATE, self.speech.ms_per_char)

    async def start(self) -> None:
        app = web.Application(client_max_size=26 * 1024 * 1024)
        app.router.add_post("/v1/audio/transcriptions", self._transcriptions)
        app.router.add_post("/v1/audio/speech", self._speech)
        # handler_cancellation: a client going away cancels the handler, which records it.
        self._runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=1.0, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self._port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> OpenAiAudioDouble:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    async def wait_speech_disconnected(self, index: int, timeout_s: float = 5.0) -> float:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if index < len(self.speeches) and (at := self.speeches[index].disconnected_at) is not None:
                return at
            await asyncio.sleep(0.005)
        raise AssertionError(f"speech request {index}: the client did not go away within {timeout_s} s")

    def _unauthorized(self, request: web.Request) -> web.Response | None:
        if self.api_key is None or request.headers.get("Authorization") == f"Bearer {self.api_key}":
            return None
        given = request.headers.get("Authorization", "").removeprefix("Bearer ")
        # OpenAI quotes part of the key back; the client must not pass that on.
        shown = f"{given[:3]}***{given[-4:]}" if given else ""
        return self._error(401, f"Incorrect API key provided: {shown}.", "invalid_api_key")

    @staticmethod
    def _error(status: int, message: str, code: str | None = None) -> web.Response:
        kind = "invalid_request_error" if status < 500 else "server_error"
        body = {"error": {"message": message, "type": kind, "param": None, "code": code}}
        return web.json_response(body, status=status)

    async def _transcriptions(self, request: web.Request) -> web.StreamResponse:
        if (denied := self._unauthorized(request)) is not None:
            return denied
        record = TranscriptionRequest(headers=dict(request.headers), fields={})
        self.transcriptions.append(record)
        reader = await request.multipart()
        async for part in reader:
            if not isinstance(part, aiohttp.BodyPartReader):
                continue
            if part.name == "file":
                record.filename = part.filename or ""
                record.content_type = part.headers.get("Content-Type", "")
                self._read_wav(await part.read(), record)
            elif part.name:
                record.fields[part.name] = await part.text()
        if not record.fields.get("model"):
            self.problems.append("transcriptions: no model")
        if not record.filename.endswith(".wav"):
            self.problems.append(f"transcriptions: file name {record.filename!r} does not say wav")
        language = record.fields.get("language")
        if language is not None and (len(language) != 2 or not language.islower()):
            self.problems.append(f"transcriptions: language {language!r} is not ISO 639-1")
        script = self.transcription
        if script.delay_s:
            await asyncio.sleep(script.delay_s)
        if script.status != 200:
            return self._error(script.status, script.error_message)
        return web.json_response({"text": script.text})

    def _read_wav(self, data: bytes, record: TranscriptionRequest) -> None:
        try:
            with wave.open(io.BytesIO(data)) as wav:
                record.channels = wav.getnchannels()
                record.sample_width = wav.getsampwidth()
                record.sample_rate = wav.getframerate()
                record.pcm = wav.readframes(wav.getnframes())
        except (wave.Error, EOFError) as exc:
            self.problems.append(f"transcriptions: the file is not a WAV: {exc}")
            return
        if len(data) != 44 + len(record.pcm):
            self.problems.append("transcriptions: WAV sizes do not match the data")

    async def _speech(self, request: web.Request) -> web.StreamResponse:
        if (denied := self._unauthorized(request)) is not None:
            return denied
        try:
            body = await request.json()
        except ValueError:
            self.problems.append("speech: body is not JSON")
            return self._error(400, "We could not parse the JSON body of your request.")
        record = SpeechRequest(headers=dict(request.headers), body=body, started_at=time.monotonic())
        self.speeches.append(record)
        text = body.get("input")
        if not body.get("model") or not body.get("voice") or not isinstance(text, str) or not text:
            self.problems.append(f"speech: model, voice and input are required: {body}")
            return self._error(400, "model, voice and input are required")
        if len(text) > 4096:
            self.problems.append("speech: input longer than 4096 characters")
            return self._error(400, "input is too long")
        if body.get("response_format") != "pcm":
            self.problems.append(f"speech: response_format {body.get('response_format')!r}, expected 'pcm'")
        script = self.speech
        response = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
        try:
            if script.delay_before_headers_s:
                await asyncio.sleep(script.delay_before_headers_s)
            if script.status != 200:
                return self._error(script.status, script.error_message)
            response.enable_chunked_encoding()
            await response.prepare(request)
            for chunk in _chunks(self.speech_pcm(text), script.chunk_bytes):
                await response.write(chunk)
                if script.chunk_delay_s:
                    await asyncio.sleep(script.chunk_delay_s)
            await response.write_eof()
            record.finished_at = time.monotonic()
        except asyncio.CancelledError:
            record.disconnected_at = time.monotonic()
            raise
        except ConnectionError:  # a write after the client went away
            record.disconnected_at = time.monotonic()
        return response
