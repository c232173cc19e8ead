"""Reading and checking a product's `voice` section (docs/voice-mapping.md).

Every problem is reported like a DeviceSpec problem (file, JSON path, reason) and all of them
at once, so an installer fixes the file in one go and the daemon never meets a mapping that
could send a command the product refuses.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from deviceagentd.core.spec import CommandSpec, FieldSpec, ProductSpec, SpecError, SpecProblem
from deviceagentd.core.values import check_params, check_value
from deviceagentd.voiceplatform.convert import (
    Conversion,
    HsvColor,
    LinearRange,
    NameTable,
    NumberIdentity,
    is_number,
    num,
    same_value,
    show,
)
from deviceagentd.voiceplatform.errors import VoicePlatformError
from deviceagentd.voiceplatform.intents import CATALOGUE, IntentInfo, IntentKind, PropertyKind, canonical_intent

VOICE_KEYS = ("category", "properties", "intents")
PROPERTY_KEYS = ("telemetry", "range", "values", "hsv", "order")
CONVERSION_KEYS = ("range", "values", "hsv")
INTENT_KEYS = ("command", "property", "param", "params", "step", "value")

_KIND_WORDS = {
    PropertyKind.NUMBER: "number (range, or a number field)",
    PropertyKind.NAMED: "named (values, or an enum field)",
    PropertyKind.COLOR: "colour (hsv)",
}


@dataclass(frozen=True)
class PropertyMap:
    name: str
    telemetry: FieldSpec
    conversion: Conversion


@dataclass(frozen=True)
class IntentMap:
    info: IntentInfo
    command: CommandSpec
    property: PropertyMap | None
    # The command parameter that receives the converted value; None: the value is only
    # reported in the Control answer (TurnOn via a parameterless turn_on).
    param: str | None
    params: Mapping[str, Any]
    step: float | None
    # An action's fixed voice value (TurnOn -> powerstate "on"); None for Set/relative intents.
    value: Any


@dataclass(frozen=True)
class VoiceSection:
    category: str
    properties: dict[str, PropertyMap]
    intents: dict[str, IntentMap]


@dataclass
class _Reader:
    spec: ProductSpec
    problems: list[SpecProblem] = field(default_factory=list)

    def fail(self, path: str, reason: str) -> None:
        self.problems.append(SpecProblem(self.spec.source or self.spec.product_id, path, reason))

    def only(self, raw: Mapping[str, Any], allowed: tuple[str, ...], path: str) -> None:
        for key in raw:
            if key not in allowed:
                self.fail(f"{path}.{key}", f"unknown key (allowed: {', '.join(allowed)})")

    # ------------------------------------------------------------------------- the section

    def section(self, raw: Mapping[str, Any]) -> VoiceSection:
        self.only(raw, VOICE_KEYS, "$.voice")
        category = raw.get("category")
        if not isinstance(category, str) or not category.strip():
            self.fail("$.voice.category", "is required: the voice category speakers know, "
                      "e.g. light, switch, socket, curtain, airConditioner, thermostat, fan")
            category = ""
        properties: dict[str, PropertyMap] = {}
        raw_properties = raw.get("properties", {})
        if not isinstance(raw_properties, dict):
            self.fail("$.voice.properties", "must be an object {voiceProperty: {telemetry, ...}}")
            raw_properties = {}
        # Every declared name, broken ones included, so an intent on a broken property is not
        # reported a second time as naming an unknown one.
        declared = set(raw_properties)
        for name, value in raw_properties.items():
            prop = self.property(name, value, f"$.voice.properties.{name}")
            if prop is not None:
                properties[name] = prop
        intents: dict[str, IntentMap] = {}
        raw_intents = raw.get("intents")
        if raw_intents is None:
            self.fail("$.voice.intents", "is required: the intents speakers may use, e.g. {\"TurnOn\": {...}}")
        elif not isinstance(raw_intents, dict):
            self.fail("$.voice.intents", "must be an object {Intent: {command, ...}}")
        elif not raw_intents:
            self.fail("$.voice.intents", "lists no intent: a voice device needs at least one")
        else:
            for name, value in raw_intents.items():
                intent = self.intent(name, value, f"$.voice.intents.{name}", properties, declared)
                if intent is not None:
                    intents[name] = intent
        return VoiceSection(category, properties, intents)

    # ------------------------------------------------------------------------- properties

    def property(self, name: str, raw: Any, path: str) -> PropertyMap | None:
        if not name or name != name.strip():
            self.fail(path, "property names must be non-empty, without spaces at the ends")
        if not isinstance(raw, dict):
            self.fail(path, "must be an object with at least telemetry")
            return None
        self.only(raw, PROPERTY_KEYS, path)
        telemetry = raw.get("telemetry")
        if not isinstance(telemetry, str) or not telemetry:
            self.fail(f"{path}.telemetry", "is required: the name of the telemetry field this property reads")
            return None
        spec_field = self.spec.telemetry.get(telemetry)
        if spec_field is None:
            known = ", ".join(self.spec.telemetry) or "none"
            self.fail(f"{path}.telemetry", f"{telemetry!r} is not a telemetry field of {self.spec.product_id} "
                      f"(fields: {known})")
            return None
        given = [key for key in CONVERSION_KEYS if key in raw]
        if len(given) > 1:
            self.fail(path, f"give at most one of range, values and hsv, not {' and '.join(given)}")
            return None
        if "order" in raw and given != ["values"]:
            self.fail(f"{path}.order", "applies only to a values table")
        conversion: Conversion | None
        if given == ["range"]:
            conversion = self.linear(raw["range"], spec_field, f"{path}.range")
        elif given == ["values"]:
            conversion = self.table(raw["values"], raw.get("order"), spec_field, path)
        elif given == ["hsv"]:
            conversion = self.hsv(raw["hsv"], spec_field, f"{path}.hsv")
        else:
            conversion = self.identity(spec_field, path)
        return None if conversion is None else PropertyMap(name, spec_field, conversion)

    def linear(self, raw: Any, spec_field: FieldSpec, path: str) -> Conversion | None:
        if (not isinstance(raw, list) or len(raw) != 2 or not all(is_number(x) and float(x).is_integer() for x in raw)
                or raw[0] >= raw[1]):
            self.fail(path, f"must be [low, high]: two whole numbers with low < high, got {show(raw)}")
            return None
        if spec_field.min is None or spec_field.max is None:
            has = "no min and max" if spec_field.min is None and spec_field.max is None else "only one of min and max"
            self.fail(path, f"maps onto the field's min..max, but telemetry {spec_field.name} has {has}")
            return None
        if spec_field.min >= spec_field.max:
            self.fail(path, f"telemetry {spec_field.name} has min = max ({num(spec_field.min)}): nothing to map onto")
            return None
        return LinearRange(int(raw[0]), int(raw[1]), spec_field.min, spec_field.max, spec_field.type == "int")

    def table(self, raw: Any, raw_order: Any, spec_field: FieldSpec, path: str) -> Conversion | None:
        if not isinstance(raw, dict) or not raw:
            self.fail(f"{path}.values", "must be a non-empty object {voiceName: deviceValue}")
            return None
        good = True
        names = list(raw)
        for index, (voice_name, device_value) in enumerate(raw.items()):
            where = f"{path}.values.{voice_name}"
            if not voice_name or voice_name != voice_name.strip():
                self.fail(where, "voice names must be non-empty, without spaces at the ends")
                good = False
            reason = check_value(spec_field, device_value)
            if reason is not None:
                self.fail(where, f"{show(device_value)} does not fit telemetry {spec_field.name}: {reason}")
                good = False
                continue
            twin = next((n for n in names[:index] if same_value(raw[n], device_value)), None)
            if twin is not None:
                self.fail(where, f"{show(device_value)} is already the value of {twin!r}: a query could not tell "
                          "them apart")
                good = False
        order: tuple[str, ...] = tuple(raw)
        if raw_order is not None:
            if (not isinstance(raw_order, list) or not raw_order
                    or not all(isinstance(n, str) and n in raw for n in raw_order)
                    or len(set(raw_order)) != len(raw_order)):
                self.fail(f"{path}.order", f"must be a list of distinct voice names from values ({', '.join(raw)}), "
                          f"got {show(raw_order)}")
                good = False
            else:
                order = tuple(raw_order)
        return NameTable(dict(raw), order) if good else None

    def hsv(self, raw: Any, spec_field: FieldSpec, path: str) -> Conversion | None:
        if not isinstance(raw, dict) or set(raw) != {"h", "s", "v"}:
            self.fail(path, f"must be an object {{h, s, v}} with the device's maximum of each, got {show(raw)}")
            return None
        good = True
        for key in ("h", "s", "v"):
            if not is_number(raw[key]) or raw[key] <= 0:
                self.fail(f"{path}.{key}", f"must be a number greater than 0, got {show(raw[key])}")
                good = False
        if spec_field.type != "object":
            self.fail(path, f"a colour needs an object field, but telemetry {spec_field.name} is {spec_field.type}")
            good = False
        return HsvColor(dict(raw)) if good else None

    def identity(self, spec_field: FieldSpec, path: str) -> Conversion | None:
        if spec_field.type in ("int", "float"):
            return NumberIdentity(spec_field.min, spec_field.max, spec_field.type == "int")
        if spec_field.enum is not None and all(isinstance(v, str) and v for v in spec_field.enum):
            names = tuple(str(v) for v in spec_field.enum)
            return NameTable({n: n for n in names}, names)
        self.fail(path, f"telemetry {spec_field.name} is a {spec_field.type} field without a string enum: give "
                  "values (a table of voice names) or hsv (a colour)")
        return None

    # ------------------------------------------------------------------------- intents

    def intent(self, name: str, raw: Any, path: str, properties: Mapping[str, PropertyMap],
               declared: set[str]) -> IntentMap | None:
        info = CATALOGUE.get(name)
        if info is None:
            canonical = canonical_intent(name)
            if canonical is not None:
                self.fail(path, f"{name} is an alias of {canonical}: write the canonical name (speakers may still "
                          "send the alias)")
            else:
                self.fail(path, f"unknown intent (known: {', '.join(CATALOGUE)})")
            return None
        if not isinstance(raw, dict):
            self.fail(path, "must be an object with at least a command")
            return None
        self.only(raw, INTENT_KEYS, path)
        command_name = raw.get("command")
        if not isinstance(command_name, str) or not command_name:
            self.fail(f"{path}.command", f"is required: the command {name} sends")
            return None
        command = self.spec.commands.get(command_name)
        if command is None:
            known = ", ".join(self.spec.commands) or "none"
            self.fail(f"{path}.command", f"{command_name!r} is not a command of {self.spec.product_id} "
                      f"(commands: {known})")
            return None
        before = len(self.problems)
        prop = self.intent_property(info, raw, path, properties, declared)
        if "property" in raw and prop is None:
            return None  # the rest would only repeat the property's problem
        step = self.intent_step(info, raw, path, prop)
        value = self.intent_value(info, raw, path, prop)
        params = self.intent_params(raw, path, command)
        param = self.intent_param(info, raw, path, command, prop, params)
        if len(self.problems) > before:
            return None
        intent = IntentMap(info, command, prop, param, params, step, value)
        self.dry_run(intent, path)
        return intent

    def intent_property(self, info: IntentInfo, raw: Mapping[str, Any], path: str,
                        properties: Mapping[str, PropertyMap], declared: set[str]) -> PropertyMap | None:
        name = raw.get("property")
        if name is None:
            if info.kind is not IntentKind.ACTION:
                self.fail(f"{path}.property", f"is required: {info.name} needs the voice property it changes")
            return None
        if not isinstance(name, str) or name not in declared:
            self.fail(f"{path}.property", f"{show(name)} is not a property of this voice section "
                      f"(properties: {', '.join(sorted(declared)) or 'none'})")
            return None
        prop = properties.get(name)
        if prop is None:
            return None  # its own problem is already reported
        if info.accepts and prop.conversion.kind not in info.accepts:
            wanted = " or ".join(_KIND_WORDS[k] for k in sorted(info.accepts, key=lambda k: k.value))
            self.fail(f"{path}.property", f"{info.name} needs a property that is {wanted}; {name} is "
                      f"{_KIND_WORDS[prop.conversion.kind]}")
        return prop

    def intent_step(self, info: IntentInfo, raw: Mapping[str, Any], path: str,
                    prop: PropertyMap | None) -> float | None:
        step = raw.get("step")
        if info.kind is not IntentKind.RELATIVE:
            if step is not None:
                self.fail(f"{path}.step", "only relative intents (Increment…/Decrement…) take a step")
            return None
        sign = "positive" if info.direction > 0 else "negative"
        if step is None:
            self.fail(f"{path}.step", f"is required: how far {info.name} moves when the speaker gives no value, "
                      f"in voice units ({sign}, e.g. {10 * info.direction})")
            return None
        if not is_number(step) or step * info.direction <= 0:
            self.fail(f"{path}.step", f"must be a {sign} number for {info.name}, got {show(step)}")
            return None
        if prop is not None and prop.conversion.kind is PropertyKind.NAMED and not float(step).is_integer():
            self.fail(f"{path}.step", f"{prop.name} steps through its names: the step counts names and must be "
                      f"a whole number, got {show(step)}")
            return None
        return float(step)

    def intent_value(self, info: IntentInfo, raw: Mapping[str, Any], path: str, prop: PropertyMap | None) -> Any:
        if "value" not in raw:
            if info.kind is IntentKind.ACTION and prop is not None:
                self.fail(f"{path}.value", f"is required with a property: the value of {prop.name} after "
                          f"{info.name} (e.g. {show(prop.conversion.limits()[-1])})")
            return None
        value = raw["value"]
        if info.kind is not IntentKind.ACTION:
            self.fail(f"{path}.value", f"{info.name} takes its value from the request; a fixed value is only for "
                      "TurnOn, TurnOff, Open, Close and Pause")
            return None
        if prop is None:
            self.fail(f"{path}.value", "needs a property: the value is that property's value after the intent")
            return None
        try:
            prop.conversion.to_device(value, prop.name)
        except VoicePlatformError as exc:
            self.fail(f"{path}.value", f"{exc.msg.split(': ', 1)[-1]}")
            return None
        return value

    def intent_params(self, raw: Mapping[str, Any], path: str, command: CommandSpec) -> dict[str, Any]:
        fixed = raw.get("params", {})
        if not isinstance(fixed, dict):
            self.fail(f"{path}.params", "must be an object {parameter: value}")
            return {}
        for key, value in fixed.items():
            spec_field = command.params.get(key)
            if spec_field is None:
                self.fail(f"{path}.params.{key}", f"is not a parameter of {command.name} "
                          f"(parameters: {', '.join(command.params) or 'none'})")
                continue
            reason = check_value(spec_field, value)
            if reason is not None:
                self.fail(f"{path}.params.{key}", f"{show(value)} {reason}")
        return dict(fixed)

    def intent_param(self, info: IntentInfo, raw: Mapping[str, Any], path: str, command: CommandSpec,
                     prop: PropertyMap | None, fixed: Mapping[str, Any]) -> str | None:
        param = raw.get("param")
        carries_value = prop is not None and (info.kind is not IntentKind.ACTION or "value" in raw)
        if param is not None:
            if not isinstance(param, str) or param not in command.params:
                self.fail(f"{path}.param", f"{show(param)} is not a parameter of {command.name} "
                          f"(parameters: {', '.join(command.params) or 'none'})")
                return None
            if param in fixed:
                self.fail(f"{path}.param", f"{param} is also given in params")
                return None
            if not carries_value:
                self.fail(f"{path}.param", "needs a property (and, for an action, a value): the parameter "
                          "receives the property's value")
                return None
            target: str | None = param
        elif not carries_value:
            target = None
        else:
            free = [p for p in command.params if p not in fixed]
            if len(free) > 1:
                self.fail(f"{path}.param", f"{command.name} has several parameters ({', '.join(free)}): name the one "
                          f"that receives {prop.name if prop else 'the value'}")
                return None
            if not free and info.kind is not IntentKind.ACTION:
                self.fail(f"{path}.command", f"{command.name} has no parameter to receive "
                          f"{prop.name if prop else 'the value'}: {info.name} needs a command that takes one")
                return None
            target = free[0] if free else None
        missing = [p for p, f in command.params.items() if f.required and p not in fixed and p != target]
        if missing:
            self.fail(f"{path}.params", f"{command.name} requires {', '.join(missing)}: give "
                      f"{'it' if len(missing) == 1 else 'them'} in params")
        if target is not None and prop is not None:
            self.param_fits(prop, command, target, f"{path}.param" if param is not None else f"{path}.command")
        return target

    def param_fits(self, prop: PropertyMap, command: CommandSpec, target: str, path: str) -> None:
        param = command.params[target]
        telemetry = prop.telemetry
        if prop.conversion.kind is PropertyKind.NUMBER and (
                param.type not in ("int", "float") or (param.type == "int" and telemetry.type == "float")):
            self.fail(path, f"{command.name}.{target} is {param.type} but {prop.name} reads the {telemetry.type} "
                      f"field {telemetry.name}")
        elif prop.conversion.kind is PropertyKind.COLOR and param.type != "object":
            self.fail(path, f"{command.name}.{target} is {param.type}, but a colour is an object")

    def dry_run(self, intent: IntentMap, path: str) -> None:
        """Plan the intent for the voice values at its limits: the command must accept each result."""
        prop = intent.property
        samples: list[Any] = [None]
        if prop is not None and intent.param is not None:
            samples = [intent.value] if intent.info.kind is IntentKind.ACTION else prop.conversion.limits()
        for sample in samples:
            params = dict(intent.params)
            if prop is not None and intent.param is not None and sample is not None:
                params[intent.param] = prop.conversion.to_device(sample, prop.name)
            errors = check_params(intent.command, params)
            if errors:
                said = "" if sample is None else f"{prop.name if prop else 'the value'} {show(sample)} becomes "
                detail = "; ".join(f"{e.field} {e.reason}" for e in errors)
                self.fail(f"{path}.command", f"{said}{show(params)}, which {intent.command.name} refuses: {detail}")
                return


def parse_voice_section(spec: ProductSpec) -> VoiceSection | None:
    """The product's checked voice section (None when it has none); SpecError lists every problem."""
    if spec.voice is None:
        return None
    reader = _Reader(spec)
    section = reader.section(spec.voice)
    if reader.problems:
        raise SpecError(reader.problems)
    return section

