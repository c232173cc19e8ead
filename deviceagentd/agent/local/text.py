"""From what a person typed to tokens: canonical English words, numbers, units, device ids.

Chinese is segmented by longest match against the lexicon and translated to the same
canonical English words, so one pipeline understands both languages. Characters no lexicon
entry covers are kept as `residue`: a run of them is a word we do not know (电视, 音量).
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Literal

from deviceagentd.agent.local.lexicon import (
    EN_PAIRS,
    EN_WORDS,
    UNITS,
    ZH_MAX_LEN,
    ZH_UNITS_AFTER_NUMBER,
    ZH_WORDS,
)
from deviceagentd.core.language import is_han, written_in_chinese

Language = Literal["en", "zh"]
# residue: what no lexicon covers (电视) and unregistered device ids (thermostat-009).
TokenKind = Literal["word", "number", "unit", "device", "sep", "residue"]


@dataclass(frozen=True)
class Token:
    kind: TokenKind
    # Canonical form: a lowercase English word, a unit ("°c", "%"), a device id, or the number as text.
    word: str
    # What the person wrote (a Chinese term, "plug" for the canonical "switch", ...).
    surface: str
    number: float | None = None


def language_of(text: str) -> Language:
    return "zh" if written_in_chinese(text) else "en"


def normalise(text: str) -> str:
    """Full-width forms to ASCII (NFKC: ２４％ → 24%, ℃ → °C), lowercase, one kind of spaces."""
    text = unicodedata.normalize("NFKC", text).lower()
    return text.replace("a/c", "ac").replace("’", "'")


def stem(word: str) -> str:
    """A light plural stemmer, applied alike to spec words and to what people say."""
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 4 and word.endswith("es") and word[:-2].endswith(("ch", "sh", "x", "ss")):
        return word[:-2]
    if len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    return word


def words_of(text: str) -> list[str]:
    """Content of a spec text (names, descriptions) as stemmed canonical words."""
    out: list[str] = []
    for token in tokenize(text.replace("_", " "), ()):
        if token.kind in ("word", "unit"):
            out.append(token.word)
    return out


# ---------------------------------------------------------------------------- Chinese numbers

_ZH_DIGITS: Mapping[str, int] = MappingProxyType({
    "零": 0, "〇": 0, "一": 1, "二": 2, "两": 2, "三": 3, "四": 4, "五": 5, "六": 6, "七": 7, "八": 8, "九": 9})
_ZH_MULTIPLIERS: Mapping[str, int] = MappingProxyType({"十": 10, "百": 100, "千": 1000, "万": 10000})
_ZH_NUMBER = re.compile(r"[零〇一二两三四五六七八九十百千万]+(?:点[零〇一二两三四五六七八九]+)?")
_ZH_PERCENT = re.compile(r"百分之\s*(\d+(?:\.\d+)?|[零〇一二两三四五六七八九十百点]+)")


def _zh_integer(text: str) -> int:
    total, section, digit = 0, 0, 0
    last_multiplier = 1
    for char in text:
        if char in _ZH_DIGITS:
            digit = _ZH_DIGITS[char]
        else:
            multiplier = _ZH_MULTIPLIERS[char]
            if multiplier == 10000:
                total += (section + digit) * multiplier
                section, digit = 0, 0
            else:
                section += (digit or 1) * multiplier
                digit = 0
            last_multiplier = multiplier
    # "两千七" is 2700: a trailing digit counts in the unit below the last multiplier.
    if digit and last_multiplier >= 100 and text[-1] in _ZH_DIGITS and text[-2] in _ZH_MULTIPLIERS:
        digit *= last_multiplier // 10
    return total + section + digit


def _zh_number(text: str) -> str:
    whole, _, fraction = text.partition("点")
    value = str(_zh_integer(whole))
    if fraction:
        value += "." + "".join(str(_ZH_DIGITS[c]) for c in fraction)
    return value


def convert_chinese_numbers(text: str) -> str:
    """二十四度 → 24度, 百分之六十 → 60%; leaves 一下, 一点 ("a bit") and 一张 alone."""
    text = _ZH_PERCENT.sub(lambda m: _zh_number(m.group(1)) + "%" if not m.group(1)[0].isdigit()
                           else m.group(1) + "%", text)

    def replace(match: re.Match[str]) -> str:
        found = match.group(0)
        # A lone 一 is "a"/"one" in 一下, 一点, 一半, 一张: not a value anyone sets.
        if found == "一":
            return found
        return _zh_number(found)

    return _ZH_NUMBER.sub(replace, text)


# ---------------------------------------------------------------------------- tokens

_EN_TOKEN = re.compile(
    # Something shaped like a device id that is not one (thermostat-009) must not become the
    # word "thermostat" and the value 9.
    r"(?P<id>[a-z][a-z0-9]*(?:[-_][a-z0-9]+)*[-_]\d[a-z0-9]*(?:[-_][a-z0-9]+)*)"
    r"|(?P<number>(?:(?<![a-z0-9.])-)?\d+(?:\.\d+)?)|(?P<word>[a-z]+(?:'[a-z]+)?)|(?P<unit>°c|°|%)"
    r"|(?P<sep>[,;!.。、；！？?])"
)
_CONTRACTIONS: Mapping[str, str] = MappingProxyType(
    {"s": "is", "re": "are", "m": "am", "ll": "will", "d": "would", "ve": "have", "t": "not"})


def tokenize(text: str, device_ids: Iterable[str]) -> list[Token]:
    """Tokens of one message. Known device ids become single `device` tokens first, so their
    digits are not taken for values and their words not for rooms."""
    text = convert_chinese_numbers(normalise(text))
    ids = sorted({d.lower() for d in device_ids}, key=len, reverse=True)
    tokens: list[Token] = []
    for piece, is_device in _split_device_ids(text, ids):
        if is_device:
            tokens.append(Token("device", piece, piece))
        else:
            tokens.extend(_tokenize_plain(piece))
    return _merge_residue(tokens)


@functools.lru_cache(maxsize=4)
def _device_id_pattern(ids: tuple[str, ...]) -> re.Pattern[str]:
    # Built once per device set, not per turn: with a thousand devices this is most of a turn.
    return re.compile(r"(?<![a-z0-9_-])(" + "|".join(re.escape(i) for i in ids) + r")(?![a-z0-9_-])")


def _split_device_ids(text: str, ids: list[str]) -> list[tuple[str, bool]]:
    if not ids:
        return [(text, False)]
    pattern = _device_id_pattern(tuple(ids))
    pieces: list[tuple[str, bool]] = []
    position = 0
    for match in pattern.finditer(text):
        pieces.append((text[position:match.start()], False))
        pieces.append((match.group(1), True))
        position = match.end()
    pieces.append((text[position:], False))
    return pieces


def _tokenize_plain(text: str) -> list[Token]:
    tokens: list[Token] = []
    position = 0
    while position < len(text):
        char = text[position]
        if is_han(char):
            position = _take_chinese(text, position, tokens)
            continue
        match = _EN_TOKEN.match(text, position)
        if match is None:
            position += 1
            continue
        position = match.end()
        if match.group("id") is not None:
            tokens.append(Token("residue", match.group("id"), match.group("id")))
        elif match.group("number") is not None:
            tokens.append(Token("number", match.group("number"), match.group("number"), float(match.group("number"))))
        elif match.group("unit") is not None:
            tokens.extend(_canonical(match.group("unit"), match.group("unit")))
        elif match.group("sep") is not None:
            sep = match.group("sep")
            # A question mark is a question, not a boundary between requests.
            tokens.append(Token("word", "?", sep) if sep in "?？" else Token("sep", sep, sep))
        else:
            tokens.extend(_english_word(match.group("word")))
    return _pairs(tokens)


def _pairs(tokens: list[Token]) -> list[Token]:
    """Word pairs that mean something else together: "how warm" asks for a temperature."""
    out: list[Token] = []
    index = 0
    while index < len(tokens):
        pair = (tokens[index].surface, tokens[index + 1].surface) if index + 1 < len(tokens) else None
        if pair is not None and pair in EN_PAIRS:
            out.extend(_canonical(EN_PAIRS[pair], " ".join(pair)))
            index += 2
            continue
        out.append(tokens[index])
        index += 1
    return out


def _english_word(word: str) -> list[Token]:
    if "'" in word:
        base, _, suffix = word.partition("'")
        if suffix == "t" and base.endswith("n"):
            base = base[:-1]  # don't → do not
        tokens = _english_word(base)
        if suffix in _CONTRACTIONS:
            tokens.append(Token("word", _CONTRACTIONS[suffix], word))
        return tokens
    if word in EN_WORDS:
        return _canonical(EN_WORDS[word], word)
    return [Token("word", stem(word), word)]


def _canonical(words: str, surface: str) -> list[Token]:
    tokens: list[Token] = []
    for word in words.split():
        if word in UNITS:
            tokens.append(Token("unit", word, surface))
        elif word in ("°", "°c"):
            tokens.append(Token("unit", "°c", surface))
        elif _is_number(word):
            tokens.append(Token("number", word, surface, float(word)))
        else:
            tokens.append(Token("word", word, surface))
    return tokens


def _take_chinese(text: str, position: int, tokens: list[Token]) -> int:
    after_number = bool(tokens) and tokens[-1].kind == "number"
    for length in range(min(ZH_MAX_LEN, len(text) - position), 0, -1):
        term = text[position:position + length]
        if after_number and term in ZH_UNITS_AFTER_NUMBER:
            tokens.append(Token("unit", ZH_UNITS_AFTER_NUMBER[term], term))
            return position + length
        if term in ZH_WORDS:
            canonical = ZH_WORDS[term]
            if canonical:
                tokens.extend(_canonical(canonical, term))
            return position + length
    tokens.append(Token("residue", text[position], text[position]))
    return position + 1


def _merge_residue(tokens: list[Token]) -> list[Token]:
    merged: list[Token] = []
    for token in tokens:
        if token.kind == "residue" and merged and merged[-1].kind == "residue":
            previous = merged.pop()
            token = Token("residue", previous.word + token.word, previous.surface + token.surface)
        merged.append(token)
    return merged


def _is_number(word: str) -> bool:
    try:
        float(word)
    except ValueError:
        return False
    return True
