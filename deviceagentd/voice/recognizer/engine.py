"""The offline recogniser shared by every voice session: the site's grammar, a few pocketsphinx
decoders and the worker threads they run on.

- Nothing is loaded until a session asks for it (`prepare()` at hello, or the first utterance);
  after `unload_after_s` without an utterance everything is dropped again, so a gateway whose
  speakers are quiet carries none of it.
- The grammar is rebuilt when the site changes (a device registers, is renamed or moves): the
  next utterance after the change gets decoders for the new grammar; utterances already running
  finish on the old one.
- Decoding never runs on the event loop: each utterance holds one decoder and feeds it on a
  worker thread (`max_decoders` threads and decoders at most; a further utterance waits for one).
- A session's cepstral mean (its speaker, microphone and room) is kept from one utterance to the
  next, so the second request of a session is heard as well as the tenth.
- A recogniser that fails to load (pocketsphinx missing, a broken model) is logged once with the
  reason and raises `RecogniserUnavailable`; it is tried again after `retry_after_s`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Final, TypeVar

from deviceagentd.memory import trim_heap
from deviceagentd.voice.recognizer.decoder import (
    DecoderSettings,
    GrammarDecoder,
    ModelFiles,
    RecogniserUnavailable,
)
from deviceagentd.voice.recognizer.grammar import MAX_NAMES, MAX_PLACES, SiteGrammar, build_grammar
from deviceagentd.voice.recognizer.pronounce import Lexicon, build_lexicon
from deviceagentd.voice.recognizer.site import Site, SiteSource

log = logging.getLogger("deviceagentd.voice")

T = TypeVar("T")
# Sessions whose cepstral mean is remembered.
MAX_REMEMBERED_SESSIONS: Final = 256




@dataclass(frozen=True)
class EngineSettings:
    max_decoders: int = 2
    unload_after_s: float = 300.0
    retry_after_s: float = 60.0
    espeak_binary: str = "espeak-ng"
    decoder: DecoderSettings = field(default_factory=DecoderSettings)


@dataclass(frozen=True)
class Loaded:
    """One build of the site's grammar, with its pronunciations."""

    version: object
    grammar: SiteGrammar
    lexicon: Lexicon
    build_s: float


def _packaged_model() -> ModelFiles:
    return ModelFiles.packaged()


class OfflineEngine:
    def __init__(self, site: SiteSource, settings: EngineSettings | None = None,
                 model: Callable[[], ModelFiles] | None = None) -> None:
        self.settings = settings or EngineSettings()
        self._site = site
        self._model = model or _packaged_model
        self._executor: ThreadPoolExecutor | None = None
        self._slots = asyncio.Semaphore(self.settings.max_decoders)
        self._loaded: Loaded | None = None
        self._idle: list[GrammarDecoder] = []
        self._load_lock = asyncio.Lock()
        self._failure: tuple[float, str] | None = None
        self._cmn: OrderedDict[str, str] = OrderedDict()
        self._active = 0
        self._last_used = 0.0
        self._unload_task: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ state

    @property
    def loaded(self) -> Loaded | None:
        return self._loaded

    @property
    def decoders(self) -> int:
        """Decoders in memory (idle and in use)."""
        return len(self._idle) + self._active

    # ------------------------------------------------------------------ use

    async def prepare(self) -> Loaded:
        """Build the grammar for the current site (if it changed) and one decoder, off the loop."""
        async with self._load_lock:
            self._check_failure()
            site = self._site()
            loaded = self._loaded
            if loaded is None or loaded.version != site.version:
                try:
                    loaded = await self.run(self._build, site)
                except RecogniserUnavailable as exc:
                    self._fail(str(exc))
                    raise
                if self._loaded is not None:
                    log.info("offline recogniser: the site changed; grammar rebuilt in %.2f s", loaded.build_s)
                self._loaded = loaded
                self._idle.clear()  # decoders of the old grammar
            if not self._idle and self._active == 0:
                self._idle.append(await self._new_decoder(loaded))
                # Building the grammar allocated several times what it keeps: give it back.
                trim_heap()
            self._touch()
            return loaded

    async def acquire(self) -> GrammarDecoder:
        """A decoder for one utterance; give it back with `release()`."""
        await self._slots.acquire()
        try:
            loaded = await self.prepare()
            decoder = self._idle.pop() if self._idle else await self._new_decoder(loaded)
        except BaseException:
            self._slots.release()
            raise
        self._active += 1
        return decoder

    def release(self, decoder: GrammarDecoder) -> None:
        self._active -= 1
        self._slots.release()
        loaded = self._loaded
        if loaded is not None and decoder.grammar is loaded.grammar:
            self._idle.append(decoder)
        self._touch()

    async def run(self, function: Callable[..., T], *args: object) -> T:
        """Run blocking recogniser work on the worker threads."""
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=self.settings.max_decoders,
                                                thread_name_prefix="offline-asr")
        return await asyncio.get_running_loop().run_in_executor(self._executor, function, *args)

    def session_cmn(self, session: str) -> str | None:
        return self._cmn.get(session)

    def remember_cmn(self, session: str, cmn: str) -> None:
        self._cmn[session] = cmn
        self._cmn.move_to_end(session)
        while len(self._cmn) > MAX_REMEMBERED_SESSIONS:
            self._cmn.popitem(last=False)

    def unload(self) -> None:
        """Drop the grammar and idle decoders (decoders in use go when they are released)."""
        if self._loaded is not None or self._idle:
            log.info("offline recogniser: unloaded after %.0f s without speech", self.settings.unload_after_s)
        self._loaded = None
        self._idle.clear()
        trim_heap()  # the decoders' search structures go back to the system

    async def close(self) -> None:
        if self._unload_task is not None:
            self._unload_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._unload_task
            self._unload_task = None
        self.unload()
        executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=False, cancel_futures=True)

    # ------------------------------------------------------------------ inside

    def _build(self, site: Site) -> Loaded:
        """Worker thread: grammar, pronunciations (one espeak-ng run for unknown words)."""
        started = time.perf_counter()
        model = self._model()
        grammar = build_grammar(site.catalog, site.devices())
        try:
            lexicon = build_lexicon(grammar.words, model.dictionary, self.settings.espeak_binary)
        except OSError as exc:
            raise RecogniserUnavailable(f"cannot read the pronouncing dictionary: {exc}") from exc
        unpronounced = grammar.words - lexicon.entries.keys()
        if unpronounced:
            raise RecogniserUnavailable(f"no pronunciation for {', '.join(sorted(unpronounced)[:10])}")
        loaded = Loaded(site.version, grammar, lexicon, time.perf_counter() - started)
        if grammar.names_left_out:
            log.warning("offline recogniser: %d device names or places left out of the grammar (at most %d names "
                        "and %d places per product); those devices are named by their product instead",
                        grammar.names_left_out, MAX_NAMES, MAX_PLACES)
        log.info("offline recogniser: grammar of %d products and %d devices, %d words (%d pronounced by "
                 "espeak-ng), %d states, built in %.2f s", grammar.products, grammar.devices, len(grammar.words),
                 len(lexicon.generated), grammar.automaton.states, loaded.build_s)
        return loaded

    async def _new_decoder(self, loaded: Loaded) -> GrammarDecoder:
        try:
            return await self.run(GrammarDecoder, loaded.grammar, loaded.lexicon, self._model(),
                                  self.settings.decoder)
        except RecogniserUnavailable as exc:
            self._fail(str(exc))
            raise

    def _check_failure(self) -> None:
        if self._failure is None:
            return
        at, reason = self._failure
        if time.monotonic() - at < self.settings.retry_after_s:
            raise RecogniserUnavailable(reason)
        self._failure = None

    def _fail(self, reason: str) -> None:
        if self._failure is None:
            log.error("offline recogniser unavailable: %s", reason)
        self._failure = (time.monotonic(), reason)

    def _touch(self) -> None:
        self._last_used = time.monotonic()
        if self._unload_task is None or self._unload_task.done():
            self._unload_task = asyncio.get_running_loop().create_task(self._unload_when_idle(),
                                                                        name="offline-asr-unload")

    async def _unload_when_idle(self) -> None:
        while True:
            wait = self._last_used + self.settings.unload_after_s - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
                continue
            if self._active:
                self._last_used = time.monotonic()
                continue
            self.unload()
            return
