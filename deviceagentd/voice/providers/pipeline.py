"""A TTS stream for engines that synthesise one text at a time (an HTTP request or a process
per clause): clauses are synthesised as soon as they arrive, up to `parallel` at once so the
next clause is ready when the current one has played, and played back strictly in order."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

from deviceagentd.voice.providers.base import VoiceProviderError
from deviceagentd.voice.providers.pcm import WholeSamples
from deviceagentd.voice.providers.tasks import end_queue, stop_tasks

log = logging.getLogger(__name__)

Emit = Callable[[bytes], Awaitable[None]]
# Synthesise `text`, handing PCM to `emit` as it is produced; raise VoiceProviderError on failure.
Synthesize = Callable[[str, Emit], Awaitable[None]]

# Per clause, audio waiting for the consumer; when full the engine is no longer read (backpressure).
MAX_QUEUED_CHUNKS = 256


@dataclass
class _Clause:
    text: str
    chunks: asyncio.Queue[bytes | VoiceProviderError | None] = field(
        default_factory=lambda: asyncio.Queue(MAX_QUEUED_CHUNKS)
    )


class ClauseStream:
    """TtsStream over a per-clause `Synthesize`."""

    def __init__(self, synthesize: Synthesize, *, sample_rate: int, parallel: int, failure_code: str) -> None:
        self._synthesize = synthesize
        self._sample_rate = sample_rate
        self._failure_code = failure_code
        self._slots = asyncio.Semaphore(parallel)  # FIFO: clauses start in the order they arrived
        self._clauses: asyncio.Queue[_Clause | None] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []
        self._sent: list[_Clause] = []  # every clause of the reply, so close() can wake the consumer
        self._finished = False
        self._closed = False

    @property
    def sample_rate(self) -> int:
        return self._sample_rate

    async def send_text(self, text: str) -> None:
        if self._closed or self._finished:
            raise VoiceProviderError(self._failure_code, "send_text() after finish() or close()")
        if not text.strip():
            return
        clause = _Clause(text)
        self._sent.append(clause)
        self._tasks = [task for task in self._tasks if not task.done()]
        self._tasks.append(asyncio.create_task(self._run(clause), name="tts-clause"))
        self._clauses.put_nowait(clause)

    async def finish(self) -> None:
        if self._finished or self._closed:
            return
        self._finished = True
        self._clauses.put_nowait(None)

    async def audio(self) -> AsyncIterator[bytes]:
        while True:
            clause = await self._clauses.get()
            if clause is None:
                return
            while True:
                item = await clause.chunks.get()
                if item is None:
                    break
                if isinstance(item, VoiceProviderError):
                    raise item
                yield item

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        await stop_tasks(self._tasks)
        # Wake a consumer waiting on a clause whose producer was just cancelled, then end audio().
        for clause in self._sent:
            end_queue(clause.chunks)
        end_queue(self._clauses)

    async def _run(self, clause: _Clause) -> None:
        samples = WholeSamples()

        async def emit(data: bytes) -> None:
            chunk = samples.feed(data)
            if chunk:
                await clause.chunks.put(chunk)

        try:
            async with self._slots:
                await self._synthesize(clause.text, emit)
        except asyncio.CancelledError:
            raise
        except VoiceProviderError as exc:
            log.warning("tts: %s", exc)
            await clause.chunks.put(exc)
            return
        except Exception as exc:
            log.warning("tts: synthesis failed: %s", type(exc).__name__)
            await clause.chunks.put(VoiceProviderError(self._failure_code, f"synthesis failed ({type(exc).__name__})"))
            return
        await clause.chunks.put(None)
