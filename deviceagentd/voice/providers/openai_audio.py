"""`openai` ASR and TTS: the OpenAI-compatible audio endpoints (OpenAI, Groq, SiliconFlow, LAN
servers such as speaches or Kokoro-FastAPI).

ASR is batch: `/audio/transcriptions` takes a whole file, so the utterance is kept in memory
(bounded) and uploaded as a WAV on finish(); there are no partials.
TTS posts one `/audio/speech` request per clause with `response_format: pcm` (raw s16le mono,
24 kHz on OpenAI) and streams each response body as it arrives.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from deviceagentd.voice.providers.base import (
    ASR_FAILED,
    ASR_SAMPLE_RATE,
    TTS_FAILED,
    AsrResult,
    VoiceProviderError,
    primary_language,
)
from deviceagentd.voice.providers.httpclient import SharedSession, client_error, error_detail, status_error
from deviceagentd.voice.providers.pcm import SAMPLE_WIDTH, wav_bytes
from deviceagentd.voice.providers.pipeline import ClauseStream, Emit
from deviceagentd.voice.providers.tasks import end_queue, stop_tasks

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://api.openai.com/v1"
# /audio/speech rejects longer input.
MAX_SPEECH_INPUT = 4096
MAX_ERROR_BODY = 4096


def _auth_headers(api_key: str) -> dict[str, str]:
    # LAN servers often need no key: then no Authorization header at all.
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


async def _raise_for_status(resp: aiohttp.ClientResponse, failure_code: str, api_key: str) -> None:
    if resp.status == 200:
        return
    body = await resp.content.read(MAX_ERROR_BODY)
    raise status_error(resp.status, failure_code, error_detail(body), api_key)


# ------------------------------------------------------------------------------------------ ASR


@dataclass(frozen=True)
class OpenAiAsrSettings:
    base_url: str = DEFAULT_BASE_URL
    api_key: str = field(default="", repr=False)
    model: str = "gpt-transcribe"
    # ISO 639-1 used when start() gets no language; empty = let the service detect it.
    language: str = ""
    # Transcription is batch, so a longer utterance is cut here (the session caps it anyway).
    max_utterance_s: float = 30.0
    connect_timeout_s: float = 5.0
    # Upload plus transcription: from finish() to the final.
    request_timeout_s: float = 30.0


class OpenAiAsr:
    """AsrProvider `openai`."""

    name: str = "openai"

    def __init__(self, settings: OpenAiAsrSettings, session: aiohttp.ClientSession | None = None) -> None:
        self.settings = settings
        self._http = SharedSession(session)

    async def start(self, language: str | None = None) -> OpenAiAsrStream:
        lang = primary_language(language) or primary_language(self.settings.language)
        return OpenAiAsrStream(self._http.get(), self.settings, lang)

    async def close(self) -> None:
        await self._http.close()


class OpenAiAsrStream:
    def __init__(self, session: aiohttp.ClientSession, settings: OpenAiAsrSettings, language: str | None) -> None:
        self._session = session
        self._settings = settings
        self._language = language
        self._max_bytes = int(settings.max_utterance_s * ASR_SAMPLE_RATE) * SAMPLE_WIDTH
        self._pcm = bytearray()
        self._truncated = False
        self._results: asyncio.Queue[AsrResult | VoiceProviderError | None] = asyncio.Queue()
        self._upload: asyncio.Task[None] | None = None
        self._closed = False

    async def send_audio(self, pcm16k: bytes) -> None:
        if self._closed:
            raise VoiceProviderError(ASR_FAILED, "the recognition stream is closed")
        if self._upload is not None:
            return  # after the end of speech
        room = self._max_bytes - len(self._pcm)
        if len(pcm16k) > room and not self._truncated:
            self._truncated = True
            log.warning(
                "openai asr: utterance longer than %g s, the rest is not transcribed", self._settings.max_utterance_s
            )
        self._pcm += pcm16k[: max(room, 0)]

    async def finish(self) -> None:
        if self._upload is not None or self._closed:
            return
        self._upload = asyncio.create_task(self._transcribe(), name="openai-transcription")

    async def results(self) -> AsyncIterator[AsrResult]:
        item = await self._results.get()
        if isinstance(item, VoiceProviderError):
            raise item
        if item is not None:
            yield item

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._upload is not None:
            await stop_tasks([self._upload])
        end_queue(self._results)

    async def _transcribe(self) -> None:
        pcm = bytes(self._pcm[: len(self._pcm) - len(self._pcm) % SAMPLE_WIDTH])
        self._pcm = bytearray()
        if not pcm:
            self._results.put_nowait(AsrResult("", final=True))
            return
        s = self._settings
        try:
            text = await self._post(pcm)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            error = client_error(exc, ASR_FAILED, s.api_key, "transcription")
            log.warning("openai asr: %s", error)
            self._results.put_nowait(error)
            return
        self._results.put_nowait(AsrResult(text.strip(), final=True))

    async def _post(self, pcm: bytes) -> str:
        s = self._settings
        form = aiohttp.FormData()
        form.add_field("file", wav_bytes(pcm, ASR_SAMPLE_RATE), filename="utterance.wav", content_type="audio/wav")
        form.add_field("model", s.model)
        form.add_field("response_format", "json")
        if self._language:
            form.add_field("language", self._language)
        timeout = aiohttp.ClientTimeout(total=s.request_timeout_s, sock_connect=s.connect_timeout_s)
        url = f"{s.base_url.rstrip('/')}/audio/transcriptions"
        async with self._session.post(url, data=form, headers=_auth_headers(s.api_key), timeout=timeout) as resp:
            await _raise_for_status(resp, ASR_FAILED, s.api_key)
            data: Any = await resp.json(content_type=None)
        if not isinstance(data, dict) or not isinstance(data.get("text"), str):
            raise VoiceProviderError(ASR_FAILED, "the transcription response has no text")
        return str(data["text"])


# ------------------------------------------------------------------------------------------ TTS


@dataclass(frozen=True)
class OpenAiTtsSettings:
    base_url: str = DEFAULT_BASE_URL
    api_key: str = field(default="", repr=False)
    model: str = "gpt-4o-mini-tts"
    voice: str = "alloy"
    speed: float = 1.0
    # What the server's `pcm` is: 24000 on OpenAI and most compatible servers.
    sample_rate: int = 24000
    # gpt-4o-mini-tts only: how to speak ("calm, friendly").
    instructions: str = ""
    connect_timeout_s: float = 5.0
    # Longest wait for the response and then between body chunks (the first audio included).
    read_timeout_s: float = 15.0
    # Requests in flight at once: the next clause is fetched while the current one plays.
    parallel_requests: int = 2


class OpenAiTts:
    """TtsProvider `openai`."""

    name: str = "openai"

    def __init__(self, settings: OpenAiTtsSettings, session: aiohttp.ClientSession | None = None) -> None:
        self.settings = settings
        self._http = SharedSession(session)

    async def start(self, voice: str | None = None) -> ClauseStream:
        synthesizer = _SpeechRequests(self._http.get(), self.settings, voice or self.settings.voice)
        return ClauseStream(
            synthesizer.synthesize,
            sample_rate=self.settings.sample_rate,
            parallel=max(1, self.settings.parallel_requests),
            failure_code=TTS_FAILED,
        )

    async def close(self) -> None:
        await self._http.close()


@dataclass(frozen=True)
class _SpeechRequests:
    session: aiohttp.ClientSession
    settings: OpenAiTtsSettings
    voice: str

    async def synthesize(self, text: str, emit: Emit) -> None:
        for start in range(0, len(text), MAX_SPEECH_INPUT):
            await self._request(text[start : start + MAX_SPEECH_INPUT], emit)

    async def _request(self, text: str, emit: Emit) -> None:
        s = self.settings
        body: dict[str, Any] = {"model": s.model, "input": text, "voice": self.voice, "response_format": "pcm"}
        if s.speed != 1.0:
            body["speed"] = s.speed
        if s.instructions:
            body["instructions"] = s.instructions
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=s.connect_timeout_s, sock_read=s.read_timeout_s)
        url = f"{s.base_url.rstrip('/')}/audio/speech"
        try:
            resp = await self.session.post(url, json=body, headers=_auth_headers(s.api_key), timeout=timeout)
        except Exception as exc:
            raise client_error(exc, TTS_FAILED, s.api_key, "speech request") from None
        try:
            await _raise_for_status(resp, TTS_FAILED, s.api_key)
            async for chunk in resp.content.iter_any():
                await emit(chunk)
        except BaseException as exc:
            # Cancelled or failed mid-body: drop the connection, it cannot be reused.
            resp.close()
            if isinstance(exc, Exception):
                raise client_error(exc, TTS_FAILED, s.api_key, "speech response") from None
            raise
        finally:
            resp.release()
