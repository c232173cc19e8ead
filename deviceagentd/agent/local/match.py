"""Which command (with which values) or which telemetry field of one product a part means.

Scores are overlaps of the part's words with the spec's words: names weigh 3, description
words 1, plus what the values say (a stated unit, an enum value). A command is only a
candidate if it can take the values said, and if it covers every field word the person used:
"set the humidity to 50" never becomes set_target_temperature just because 50 is a number.
"""

from __future__ import annotations

from dataclasses import dataclass

from deviceagentd.agent.local import lexicon
from deviceagentd.agent.local.parser import Clause
from deviceagentd.agent.local.values import Binding, bind
from deviceagentd.agent.local.vocabulary import CommandVocab, FieldVocab, ProductVocab, Vocabulary
from deviceagentd.core.values import check_value

# How a command was picked, best last: an on/off word fitting a value or an alias ("open" a
# light), the command's own key word ("off" for turn_off), a real value (24, cool, red).
TIER_WEAK, TIER_KEY, TIER_VALUE = 1, 2, 3


@dataclass(frozen=True)
class CommandMatch:
    product: ProductVocab
    command: CommandVocab
    bindings: tuple[Binding, ...]
    tier: int
    score: int
    # Why an absolute value does not fit the spec (out of range, not whole), if it does not.
    problem: tuple[Binding, str] | None

    @property
    def rank(self) -> tuple[int, bool, int]:
        return (self.tier, self.problem is None, self.score)


@dataclass(frozen=True)
class FieldMatch:
    product: ProductVocab
    field: FieldVocab
    # Every word of the field's name was said ("target temperature", not just "temperature");
    # qualifiers need not be ("temperature" names current_temperature).
    named: bool
    score: int

    @property
    def rank(self) -> tuple[bool, int]:
        return (self.named, self.score)


def asked_fields(clause: Clause, vocabulary: Vocabulary) -> frozenset[str]:
    """The field words a person used ("temperature", "mode"): whatever is chosen must cover them."""
    return clause.words & vocabulary.field_words


def match_command(product: ProductVocab, clause: Clause, vocabulary: Vocabulary) -> CommandMatch | None:
    asked = asked_fields(clause, vocabulary)
    best: CommandMatch | None = None
    for command in product.commands:
        if not asked <= command.words:
            continue
        found = _match_one(product, command, clause)
        if found is not None and (best is None or found.rank > best.rank):
            best = found
    return best


def _match_one(product: ProductVocab, command: CommandVocab, clause: Clause) -> CommandMatch | None:
    words = clause.words
    score = 3 * len(command.name_words & words) + len(command.desc_words & words - command.name_words)
    if not command.params:
        if command.key_words & words:
            return CommandMatch(product, command, (), TIER_KEY, score + 3, None)
        aliases = {a for w in words for a in lexicon.KEY_ALIASES.get(w, frozenset())}
        if command.key_words & aliases:
            # "open the light": the light's own on-command beats set_power(true).
            return CommandMatch(product, command, (), TIER_WEAK, score + 2, None)
        return None
    bindings: list[Binding] = []
    for param in command.params:
        binding = bind(param, clause.tokens, words, clause.sequence)
        if binding is None:
            if param.spec.required:
                return None
            continue
        bindings.append(binding)
    if not bindings:
        return None
    problem: tuple[Binding, str] | None = None
    for binding in bindings:
        score += 3 * len(binding.param.name_words & words) + binding.strength
        reason = check_value(binding.param.spec, binding.value) if binding.relative is None else None
        if reason is not None and problem is None:
            problem = (binding, reason)
    tier = TIER_WEAK if all(b.boolish for b in bindings) else TIER_VALUE
    return CommandMatch(product, command, tuple(bindings), tier, score, problem)


def match_field(product: ProductVocab, clause: Clause, vocabulary: Vocabulary) -> FieldMatch | None:
    asked = asked_fields(clause, vocabulary)
    words = clause.words
    units = {t.word for t in clause.tokens if t.kind == "unit"}
    best: FieldMatch | None = None
    for field in product.fields:
        if not asked <= field.words:
            continue
        score = 3 * len(field.name_words & words) + len(field.desc_words & words - field.name_words)
        if field.unit is not None and field.unit in units:
            score += 2
        if field.spec.type == "bool" and words & (lexicon.TRUE_WORDS | lexicon.FALSE_WORDS):
            score += 2
        if "now" in words and "current" in field.words:
            score += 1
        if score <= 0:
            continue
        found = FieldMatch(product, field, field.name_words - lexicon.QUALIFIERS <= words, score)
        if best is None or found.rank > best.rank:
            best = found
    return best


def read_only_field(product: ProductVocab, clause: Clause, vocabulary: Vocabulary) -> FieldVocab | None:
    """A telemetry field the person wants to set, when no command of the product sets it."""
    asked = asked_fields(clause, vocabulary)
    if not asked or any(asked <= command.words for command in product.commands):
        return None
    found = match_field(product, clause, vocabulary)
    return found.field if found is not None else None
