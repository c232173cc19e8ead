"""Values in a request, fitted to one parameter of a spec.

A parameter takes what its spec allows: a number (whose unit, if said, must be the
parameter's), one of its enum values, true/false from on/off words, a colour for a
hue/saturation/value object, a phrase its description ties to a value ("warm white"), its
min/max ("brightest", "maximum"), or a relative change ("2 degrees warmer") worked out from
the device's current state once the device is known.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from deviceagentd.agent.local import lexicon
from deviceagentd.agent.local.text import Token
from deviceagentd.agent.local.vocabulary import FieldVocab

# Units that say when, not how much ("in the last 2 hours").
TIME_UNITS = frozenset({"h", "day", "week"})


@dataclass(frozen=True)
class Number:
    value: float
    unit: str | None
    # "to 24" sets; "by 2" changes.
    after_to: bool
    after_by: bool


@dataclass(frozen=True)
class Relative:
    sign: int
    amount: float | None


@dataclass(frozen=True)
class Binding:
    param: FieldVocab
    # The value to send, or None when `relative` is to be applied to the current state.
    value: Any
    relative: Relative | None
    # How sure the binding is: a stated unit or an enum value weigh more than a bare number.
    strength: int
    # The value came from an on/off word: weaker than a command named after that word.
    boolish: bool = False


def numbers(tokens: tuple[Token, ...]) -> list[Number]:
    found: list[Number] = []
    for index, token in enumerate(tokens):
        if token.kind != "number" or token.number is None:
            continue
        following = tokens[index + 1] if index + 1 < len(tokens) else None
        unit = following.word if following is not None and following.kind == "unit" else None
        previous = tokens[index - 1].word if index > 0 else ""
        found.append(Number(token.number, unit, previous == "to", previous == "by"))
    return found


def time_numbers(tokens: tuple[Token, ...]) -> list[Number]:
    return [n for n in numbers(tokens) if n.unit in TIME_UNITS]


def plain(value: float) -> int | float:
    """24.0 → 24: what a person said, as JSON shows it."""
    return int(value) if float(value).is_integer() else value


def bind(param: FieldVocab, tokens: tuple[Token, ...], words: frozenset[str],
         sequence: tuple[str, ...]) -> Binding | None:
    kind = param.spec.type
    if kind in ("int", "float"):
        return _bind_number(param, tokens, words, sequence)
    if kind == "enum" or param.spec.enum is not None:
        return _bind_enum(param, sequence)
    if kind == "bool":
        if words & lexicon.TRUE_WORDS and not words & lexicon.FALSE_WORDS:
            return Binding(param, True, None, 1, boolish=True)
        if words & lexicon.FALSE_WORDS and not words & lexicon.TRUE_WORDS:
            return Binding(param, False, None, 1, boolish=True)
        return None
    if param.hsv:
        for word in reversed(sequence):
            if word in lexicon.COLOURS:
                hue = lexicon.COLOURS[word]
                colour = {"h": 0, "s": 0, "v": 100} if hue is None else {"h": hue, "s": 100, "v": 100}
                return Binding(param, colour, None, 3)
    return None


def _bind_number(param: FieldVocab, tokens: tuple[Token, ...], words: frozenset[str],
                 sequence: tuple[str, ...]) -> Binding | None:
    said = [n for n in numbers(tokens) if n.unit not in TIME_UNITS]
    fitting = [n for n in said if n.unit is None or n.unit == param.unit]
    sign = 1 if words & lexicon.RAISE_WORDS else -1 if words & lexicon.LOWER_WORDS else 0
    if sign and not any(n.after_to for n in fitting):
        amount = fitting[0].value if fitting else None
        return Binding(param, None, Relative(sign, amount), 2)
    for phrase, value in param.anchors:
        if _contains(sequence, phrase):
            return Binding(param, plain(value), None, 4)
    if fitting:
        number = fitting[0]
        return Binding(param, plain(number.value), None, 4 if number.unit is not None else 2)
    if said:
        return None
    if words & lexicon.MAX_WORDS and param.spec.max is not None:
        return Binding(param, plain(param.spec.max), None, 3)
    if words & lexicon.MIN_WORDS and param.spec.min is not None:
        return Binding(param, plain(param.spec.min), None, 3)
    return None


def _bind_enum(param: FieldVocab, sequence: tuple[str, ...]) -> Binding | None:
    allowed = param.spec.enum or ()
    chosen: Any = None
    for word in sequence:
        for value in allowed:
            if isinstance(value, str) and enum_word_matches(word, value.lower()):
                chosen = value
    if chosen is None:
        return None
    boolish = str(chosen).lower() in lexicon.TRUE_WORDS | lexicon.FALSE_WORDS
    return Binding(param, chosen, None, 1 if boolish else 3, boolish=boolish)


def enum_word_matches(word: str, value: str) -> bool:
    """"cooling" and "cool", "automatic" and "auto"; but not "office" and "off"."""
    if word == value or word in (value + "ing", value + value[-1:] + "ing"):
        return True
    return len(value) >= 4 and word.startswith(value)


def _contains(sequence: tuple[str, ...], phrase: tuple[str, ...]) -> bool:
    size = len(phrase)
    return any(sequence[i:i + size] == phrase for i in range(len(sequence) - size + 1))


def apply_relative(param: FieldVocab, relative: Relative, current: Any) -> int | float | None:
    """The new value for "2 degrees warmer" / "a bit brighter", kept within the spec's range."""
    if isinstance(current, bool) or not isinstance(current, int | float):
        return None
    amount = relative.amount if relative.amount is not None else default_step(param)
    value = float(current) + relative.sign * amount
    if param.spec.min is not None:
        value = max(value, param.spec.min)
    if param.spec.max is not None:
        value = min(value, param.spec.max)
    if param.spec.type == "int":
        value = round(value)
    return plain(value)


def default_step(param: FieldVocab) -> float:
    # A degree is what people mean by "warmer"; elsewhere a tenth of the range ("brighter").
    if param.unit == "°c":
        return 1
    if param.spec.min is not None and param.spec.max is not None:
        return max(1, round((param.spec.max - param.spec.min) / 10))
    return 1
