"""`aliyun` TTS: DashScope CosyVoice speech synthesis over WebSocket.

The reply's clauses go to the service as `continue-task` as they arrive; the service splits
sentences itself (buffering a partial one until it completes or `finish-task` flushes it) and
sends PCM back as binary frames. The service fails a task that receives no text for about
23 s, so a reply should not be held open across a long pause.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from deviceagentd.voice.providers.base import TTS_FAILED, VoiceProviderError
from deviceagentd.voice.providers.dashscope_ws import (
    CLOSED_TYPES,
    DEFAULT_URL,
    Endpoint,
    TaskStream,
    command,
    open_task,
    parse_event,
)
from deviceagentd.voice.providers.httpclient import SharedSession
from deviceagentd.voice.providers.pcm import WholeSamples

log = logging.getLogger(__name__)

SAMPLE_RATES = frozenset({8000, 16000, 22050, 24000, 44100, 48000})
# The service's limit per continue-task (a CJK character counts twice).
MAX_TEXT_UNITS = 20000
# Audio waiting for the consumer. The session plays in real time while the service synthesises
# faster; past this the reader stops reading and TCP pushes back on the service.
MAX_QUEUED_CHUNKS = 1024


@dataclass(frozen=True)
class DashScopeTtsSettings:
    api_key: str = field(default="", repr=False)
    url: str = DEFAULT_URL
    workspace: str = ""
    model: str = "cosyvoice-v3-flash"
    # Voices belong to a model generation: longanyang for cosyvoice-v3-flash, *_v2 voices for v2.
    voice: str = "longanyang"
    sample_rate: int = 24000
    volume: int = 50
    rate: float = 1.0
    pitch: float = 1.0
    connect_timeout_s: float = 5.0
    start_timeout_s: float = 5.0
    # After finish(): the longest silence from the service before the rest counts as lost.
    idle_timeout_s: float = 10.0


class DashScopeTts:
    """TtsProvider `aliyun`."""

    name: str = "aliyun"

    def __init__(self, settings: DashScopeTtsSettings, session: aiohttp.ClientSession | None = None) -> None:
        if settings.sample_rate not in SAMPLE_RATES:
            raise ValueError(f"sample_rate must be one of {sorted(SAMPLE_RATES)}")
        self.settings = settings
        self._http = SharedSession(session)

    def run_payload(self, voice: str | None) -> dict[str, Any]:
        s = self.settings
        return {
            "task_group": "audio",
            "task": "tts",
            "function": "SpeechSynthesizer",
            "model": s.model,
            "parameters": {
                "text_type": "PlainText",
                "voice": voice or s.voice,
                "format": "pcm",
                "sample_rate": s.sample_rate,
                "volume": s.volume,
                "rate": s.rate,
                "pitch": s.pitch,
            },
            "input": {},
        }

    async def start(self, voice: str | None = None) -> DashScopeTtsStream:
        s = self.settings
        endpoint = Endpoint(s.url, s.api_key, s.workspace, s.connect_timeout_s, s.start_timeout_s)
        ws, task_id = await open_task(self._http.get(), endpoint, self.run_payload(voice), TTS_FAILED)
        return DashScopeTtsStream(ws, task_id, s)

    async def close(self) -> None:
        await self._http.close()


def text_pieces(text: str, limit: int = MAX_TEXT_UNITS) -> list[str]:
    """Cut text to the per-message limit, counting CJK characters as two units."""
    pieces: list[str] = []
    start = units = 0
    for i, ch in enumerate(text):
        weight = 1 if ch.isascii() else 2
        if units + weight > limit:
            pieces.append(text[start:i])
            start, units = i, 0
        units += weight
    pieces.append(text[start:])
    return [p for p in pieces if p]


class DashScopeTtsStream(TaskStream[bytes]):
    failure_code = TTS_FAILED
    log_name = "dashscope-tts"
    receiving = "receiving audio"

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, task_id: str, settings: DashScopeTtsSettings) -> None:
        self._settings = settings
        super().__init__(ws, task_id, settings.api_key, settings.idle_timeout_s, asyncio.Queue(MAX_QUEUED_CHUNKS))

    @property
    def sample_rate(self) -> int:
        return self._settings.sample_rate

    async def send_text(self, text: str) -> None:
        if self._error is not None:
            raise self._error
        if self._closed or self._finishing:
            raise VoiceProviderError(TTS_FAILED, "send_text() after finish() or close()")
        if not text.strip():
            return
        try:
            for piece in text_pieces(text):
                await self._ws.send_str(command("continue-task", self._task_id, {"input": {"text": piece}}))
        except (aiohttp.ClientError, ConnectionError) as exc:
            raise self._send_error(exc, "sending text") from None

    def audio(self) -> AsyncIterator[bytes]:
        return self._items()

    def _timeout_detail(self) -> str:
        return f"no audio from the provider for {self._settings.idle_timeout_s:g} s after finish"

    async def _read_frames(self) -> None:
        samples = WholeSamples()
        while True:
            msg = await self._receive()
            if msg.type is aiohttp.WSMsgType.BINARY:
                chunk = samples.feed(msg.data)
                if chunk:
                    await self._put(chunk)
                continue
            if msg.type in CLOSED_TYPES or msg.type is aiohttp.WSMsgType.ERROR:
                await self._fail(VoiceProviderError(TTS_FAILED, "the provider closed the connection mid-reply"))
                return
            if msg.type is not aiohttp.WSMsgType.TEXT:
                continue
            event = parse_event(msg.data)
            if event.event == "task-failed":
                await self._fail_task(event)
                return
            if event.event == "task-finished":
                await self._put(None)
                return
