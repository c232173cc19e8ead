"""ASR provider `offline`: the site-grammar recogniser (voice/recognizer/), on the gateway.

The stream takes a decoder when the utterance starts, starts it once the first 0.6 s are in
(with the frequency warp for the voice heard in it: recognizer/pitch.py), then feeds it every
chunk on a worker thread as it arrives (chunks that queue up while the decoder is busy are fed
together), sends a partial result whenever the best guess changes, and gives the final right
after `finish()`: only the last chunk and the end of the search are left to do then.

A final that is not a whole sentence of the site's grammar is refused: `AsrResult(text="",
final=True, refused=True)`, never the nearest command. English only: another language
raises `VoiceProviderError(LANGUAGE_UNSUPPORTED)` before any audio is taken.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Final

from deviceagentd.voice.providers.base import (
    ASR_FAILED,
    LANGUAGE_UNSUPPORTED,
    PROVIDER_UNAVAILABLE,
    AsrResult,
    VoiceProviderError,
    primary_language,
)
from deviceagentd.voice.providers.tasks import end_queue, stop_tasks
from deviceagentd.voice.recognizer.decoder import GrammarDecoder, RecogniserUnavailable, Recognition
from deviceagentd.voice.recognizer.engine import OfflineEngine
from deviceagentd.voice.recognizer.pitch import voice_pitch_hz

log = logging.getLogger("deviceagentd.voice")

NAME: Final = "offline"
LANGUAGES: Final = ("en",)
# A partial is looked at after at least this much new audio (16 kHz s16le: 32 bytes per ms).
PARTIAL_EVERY_BYTES: Final = 32 * 250
# The decoder starts once this much of the utterance is in, with the frequency warp for the voice
# heard in it (pitch.py): partial results start this much later; the final one does not wait.
# 0.6 s: the bench's 480 utterances were recognised alike with 1 s (each starts with 0.3 s of
# room noise, as a VAD's pre-roll does), and partials come 0.4 s sooner.
PITCH_BYTES: Final = 19_200


class OfflineAsr:
    """AsrProvider `offline`."""

    name: str = NAME

    def __init__(self, engine: OfflineEngine) -> None:
        self.engine = engine

    async def start(self, language: str | None = None, session: str = "") -> OfflineAsrStream:
        check_language(language)
        try:
            decoder = await self.engine.acquire()
        except RecogniserUnavailable as exc:
            raise VoiceProviderError(PROVIDER_UNAVAILABLE, f"the offline recogniser is unavailable: {exc}") from None
        stream = OfflineAsrStream(self.engine, decoder, session)
        stream.begin()
        return stream

    async def close(self) -> None:
        await self.engine.close()


class SessionOfflineAsr:
    """The shared OfflineAsr as one session's AsrProvider: its utterances carry the session's
    cepstral mean (speaker, microphone, room) from one to the next."""

    name: str = NAME

    def __init__(self, offline: OfflineAsr, session: str) -> None:
        self.offline = offline
        self.session = session

    async def start(self, language: str | None = None) -> OfflineAsrStream:
        return await self.offline.start(language, self.session)

    async def close(self) -> None:
        """The engine is shared: the service closes it."""


def check_language(language: str | None) -> None:
    code = primary_language(language)
    if code is not None and code not in LANGUAGES:
        raise VoiceProviderError(LANGUAGE_UNSUPPORTED,
                                 f"the offline recogniser understands English only, not {language!r}")


class OfflineAsrStream:
    """AsrStream of one utterance on one decoder."""

    def __init__(self, engine: OfflineEngine, decoder: GrammarDecoder, session: str) -> None:
        self._engine = engine
        self._decoder: GrammarDecoder | None = decoder
        self._session = session
        self._audio: asyncio.Queue[bytes | None] = asyncio.Queue()
        self._results: asyncio.Queue[AsrResult | VoiceProviderError | None] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._finished = False
        self._closed = False
        self.recognition: Recognition | None = None

    def begin(self) -> None:
        self._task = asyncio.create_task(self._decode(), name="offline-asr")

    async def send_audio(self, pcm16k: bytes) -> None:
        if self._finished or self._closed:
            raise VoiceProviderError(ASR_FAILED, "send_audio() after finish() or close()")
        if pcm16k:
            self._audio.put_nowait(pcm16k)

    async def finish(self) -> None:
        if not self._finished and not self._closed:
            self._finished = True
            self._audio.put_nowait(None)

    async def results(self) -> AsyncIterator[AsrResult]:
        while True:
            item = await self._results.get()
            if item is None:
                return
            if isinstance(item, VoiceProviderError):
                raise item
            yield item
            if item.final:
                return

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._task is not None:
            await stop_tasks([self._task])
        end_queue(self._results)
        decoder, self._decoder = self._decoder, None
        if decoder is not None:
            with contextlib.suppress(Exception):
                # Never on the loop thread while a worker may still be inside it: run() waits.
                await self._engine.run(decoder.abandon)
            self._engine.release(decoder)

    async def _next_audio(self) -> tuple[bytes, bool]:
        """The audio that queued up (all of it, in one piece) and whether the utterance ended."""
        chunk = await self._audio.get()
        chunks = [chunk] if chunk is not None else []
        ended = chunk is None
        while not ended and not self._audio.empty():
            more = self._audio.get_nowait()
            if more is None:
                ended = True
            else:
                chunks.append(more)
        return b"".join(chunks), ended

    async def _start(self, decoder: GrammarDecoder) -> tuple[bytes, bool]:
        """Start the decoder for the voice heard in the first PITCH_BYTES of the utterance;
        returns that audio (not yet fed) and whether the utterance already ended."""
        pieces: list[bytes] = []
        heard, ended = 0, False
        while heard < PITCH_BYTES and not ended:
            data, ended = await self._next_audio()
            pieces.append(data)
            heard += len(data)
        audio = b"".join(pieces)
        await self._engine.run(_begin, decoder, self._engine.session_cmn(self._session), audio)
        return audio, ended

    async def _decode(self) -> None:
        decoder = self._decoder
        assert decoder is not None
        last_partial = ""
        since_partial = 0
        try:
            data, ended = await self._start(decoder)
            while True:
                since_partial += len(data)
                want_partial = not ended and since_partial >= PARTIAL_EVERY_BYTES
                partial = await self._engine.run(_feed, decoder, data, want_partial)
                if want_partial:
                    since_partial = 0
                    if partial and partial != last_partial:
                        last_partial = partial
                        self._results.put_nowait(AsrResult(decoder.grammar.transcript(partial.split()), False))
                if ended:
                    break
                # Whatever queued up while the decoder was busy goes in one call.
                data, ended = await self._next_audio()
            recognition, cmn = await self._engine.run(_finish, decoder)
            self.recognition = recognition
            self._engine.remember_cmn(self._session, cmn)
            if not recognition.accepted:
                log.info("offline recogniser: refused %r (%s)", " ".join(recognition.words), recognition.reason)
            self._results.put_nowait(AsrResult(recognition.text, True, refused=not recognition.accepted))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("offline recogniser failed: %s: %s", type(exc).__name__, exc)
            self._results.put_nowait(VoiceProviderError(ASR_FAILED, f"the offline recogniser failed ({exc})"))


# What the decoder is fed at a time, whatever queued up: how much audio one call carries moves
# pocketsphinx's live feature state, so fixed pieces make a result independent of scheduling.
FEED_BYTES = 960  # 30 ms at 16 kHz


def _begin(decoder: GrammarDecoder, cmn: str | None, heard: bytes) -> None:
    """Worker thread."""
    decoder.start(cmn, decoder.settings.warp.warp(voice_pitch_hz(heard)))


def _feed(decoder: GrammarDecoder, data: bytes, want_partial: bool) -> str:
    """Worker thread."""
    for start in range(0, len(data), FEED_BYTES):
        decoder.feed(data[start:start + FEED_BYTES])
    return decoder.partial() if want_partial else ""


def _finish(decoder: GrammarDecoder) -> tuple[Recognition, str]:
    """Worker thread."""
    recognition = decoder.finish()
    return recognition, decoder.cmn()
