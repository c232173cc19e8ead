"""What the offline agent knows about the products, built once from the Catalog.

For every product, command, parameter and telemetry field: the words of its name (split at
underscores) and of its description, its enum values, its unit, and the "anchors" its
description gives ("from 2700 (warm white) to 6500 (cool white)" → warm white = 2700). No
product is named in code: a new DeviceSpec brings its own words.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from types import MappingProxyType
from typing import Any

from deviceagentd.agent.local import lexicon
from deviceagentd.agent.local.text import stem, tokenize, words_of
from deviceagentd.core.catalog import Catalog
from deviceagentd.core.spec import CommandSpec, FieldSpec, ProductSpec

# "from 1 (dimmest) to 100 (brightest)" and "0 is fully closed and 100 is fully open".
_ANCHOR_PARENS = re.compile(r"(-?\d+(?:\.\d+)?)\s*\(([a-z][a-z ]*)\)")
_ANCHOR_IS = re.compile(r"(-?\d+(?:\.\d+)?) is ((?:fully |completely )?[a-z]+)")


@dataclass(frozen=True)
class FieldVocab:
    """A command parameter or a telemetry field."""

    spec: FieldSpec
    name_words: frozenset[str]
    desc_words: frozenset[str]
    unit: str | None
    # Phrases the description ties to a value, e.g. (("warm", "white"), 2700).
    anchors: tuple[tuple[tuple[str, ...], float], ...]
    # An object value described as hue/saturation/value: colour names fit it.
    hsv: bool

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def words(self) -> frozenset[str]:
        return self.name_words | self.desc_words


@dataclass(frozen=True)
class CommandVocab:
    spec: CommandSpec
    name_words: frozenset[str]
    # Words that by themselves pick this command: "on" for turn_on, "open", "stop" for pause.
    key_words: frozenset[str]
    desc_words: frozenset[str]
    params: tuple[FieldVocab, ...]

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def words(self) -> frozenset[str]:
        words = self.name_words | self.desc_words
        for param in self.params:
            words |= param.words | frozenset(str(v).lower() for v in param.spec.enum or ())
        return words


@dataclass(frozen=True)
class ProductVocab:
    spec: ProductSpec
    # Ways to name the product: its name and its id, as word sequences.
    names: tuple[tuple[str, ...], ...]
    commands: tuple[CommandVocab, ...]
    fields: tuple[FieldVocab, ...]

    @property
    def product_id(self) -> str:
        return self.spec.product_id

    @property
    def words(self) -> frozenset[str]:
        words: frozenset[str] = frozenset()
        for command in self.commands:
            words |= command.words
        for field in self.fields:
            words |= field.words
        return words


@dataclass(frozen=True)
class Vocabulary:
    products: Mapping[str, ProductVocab]
    # Words of field and parameter names anywhere in the catalog ("temperature", "mode"):
    # when a person says one, the chosen command or field must cover it.
    field_words: frozenset[str]
    # Every word the agent knows, so an unknown one ("the TV") can be noticed.
    known_words: frozenset[str]
    # Known words that can name something to act on: not "alarm", "event", "picture" ("set an
    # alarm for 7" must not set a brightness to 7).
    command_words: frozenset[str]
    # Words that are values of some parameter (enum values, colours, "warm white"): a part
    # saying one ("heat mode please") is a command even without a verb.
    value_words: frozenset[str]
    # Place phrases per (device id, place metadata): devices change rarely, turns often, and
    # tokenizing every device's names on every turn made turns cost O(devices).
    place_cache: dict[tuple[str, tuple[str, ...]], frozenset[frozenset[str]]] = dataclasses.field(
        default_factory=dict, compare=False, repr=False
    )
    # The sorted device list and its place index, valid for one registry version.
    site_cache: dict[str, Any] = dataclasses.field(default_factory=dict, compare=False, repr=False)

    @cached_property
    def product_words(self) -> frozenset[str]:
        return frozenset(w for p in self.products.values() for name in p.names for w in name)

    @classmethod
    def build(cls, catalog: Catalog) -> Vocabulary:
        products = {pid: _product(spec) for pid, spec in sorted(catalog.products.items())}
        field_words: set[str] = set()
        values: set[str] = set(lexicon.COLOURS)
        known: set[str] = set(lexicon.EN_FILLER)
        for product in products.values():
            for names in product.names:
                known.update(names)
            known.update(product.words)
            for field in product.fields:
                field_words.update(field.name_words)
            for command in product.commands:
                known.update(command.key_words)
                for param in command.params:
                    field_words.update(param.name_words)
                    values.update(str(v).lower() for v in param.spec.enum or ())
                    for phrase, _ in param.anchors:
                        values.update(phrase)
        spec_words = set(known)
        for canonical in (*lexicon.EN_WORDS.values(), *lexicon.ZH_WORDS.values()):
            known.update(w for w in canonical.split() if w not in lexicon.PLACE_WORDS or w in spec_words)
        known.update(values)
        known.update(lexicon.QUESTION_OPENERS | lexicon.COMMAND_VERBS | lexicon.POLITE_OPENERS)
        not_things = (set(lexicon.EVENT_WORDS) | lexicon.VISION_WORDS | lexicon.LIST_WORDS | lexicon.TIME_WORDS)
        command_words = known - (not_things - spec_words)
        return cls(MappingProxyType(products), frozenset(field_words - lexicon.QUALIFIERS), frozenset(known),
                   frozenset(command_words), frozenset(values))


def _product(spec: ProductSpec) -> ProductVocab:
    names = tuple(dict.fromkeys(tuple(words_of(text)) for text in (spec.name, spec.product_id)))
    # "the curtain" in every curtain description says nothing about which field is meant.
    own = frozenset(w for name in names for w in name)
    commands = tuple(_command(command, own) for command in spec.commands.values())
    fields = tuple(_field(field, own) for field in spec.telemetry.values())
    return ProductVocab(spec, tuple(n for n in names if n), commands, fields)


def _command(spec: CommandSpec, own: frozenset[str]) -> CommandVocab:
    name_words = frozenset(words_of(spec.name))
    params = tuple(_field(p, own) for p in spec.params.values())
    param_words: frozenset[str] = frozenset().union(*(p.name_words for p in params))
    key_words = set(name_words - lexicon.GENERIC_VERBS - param_words)
    # The description's opening verb names the action too: "Stop the curtain where it is now."
    description = words_of(spec.description)
    if description and description[0] not in lexicon.GENERIC_VERBS and description[0] not in lexicon.EN_FILLER:
        key_words.add(description[0])
    return CommandVocab(spec, name_words, frozenset(key_words), _content(spec.description) - own, params)


def _field(spec: FieldSpec, own: frozenset[str]) -> FieldVocab:
    description = spec.description.lower()
    anchors: list[tuple[tuple[str, ...], float]] = []
    for pattern in (_ANCHOR_PARENS, _ANCHOR_IS):
        for match in pattern.finditer(description):
            phrase = tuple(words_of(match.group(2)))
            if phrase:
                anchors.append((phrase, float(match.group(1))))
    desc_words = _content(spec.description) - own
    return FieldVocab(
        spec=spec,
        name_words=frozenset(words_of(spec.name)),
        desc_words=desc_words,
        unit=canonical_unit(spec.unit),
        anchors=tuple(anchors),
        hsv=spec.type == "object" and "hue" in desc_words,
    )


def _content(text: str) -> frozenset[str]:
    return frozenset(w for w in words_of(text) if w not in lexicon.EN_FILLER and not _numeric(w))


def _numeric(word: str) -> bool:
    return word.replace(".", "", 1).lstrip("-").isdigit()


def canonical_unit(unit: str | None) -> str | None:
    """A spec's unit as the token people's words become: "°C" → "°c", "K" → "k"."""
    if not unit:
        return None
    for token in tokenize(unit, ()):
        if token.kind == "unit":
            return token.word
    return stem(unit.lower())
