"""pocketsphinx on the site's grammar: one utterance at a time, fed as the audio arrives.

The only module that imports pocketsphinx (its C library, acoustic model and dictionary come
in the `pocketsphinx` wheel; nothing is downloaded). The engine gives one decoder to one
utterance at a time; its calls run on worker threads and are serialised by a lock (an utterance
closed while a worker still feeds it must not end it underneath).

What it heard counts only if it is a whole sentence of the grammar: pocketsphinx's grammar
search reports the best partial path when no path reached the grammar's end ("what is the" for
"what is the weather tomorrow"), and that is how speech outside the vocabulary shows itself.
A few trailing words that extend a complete sentence into nothing ("… the temperature and",
the noise after the last word read as the start of a second request) are cut back to the
sentence; anything else incomplete is refused. So is a whole sentence whose words were laid over
the audio implausibly: mostly fillers, or one word held for seconds.
"""

from __future__ import annotations

import importlib.util
import logging
import tempfile
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from deviceagentd.voice.recognizer.grammar import SiteGrammar
from deviceagentd.voice.recognizer.pitch import WarpSettings
from deviceagentd.voice.recognizer.pronounce import Lexicon

log = logging.getLogger("deviceagentd.voice")

MODEL_SUBDIR: Final = ("model", "en-us")
# Words a sentence may trail off into that are cut back (joiners, fillers) — at most this many.
TRAILING_WORDS: Final = frozenset({"and", "then", "or", "please", "in", "of", "on", "the", "to", "it"})
MAX_TRAILING: Final = 2
# Fillers (silence, noise, unknown speech) between the first and the last word may fill at most
# this share of that stretch, and no more than MAX_INNER_FILLER_S of it: speech the grammar cannot
# say is absorbed by fillers (a monologue came out as nine words and 55 s of "silence").
MAX_INNER_FILLER_SHARE: Final = 0.35
MAX_INNER_FILLER_S: Final = 1.0
# After the last word the segmenter ends the utterance within its silence window: more "silence"
# than this after the last word was speech nobody recognised.
MAX_TRAILING_FILLER_S: Final = 3.0
# A word held for longer than this per phone of its pronunciation (0.25 s: slow speech is about
# 0.1 s) was not said: it is speech outside the grammar stretched onto a short sentence ("aircon
# on" over two seconds of "set an alarm for seven tomorrow").
MAX_FRAMES_PER_PHONE: Final = 25
FRAMES_PER_S: Final = 100
FILLERS: Final = frozenset({"<s>", "</s>", "<sil>", "[NOISE]", "[SPEECH]"})
# Dither (1/2 bit of noise, so digital silence has a spectrum) from a fixed seed: the same audio
# is always heard the same way.
DITHER_SEED: Final = 1


class RecogniserUnavailable(Exception):
    """The recogniser cannot run here (pocketsphinx or its model missing, a bad grammar)."""


@dataclass(frozen=True)
class ModelFiles:
    acoustic_model: Path
    dictionary: Path

    @classmethod
    def packaged(cls) -> ModelFiles:
        """The en-us model inside the pocketsphinx package, found without importing it."""
        spec = importlib.util.find_spec("pocketsphinx")
        if spec is None or not spec.submodule_search_locations:
            raise RecogniserUnavailable("pocketsphinx is not installed (pip install pocketsphinx)")
        base = Path(next(iter(spec.submodule_search_locations))).joinpath(*MODEL_SUBDIR)
        files = cls(base / "en-us", base / "cmudict-en-us.dict")
        if not (files.acoustic_model / "mdef").is_file() or not files.dictionary.is_file():
            raise RecogniserUnavailable(f"the pocketsphinx package has no en-us model under {base}")
        return files


@dataclass(frozen=True)
class DecoderSettings:
    """pocketsphinx search settings (see docs/benchmarks.md for how they were chosen)."""

    # Language weight and word insertion probability: pocketsphinx's own. A weight of 2 (with
    # insertion 0.2) scored better on synthetic speech but lost a spoken "close the curtains" in
    # a real session test and doubled the CPU (docs/benchmarks.md).
    language_weight: float = 6.5
    word_insertion: float = 0.65
    beam: float = 1e-48
    # Wider than pocketsphinx's 7e-29, which pruned right paths at word exits ("dim the bedroom
    # light to twenty percent" was lost in every voice); +35 % CPU (docs/benchmarks.md).
    word_beam: float = 1e-35
    # Live cepstral mean normalisation: the speaker's and room's mean, carried from utterance to
    # utterance of a session (the model's own `batch` would wait for the end of speech).
    cmn: str = "live"
    # pocketsphinx's spectral-subtraction noise removal (as the model's feat.params has it): with
    # the final grammar it helped at 10 dB SNR and cost nothing clean (docs/benchmarks.md).
    remove_noise: bool = True
    dither: bool = True
    # Vocal tract length normalisation by the pitch of the voice (pitch.py).
    warp: WarpSettings = field(default_factory=WarpSettings)


@dataclass(frozen=True)
class Recognition:
    words: tuple[str, ...]
    # The transcript for the agent ("" when refused).
    text: str
    accepted: bool
    # Why it was refused ("" when accepted): for logs and the benchmark.
    reason: str = ""


def feature_params(model: ModelFiles, settings: DecoderSettings) -> str:
    """The model's feature parameters with our CMN and noise-removal choices."""
    lines = [line for line in (model.acoustic_model / "feat.params").read_text().splitlines()
             if line.strip() and not line.startswith(("-cmn ", "-remove_noise "))]
    lines += [f"-cmn {settings.cmn}", f"-remove_noise {'yes' if settings.remove_noise else 'no'}"]
    return "\n".join(lines) + "\n"


def segmentation_problem(segments: list[tuple[str, int, int]], phones: Mapping[str, int]) -> str:
    """Why a word segmentation looks like speech outside the grammar ("" if it does not).
    `phones`: the number of phones of each pronunciation, by the name the search reports it
    under ("to", "to(2)")."""
    spoken = [i for i, (word, _, _) in enumerate(segments) if word not in FILLERS]
    if not spoken:
        return ""
    for word, start, end in segments:
        if word not in FILLERS and end - start + 1 > MAX_FRAMES_PER_PHONE * phones.get(word, 1):
            return f"{word!r} was held for {(end - start + 1) / FRAMES_PER_S:.1f} s"
    first, last = spoken[0], spoken[-1]
    span = segments[last][2] - segments[first][1] + 1
    inner = sum(end - start + 1 for word, start, end in segments[first:last + 1] if word in FILLERS)
    if inner > MAX_INNER_FILLER_S * FRAMES_PER_S or inner > MAX_INNER_FILLER_SHARE * span:
        return f"{inner / FRAMES_PER_S:.1f} s of the utterance were no words of the grammar"
    trailing = sum(end - start + 1 for word, start, end in segments[last + 1:] if word != "</s>")
    if trailing > MAX_TRAILING_FILLER_S * FRAMES_PER_S:
        return f"{trailing / FRAMES_PER_S:.1f} s after the last word were no words of the grammar"
    return ""


class GrammarDecoder:
    """One pocketsphinx decoder loaded with one site grammar."""

    def __init__(self, grammar: SiteGrammar, lexicon: Lexicon, model: ModelFiles,
                 settings: DecoderSettings | None = None) -> None:
        self.grammar = grammar
        self.settings = settings or DecoderSettings()
        try:
            import pocketsphinx
        except ImportError as exc:
            raise RecogniserUnavailable(f"pocketsphinx cannot be imported: {exc}") from exc
        s = self.settings
        with tempfile.TemporaryDirectory(prefix="deviceagentd-asr-") as tmp:
            dictionary = Path(tmp) / "site.dict"
            fsg = Path(tmp) / "site.fsg"
            features = Path(tmp) / "feat.params"
            dictionary.write_text(lexicon.dictionary_text(), encoding="utf-8")
            fsg.write_text(grammar.automaton.to_fsg(), encoding="utf-8")
            try:
                # The model's feat.params wins over the config, so ours is a copy with our choices.
                features.write_text(feature_params(model, s), encoding="utf-8")
                config = pocketsphinx.Config(
                    hmm=str(model.acoustic_model), featparams=str(features), dict=str(dictionary), fsg=str(fsg),
                    loglevel="ERROR", lw=s.language_weight, wip=s.word_insertion, beam=s.beam, wbeam=s.word_beam,
                    pbeam=s.beam, dither=s.dither, seed=DITHER_SEED, warp_type="inverse_linear",
                    warp_params="1.0",
                )
                self._decoder: Any = pocketsphinx.Decoder(config)
            except (RuntimeError, ValueError, OSError) as exc:
                raise RecogniserUnavailable(f"pocketsphinx could not load the site grammar: {exc}") from exc
        # Loading errors went to the log above; from here on the search's "final result does not
        # match the grammar" for every refused utterance would only be noise there.
        pocketsphinx.set_loglevel("FATAL")
        self._phones = lexicon.phone_counts()
        self._started = False
        self._warp = 1.0
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ one utterance

    def start(self, cmn: str | None = None, warp: float = 1.0) -> None:
        """Begin an utterance; `cmn` is the session's cepstral mean from its last utterance,
        `warp` the frequency warp for the speaker's voice (pitch.py)."""
        with self._lock:
            if self._started:
                # A stream closed while its start was still on a worker thread can leave the
                # utterance running after its abandon(): end it, or start_utt() would fail.
                self._decoder.end_utt()
                self._started = False
            if warp != self._warp:
                # The warp is part of the feature extraction, which is rebuilt for it (cheap: the
                # filterbank, not the model); the cepstral mean is set again below.
                self._decoder.config["warp_params"] = f"{warp:g}"
                self._decoder.reinit_feat()
                self._warp = warp
            if cmn:
                try:
                    self._decoder.set_cmn(cmn)
                except (RuntimeError, ValueError):
                    log.debug("offline recogniser: ignoring a bad CMN vector")
            self._decoder.start_utt()
            self._started = True

    def feed(self, pcm16k: bytes) -> None:
        with self._lock:
            if self._started:
                self._decoder.process_raw(pcm16k, False, False)

    def partial(self) -> str:
        """The best guess so far, as words (may not be a whole sentence yet)."""
        with self._lock:
            hyp = self._decoder.hyp() if self._started else None
        return hyp.hypstr if hyp is not None else ""

    def finish(self) -> Recognition:
        with self._lock:
            if not self._started:
                return Recognition((), "", False, "the utterance was abandoned")
            self._decoder.end_utt()
            self._started = False
            hyp = self._decoder.hyp()
            words = tuple(hyp.hypstr.split()) if hyp is not None else ()
            recognition = self.judge(words)
            if recognition.accepted:
                segments = [(s.word, s.start_frame, s.end_frame) for s in self._decoder.seg() or ()]
                why = segmentation_problem(segments, self._phones)
                if why:
                    return Recognition(words, "", False, why)
            return recognition

    def cmn(self) -> str:
        """The cepstral mean after the last utterance, for the session's next one."""
        with self._lock:
            return str(self._decoder.get_cmn(False))

    def abandon(self) -> None:
        """Drop an utterance in progress (the stream was closed early)."""
        with self._lock:
            if self._started:
                self._started = False
                self._decoder.end_utt()

    def frames(self) -> int:
        with self._lock:
            return int(self._decoder.n_frames())

    # ------------------------------------------------------------------ accept or refuse

    def judge(self, words: tuple[str, ...]) -> Recognition:
        if not words:
            return Recognition((), "", False, "nothing recognised")
        automaton = self.grammar.automaton
        if automaton.accepts(words):
            return Recognition(words, self.grammar.transcript(words), True)
        for cut in range(1, MAX_TRAILING + 1):
            if len(words) > cut and set(words[-cut:]) <= TRAILING_WORDS and automaton.accepts(words[:-cut]):
                kept = words[:-cut]
                return Recognition(kept, self.grammar.transcript(kept), True)
        return Recognition(words, "", False, "not a whole sentence of the site's grammar")
