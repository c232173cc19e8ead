"""A product as voice speakers see it: its category, the intents it supports, and how each
intent becomes one of its commands (docs/voice-mapping.md).

Built from the product file's `voice` section, so a new product needs a JSON file and no
Python (SPEC §1, §6).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from deviceagentd.core.catalog import Catalog
from deviceagentd.core.spec import ProductSpec, SpecError, SpecProblem
from deviceagentd.core.values import check_params
from deviceagentd.voiceplatform import errors as codes
from deviceagentd.voiceplatform.convert import is_number, show
from deviceagentd.voiceplatform.errors import VoicePlatformError
from deviceagentd.voiceplatform.intents import IntentKind, PropertyKind
from deviceagentd.voiceplatform.intents import canonical_intent as canonical_intent
from deviceagentd.voiceplatform.voicespec import IntentMap, PropertyMap, parse_voice_section

__all__ = ["PlannedCommand", "VoiceProfile", "build_voice_profile", "canonical_intent", "load_voice_profiles"]


@dataclass(frozen=True)
class PlannedCommand:
    command: str
    params: dict[str, Any]
    # voice property -> voice value once the device applied the command (for the Control answer)
    expected: dict[str, Any]


@dataclass(frozen=True)
class VoiceProfile:
    product_id: str
    category: str
    properties: Mapping[str, PropertyMap]
    intents: Mapping[str, IntentMap]

    def supported_intents(self) -> list[str]:
        """Canonical control intents in the order of the product file (the service adds Query)."""
        return list(self.intents)

    def query(self, state: Mapping[str, Any]) -> list[dict[str, Any]]:
        """The voice properties the state knows, in voice units; unknown or unreadable ones are left out."""
        out: list[dict[str, Any]] = []
        for prop in self.properties.values():
            if prop.telemetry.name not in state:
                continue
            value = prop.conversion.to_voice(state[prop.telemetry.name])
            if value is not None:
                out.append({"name": prop.name, "value": value})
        return out

    def plan(self, intent: str, value: Any, state: Mapping[str, Any]) -> PlannedCommand:
        """The command (with params in device units) that carries out `intent` with the request's `value`.

        `state` is the device's current telemetry, used by relative intents. Raises
        VoicePlatformError with the voice platform's code and the specifics in the message.
        """
        canonical = canonical_intent(intent) if isinstance(intent, str) else None
        if canonical is None:
            raise VoicePlatformError(codes.COMMAND_OR_VALUE_NOT_SUPPORT, f"unknown intent {show(intent)}")
        mapping = self.intents.get(canonical)
        if mapping is None:
            raise VoicePlatformError(codes.FUNCTION_NOT_SUPPORT,
                                     f"{canonical} is not supported by this {self.category} ({self.product_id}); "
                                     f"it supports {', '.join(self.supported_intents())}")
        prop = mapping.property
        voice: Any = None
        if mapping.info.kind is IntentKind.ACTION:
            voice = mapping.value  # a request value for TurnOn/Open/... means nothing and is ignored
        elif prop is not None and mapping.info.kind is IntentKind.SET:
            if value is None:
                raise VoicePlatformError(codes.PARAM_EMPTY,
                                         f"{canonical} needs a value: {prop.name} {prop.conversion.describe()}")
            voice = value
        elif prop is not None:
            voice = self._moved(mapping, prop, value, state)
        params = dict(mapping.params)
        expected: dict[str, Any] = {}
        if prop is not None and voice is not None:
            device_value = prop.conversion.to_device(voice, prop.name)
            if mapping.param is not None:
                params[mapping.param] = device_value
            expected[prop.name] = prop.conversion.to_voice(device_value)
        # The load-time check covers the limits; this catches anything between them (an enum
        # hole, a narrower parameter range) before a device sees it.
        errors = check_params(mapping.command, params)
        if errors:
            detail = "; ".join(f"{e.field} {e.reason}" for e in errors)
            raise VoicePlatformError(codes.PARAM_RANGE_INVALID,
                                     f"{mapping.command.name} refuses {show(params)}: {detail}")
        return PlannedCommand(mapping.command.name, params, expected)

    def _moved(self, mapping: IntentMap, prop: PropertyMap, value: Any, state: Mapping[str, Any]) -> Any:
        """The voice value a relative intent moves to: current ± step, clamped at the limits."""
        conversion = prop.conversion
        named = conversion.kind is PropertyKind.NAMED
        if value is None:
            size = abs(mapping.step or 0)
        elif not is_number(value):
            raise VoicePlatformError(codes.TYPE_INCORRECT,
                                     f"{mapping.info.name} takes an optional step size (a number), got {show(value)}")
        elif value <= 0 or (named and not float(value).is_integer()):
            what = "a whole number of steps, 1 or more" if named else "greater than 0"
            raise VoicePlatformError(codes.PARAM_RANGE_INVALID,
                                     f"the step of {mapping.info.name} must be {what}, got {show(value)}")
        else:
            size = value
        telemetry = prop.telemetry
        current = conversion.to_voice(state[telemetry.name]) if telemetry.name in state else None
        if current is None and telemetry.default is not None:
            # The device has not said yet; the product file's default is its documented start.
            current = conversion.to_voice(telemetry.default)
        if current is None:
            raise VoicePlatformError(codes.COMMAND_ISSUE_ERROR,
                                     f"the current {prop.name} is unknown (the device has not reported "
                                     f"{telemetry.name} and the product file gives no defaultValue), so "
                                     f"{mapping.info.name} has nothing to start from")
        return conversion.shift(current, size * mapping.info.direction, prop.name)


def build_voice_profile(spec: ProductSpec) -> VoiceProfile | None:
    """The profile of one product (None without a voice section); SpecError lists every problem."""
    section = parse_voice_section(spec)
    if section is None:
        return None
    return VoiceProfile(spec.product_id, section.category, section.properties, section.intents)


def load_voice_profiles(catalog: Catalog) -> dict[str, VoiceProfile]:
    """product_id -> profile for every product with a voice section; SpecError lists the problems of all."""
    problems: list[SpecProblem] = []
    profiles: dict[str, VoiceProfile] = {}
    for product_id, spec in catalog.products.items():
        try:
            profile = build_voice_profile(spec)
        except SpecError as exc:
            problems.extend(exc.problems)
            continue
        if profile is not None:
            profiles[product_id] = profile
    if problems:
        raise SpecError(problems)
    return profiles
