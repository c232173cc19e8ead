"""A pronunciation for every word of the grammar.

Words come from the CMU pronouncing dictionary that the pocketsphinx package ships with its
acoustic model (all alternative pronunciations are kept). A word it lacks — a product called
"Zigbee hub", a device named "Xiaozhi" — is spoken by espeak-ng to IPA phonemes (`--ipa`,
nothing is played), mapped onto the dictionary's phone set. Without espeak-ng such a word is
spelled letter by letter, with a warning, so the grammar still loads.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

log = logging.getLogger("deviceagentd.voice")

# IPA as espeak-ng writes it for en-us → the CMU (ARPAbet) phones of the acoustic model.
# Longest match first, so "aɪ" wins over "a" and "tʃ" over "t".
IPA_TO_CMU: Final[Mapping[str, tuple[str, ...]]] = {
    "ɑːɹ": ("AA", "R"), "ɔːɹ": ("AO", "R"), "ɛɹ": ("EH", "R"), "ɪɹ": ("IH", "R"), "ʊɹ": ("UH", "R"),
    "ɜːɹ": ("ER",), "aɪə": ("AY", "ER"), "aʊə": ("AW", "ER"),
    "aɪ": ("AY",), "aʊ": ("AW",), "eɪ": ("EY",), "oʊ": ("OW",), "əʊ": ("OW",), "ɔɪ": ("OY",),
    "tʃ": ("CH",), "dʒ": ("JH",), "iː": ("IY",), "uː": ("UW",), "ɑː": ("AA",), "ɔː": ("AO",), "ɜː": ("ER",),
    "ɑ": ("AA",), "ɒ": ("AA",), "æ": ("AE",), "a": ("AE",), "ʌ": ("AH",), "ə": ("AH",), "ɐ": ("AH",),
    "ɔ": ("AO",), "ɛ": ("EH",), "e": ("EH",), "ɝ": ("ER",), "ɚ": ("ER",), "ɪ": ("IH",), "ᵻ": ("IH",),
    "i": ("IY",), "o": ("OW",), "ʊ": ("UH",), "u": ("UW",), "y": ("UW",),
    "b": ("B",), "d": ("D",), "ð": ("DH",), "f": ("F",), "ɡ": ("G",), "g": ("G",), "h": ("HH",),
    "k": ("K",), "l": ("L",), "ɫ": ("L",), "m": ("M",), "n": ("N",), "ŋ": ("NG",), "p": ("P",), "ɹ": ("R",),
    "r": ("R",), "ɾ": ("T",), "s": ("S",), "ʃ": ("SH",), "t": ("T",), "θ": ("TH",), "v": ("V",), "w": ("W",),
    "j": ("Y",), "z": ("Z",), "ʒ": ("ZH",), "x": ("K",), "ç": ("HH",), "ʔ": (),
}
_LONGEST: Final = max(len(key) for key in IPA_TO_CMU)
# Marks that carry no phone: stress, length left over, syllable breaks, ties, joiners.
_IGNORED: Final = frozenset("ˈˌː.‿͡‍̩̃ ")
ESPEAK_TIMEOUT_S: Final = 30.0
# espeak-ng accents whose pronunciations are added to the dictionary's own. Not its American one:
# the dictionary is American already, and those variants cost 2.8 MB of decoder for a 1,000-device
# site with no intent gained (docs/benchmarks.md).
ACCENTS: Final = ("en-gb",)


@dataclass(frozen=True)
class Lexicon:
    """Pronunciations of the grammar's words, as the dictionary file pocketsphinx reads."""

    entries: Mapping[str, tuple[str, ...]]  # word → one or more phone strings ("K AE T")
    # Words whose pronunciation was generated (espeak-ng) or spelled: for logs and check-config.
    generated: tuple[str, ...] = ()
    spelled: tuple[str, ...] = ()

    def dictionary_text(self) -> str:
        return "".join(f"{name} {phones}\n" for name, phones in self._named())

    def phone_counts(self) -> dict[str, int]:
        """Phones per pronunciation, under the name the decoder reports it by ("to(2)")."""
        return {name: len(phones.split()) for name, phones in self._named()}

    def _named(self) -> list[tuple[str, str]]:
        return [(word if i == 0 else f"{word}({i + 1})", phones)
                for word in sorted(self.entries) for i, phones in enumerate(self.entries[word])]


def build_lexicon(words: Iterable[str], dictionary: Path, espeak: str | None = "espeak-ng",
                  voice: str = "en-us", accents: tuple[str, ...] = ACCENTS) -> Lexicon:
    wanted = {w.lower() for w in words if w}
    entries = read_dictionary(dictionary, wanted)
    missing = sorted(wanted - entries.keys())
    generated: list[str] = []
    spelled: list[str] = []
    binary = shutil.which(espeak) if espeak else None
    if binary:
        # The dictionary is American; espeak-ng's accents add the other common pronunciations
        # ("current" as K AH R AH N T, the way British English says it).
        for accent in accents:
            for word, phones in espeak_pronunciations(binary, sorted(entries), accent).items():
                if phones not in entries[word]:
                    entries[word].append(phones)
    if missing:
        guessed = espeak_pronunciations(binary, missing, voice) if binary else {}
        for word in missing:
            guess = guessed.get(word)
            if guess:
                entries[word] = [guess]
                generated.append(word)
                continue
            letters = _spell(word, dictionary)
            if letters:
                entries[word] = [letters]
                spelled.append(word)
        if generated:
            log.info("offline recogniser: %d word(s) not in the dictionary pronounced by espeak-ng: %s",
                     len(generated), ", ".join(generated[:20]))
        if spelled:
            log.warning("offline recogniser: %d word(s) spelled letter by letter (%s): %s", len(spelled),
                        "espeak-ng could not pronounce them" if binary else "espeak-ng is not installed",
                        ", ".join(spelled[:20]))
    return Lexicon({w: tuple(p) for w, p in entries.items()}, tuple(generated), tuple(spelled))


def read_dictionary(path: Path, wanted: set[str]) -> dict[str, list[str]]:
    """The entries of `wanted` words in a CMU-format dictionary ("word(2) PHONES" = alternatives)."""
    found: dict[str, list[str]] = {}
    with path.open(encoding="utf-8", errors="replace") as lines:
        for line in lines:
            word, _, phones = line.strip().partition(" ")
            base = word.split("(", 1)[0]
            if base in wanted and phones:
                found.setdefault(base, []).append(" ".join(phones.split()))
    return found


def espeak_pronunciations(binary: str, words: list[str], voice: str) -> dict[str, str]:
    """One espeak-ng run for all the words (one per line; it prints one line of IPA per line)."""
    try:
        result = subprocess.run(
            [binary, "-q", "-v", voice, "--ipa", "--sep=_"], input="\n".join(words) + "\n",
            capture_output=True, text=True, timeout=ESPEAK_TIMEOUT_S, check=True,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        log.warning("offline recogniser: espeak-ng could not pronounce new words: %s", exc)
        return {}
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    if len(lines) != len(words):
        log.warning("offline recogniser: espeak-ng gave %d lines of phonemes for %d words", len(lines), len(words))
        return {}
    out: dict[str, str] = {}
    for word, line in zip(words, lines, strict=True):
        phones = ipa_to_cmu(line)
        if phones:
            out[word] = " ".join(phones)
    return out


def ipa_to_cmu(ipa: str) -> list[str]:
    """espeak-ng IPA with `_` between phonemes ("θ_ˈɜː_m_ə_s_t_ˌæ_t") → CMU phones (TH ER M AH S
    T AE T); each phoneme is matched longest first, unknown symbols are skipped."""
    phones: list[str] = []
    for token in ipa.split("_"):
        text = "".join(c for c in token if c not in _IGNORED or c == "ː")
        i = 0
        while i < len(text):
            for size in range(min(_LONGEST, len(text) - i), 0, -1):
                piece = text[i:i + size]
                if piece in IPA_TO_CMU:
                    phones.extend(IPA_TO_CMU[piece])
                    i += size
                    break
            else:
                i += 1  # a length mark after a short vowel, or a symbol we do not know
    return phones


def _spell(word: str, dictionary: Path) -> str:
    letters = [c for c in word if c.isalpha()]
    known = read_dictionary(dictionary, set(letters)) if letters else {}
    parts = [known[c][0] for c in letters if c in known]
    return " ".join(parts) if len(parts) == len(letters) else ""
