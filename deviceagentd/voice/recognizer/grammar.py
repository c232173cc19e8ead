"""The site's grammar: every request the local intent engine understands, in the words this
site's products and devices use, as a JSGF grammar for the offline recogniser.

Nothing here names a product. The phrasings are the engine's generic ones (questions, on/off,
"set X to N", modes, relative changes, device lists and events; one request per utterance);
the words come from the DeviceSpecs (product, command, parameter and telemetry names, enum
values, ranges and units, the values a description ties to words such as "warm white"), from
the lexicon's synonyms (lamp for light, AC for air conditioner), and from the devices: their
names, places and the rooms file's names and aliases. A constrained grammar is what makes a
small acoustic model accurate, and what lets speech outside it be refused rather than forced
onto the nearest command.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Final

from deviceagentd.agent.local import lexicon
from deviceagentd.agent.local.vocabulary import CommandVocab, FieldVocab, ProductVocab, Vocabulary, canonical_unit
from deviceagentd.core.catalog import Catalog
from deviceagentd.core.spec import FieldSpec
from deviceagentd.voice.recognizer.fsg import WordAutomaton, compile_rules
from deviceagentd.voice.recognizer.numbers import MAX_SPOKEN, say_all, say_decimal, to_digits
from deviceagentd.voice.recognizer.site import DeviceNames

# At most this many spoken values per numeric parameter: a wide range is offered in round steps.
MAX_VALUES: Final = 120
STEPS: Final = (1, 2, 5, 10, 20, 25, 50, 100, 250, 500, 1000)
# Distinct device names and places per product in the grammar: each costs recogniser memory in
# every phrasing that names a device (see engine.py's log line when some are left out).
MAX_NAMES: Final = 30
MAX_PLACES: Final = 20
# Lexicon words used for one name ("lamp", "lamps" for light; not also "bulb", "lighting").
MAX_SYNONYMS: Final = 2
# Relative changes: "raise the temperature by two degrees".
SMALL_STEPS: Final = range(1, 11)
EVENT_HOURS: Final = (*range(1, 25), 48, 72)

# Generic phrasings (English). Words only; the site's words are added per product.
POLITE: Final = ("please", "can you", "could you", "would you", "can you please", "could you please",
                 "would you please", "i'd like to", "i want to", "hey", "okay")
ASK: Final = ("what is", "what's", "what are", "tell me", "check", "show me", "show")
SET_VERBS: Final = ("set", "change", "switch", "turn", "put", "move", "adjust", "make", "bring")
RAISE_VERBS: Final = ("raise", "increase", "lower", "decrease", "reduce")
ON_OFF_VERBS: Final = ("turn", "switch", "power")
QUALIFIERS: Final = ("current", "present")
EVENT_NOUNS: Final = ("alerts", "alert", "alarms", "warnings", "errors", "faults", "problems", "issues",
                      "events")
EVENT_TIMES: Final = ("today", "yesterday", "this week", "recently", "in the last hour")

_WORD: Final = re.compile(r"[a-z]+(?:'[a-z]+)?|\d+(?:\.\d+)?")


@dataclass(frozen=True)
class SiteGrammar:
    # The grammar as written (JSGF, for people and tests) and as the recogniser loads it.
    jsgf: str
    automaton: WordAutomaton
    # Every word the grammar can produce (each needs a pronunciation).
    words: frozenset[str]
    # The products and devices it was built from (for logs and check-config).
    products: int
    devices: int
    # Distinct device names and places beyond MAX_NAMES / MAX_PLACES of a product, not in it.
    names_left_out: int = 0

    @staticmethod
    def transcript(words: Sequence[str]) -> str:
        """What the recogniser heard, as text for the agent: numbers in digits."""
        return " ".join(to_digits([w for w in words if w]))


def build_grammar(catalog: Catalog, devices: Iterable[DeviceNames] = ()) -> SiteGrammar:
    vocabulary = Vocabulary.build(catalog)
    by_product: dict[str, list[DeviceNames]] = {}
    count = 0
    for device in devices:
        count += 1
        by_product.setdefault(device.product_id, []).append(device)
    rules = _Rules()
    parts = [_ProductRules(rules, product, by_product.get(product.product_id, ()))
             for product in vocabulary.products.values()]
    site = _SiteRefs.add(rules, parts)
    requests = [request for part in parts for request in part.requests(site)]
    requests.extend(_site_requests(rules, [n for part in parts for n in part.plural_names], site))
    left_out = sum(part.left_out for part in parts)
    request = rules.add("request", _alt(requests))
    rules.add("polite", _alt(POLITE))
    # One request per utterance: a second one joined by "and" made the grammar 2.5 times larger
    # (recogniser memory ~3 KB per word transition: 50 MB instead of 20 MB for the example site).
    top = f"[<polite>] {request} [please]"
    automaton = compile_rules(rules.rules, top)
    words = frozenset(w for arcs in automaton.arcs for w in arcs)
    return SiteGrammar(jsgf=rules.render(top), automaton=automaton, words=words,
                       products=len(vocabulary.products), devices=count, names_left_out=left_out)


# ---------------------------------------------------------------------------- JSGF helpers


@dataclass
class _Rules:
    rules: dict[str, str] = field(default_factory=dict)
    words: set[str] = field(default_factory=set)

    def add(self, name: str, expansion: str) -> str:
        name = _rule_name(name)
        if name in self.rules:
            raise ValueError(f"rule <{name}> defined twice")
        self.rules[name] = expansion
        self.words.update(w for w in re.split(r"[\s()\[\]|]+", _strip_refs(expansion)) if w)
        return f"<{name}>"

    def unique(self, name: str) -> str:
        base = _rule_name(name)
        candidate, n = base, 1
        while candidate in self.rules:
            n += 1
            candidate = f"{base}_{n}"
        return candidate

    def render(self, top: str) -> str:
        lines = ["#JSGF V1.0;", "grammar site;", f"public <utterance> = {top};"]
        lines += [f"<{name}> = {expansion};" for name, expansion in self.rules.items()]
        return "\n".join(lines) + "\n"


def _strip_refs(expansion: str) -> str:
    return re.sub(r"<[^>]*>", " ", expansion)


def _rule_name(name: str) -> str:
    return re.sub(r"[^a-z0-9_]", "_", name.lower())


def _alt(items: Iterable[str]) -> str:
    unique = [item for item in dict.fromkeys(items) if item]
    if not unique:
        raise ValueError("empty alternative")
    return unique[0] if len(unique) == 1 else "(" + " | ".join(unique) + ")"


def _opt(item: str) -> str:
    return f"[{item}]"


def spoken(text: str) -> str:
    """A name or value as words the recogniser can hear: lowercase, underscores and dashes as
    spaces, numbers as words ("level_2" → "level two")."""
    words: list[str] = []
    for token in _WORD.findall(text.lower().replace("_", " ")):
        if token[0].isdigit():
            number = float(token)
            if number.is_integer() and number <= MAX_SPOKEN:
                words.extend(say_all(int(number))[0])
            elif number <= MAX_SPOKEN:
                words.extend(say_decimal(number, 2))
            continue
        words.append(token)
    return " ".join(words)


def plural(phrase: str) -> str:
    head, _, last = phrase.rpartition(" ")
    if last.endswith("y") and last[-2:-1] not in "aeiou":
        last = last[:-1] + "ies"
    elif last.endswith(("s", "sh", "ch", "x")):
        last += "es"
    else:
        last += "s"
    return f"{head} {last}".strip()


def synonyms(phrase: str) -> list[str]:
    """The phrase and the lexicon's first (most common) words for it: "light" → lamp, lamps;
    "air conditioner" → ac, aircon. Every one more costs recognition accuracy and memory."""
    out = [phrase]
    for surface, canonical in lexicon.EN_WORDS.items():
        if canonical == phrase and surface.isalpha() and len(surface) > 1 and len(out) <= MAX_SYNONYMS:
            out.append(surface)
    return out


def _unit_words(spec: FieldSpec) -> list[str]:
    unit = canonical_unit(spec.unit)
    if unit is None:
        return []
    return [surface for surface, canonical in lexicon.EN_WORDS.items()
            if canonical == unit and surface.isalpha() and len(surface) > 3]


def number_phrases(spec: FieldSpec) -> list[str]:
    """The values of a numeric parameter as spoken: every one of a narrow range, round ones of a
    wide range, halves of a narrow float range."""
    low = 0.0 if spec.min is None else spec.min
    high = 100.0 if spec.max is None else spec.max
    low, high = max(0.0, low), min(float(MAX_SPOKEN), high)
    if high < low:
        return []
    step = next((s for s in STEPS if (high - low) / s <= MAX_VALUES), STEPS[-1])
    first = int(-(-low // step) * step)
    values: list[float] = [float(v) for v in range(first, int(high) + 1, step)]
    if spec.type == "float" and high - low <= 40:
        values += [v + 0.5 for v in range(int(low), int(high)) if low <= v + 0.5 <= high]
    phrases: list[str] = []
    for value in sorted(values):
        if value.is_integer():
            phrases.extend(" ".join(way) for way in say_all(int(value)))
        else:
            phrases.append(" ".join(say_decimal(value)))
    return phrases


# ---------------------------------------------------------------------------- per product


@dataclass(frozen=True)
class _SiteRefs:
    """Any device of the site, by any product's names and any place.

    Questions name their device with these, not with their own product's: "what is the humidity
    in the kitchen" then continues the same way whichever field was asked for, so the grammar
    keeps one copy of every device name and place for all questions instead of one per field
    (each copy is recogniser memory, ~1.6 KB per word transition, and device names and places
    were half the grammar of a 1,000-device site). The grammar then also allows "the humidity of
    the lamp": the agent answers that the lamp has none.
    """

    device: str
    in_place: str
    ref: str
    place: str | None

    @classmethod
    def add(cls, rules: _Rules, parts: Sequence[_ProductRules]) -> _SiteRefs:
        device = rules.add("any_device", _alt(part.device for part in parts))
        places = [part.place for part in parts if part.place]
        place = rules.add("any_place", _alt(places)) if places else None
        if place:
            in_place = rules.add("any_in", f"(in | of | on) ([the] {place} | {device})")
            ref = rules.add("any_ref", f"({device} [in [the] {place}] | it)")
        else:
            in_place = rules.add("any_in", f"(of | on) {device}")
            ref = rules.add("any_ref", f"({device} | it)")
        return cls(device, in_place, ref, place)


class _ProductRules:
    """The rules of one product: how its devices are named, what can be asked and commanded."""

    def __init__(self, rules: _Rules, product: ProductVocab, devices: Sequence[DeviceNames]) -> None:
        self.rules = rules
        self.product = product
        self.key = rules.unique(product.product_id)
        names = self._names()
        # Plurals of the product's own names ("lights"); the lexicon brings its own ("lamps").
        self.plural_names = [plural(name) for name in self._own_names() if not name.endswith("s")]
        places = list(dict.fromkeys(p for d in devices for p in (spoken(x) for x in d.places) if p))
        own = list(dict.fromkeys(n for d in devices for n in (spoken(x) for x in d.names) if n))
        self.left_out = max(0, len(places) - MAX_PLACES) + max(0, len(own) - MAX_NAMES)
        places, own = places[:MAX_PLACES], own[:MAX_NAMES]
        name = rules.add(f"{self.key}_name", _alt([*names, *self.plural_names, *own]))
        self.place = rules.add(f"{self.key}_place", _alt(places)) if places else None
        where = f"[{self.place}] " if self.place else ""
        self.device = rules.add(f"{self.key}_device", f"[the | all the] {where}{name}")
        in_place = f"(in | of | on) (the {self.place} | {self.device})" if self.place else f"(of | on) {self.device}"
        self.in_place = rules.add(f"{self.key}_in", in_place)
        self.ref = rules.add(f"{self.key}_ref", f"({self.device} [in the {self.place}] | it)" if self.place
                             else f"({self.device} | it)")
        # The rarer phrasings name the device by its product or "it" only: each template that
        # carries every device's name and place copies all of them (grammar size is recogniser
        # memory: about 3 KB per word transition).
        short = rules.add(f"{self.key}_short", _alt([*names, *self.plural_names]))
        self.short_device = f"[the] {short}"
        self.short_ref = f"([the] {short} | it)"
        fields = [*product.fields, *(p for c in product.commands for p in c.params)]
        self.fields = {f.name: f for f in fields}

    def _own_names(self) -> list[str]:
        names = [" ".join(words) for words in self.product.names]
        names += [spoken(text) for text in (self.product.spec.name, self.product.product_id)]
        return list(dict.fromkeys(n for n in names if n))

    def _names(self) -> list[str]:
        return list(dict.fromkeys(s for name in self._own_names() for s in synonyms(name)))

    def requests(self, site: _SiteRefs) -> list[str]:
        out = self._questions(site)
        for command in self.product.commands:
            out.extend(self._command(command))
        return out

    # ------------------------------------------------------------------ questions

    def _questions(self, site: _SiteRefs) -> list[str]:
        r, ref = self.rules, self.ref
        field_names = [n for f in self.fields.values() for n in _field_names(f)]
        if not field_names:
            return []
        fld = r.add(f"{self.key}_field", _alt(field_names))
        ask = _alt(ASK)
        out = [
            f"{ask} the [{_alt(QUALIFIERS)}] {fld} [{site.in_place}]",
            f"{ask} the {fld} and [the] {fld} [{site.in_place}]",
            f"{ask} {self.short_device} {fld}",
            f"{ask} the (state | status) of {site.device}",
            f"{fld} and [the] {fld} [(in | of | on) {self.short_ref}]",
            f"what {fld} is {site.ref} [in | set to | on]",
            f"what's {self.short_ref} set to",
        ]
        states = self._states()
        if states:
            out.append(f"(is | are) {ref} [still] {_alt(states)} [or {_alt(states)}]")
        adjectives = self._adjectives()
        if adjectives:
            place = f" | the {site.place}" if site.place else ""
            out.append(f"how {_alt(adjectives)} is (it{place} | {site.device}) [{site.in_place}]")
        for f in self.fields.values():
            words = f.spec.name.split("_")
            doing = _doing_words(words[-1]) if len(words) > 1 else []
            if doing:
                out.append(f"how much {spoken(words[0])} is {ref} {_alt(doing)}")
        return out

    def _states(self) -> list[str]:
        states: list[str] = []
        for f in self.fields.values():
            if f.spec.type == "bool":
                states += ["on", "off"]
            for value in f.spec.enum or ():
                states.append(spoken(str(value)))
        for command in self.product.commands:
            if not command.params:
                states += [_participle(k) for k in command.key_words if k not in ("on", "off")]
        # Words the lexicon reads as a field's name ("moving" for motion).
        for f in self.fields.values():
            states += [s for s in synonyms(f.spec.name) if s.endswith("ing") and s != f.spec.name]
        return list(dict.fromkeys(s for s in states if s))

    def _adjectives(self) -> list[str]:
        names = set(self.fields)
        out = [surface for surface, canonical in lexicon.EN_WORDS.items()
               if canonical in names and surface.isalpha() and not surface.endswith("ing")
               and surface not in names and len(surface) > 3]
        for (first, second), canonical in lexicon.EN_PAIRS.items():
            if first == "how" and any(w in names or any(w in n.split("_") for n in names)
                                      for w in canonical.split()[1:]):
                out.append(second)
        if any("position" in n for n in names):
            out.append("far open")
        return list(dict.fromkeys(out))

    # ------------------------------------------------------------------ commands

    def _command(self, command: CommandVocab) -> list[str]:
        if not command.params:
            return self._key_command(command)
        out: list[str] = []
        for param in command.params:
            out.extend(self._param_command(command, param))
        return out

    def _key_command(self, command: CommandVocab) -> list[str]:
        keys = set(command.key_words)
        for key in list(keys):
            keys |= lexicon.KEY_ALIASES.get(key, frozenset())
        out: list[str] = []
        ref, name = self.ref, self.device
        for key in sorted(keys & {"on", "off"}):
            verbs = _alt(ON_OFF_VERBS)
            out += [f"{verbs} {key} {ref}", f"{verbs} {ref} [back] {key}", f"{name} {key} [in [the] {self.place}]"
                    if self.place else f"{self.short_device} {key}"]
        others = sorted(keys - {"on", "off"})
        if others:
            verbs = _alt(s for key in others for s in _verb_synonyms(key))
            out += [f"{verbs} {ref} [fully | all the way]", verbs]
        return out

    def _param_command(self, command: CommandVocab, param: FieldVocab) -> list[str]:
        spec = param.spec
        if spec.type == "bool":
            return [f"{_alt(ON_OFF_VERBS)} (on | off) {self.ref}", f"{_alt(ON_OFF_VERBS)} {self.ref} (on | off)"]
        key = self.rules.unique(f"{self.key}_{spec.name}")
        pname = self.rules.add(f"{key}_name", _alt(_field_names(param)))
        ref, setv = self.ref, _alt(SET_VERBS)
        values: list[str] = []
        units = _unit_words(spec)
        unit = f" [{_alt(units)}]" if units else ""
        if spec.type in ("int", "float"):
            numbers = number_phrases(spec)
            if numbers:
                values.append(self.rules.add(f"{key}_number", _alt(numbers)) + unit)
        for value in spec.enum or ():
            if spec.type not in ("int", "float"):
                # The values themselves: the lexicon's words for them are verbs and adjectives
                # ("cut" for off) that only let noise in ("set the mode to cut mode").
                values.append(spoken(str(value)))
        values += [" ".join(phrase) for phrase, _ in param.anchors]
        if param.hsv:
            values += list(lexicon.COLOURS)
        if not values:
            return []
        value = self.rules.add(f"{key}_value", _alt(values))
        last = spoken(spec.name).split()[-1]
        short = self.short_ref
        # Every phrasing ends the same way after its value, so the grammar keeps one copy of the
        # values (a hundred numbers) per parameter instead of one per phrasing.
        tail = f"{value} [{last}]"
        out = [
            f"{setv} {ref} [{pname}] to {tail}",
            f"{setv} [the] {pname} [{self.in_place}] to {tail}",
            f"[the] {pname} [to] {tail}",
            f"(put | set | switch) {short} (in | into | on | to) {tail}",
            f"make {ref} {tail}",
            f"{value} {last}",
        ]
        if spec.type in ("int", "float"):
            small = _alt(" ".join(say_all(n)[0]) for n in SMALL_STEPS)
            out.append(f"{_alt(RAISE_VERBS)} [the] {pname} [(of | on) {short}] by {small}{unit}")
            if canonical_unit(spec.unit) == "%":
                out.append(f"({_alt(self._key_verbs())} | {setv}) {ref} (halfway | half way)")
            relative = [s for s, c in lexicon.EN_WORDS.items()
                        if c.split()[0] in param.name_words and s.isalpha() and c.split()[-1] in ("raise", "lower")]
            # Comparatives after "make it" ("brighter"), verbs before the device ("dim", "darken").
            comparatives = [w for w in relative if w.endswith("er")]
            verbs = [w for w in relative if not w.endswith("er")]
            if comparatives:
                out.append(f"make {short} [{small}{unit}] {_alt(comparatives)}")
            if verbs:
                out.append(f"{_alt(verbs)} {ref} [to {tail}]")
        return out

    def _key_verbs(self) -> list[str]:
        return [k for c in self.product.commands if not c.params for k in c.key_words if k not in ("on", "off")] or [
            "set"]


def _field_names(f: FieldVocab) -> list[str]:
    name = spoken(f.spec.name)
    out = _full_synonyms(name)
    words = name.split()
    if len(words) > 1:
        # "colour temperature": the lexicon's spelling of each word.
        for i, word in enumerate(words):
            for alt in _full_synonyms(word)[1:]:
                out.append(" ".join([*words[:i], alt, *words[i + 1:]]))
    return out


def _full_synonyms(name: str) -> list[str]:
    """Not the lexicon's truncations ("temp", "humid", "bright"): short, and easily heard in noise."""
    return [n for n in synonyms(name) if n == name or not name.startswith(n)]


def _doing_words(word: str) -> list[str]:
    return [s for s, c in lexicon.EN_WORDS.items() if c == word and s.endswith("ing")]


def _verb_synonyms(key: str) -> list[str]:
    return [key, *(s for s, c in lexicon.EN_WORDS.items() if key in c.split() and s.isalpha() and len(s) > 3
                   and c.split()[0] not in ("on", "off") and not s.endswith("ing"))]


def _participle(key: str) -> str:
    return {"open": "open", "close": "closed", "pause": "paused", "stop": "stopped"}.get(key, key)


# ---------------------------------------------------------------------------- the whole site


def _site_requests(rules: _Rules, plurals: Sequence[str], site: _SiteRefs) -> list[str]:
    things = _alt(["devices", "device", "things", *plurals])
    any_device = site.device
    hours = _alt(" ".join(say_all(h)[0]) for h in EVENT_HOURS)
    when = rules.add("when", _alt([*EVENT_TIMES, f"in the (last | past) {hours} (hours | hour)"]))
    events = rules.add("event_noun", _alt(EVENT_NOUNS))
    status = "(online | offline)"
    return [
        f"(which | what) {things} are {status} [right now]",
        f"how many {things} are {status}",
        f"(list | show me | show) [all | every] [the] {things}",
        f"(is | are) there any {events} [from {any_device}] [{when}]",
        f"(any | were there any | have there been any) {events} [from {any_device}] [{when}]",
        f"(show | list | show me) [the] (recent | latest) {events}",
        f"what happened [{when}]",
        f"(did | has) {any_device} (report | reported | had | have) any {events} [{when}]",
    ]
