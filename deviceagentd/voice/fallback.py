"""A cloud recogniser with the offline one behind it: when the cloud cannot be reached (DNS,
connect, timeout, HTTP 5xx — `UNREACHABLE_CODES`) the utterance is recognised offline instead,
and the first such reply of a WAN outage says so.

The utterance's audio is kept while the cloud has it (at most `max_buffer_s`), so whenever the
cloud fails — at connect, while streaming, or at the end (a batch recogniser posts its request
only then) — the offline recogniser gets the whole utterance from its first frame. One wrapper
per voice session: "says so once" is per session, and said again after the cloud came back and
went away again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Final

from deviceagentd.voice.providers.base import (
    ASR_FAILED,
    UNREACHABLE_CODES,
    AsrProvider,
    AsrResult,
    AsrStream,
    VoiceProviderError,
)

log = logging.getLogger("deviceagentd.voice")

FALLBACK_NOTE: Final = "The cloud speech service can't be reached, so I'm listening offline."
BYTES_PER_S: Final = 32000


class FallbackAsr:
    """AsrProvider: `cloud`, and `offline` for turns the cloud cannot take."""

    def __init__(self, cloud: AsrProvider, offline: AsrProvider, *, max_buffer_s: float = 60.0,
                 session: str = "") -> None:
        self.cloud = cloud
        self.offline = offline
        self.max_buffer_bytes = int(max_buffer_s * BYTES_PER_S)
        self.session = session
        self.outage = False  # the last turn fell back (the note was said)

    @property
    def name(self) -> str:
        return self.cloud.name

    async def start(self, language: str | None = None) -> FallbackStream:
        stream = FallbackStream(self, language)
        try:
            stream.current = await self.cloud.start(language)
        except VoiceProviderError as exc:
            if exc.code not in UNREACHABLE_CODES:
                raise
            await stream.switch(exc)
        return stream

    async def close(self) -> None:
        """The providers are the service's (shared); nothing of their own to close here."""

    def noted(self) -> str:
        """The note for a turn that fell back: once per outage."""
        if self.outage:
            return ""
        self.outage = True
        return FALLBACK_NOTE

    def cloud_answered(self) -> None:
        self.outage = False


class FallbackStream:
    def __init__(self, owner: FallbackAsr, language: str | None) -> None:
        self._owner = owner
        self._language = language
        self.current: AsrStream | None = None
        self.fell_back = False
        self._buffer: list[bytes] = []
        self._buffered = 0
        self._overflow = False
        self._finished = False
        self._lock = asyncio.Lock()

    async def switch(self, cause: VoiceProviderError) -> None:
        """Move the utterance to the offline recogniser (once); raise `cause` if it cannot."""
        async with self._lock:
            if self.fell_back:
                return
            owner = self._owner
            if self._overflow:
                raise cause
            log.warning("voice: the cloud recogniser %s cannot be reached (%s); recognising offline",
                        owner.cloud.name, cause.message)
            old, self.current = self.current, None
            if old is not None:
                await old.close()
            try:
                offline = await owner.offline.start(self._language)
            except VoiceProviderError as exc:
                log.warning("voice: the offline recogniser cannot stand in: %s", exc.message)
                raise cause from None
            self.current = offline
            self.fell_back = True
            for chunk in self._buffer:
                await offline.send_audio(chunk)
            self._buffer.clear()
            if self._finished:
                await offline.finish()

    async def send_audio(self, pcm16k: bytes) -> None:
        if not self.fell_back:
            self._keep(pcm16k)
        current = self.current
        if current is None:
            raise VoiceProviderError(ASR_FAILED, "the recognition stream is closed")
        try:
            await current.send_audio(pcm16k)
        except VoiceProviderError as exc:
            if self.fell_back or exc.code not in UNREACHABLE_CODES:
                raise
            await self.switch(exc)

    async def finish(self) -> None:
        self._finished = True
        current = self.current
        if current is None:
            return
        try:
            await current.finish()
        except VoiceProviderError as exc:
            if self.fell_back or exc.code not in UNREACHABLE_CODES:
                raise
            await self.switch(exc)

    async def results(self) -> AsyncIterator[AsrResult]:
        while True:
            current = self.current
            if current is None:
                return
            try:
                async for result in current.results():
                    if result.final:
                        yield self._final(result)
                        return
                    yield result
            except VoiceProviderError as exc:
                if self.fell_back or exc.code not in UNREACHABLE_CODES:
                    raise
                await self.switch(exc)
                continue
            if self.current is current:
                return  # ended without a final: the turn reports it
            # The sender moved the utterance offline while we read the cloud's results.

    async def close(self) -> None:
        current, self.current = self.current, None
        self._buffer.clear()
        if current is not None:
            await current.close()

    def _keep(self, pcm16k: bytes) -> None:
        if self._overflow:
            return
        self._buffered += len(pcm16k)
        if self._buffered > self._owner.max_buffer_bytes:
            self._overflow = True
            self._buffer.clear()
            return
        self._buffer.append(pcm16k)

    def _final(self, result: AsrResult) -> AsrResult:
        owner = self._owner
        if not self.fell_back:
            owner.cloud_answered()
            return result
        note = owner.noted()
        return AsrResult(result.text, True, refused=result.refused, note=note)
