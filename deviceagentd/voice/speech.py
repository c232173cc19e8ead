"""Speaking a reply: a TTS stream per clause, synthesised as soon as the clause is complete (at
most `tts_parallel` at once), its PCM resampled to the session's output rate and cut into frames
of its frame duration, played strictly in order by one player task. Used by turns and by
announcements alike; it reports through `SpeechSink` (events and frames) and knows nothing of
wire formats."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, Final, Protocol, TypeVar

from deviceagentd.voice.audio import AudioFormatError, AudioParams, OutputAudio
from deviceagentd.voice.events import SentenceStart, TurnError, TurnEvent
from deviceagentd.voice.providers.base import PROVIDER_TIMEOUT, TTS_FAILED, TtsProvider, VoiceProviderError
from deviceagentd.voice.providers.tasks import stop_tasks
from deviceagentd.voice.settings import SessionSettings

log = logging.getLogger("deviceagentd.voice")

# Audio chunks of one clause waiting for the player (backpressure on the provider beyond).
CHUNKS_AHEAD: Final = 32

T = TypeVar("T")


class SpeechSink(Protocol):
    """Where speech goes: the session."""

    async def emit(self, event: TurnEvent) -> None: ...

    async def play(self, frame: bytes) -> None:
        """One frame of PCM at the output rate and frame duration; returns when it may be
        followed by the next (paced in real time)."""
        ...

    def spawn(self, coro: Coroutine[Any, Any, T], name: str) -> asyncio.Task[T]:
        """A task that is cancelled and awaited when the session ends."""
        ...


@dataclass(frozen=True)
class Voice:
    """Who speaks, and how the session wants the audio."""

    provider: TtsProvider
    name: str
    output: AudioParams  # PCM rate and frame duration of what `SpeechSink.play` gets
    voice_for: Callable[[str], str | None]  # a clause → the provider's voice for it (None: default)


@dataclass
class _Clause:
    text: str
    chunks: asyncio.Queue[bytes | VoiceProviderError | None] = field(
        default_factory=lambda: asyncio.Queue(CHUNKS_AHEAD)
    )
    sample_rate: int = 0
    task: asyncio.Task[None] | None = None


class Speaker:
    """The speech of one reply: `say()` each clause, `finish()` at the end, `close()` always."""

    def __init__(self, sink: SpeechSink, voice: Voice, settings: SessionSettings) -> None:
        self._sink = sink
        self._voice = voice
        self._settings = settings
        self._queue: asyncio.Queue[_Clause | None] = asyncio.Queue()
        self._clauses: list[_Clause] = []
        self._slots = asyncio.Semaphore(settings.tts_parallel)
        self._player: asyncio.Task[None] | None = None
        self.failed = False  # the speech stopped on a provider failure (reported as TurnError)
        self.played = False  # at least one frame was sent

    def say(self, text: str) -> None:
        if self.failed:
            return
        clause = _Clause(text)
        clause.task = self._sink.spawn(self._synthesise(clause), "voice-tts")
        self._clauses.append(clause)
        self._queue.put_nowait(clause)
        if self._player is None:
            self._player = self._sink.spawn(self._play(), "voice-player")

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
        await stop_tasks(tasks)

    async def _synthesise(self, clause: _Clause) -> None:
        stream = None
        voice = self._voice
        try:
            async with self._slots:
                stream = await voice.provider.start(voice.voice_for(clause.text))
                clause.sample_rate = stream.sample_rate
                await stream.send_text(clause.text)
                await stream.finish()
                async for chunk in stream.audio():
                    await clause.chunks.put(chunk)
            await clause.chunks.put(None)
        except VoiceProviderError as exc:
            await clause.chunks.put(exc)
        except Exception as exc:
            log.warning("voice tts %s: %s", voice.name, type(exc).__name__, exc_info=True)
            await clause.chunks.put(VoiceProviderError(TTS_FAILED, f"speech synthesis failed ({type(exc).__name__})"))
        finally:
            if stream is not None:
                await stream.close()

    async def _play(self) -> None:
        sink = self._sink
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
                            PROVIDER_TIMEOUT, f"no speech audio from {self._voice.name} within {wait_s:g} s"
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
                                    await self._send(frame)
                            out = output_audio(clause.sample_rate, self._voice.output)
                            rate = clause.sample_rate
                        await sink.emit(SentenceStart(clause.text))
                    assert out is not None
                    for frame in out.push(item):
                        await self._send(frame)
            if out is not None:
                for frame in out.flush():
                    await self._send(frame)
        except VoiceProviderError as exc:
            self.failed = True
            for clause in self._clauses:
                if clause.task is not None:
                    clause.task.cancel()
            await sink.emit(TurnError(exc.code, exc.message))

    async def _send(self, frame: bytes) -> None:
        self.played = True
        await self._sink.play(frame)


def output_audio(source_rate: int, params: AudioParams) -> OutputAudio:
    try:
        return OutputAudio(source_rate, params)
    except AudioFormatError as exc:
        raise VoiceProviderError(TTS_FAILED, str(exc)) from None
