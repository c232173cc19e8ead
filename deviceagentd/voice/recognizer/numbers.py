"""Numbers as people say them in English, and back: the grammar offers "twenty four" and
"twenty seven hundred", the transcript handed to the agent says "24" and "2700" (the local
intent engine reads digits, as a person would type them).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Final

ONES: Final = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven",
               "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen")
TENS: Final = {20: "twenty", 30: "thirty", 40: "forty", 50: "fifty", 60: "sixty", 70: "seventy", 80: "eighty",
               90: "ninety"}
_ONE_VALUES: Final = {word: value for value, word in enumerate(ONES)}
_TEN_VALUES: Final = {word: value for value, word in TENS.items()}
# Every word a number may be made of.
NUMBER_WORDS: Final = frozenset({*ONES, *TENS.values(), "hundred", "thousand", "point", "and"})
# Spoken numbers stop here: a device setting beyond it is said in digits nobody speaks.
MAX_SPOKEN: Final = 999_999


def say(value: int) -> tuple[str, ...]:
    """The usual way to say a whole number: 2700 → two thousand seven hundred."""
    if not 0 <= value <= MAX_SPOKEN:
        raise ValueError(f"{value} is outside 0..{MAX_SPOKEN}")
    if value == 0:
        return ("zero",)
    words: list[str] = []
    thousands, rest = divmod(value, 1000)
    if thousands:
        words += [*_below_thousand(thousands), "thousand"]
    words += _below_thousand(rest)
    return tuple(words)


def say_all(value: int) -> tuple[tuple[str, ...], ...]:
    """Every common way to say a whole number: 2700 also as twenty seven hundred, 105 also as
    one hundred and five."""
    ways = [say(value)]
    hundreds, rest = divmod(value, 100)
    if 10 < hundreds < 100 and hundreds % 10:
        # "twenty seven hundred", "fifteen hundred" (not "ten hundred", "twenty hundred").
        ways.append((*_below_hundred(hundreds), "hundred", *(_below_hundred(rest) if rest else ())))
    if 100 < value < 1000 and rest:
        ways.append((*_below_hundred(hundreds), "hundred", "and", *_below_hundred(rest)))
    return tuple(dict.fromkeys(ways))


def say_decimal(value: float, places: int = 1) -> tuple[str, ...]:
    """21.5 → twenty one point five; whole values as whole numbers."""
    if value < 0:
        raise ValueError("negative numbers are not spoken here")
    text = f"{value:.{places}f}".rstrip("0").rstrip(".")
    whole, _, fraction = text.partition(".")
    words = say(int(whole))
    if fraction:
        words += ("point", *(ONES[int(digit)] for digit in fraction))
    return words


def _below_thousand(value: int) -> list[str]:
    hundreds, rest = divmod(value, 100)
    words = [ONES[hundreds], "hundred"] if hundreds else []
    if rest:
        words += _below_hundred(rest)
    return words


def _below_hundred(value: int) -> list[str]:
    if value < 20:
        return [ONES[value]]
    tens, ones = divmod(value, 10)
    return [TENS[tens * 10]] + ([ONES[ones]] if ones else [])


# ---------------------------------------------------------------------------- words → digits

# Reads a number starting at a word index: (value, index after it), or None.
_Parser = Callable[[Sequence[str], int], "tuple[int, int] | None"]


def to_digits(words: Sequence[str]) -> list[str]:
    """Replace every spoken number by its digits: ["set", "to", "twenty", "one", "point", "five"]
    → ["set", "to", "21.5"]. Words that only look like part of a number ("and" between two
    requests, "point" alone) are kept."""
    out: list[str] = []
    i = 0
    while i < len(words):
        parsed = _number(words, i)
        if parsed is None:
            out.append(words[i])
            i += 1
            continue
        text, i = parsed
        out.append(text)
    return out


def _number(words: Sequence[str], i: int) -> tuple[str, int] | None:
    parsed = _whole(words, i)
    if parsed is None:
        return None
    value, j = parsed
    text = str(value)
    if j + 1 < len(words) and words[j] == "point" and words[j + 1] in _ONE_VALUES and _ONE_VALUES[words[j + 1]] < 10:
        digits = []
        j += 1
        while j < len(words) and words[j] in _ONE_VALUES and _ONE_VALUES[words[j]] < 10:
            digits.append(str(_ONE_VALUES[words[j]]))
            j += 1
        text += "." + "".join(digits)
    return text, j


def _whole(words: Sequence[str], i: int) -> tuple[int, int] | None:
    parsed = _below_thousand_at(words, i)
    if parsed is None:
        return None
    value, j = parsed
    if j < len(words) and words[j] == "thousand":
        value *= 1000
        j += 1
        rest = _and_rest(words, j, _below_thousand_at)
        if rest is not None:
            value += rest[0]
            j = rest[1]
    return value, j


def _below_thousand_at(words: Sequence[str], i: int) -> tuple[int, int] | None:
    parsed = _below_hundred_at(words, i)
    if parsed is None:
        return None
    value, j = parsed
    if j < len(words) and words[j] == "hundred" and value > 0:
        # "two hundred", and "twenty seven hundred" (= 2700).
        value *= 100
        j += 1
        rest = _and_rest(words, j, _below_hundred_at)
        if rest is not None:
            value += rest[0]
            j = rest[1]
    return value, j


def _and_rest(words: Sequence[str], j: int, part: _Parser) -> tuple[int, int] | None:
    """What follows "hundred" or "thousand": a number, optionally after "and"."""
    if j < len(words) and words[j] == "and":
        rest = part(words, j + 1)
        return rest if rest is not None and rest[0] > 0 else None
    rest = part(words, j)
    return rest if rest is not None and rest[0] > 0 else None


def _below_hundred_at(words: Sequence[str], i: int) -> tuple[int, int] | None:
    if i >= len(words):
        return None
    word = words[i]
    if word in _ONE_VALUES:
        return _ONE_VALUES[word], i + 1
    if word in _TEN_VALUES:
        value = _TEN_VALUES[word]
        if i + 1 < len(words) and words[i + 1] in _ONE_VALUES and 0 < _ONE_VALUES[words[i + 1]] < 10:
            return value + _ONE_VALUES[words[i + 1]], i + 2
        return value, i + 1
    return None
