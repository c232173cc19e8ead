"""A message → its parts ("check the temperature and set the target to 24" is two), and what
kind of request each part is: a command, a state question, a device list, recent events.

Nothing here knows devices; parts are matched to commands, fields and devices in planner.py.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from deviceagentd.agent.local import lexicon
from deviceagentd.agent.local.text import Language, Token, language_of, tokenize
from deviceagentd.agent.local.values import TIME_UNITS
from deviceagentd.agent.local.vocabulary import Vocabulary

ClauseKind = Literal["command", "query", "list", "events"]
# Words that carry an action over to a part that only names a thing ("… and the AC").
ACTION_WORDS = lexicon.TRUE_WORDS | lexicon.FALSE_WORDS | lexicon.RAISE_WORDS | lexicon.LOWER_WORDS | {
    "pause", "stop", "set", "turn"}


@dataclass(frozen=True)
class Clause:
    tokens: tuple[Token, ...]
    kind: ClauseKind
    # A word we do not know that this part is about ("the TV", 电视): not ours to act on.
    unknown: str | None = None
    # Action words carried over from the previous part.
    inherited: tuple[str, ...] = ()
    # Only names a thing ("… and the humidity in the living room"): its kind came from a neighbour.
    elliptical: bool = False

    @property
    def sequence(self) -> tuple[str, ...]:
        """Canonical words in order (words and units), for phrases like "warm white"."""
        return tuple(t.word for t in self.tokens if t.kind in ("word", "unit"))

    @property
    def words(self) -> frozenset[str]:
        return frozenset(self.sequence) | frozenset(self.inherited)

    @property
    def device_ids(self) -> tuple[str, ...]:
        return tuple(t.word for t in self.tokens if t.kind == "device")

    @property
    def text(self) -> str:
        return " ".join(t.surface for t in self.tokens)


@dataclass(frozen=True)
class Parsed:
    language: Language
    clauses: tuple[Clause, ...]
    # The message asks about an image, which needs a vision model.
    vision: bool


@dataclass(frozen=True)
class _Part:
    tokens: tuple[Token, ...]
    kind: ClauseKind | None  # None: only names a thing; takes its kind from its neighbours
    unknown: str | None


def parse(message: str, vocabulary: Vocabulary, device_ids: Iterable[str],
          extra_known: frozenset[str] = frozenset()) -> Parsed:
    tokens = tokenize(message, device_ids)
    vision = any(t.kind == "word" and t.word in lexicon.VISION_WORDS for t in tokens)
    parts = [_classify(part, vocabulary, extra_known) for part in _split(tokens)]
    return Parsed(language_of(message), _settle(parts), vision)


def _split(tokens: list[Token]) -> list[tuple[Token, ...]]:
    parts: list[tuple[Token, ...]] = []
    current: list[Token] = []
    for token in tokens:
        if token.kind == "sep" or (token.kind == "word" and token.word in lexicon.CONJUNCTIONS):
            if current:
                parts.append(tuple(current))
            current = []
        else:
            current.append(token)
    if current:
        parts.append(tuple(current))
    return parts


def _strip(tokens: tuple[Token, ...]) -> tuple[Token, ...]:
    """Drop "could you please", and "power" in "power on" (a verb there, not the field)."""
    start = 0
    while start < len(tokens) and tokens[start].kind == "word" and tokens[start].word in lexicon.POLITE_OPENERS:
        start += 1
    kept: list[Token] = []
    rest = tokens[start:]
    for index, token in enumerate(rest):
        following = rest[index + 1].word if index + 1 < len(rest) else ""
        if token.word == "power" and token.surface == "power" and following in ("on", "off"):
            continue
        kept.append(token)
    return tuple(kept)


def _classify(raw: tuple[Token, ...], vocabulary: Vocabulary, extra_known: frozenset[str]) -> _Part:
    tokens = _strip(raw)
    if not tokens:
        return _Part((), None, None)
    kind = _kind(tokens, vocabulary)
    # A command may only act on things the specs and the site know; a question may mention
    # more ("any alarms today").
    known = vocabulary.known_words if kind in ("query", "list", "events") else vocabulary.command_words
    return _Part(tokens, kind, _unknown_word(tokens, known | extra_known))


def _kind(tokens: tuple[Token, ...], vocabulary: Vocabulary) -> ClauseKind | None:
    words = frozenset(t.word for t in tokens if t.kind in ("word", "unit"))
    first = tokens[0]
    opener = first.word if first.kind == "word" else ""
    field_words = words & vocabulary.field_words
    # "switch on the plug" opens with a verb; 开关是开着的吗 opens with the product "switch".
    commanding = opener in lexicon.COMMAND_VERBS and not (
        opener in vocabulary.product_words and first.surface != opener)
    if words & lexicon.EVENT_WORDS.keys() and not commanding:
        return "events"
    if not commanding and _is_listing(words, field_words, opener, vocabulary):
        return "list"
    if opener in lexicon.QUESTION_OPENERS:
        return "query"
    if commanding:
        return "command"
    if words & lexicon.QUESTION_MARKERS:
        return "query"
    has_number = any(t.kind == "number" and not _is_time(tokens, i) for i, t in enumerate(tokens))
    if has_number or words & (lexicon.COMMAND_VERBS | ACTION_WORDS | lexicon.MAX_WORDS | lexicon.MIN_WORDS):
        return "command"
    # A value alone makes a command ("heat mode please"), unless it also names a field ("fan").
    if words & (vocabulary.value_words - vocabulary.field_words):
        return "command"
    return None


def _is_listing(words: frozenset[str], field_words: frozenset[str], opener: str, vocabulary: Vocabulary) -> bool:
    """Lists of devices ("which devices are online", "show me all the lights"), not "所有设备都关掉"."""
    if words & {"online", "offline", "list"}:
        return True
    if "device" in words and not field_words and (opener in lexicon.QUESTION_OPENERS or not words & ACTION_WORDS):
        return True
    # "which lights are on", "show me all the lights", "看看所有的灯"
    asks = opener in lexicon.QUESTION_OPENERS or bool(words & {"which", "check"})
    if asks and words & ({"which"} | lexicon.ALL_WORDS) and not field_words:
        return any(all(w in words for w in name) for p in vocabulary.products.values() for name in p.names)
    return False


def _is_time(tokens: tuple[Token, ...], index: int) -> bool:
    return index + 1 < len(tokens) and tokens[index + 1].kind == "unit" and tokens[index + 1].word in TIME_UNITS


def _unknown_word(tokens: tuple[Token, ...], known: frozenset[str]) -> str | None:
    """A thing we have no word for: a Chinese term outside the lexicon (two characters or more),
    a word in a noun phrase after "the"/"a"/"my" or after "to" that no spec, device or lexicon
    knows ("the TV", "the garage door", "to turbo"), or an unknown verb opening the request
    ("lock the door")."""
    after_determiner = 0
    for index, token in enumerate(tokens):
        if token.kind == "residue" and len(token.word) >= 2:
            # Also a device id nobody registered: "turn on thermostat-009" touches nothing.
            return token.surface
        if token.kind != "word":
            after_determiner = 0
            continue
        # "the X" names a thing; "to X" names the value wanted ("set the fan to turbo").
        if token.word in lexicon.DETERMINERS or token.word == "to":
            after_determiner = _NOUN_PHRASE_WORDS
            continue
        unknown = token.word not in known and token.word != "?"
        if unknown and (index == 0 or after_determiner):
            return token.surface
        after_determiner = 0 if token.word in _PHRASE_ENDS else max(0, after_determiner - 1)
    return None


# How many words after a determiner still belong to its noun phrase, and words that end it.
_NOUN_PHRASE_WORDS = 3
_PHRASE_ENDS = frozenset({"of", "in", "on", "at", "for", "with", "from", "by", "and", "is", "are"})


def _settle(parts: list[_Part]) -> tuple[Clause, ...]:
    """Give parts that only name a thing the kind (and the action) of their neighbour:
    "turn off the light and the AC", "温度和湿度是多少"."""
    clauses: list[Clause] = []
    for index, part in enumerate(parts):
        kind = part.kind
        inherited: tuple[str, ...] = ()
        if kind is None:
            before = next((p for p in reversed(parts[:index]) if p.kind is not None), None)
            after = next((p for p in parts[index + 1:] if p.kind is not None), None)
            source = before or after
            kind = source.kind if source is not None and source.kind is not None else "query"
            # The action (or the kind of events) of the neighbour: "… and the AC", "… and ac-1".
            carried = ACTION_WORDS if kind == "command" else lexicon.EVENT_WORDS.keys() if kind == "events" else ()
            if source is not None:
                inherited = tuple(t.word for t in source.tokens if t.kind == "word" and t.word in carried)
        if not part.tokens:
            continue
        clauses.append(Clause(part.tokens, kind, part.unknown, inherited, part.kind is None))
    return tuple(_drop_empty(clauses))


def _drop_empty(clauses: list[Clause]) -> list[Clause]:
    return [c for c in clauses if c.sequence or c.device_ids or c.unknown or any(t.kind == "number" for t in c.tokens)]

