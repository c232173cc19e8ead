"""plan(): a message → the tool calls the offline agent will make, and what it will say
without a tool. Pure: reads the registry, calls nothing. The provider runs the plan; tests and
the benchmark compare its calls with the expected ones.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from deviceagentd.agent.local import lexicon
from deviceagentd.agent.local.later import Later, find_later
from deviceagentd.agent.local.match import (
    CommandMatch,
    FieldMatch,
    asked_fields,
    match_command,
    match_field,
    read_only_field,
)
from deviceagentd.agent.local.parser import Clause, parse
from deviceagentd.agent.local.replies import Replies
from deviceagentd.agent.local.resolve import Ambiguous, Chosen, Mentions, Places, choose, find_mentions, pool
from deviceagentd.agent.local.schedule_replies import REMINDER_EN, REMINDER_ZH, ask_when, cannot_schedule
from deviceagentd.agent.local.steps import (
    Cancelling,
    Command,
    EventsQuery,
    Listing,
    Plan,
    Reading,
    Say,
    ScheduleListing,
    Scheduling,
    Step,
)
from deviceagentd.agent.local.text import language_of
from deviceagentd.agent.local.tour import tour, wants_tour
from deviceagentd.agent.local.values import apply_relative, plain, time_numbers
from deviceagentd.agent.local.vocabulary import ProductVocab, Vocabulary
from deviceagentd.agent.types import TurnContext
from deviceagentd.core.registry import Device, DeviceRegistry
from deviceagentd.core.spec import EVENT_TYPES, ProductSpec
from deviceagentd.core.values import check_value


def plan(utterance: str, context: TurnContext, registry: DeviceRegistry,
         vocabulary: Vocabulary | None = None, now: datetime | None = None) -> Plan:
    """What the offline agent would do for `utterance` in `context`, without doing it.

    `now`: the site's local time, for "tomorrow at 7" (default: the system's)."""
    vocabulary = vocabulary or Vocabulary.build(registry.catalog)
    later = find_later(utterance, now or datetime.now().astimezone())
    if later is not None:
        return _later(later, utterance, context, registry, vocabulary)
    return _plan_now(utterance, context, registry, vocabulary)


def _later(later: Later, utterance: str, context: TurnContext, registry: DeviceRegistry,
           vocabulary: Vocabulary) -> Plan:
    """A request about later: its commands (planned as if said now), alarm or reminder, as schedules."""
    language = language_of(utterance)
    replies = Replies(registry.catalog, language, context.device_id)
    if later.cancel is not None:
        return Plan(language, (Cancelling(later.cancel, later.cancel_all),))
    if later.listing:
        return Plan(language, (ScheduleListing(),))
    if later.when is None:
        return Plan(language, (Say(ask_when(replies, later.alarm)),))
    if later.alarm:
        return Plan(language, (Scheduling(later.when, {"type": "alarm", "language": language}),))
    if later.reminder is not None or later.timer or not later.rest:
        text = later.reminder or ("时间到了！" if language == "zh" else "Time's up!")
        if later.reminder is not None:
            text = (REMINDER_ZH if language == "zh" else REMINDER_EN) + text
        return Plan(language, (Scheduling(later.when, {"type": "say", "text": text, "language": language}),))
    now_plan = _plan_now(later.rest, context, registry, vocabulary)
    steps: list[Step] = []
    for step in now_plan.steps:
        if isinstance(step, Command):
            steps.append(Scheduling(later.when, {"type": "command", "deviceId": step.device_id,
                                                 "command": step.command, "params": dict(step.params)}))
        elif isinstance(step, Say):
            steps.append(step)
        else:
            steps.append(Say(cannot_schedule(replies)))
    return Plan(language, tuple(dict.fromkeys(steps)) if steps else (Say(cannot_schedule(replies)),))


def _plan_now(utterance: str, context: TurnContext, registry: DeviceRegistry, vocabulary: Vocabulary) -> Plan:
    language = language_of(utterance)
    replies = Replies(registry.catalog, language, context.device_id)
    if context.images:
        return Plan(language, (Say(replies.vision()),))
    devices, places = _site(registry, vocabulary)
    if wants_tour(utterance):
        return Plan(language, (Say(tour(replies, devices)),))
    parsed = parse(utterance, vocabulary, [d.device_id for d in devices], places.words)
    if parsed.vision:
        return Plan(language, (Say(replies.vision()),))
    planner = _Planner(vocabulary, replies, devices, places, context, registry)
    steps: list[Step] = []
    mentions = _shared_mentions([find_mentions(c, vocabulary, places) for c in parsed.clauses], parsed.clauses)
    for clause, mentioned in zip(parsed.clauses, mentions, strict=True):
        steps.extend(planner.clause(clause, mentioned))
    if all(isinstance(s, Say) and not s.understood for s in steps):
        # Nothing understood: one answer for the whole message, naming the unknown word if any.
        word = next((c.unknown for c in parsed.clauses if c.unknown is not None), None)
        steps = [Say(replies.unknown(utterance, word, planner.example_product()), understood=False)]
    return Plan(language, tuple(_merge_readings(steps)))


def _site(registry: DeviceRegistry, vocabulary: Vocabulary) -> tuple[list[Device], Places]:
    """The served devices, sorted, and their place index; rebuilt only when the registry's
    device set or metadata changed (turns are frequent, registrations rare)."""
    cached = vocabulary.site_cache.get("site")
    if cached is not None and cached[0] == registry.version:
        return cached[1], cached[2]
    devices = sorted((d for d in registry.devices() if d.product_id in vocabulary.products),
                     key=lambda d: d.device_id)
    places = Places.of(devices, vocabulary)
    vocabulary.site_cache["site"] = (registry.version, devices, places)
    return devices, places


@dataclass
class _Planner:
    vocabulary: Vocabulary
    replies: Replies
    devices: list[Device]
    places: Places
    context: TurnContext
    registry: DeviceRegistry
    # The device the previous part of this message was about ("… and set it to 30%").
    previous: Device | None = None

    # ------------------------------------------------------------------ parts

    def clause(self, clause: Clause, mentions: Mentions) -> list[Step]:
        if clause.unknown is not None:
            return [Say(self.replies.unknown(clause.text, clause.unknown, self.example_product()), understood=False)]
        if clause.kind == "list":
            return [self._listing(clause, mentions)]
        if clause.kind == "events":
            return self._events(clause, mentions)
        if clause.kind == "query":
            return self._query(clause, mentions)
        return self._command(clause, mentions)

    def _listing(self, clause: Clause, mentions: Mentions) -> Step:
        words = clause.words
        status = "online" if "online" in words else "offline" if "offline" in words else None
        product = next(iter(mentions.products)) if len(mentions.products) == 1 else None
        return Listing(product, status)

    def _events(self, clause: Clause, mentions: Mentions) -> list[Step]:
        device_id: str | None = None
        if mentions.explicit:
            found = pool(mentions, self.devices) or []
            choice = choose(found, False, [self.previous, self._session()])
            if choice is None:
                return [Say(self.replies.no_device(clause.text))]
            if isinstance(choice, Ambiguous):
                return [Say(self.replies.ambiguous(choice.devices))]
            device_id = choice.devices[0].device_id
        elif mentions.pronoun:
            target = self.previous or self._session()
            device_id = target.device_id if target is not None else None
        words = clause.words
        levels: set[str] = set()
        for word in words & lexicon.EVENT_WORDS.keys():
            levels.update(lexicon.EVENT_WORDS[word])
        ordered = tuple(level for level in EVENT_TYPES if level in levels) or None
        return [EventsQuery(device_id, _since_hours(clause), ordered)]

    def _query(self, clause: Clause, mentions: Mentions) -> list[Step]:
        found = pool(mentions, self.devices)
        if found is not None and not found:
            return [Say(self.replies.no_device(clause.text))]
        asked = asked_fields(clause, self.vocabulary)
        # "what is the status of …" wants everything, not the field whose description says "status".
        if "status" in clause.words and not asked:
            targets = found if found is not None else self._preferred(mentions)[:1]
            return self._readings(targets, {}, clause, mentions) if targets else [self.not_understood(clause.text)]
        whole = not asked and found is not None
        if found is None:
            for device in self._preferred(mentions):
                match = match_field(self._product(device), clause, self.vocabulary)
                if match is not None:
                    return self._readings([device], {device.product_id: match}, clause, mentions)
            candidates = self.devices
        else:
            candidates = found
        matches = self._best_fields(candidates, clause)
        if matches:
            chosen = [d for d in candidates if d.product_id in matches]
            return self._readings(chosen, matches, clause, mentions)
        if found is not None and asked:
            choice = choose(found, False, [self.previous, self._session()])
            if isinstance(choice, Chosen):
                return [Say(self.replies.does_not_report(choice.devices[0]))]
        if found is not None and whole:
            return self._readings(found, {}, clause, mentions)
        return [self.not_understood(clause.text)]

    def _readings(self, candidates: list[Device], matches: dict[str, FieldMatch], clause: Clause,
                  mentions: Mentions) -> list[Step]:
        choice = choose(candidates, mentions.everything, [self.previous, self._session()])
        if choice is None:
            return [Say(self.replies.no_device(clause.text))]
        if isinstance(choice, Ambiguous):
            return [Say(self.replies.ambiguous(choice.devices))]
        steps: list[Step] = []
        for device in choice.devices:
            match = matches.get(device.product_id)
            fields = (match.field.name,) if match is not None else ()
            expect = None
            if match is not None and match.field.spec.type == "bool":
                words = clause.words
                if words & lexicon.TRUE_WORDS and not words & lexicon.FALSE_WORDS:
                    expect = True
                elif words & lexicon.FALSE_WORDS and not words & lexicon.TRUE_WORDS:
                    expect = False
            steps.append(Reading(device.device_id, fields, expect))
        self._remember(choice.devices)
        return steps

    def _best_fields(self, candidates: list[Device], clause: Clause) -> dict[str, FieldMatch]:
        products = {d.product_id for d in candidates}
        found = {pid: m for pid in products
                 if (m := match_field(self.vocabulary.products[pid], clause, self.vocabulary)) is not None}
        if not found:
            return {}
        best = max(m.rank for m in found.values())
        return {pid: m for pid, m in found.items() if m.rank == best}

    def _command(self, clause: Clause, mentions: Mentions) -> list[Step]:
        found = pool(mentions, self.devices)
        if found is not None and not found:
            return [Say(self.replies.no_device(clause.text))]
        if found is None:
            # "turn off everything" is about every device, not the session's.
            preferred = [] if mentions.everything else self._preferred(mentions)
            for device in preferred:
                match = match_command(self._product(device), clause, self.vocabulary)
                if match is not None:
                    return self._commands([device], {device.product_id: match}, clause, mentions)
            candidates = self.devices
        else:
            candidates = found
        matches = self._best_commands(candidates, clause)
        if matches:
            chosen = [d for d in candidates if d.product_id in matches]
            return self._commands(chosen, matches, clause, mentions)
        return [self._cannot(clause, found, mentions)]

    def _best_commands(self, candidates: list[Device], clause: Clause) -> dict[str, CommandMatch]:
        products = {d.product_id for d in candidates}
        found = {pid: m for pid in products
                 if (m := match_command(self.vocabulary.products[pid], clause, self.vocabulary)) is not None}
        if not found:
            return {}
        best = max(m.rank for m in found.values())
        return {pid: m for pid, m in found.items() if m.rank == best}

    def _commands(self, candidates: list[Device], matches: dict[str, CommandMatch], clause: Clause,
                  mentions: Mentions) -> list[Step]:
        choice = choose(candidates, mentions.everything, [self.previous, self._session()])
        if choice is None:
            return [Say(self.replies.no_device(clause.text))]
        if isinstance(choice, Ambiguous):
            return [Say(self.replies.ambiguous(choice.devices))]
        steps = [self._command_step(device, matches[device.product_id]) for device in choice.devices]
        self._remember(choice.devices)
        return steps

    def _command_step(self, device: Device, match: CommandMatch) -> Step:
        params: dict[str, Any] = {}
        for binding in match.bindings:
            spec = binding.param.spec
            value = binding.value
            if binding.relative is not None:
                value = apply_relative(binding.param, binding.relative, device.state.get(spec.name))
                if value is None:
                    return Say(self.replies.no_current(device, spec))
            reason = check_value(spec, value)
            if reason is not None:
                return Say(self.replies.invalid_value(device, spec, value, reason))
            params[spec.name] = plain(value) if isinstance(value, float) else value
        return Command(device.device_id, match.command.name, params)

    def _cannot(self, clause: Clause, found: list[Device] | None, mentions: Mentions) -> Step:
        """Nothing can do this: say why, as precisely as we can."""
        targets = found if found is not None else self._preferred(mentions)
        for device in targets or self.devices:
            read_only = read_only_field(self._product(device), clause, self.vocabulary)
            if read_only is not None:
                return Say(self.replies.read_only(device, read_only.spec))
        if found:
            choice = choose(found, False, [self.previous, self._session()])
            if isinstance(choice, Chosen):
                return Say(self.replies.incapable(choice.devices[0]))
        return self.not_understood(clause.text)

    # ------------------------------------------------------------------ helpers

    def not_understood(self, text: str) -> Say:
        return Say(self.replies.unknown(text, None, self.example_product()), understood=False)

    def _preferred(self, mentions: Mentions) -> list[Device]:
        """Whom a part that names no device is about: the previous part's device, the session's,
        the one the conversation last touched ("it" prefers the latter over the session's)."""
        order = [self.previous, self._history_device(), self._session()] if mentions.pronoun else [
            self.previous, self._session(), self._history_device()]
        seen: set[str] = set()
        out: list[Device] = []
        for device in order:
            if device is not None and device.device_id not in seen:
                seen.add(device.device_id)
                out.append(device)
        return out

    def _session(self) -> Device | None:
        device_id = self.context.device_id
        return self._device(device_id) if device_id else None

    def _history_device(self) -> Device | None:
        for message in reversed(self.context.history):
            for call in reversed(message.tool_calls):
                device_id = call.arguments.get("device_id") if isinstance(call.arguments, dict) else None
                if isinstance(device_id, str):
                    return self._device(device_id)
        return None

    def _device(self, device_id: str) -> Device | None:
        return next((d for d in self.devices if d.device_id == device_id), None)

    def _product(self, device: Device) -> ProductVocab:
        return self.vocabulary.products[device.product_id]

    def _remember(self, devices: Iterable[Device]) -> None:
        chosen = list(devices)
        self.previous = chosen[0] if len(chosen) == 1 else None

    def example_product(self) -> ProductSpec | None:
        """The product the "I can …" examples are taken from: the session's, else one in use."""
        session = self._session()
        if session is not None:
            return self.registry.catalog.get(session.product_id)
        for device in self.devices:
            spec = self.registry.catalog.get(device.product_id)
            if spec is not None and any(
                    p.type in ("int", "float") for c in spec.commands.values() for p in c.params.values()):
                return spec
        return next(iter(self.registry.catalog.products.values()), None)


def _shared_mentions(mentions: list[Mentions], clauses: tuple[Clause, ...]) -> list[Mentions]:
    """"What's the temperature and the humidity in the living room": the room named in the
    last part is meant for the part before it too, when that part names no device."""
    shared = list(mentions)
    for index in range(len(shared) - 2, -1, -1):
        following, clause = clauses[index + 1], clauses[index]
        if (following.elliptical and following.kind == clause.kind and shared[index + 1].explicit
                and not shared[index].explicit):
            shared[index] = shared[index + 1]
    return shared


def _since_hours(clause: Clause) -> int | float | None:
    timed = time_numbers(clause.tokens)
    if timed:
        number = timed[0]
        factor = {"h": 1, "day": 24, "week": 168}[number.unit or "h"]
        return plain(number.value * factor)
    words = clause.words
    if "today" in words:
        return 24
    if "yesterday" in words:
        return 48
    if "week" in words:
        return 168
    if "h" in words:
        return 1
    if "day" in words:
        return 24
    return None


def _merge_readings(steps: list[Step]) -> list[Step]:
    """One get_device_state per device: "temperature and humidity" reads the thermostat once."""
    merged: list[Step] = []
    index: dict[str, int] = {}
    for step in steps:
        if isinstance(step, Reading) and step.device_id in index:
            earlier = merged[index[step.device_id]]
            assert isinstance(earlier, Reading)
            fields = () if not earlier.fields or not step.fields else tuple(
                dict.fromkeys(earlier.fields + step.fields))
            merged[index[step.device_id]] = Reading(step.device_id, fields, earlier.expect)
            continue
        if isinstance(step, Reading):
            index[step.device_id] = len(merged)
        merged.append(step)
    return merged
