"""`aliyun` ASR: DashScope realtime recognition (Paraformer / Fun-ASR) over WebSocket.

The task starts when speech starts, so by the end of speech the service has heard everything
and the final follows `finish-task` within a few hundred milliseconds. The service cuts the
audio into sentences with its own VAD (`max_sentence_silence`); a `result-generated` with
`sentence_end: true` closes one. Our end of speech is decided locally, so the utterance's text is
every closed sentence joined, and the final is sent when `task-finished` arrives.
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
    AsrResult,
    VoiceProviderError,
    primary_language,
)
from deviceagentd.voice.providers.dashscope_ws import (
    CLOSED_TYPES,
    DEFAULT_URL,
    Endpoint,
    TaskStream,
    open_task,
    parse_event,
)
from deviceagentd.voice.providers.httpclient import SharedSession

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DashScopeAsrSettings:
    api_key: str = field(default="", repr=False)
    url: str = DEFAULT_URL
    model: str = "paraformer-realtime-v2"
    workspace: str = ""
    # The service's own sentence break, ms in [200, 6000]; None = the model's default.
    max_sentence_silence_ms: int | None = None
    # Sent as language_hints when start() gets no language (paraformer-realtime-v2 honours it).
    language_hints: tuple[str, ...] = ()
    vocabulary_id: str = ""
    connect_timeout_s: float = 5.0
    start_timeout_s: float = 5.0
    # After finish(): the longest silence from the service before the final counts as lost.
    final_timeout_s: float = 10.0


class DashScopeAsr:
    """AsrProvider `aliyun`."""

    name: str = "aliyun"

    def __init__(self, settings: DashScopeAsrSettings, session: aiohttp.ClientSession | None = None) -> None:
        self.settings = settings
        self._http = SharedSession(session)

    def run_payload(self, language: str | None) -> dict[str, Any]:
        s = self.settings
        parameters: dict[str, Any] = {"format": "pcm", "sample_rate": ASR_SAMPLE_RATE}
        if s.max_sentence_silence_ms is not None:
            parameters["max_sentence_silence"] = s.max_sentence_silence_ms
        hints = [lang] if (lang := primary_language(language)) else list(s.language_hints)
        if hints:
            parameters["language_hints"] = hints
        if s.vocabulary_id:
            parameters["vocabulary_id"] = s.vocabulary_id
        return {
            "task_group": "audio",
            "task": "asr",
            "function": "recognition",
            "model": s.model,
            "parameters": parameters,
            "input": {},
        }

    async def start(self, language: str | None = None) -> DashScopeAsrStream:
        s = self.settings
        endpoint = Endpoint(s.url, s.api_key, s.workspace, s.connect_timeout_s, s.start_timeout_s)
        ws, task_id = await open_task(self._http.get(), endpoint, self.run_payload(language), ASR_FAILED)
        return DashScopeAsrStream(ws, task_id, s)

    async def close(self) -> None:
        await self._http.close()


def join_text(head: str, tail: str) -> str:
    """Sentences of one utterance: Latin script needs a space between them, CJK does not."""
    if not head or not tail:
        return head or tail
    if head[-1].isascii() and tail[0].isascii():
        return f"{head} {tail}"
    return head + tail


class DashScopeAsrStream(TaskStream[AsrResult]):
    failure_code = ASR_FAILED
    log_name = "dashscope-asr"
    receiving = "receiving results"

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, task_id: str, settings: DashScopeAsrSettings) -> None:
        self._settings = settings
        # Results are small and few: unbounded, so the reader never waits on the consumer.
        super().__init__(ws, task_id, settings.api_key, settings.final_timeout_s, asyncio.Queue())

    async def send_audio(self, pcm16k: bytes) -> None:
        if self._error is not None:
            raise self._error
        if self._closed:
            raise VoiceProviderError(ASR_FAILED, "the recognition stream is closed")
        if self._finishing or not pcm16k:
            return  # audio after the end of speech has nowhere to go
        try:
            await self._ws.send_bytes(pcm16k)
        except (aiohttp.ClientError, ConnectionError) as exc:
            raise self._send_error(exc, "sending audio") from None

    async def results(self) -> AsyncIterator[AsrResult]:
        async for item in self._items():
            yield item
            if item.final:
                return

    def _timeout_detail(self) -> str:
        return f"no final result within {self._settings.final_timeout_s:g} s of the end of speech"

    async def _read_frames(self) -> None:
        done = ""  # the sentences the service has closed
        last = ""
        while True:
            msg = await self._receive()
            if msg.type in CLOSED_TYPES or msg.type is aiohttp.WSMsgType.ERROR:
                await self._fail(VoiceProviderError(ASR_FAILED, "the provider closed the connection before the final"))
                return
            if msg.type is not aiohttp.WSMsgType.TEXT:
                continue
            event = parse_event(msg.data)
            if event.event == "task-failed":
                await self._fail_task(event)
                return
            if event.event == "task-finished":
                await self._put(AsrResult(done, final=True))
                return
            if event.event != "result-generated":
                continue
            output = event.payload.get("output")
            sentence = output.get("sentence") if isinstance(output, dict) else None
            if not isinstance(sentence, dict) or sentence.get("heartbeat") is True:
                continue
            text = str(sentence.get("text") or "")
            if sentence.get("sentence_end") is True:
                done = join_text(done, text)
                current = done
            else:
                current = join_text(done, text)
            if current != last:
                last = current
                await self._put(AsrResult(current, final=False))
