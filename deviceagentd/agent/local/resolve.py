"""Which device a part of a request is about.

A device is named by its id, by its product ("the light", 空调), or by words of its
metadata or id ("bedroom" in metadata.room or in the id bedroom-light, "coffee machine" in
metadata.name). With none of these, the engine falls back (in planner.py) to the device of
the previous part, the session's device, then every device that can do it. Several devices
left: the ones online; still several: ask which, never guess.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

from deviceagentd.agent.local import lexicon
from deviceagentd.agent.local.parser import Clause
from deviceagentd.agent.local.text import Token, words_of
from deviceagentd.agent.local.vocabulary import Vocabulary
from deviceagentd.core.registry import Device

# Metadata keys that name a device or say where it is.
PLACE_KEYS = ("name", "room", "location", "area", "zone", "floor", "label", "alias")


@dataclass(frozen=True)
class Mentions:
    device_ids: tuple[str, ...]
    products: frozenset[str]
    # Device id → how many of its place phrases the part says.
    places: Mapping[str, int]
    # "it", "this", 它: the device just talked about.
    pronoun: bool
    # "all the lights", 所有的灯
    everything: bool

    @property
    def explicit(self) -> bool:
        return bool(self.device_ids or self.products or self.places)


# Bound on remembered place phrases (devices whose metadata keeps changing).
CACHE_LIMIT = 20_000


@dataclass(frozen=True)
class Places:
    """Place phrases of every device, for one plan (each device's are cached in the vocabulary)."""

    phrases: Mapping[str, frozenset[frozenset[str]]]

    @classmethod
    def of(cls, devices: Iterable[Device], vocabulary: Vocabulary) -> Places:
        product_words = vocabulary.product_words
        cache = vocabulary.place_cache
        phrases: dict[str, frozenset[frozenset[str]]] = {}
        for device in devices:
            places = tuple(v for k, v in device.metadata.items() if k in PLACE_KEYS and isinstance(v, str))
            key = (device.device_id, places)
            found = cache.get(key)
            if found is None:
                texts = [device.device_id.replace("-", " ").replace("_", " "), *places]
                found = frozenset(
                    words for words in (
                        frozenset(w for w in words_of(text)
                                  if w not in product_words and w not in lexicon.EN_FILLER and not w.isdigit())
                        for text in texts
                    ) if words
                )
                if len(cache) > CACHE_LIMIT:
                    cache.clear()
                cache[key] = found
            phrases[device.device_id] = found
        return cls(MappingProxyType(phrases))

    @property
    def words(self) -> frozenset[str]:
        return frozenset(w for found in self.phrases.values() for phrase in found for w in phrase)


def find_mentions(clause: Clause, vocabulary: Vocabulary, places: Places) -> Mentions:
    nouns = _noun_words(clause.tokens)
    products = frozenset(
        p.product_id for p in vocabulary.products.values() if any(all(w in nouns for w in name) for name in p.names)
    )
    said = clause.words
    matched = {device_id: sum(1 for phrase in found if phrase <= said)
               for device_id, found in places.phrases.items()}
    return Mentions(
        device_ids=clause.device_ids,
        products=products,
        places=MappingProxyType({d: n for d, n in matched.items() if n}),
        pronoun=bool(said & lexicon.PRONOUNS),
        everything=bool(said & lexicon.ALL_WORDS),
    )


def _noun_words(tokens: tuple[Token, ...]) -> frozenset[str]:
    """The words of a part, without verbs that are also product names: "switch on the plug"
    switches; "is the switch on" asks about a switch."""
    nouns: set[str] = set()
    for index, token in enumerate(tokens):
        if token.kind not in ("word", "unit"):
            continue
        previous = tokens[index - 1].word if index > 0 else ""
        following = tokens[index + 1].word if index + 1 < len(tokens) else ""
        as_verb = token.surface == token.word and token.word in lexicon.COMMAND_VERBS and (
            index == 0 or following in lexicon.TRUE_WORDS | lexicon.FALSE_WORDS)
        if as_verb and previous not in lexicon.DETERMINERS:
            continue
        nouns.add(token.word)
    return frozenset(nouns)


def pool(mentions: Mentions, devices: list[Device]) -> list[Device] | None:
    """The devices a part names, or None when it names none (the caller falls back)."""
    if mentions.device_ids:
        named = set(mentions.device_ids)
        return [d for d in devices if d.device_id.lower() in named]
    if not mentions.products and not mentions.places:
        return None
    found = devices
    if mentions.products:
        found = [d for d in found if d.product_id in mentions.products]
    if mentions.places:
        best = max((mentions.places.get(d.device_id, 0) for d in found), default=0)
        # "the kitchen light" with no light in the kitchen: nothing, rather than any light.
        found = [d for d in found if mentions.places.get(d.device_id, 0) == best] if best else []
    return found


@dataclass(frozen=True)
class Chosen:
    devices: tuple[Device, ...]


@dataclass(frozen=True)
class Ambiguous:
    devices: tuple[Device, ...]


Choice = Chosen | Ambiguous | None


def choose(devices: list[Device], everything: bool, preferred: list[Device | None]) -> Choice:
    if not devices:
        return None
    ordered = tuple(sorted(devices, key=lambda d: d.device_id))
    if everything or len(ordered) == 1:
        return Chosen(ordered)
    by_id = {d.device_id: d for d in ordered}
    for device in preferred:
        if device is not None and device.device_id in by_id:
            return Chosen((by_id[device.device_id],))
    online = tuple(d for d in ordered if d.online)
    if len(online) == 1:
        return Chosen(online)
    return Ambiguous(online or ordered)
