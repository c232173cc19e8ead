"""Voice intent mapping (SPEC §1, §6; docs/voice-mapping.md): each product's `voice` section
turns speaker intents into its own commands and its telemetry into voice properties.

The shipped products are checked as shipped; conversions, relative intents, request errors and
every load-time rule are checked on small products built here with parse_spec."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from deviceagentd.core.catalog import Catalog, load_catalog
from deviceagentd.core.spec import ProductSpec, SpecError, SpecProblem, parse_spec
from deviceagentd.core.values import check_params
from deviceagentd.voiceplatform.errors import VoicePlatformError
from deviceagentd.voiceplatform.intents import CATALOGUE
from deviceagentd.voiceplatform.profile import (
    PlannedCommand,
    VoiceProfile,
    build_voice_profile,
    canonical_intent,
    load_voice_profiles,
)

PRODUCTS_DIR = Path(__file__).resolve().parents[1] / "etc" / "deviceagentd" / "products"


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return load_catalog(PRODUCTS_DIR)


@pytest.fixture(scope="module")
def profiles(catalog: Catalog) -> dict[str, VoiceProfile]:
    return load_voice_profiles(catalog)


def refused(profile: VoiceProfile, intent: str, value: Any, state: Mapping[str, Any] | None = None) -> tuple[int, str]:
    with pytest.raises(VoicePlatformError) as info:
        profile.plan(intent, value, state or {})
    return info.value.code, info.value.msg


def props(profile: VoiceProfile, state: Mapping[str, Any]) -> dict[str, Any]:
    answer = profile.query(state)
    names = [p["name"] for p in answer]
    assert len(names) == len(set(names)), answer
    return {p["name"]: p["value"] for p in answer}


# ----------------------------------------------------------------------------- shipped products


def test_every_shipped_product_has_a_voice_profile(profiles: dict[str, VoiceProfile]) -> None:
    assert {p: v.category for p, v in profiles.items()} == {
        "light": "light", "switch": "switch", "curtain": "curtain",
        "air_conditioner": "airConditioner", "thermostat": "thermostat",
    }
    assert profiles["light"].supported_intents() == [
        "TurnOn", "TurnOff", "SetBrightness", "IncrementBrightness", "DecrementBrightness",
        "SetColorTemperature", "IncrementColorTemperature", "DecrementColorTemperature", "SetColor"]
    assert profiles["switch"].supported_intents() == ["TurnOn", "TurnOff"]
    assert profiles["curtain"].supported_intents() == [
        "Open", "Close", "Pause", "SetPercentage", "IncrementPercentage", "DecrementPercentage"]
    assert profiles["air_conditioner"].supported_intents() == [
        "TurnOn", "TurnOff", "SetTemperature", "IncrementTemperature", "DecrementTemperature", "SetMode",
        "SetFanSpeed", "IncrementFanSpeed", "DecrementFanSpeed"]
    assert profiles["thermostat"].supported_intents() == [
        "SetTemperature", "IncrementTemperature", "DecrementTemperature", "SetMode"]


# Request values a speaker may send, per intent: the limits and something in between.
SET_VALUES: dict[str, list[Any]] = {
    "SetBrightness": [1, 37, 100, 99.6],
    "SetColorTemperature": [1, 50, 100],
    "SetColor": [{"h": 0, "s": 0, "v": 0}, {"h": 359.5, "s": 33, "v": 100}, {"h": 360, "s": 100, "v": 100}],
    "SetPercentage": [0, 45, 100],
    "SetMode": ["auto", "cool", "heat"],
    "SetFanSpeed": ["auto", "low", "mid", "high"],
}
TEMPERATURES = {"air_conditioner": [16, 22.5, 30], "thermostat": [5, 21.5, 35]}


def _every_intent(profiles: dict[str, VoiceProfile]) -> list[tuple[str, str, Any, dict[str, Any]]]:
    """(product, intent, value, state) covering every intent of every shipped product."""
    cases: list[tuple[str, str, Any, dict[str, Any]]] = []
    for product_id, profile in profiles.items():
        for intent in profile.supported_intents():
            if intent.startswith("Set"):
                values = TEMPERATURES[product_id] if intent == "SetTemperature" else SET_VALUES[intent]
                cases += [(product_id, intent, v, {}) for v in values]
            elif intent.startswith(("Increment", "Decrement")):
                # From the default, from each end of the range, and with a step from the request.
                prop = profile.intents[intent].property
                assert prop is not None
                field = prop.telemetry
                ends: list[Any]
                if field.enum is None:
                    ends = [field.min, field.max]
                    cases += [(product_id, intent, None, {})]
                else:
                    ends = ["low", "high"]  # the AC's default fan speed, auto, is off the scale (tested below)
                cases += [(product_id, intent, None, {field.name: end}) for end in ends]
                cases += [(product_id, intent, 2, {field.name: end}) for end in ends]
            else:
                cases.append((product_id, intent, None, {}))
    return cases


def test_every_intent_of_every_shipped_product_plans_params_the_spec_accepts(
        catalog: Catalog, profiles: dict[str, VoiceProfile]) -> None:
    cases = _every_intent(profiles)
    covered = {(product, intent) for product, intent, _, _ in cases}
    assert covered == {(p, i) for p, v in profiles.items() for i in v.supported_intents()}
    for product_id, intent, value, state in cases:
        planned = profiles[product_id].plan(intent, value, state)
        command = catalog.products[product_id].commands[planned.command]
        assert check_params(command, planned.params) == [], (product_id, intent, value, state, planned)
        # The Control answer reports what was set, under voice property names the product declares.
        assert set(planned.expected) <= set(profiles[product_id].properties), planned


def test_light_intents(profiles: dict[str, VoiceProfile]) -> None:
    light = profiles["light"]
    assert light.plan("TurnOn", None, {}) == PlannedCommand("turn_on", {}, {"powerstate": "on"})
    assert light.plan("TurnOff", None, {}) == PlannedCommand("turn_off", {}, {"powerstate": "off"})
    # An action ignores a value it does not need.
    assert light.plan("TurnOn", 5, {}) == PlannedCommand("turn_on", {}, {"powerstate": "on"})
    assert light.plan("SetBrightness", 25, {}) == PlannedCommand("set_brightness", {"brightness": 25},
                                                                 {"brightness": 25})
    assert light.plan("SetColor", {"h": 120, "s": 100, "v": 50}, {}) == PlannedCommand(
        "set_color", {"color": {"h": 120, "s": 100, "v": 50}}, {"color": {"h": 120, "s": 100, "v": 50}})


def test_curtain_intents(profiles: dict[str, VoiceProfile]) -> None:
    curtain = profiles["curtain"]
    assert curtain.plan("Open", None, {}) == PlannedCommand("open", {}, {"percentage": 100})
    assert curtain.plan("Close", None, {}) == PlannedCommand("close", {}, {"percentage": 0})
    assert curtain.plan("Pause", None, {}) == PlannedCommand("pause", {}, {})
    assert curtain.plan("SetPercentage", 30, {}) == PlannedCommand("set_position", {"position": 30},
                                                                   {"percentage": 30})
    assert curtain.plan("IncrementPercentage", None, {"position": 30}).params == {"position": 40}


def test_air_conditioner_and_thermostat_intents(profiles: dict[str, VoiceProfile]) -> None:
    ac, thermostat = profiles["air_conditioner"], profiles["thermostat"]
    assert ac.plan("TurnOff", None, {}) == PlannedCommand("turn_off", {}, {"powerstate": "off"})
    assert ac.plan("SetTemperature", 22, {}) == PlannedCommand(
        "set_target_temperature", {"target_temperature": 22}, {"temperature": 22})
    assert ac.plan("SetMode", "dry", {}) == PlannedCommand("set_mode", {"mode": "dry"}, {"mode": "dry"})
    assert ac.plan("SetFanSpeed", "mid", {}) == PlannedCommand("set_fan_speed", {"fan_speed": "medium"},
                                                               {"fanSpeed": "mid"})
    assert thermostat.plan("SetTemperature", 21.5, {}) == PlannedCommand(
        "set_target_temperature", {"target_temperature": 21.5}, {"temperature": 21.5})
    assert thermostat.plan("SetMode", "eco", {}).params == {"mode": "eco"}
    # The shipped thermostat has no fan, so it does not claim fan intents.
    assert refused(thermostat, "SetFanSpeed", "low")[0] == 2003


def test_query_in_voice_units(profiles: dict[str, VoiceProfile]) -> None:
    assert props(profiles["light"], {"power": True, "brightness": 40, "color_temperature": 6500,
                                     "color": {"h": 120, "s": 50, "v": 90}}) == {
        "powerstate": "on", "brightness": 40, "colorTemperature": 100, "color": {"h": 120, "s": 50, "v": 90}}
    assert props(profiles["air_conditioner"], {"power": False, "mode": "fan", "target_temperature": 24,
                                               "current_temperature": 27.3, "fan_speed": "medium"}) == {
        "powerstate": "off", "temperature": 24, "currentTemperature": 27.3, "mode": "fan", "fanSpeed": "mid"}
    # The seed thermostat's state: the room temperature is currentTemperature, the target is temperature.
    assert props(profiles["thermostat"], {"temperature": 28, "humidity": 62, "mode": "auto",
                                          "target_temperature": 22.0}) == {
        "temperature": 22, "currentTemperature": 28, "humidity": 62, "mode": "auto"}
    assert props(profiles["curtain"], {"position": 35, "motion": "opening"}) == {"percentage": 35}


def test_query_leaves_out_what_is_unknown_or_unreadable(profiles: dict[str, VoiceProfile]) -> None:
    light = profiles["light"]
    assert light.query({}) == []
    assert props(light, {"power": "yes", "brightness": None, "color": {"h": 1}, "color_temperature": 3000}) == {
        "colorTemperature": 9}
    assert props(profiles["air_conditioner"], {"fan_speed": "turbo", "mode": 3, "power": 1}) == {}
    # Declaration order, as the product file lists the properties.
    names = [p["name"] for p in light.query({"color": {"h": 0, "s": 0, "v": 0}, "power": False, "brightness": 1})]
    assert names == ["powerstate", "brightness", "color"]


# ----------------------------------------------------------------------------- conversions


def test_percent_and_kelvin_both_ways(profiles: dict[str, VoiceProfile]) -> None:
    light = profiles["light"]

    def kelvin(percent: Any) -> Any:
        return light.plan("SetColorTemperature", percent, {}).params["color_temperature"]

    # 1..100 % onto 2700..6500 K: 1 % is the warmest white, 100 % the coolest.
    assert kelvin(1) == 2700
    assert kelvin(100) == 6500
    assert kelvin(50) == 4581  # 2700 + 49/99 * 3800 = 4580.8
    assert kelvin(2) == 2738  # 2738.38 rounds down
    assert kelvin(99.5) == 6481  # fractional voice values are fine
    assert light.plan("SetColorTemperature", 50, {}).expected == {"colorTemperature": 50}

    def percent(k: int) -> Any:
        return props(light, {"color_temperature": k})["colorTemperature"]

    assert percent(2700) == 1
    assert percent(6500) == 100
    assert percent(4000) == 35  # 1 + 1300/3800 * 99 = 34.87
    assert percent(4581) == 50
    # A reading off the field's range is reported at the end of the voice scale, never as 0 % or 130 %.
    assert percent(2000) == 1
    assert percent(9000) == 100


GADGET: dict[str, Any] = {
    "name": "Gadget",
    "description": "A device with one of everything.",
    "commands": {
        "turn_on": {"description": "On."},
        "turn_off": {"description": "Off."},
        "set_power": {"parameters": {"power": {"type": "bool", "required": True}}},
        "set_level": {"parameters": {"level": {"type": "int", "min": 0, "max": 10, "required": True}}},
        "set_half": {"parameters": {"half": {"type": "int", "min": 0, "max": 1, "required": True}}},
        "set_narrow": {"parameters": {"level": {"type": "int", "min": 0, "max": 5, "required": True}}},
        "set_stepped": {"parameters": {"level": {"type": "int", "min": 0, "max": 10, "enum": [0, 5, 10],
                                                 "required": True}}},
        "set_mode": {"parameters": {"mode": {"type": "enum", "enum": ["eco", "normal", "boost"], "required": True}}},
        "set_color": {"parameters": {"color": {"type": "object", "required": True}}},
        "set_temp": {"parameters": {"temp": {"type": "float", "min": 5, "max": 35, "required": True}}},
        "set_whole_temp": {"parameters": {"temp": {"type": "int", "min": 5, "max": 35, "required": True}}},
        "set_count": {"parameters": {"count": {"type": "int", "required": True}}},
        "set_pair": {"parameters": {"level": {"type": "int", "min": 0, "max": 10, "required": True},
                                    "mode": {"type": "enum", "enum": ["eco", "normal", "boost"], "required": True}}},
        "set_level_fast": {"parameters": {"level": {"type": "int", "min": 0, "max": 10, "required": True},
                                          "fast": {"type": "bool"}}},
    },
    "telemetry": {
        "power": {"type": "bool", "defaultValue": False},
        "level": {"type": "int", "min": 0, "max": 10, "defaultValue": 5},
        "half": {"type": "int", "min": 0, "max": 1},
        "fixed": {"type": "int", "min": 3, "max": 3},
        "count": {"type": "int"},
        "mode": {"type": "enum", "enum": ["eco", "normal", "boost"], "defaultValue": "normal"},
        "color": {"type": "object"},
        "temp": {"type": "float", "min": 5, "max": 35},
        "label": {"type": "string"},
    },
    "voice": {
        "category": "gadget",
        "properties": {
            "powerstate": {"telemetry": "power", "values": {"on": True, "off": False}},
            "level": {"telemetry": "level", "range": [1, 100]},
            "half": {"telemetry": "half", "range": [0, 2]},
            "mode": {"telemetry": "mode", "values": {"eco": "eco", "normal": "normal", "turbo": "boost"}},
            "color": {"telemetry": "color", "hsv": {"h": 360, "s": 1000, "v": 1000}},
            "temperature": {"telemetry": "temp"},
            "count": {"telemetry": "count"},
        },
        "intents": {
            "TurnOn": {"command": "set_power", "property": "powerstate", "value": "on"},
            "TurnOff": {"command": "turn_off", "property": "powerstate", "value": "off"},
            "SetBrightness": {"command": "set_level", "property": "level"},
            "IncrementBrightness": {"command": "set_level", "property": "level", "step": 10},
            "DecrementBrightness": {"command": "set_level", "property": "level", "step": -10},
            "SetPercentage": {"command": "set_half", "property": "half"},
            "SetMode": {"command": "set_mode", "property": "mode"},
            "SetFanSpeed": {"command": "set_mode", "property": "mode"},
            "IncrementFanSpeed": {"command": "set_mode", "property": "mode", "step": 1},
            "DecrementFanSpeed": {"command": "set_mode", "property": "mode", "step": -1},
            "SetColor": {"command": "set_color", "property": "color"},
            "SetTemperature": {"command": "set_temp", "property": "temperature"},
            "IncrementTemperature": {"command": "set_temp", "property": "temperature", "step": 0.5},
            "DecrementTemperature": {"command": "set_temp", "property": "temperature", "step": -0.5},
            "SetColorTemperature": {"command": "set_count", "property": "count"},
            "IncrementColorTemperature": {"command": "set_count", "property": "count", "step": 1},
        },
    },
}


def gadget(voice: dict[str, Any] | None = None, **telemetry: dict[str, Any]) -> VoiceProfile:
    data = copy.deepcopy(GADGET)
    if voice is not None:
        data["voice"] = voice
    for name, field in telemetry.items():
        data["telemetry"][name].update(field)
    profile = build_voice_profile(parse_spec("gadget", data, "gadget.json"))
    assert profile is not None
    return profile


def test_the_test_gadget_is_valid_and_every_intent_plans() -> None:
    profile = gadget()
    spec = parse_spec("gadget", GADGET, "gadget.json")
    for intent in profile.supported_intents():
        mapping = profile.intents[intent]
        value = None
        if intent.startswith("Set"):
            assert mapping.property is not None
            value = mapping.property.conversion.limits()[-1] if mapping.property.conversion.limits() else 7
        planned = profile.plan(intent, value, {"count": 1, "temp": 20})
        assert check_params(spec.commands[planned.command], planned.params) == [], (intent, planned)


def test_rounding_is_half_up_both_ways() -> None:
    profile = gadget()
    # voice 0..2 onto device 0..1: 1 is device 0.5, which rounds up (Python's round() would say 0).
    assert profile.plan("SetPercentage", 1, {}).params == {"half": 1}
    assert profile.plan("SetPercentage", 0.9, {}).params == {"half": 0}
    assert profile.plan("SetPercentage", 2, {}).params == {"half": 1}
    assert props(profile, {"half": 1}) == {"half": 2}
    # device 0..10 onto voice 1..100: 5 is 50.5, up to 51.
    assert props(profile, {"level": 5}) == {"level": 51}
    assert props(profile, {"level": 0}) == {"level": 1}
    assert props(profile, {"level": 10}) == {"level": 100}
    # voice 1..100 onto 0..10: 100 -> 10, 1 -> 0, 50 -> 4.95 -> 5, 45 -> 4.44 -> 4.
    assert [profile.plan("SetBrightness", v, {}).params["level"] for v in (1, 45, 50, 100)] == [0, 4, 5, 10]
    # The Control answer reports what the device applied, back in voice units.
    assert profile.plan("SetBrightness", 45, {}).expected == {"level": 41}


def test_on_off_and_bool() -> None:
    profile = gadget()
    # TurnOn here goes through set_power, so the table's device value is sent.
    assert profile.plan("TurnOn", None, {}) == PlannedCommand("set_power", {"power": True}, {"powerstate": "on"})
    # TurnOff goes through a command without parameters: the value is only reported.
    assert profile.plan("TurnOff", None, {}) == PlannedCommand("turn_off", {}, {"powerstate": "off"})
    assert props(profile, {"power": True}) == {"powerstate": "on"}
    assert props(profile, {"power": False}) == {"powerstate": "off"}
    # 1 == True in Python; the table must not say 1 is "on".
    assert props(profile, {"power": 1}) == {}
    assert props(profile, {"power": 0}) == {}


def test_enum_tables_both_ways() -> None:
    profile = gadget()
    assert profile.plan("SetMode", "turbo", {}) == PlannedCommand("set_mode", {"mode": "boost"}, {"mode": "turbo"})
    assert profile.plan("SetMode", "eco", {}).params == {"mode": "eco"}
    assert props(profile, {"mode": "boost"}) == {"mode": "turbo"}
    assert props(profile, {"mode": "normal"}) == {"mode": "normal"}
    # A voice name is not a device value and a device value is not a voice name.
    assert refused(profile, "SetMode", "boost")[0] == 2008
    assert props(profile, {"mode": "sleep"}) == {}


def test_hsv_with_other_device_maxima() -> None:
    profile = gadget()
    assert profile.plan("SetColor", {"h": 120, "s": 50, "v": 75}, {}) == PlannedCommand(
        "set_color", {"color": {"h": 120, "s": 500, "v": 750}}, {"color": {"h": 120, "s": 50, "v": 75}})
    assert profile.plan("SetColor", {"h": 0.4, "s": 0.04, "v": 100}, {}).params == {"color": {"h": 0, "s": 0,
                                                                                              "v": 1000}}
    assert profile.plan("SetColor", {"h": 359.5, "s": 0.05, "v": 0}, {}).params == {"color": {"h": 360, "s": 1,
                                                                                               "v": 0}}
    # Device to voice: 5/1000 is 0.5 % and rounds up; values off the device scale are clamped.
    assert props(profile, {"color": {"h": 359, "s": 1000, "v": 5}}) == {"color": {"h": 359, "s": 100, "v": 1}}
    assert props(profile, {"color": {"h": 400, "s": 2000, "v": -3}}) == {"color": {"h": 360, "s": 100, "v": 0}}
    assert props(profile, {"color": {"h": 1, "s": 2}}) == {}
    assert props(profile, {"color": [1, 2, 3]}) == {}


def test_hsv_with_fractional_device_maxima() -> None:
    voice = copy.deepcopy(GADGET["voice"])
    voice["properties"]["color"]["hsv"] = {"h": 1.0, "s": 1.0, "v": 1.0}
    profile = gadget(voice)
    assert profile.plan("SetColor", {"h": 180, "s": 50, "v": 25}, {}).params == {"color": {"h": 0.5, "s": 0.5,
                                                                                         "v": 0.25}}
    assert props(profile, {"color": {"h": 0.25, "s": 1, "v": 0.333}}) == {"color": {"h": 90, "s": 100, "v": 33}}


def test_identity_degrees() -> None:
    profile = gadget()
    assert profile.plan("SetTemperature", 21.5, {}) == PlannedCommand("set_temp", {"temp": 21.5},
                                                                      {"temperature": 21.5})
    assert profile.plan("SetTemperature", 5, {}).params == {"temp": 5}
    assert props(profile, {"temp": 27.3}) == {"temperature": 27.3}
    assert props(profile, {"temp": 22.0}) == {"temperature": 22}
    assert isinstance(props(profile, {"temp": 22.0})["temperature"], int)
    # A reading is a reading, also outside the field's range.
    assert props(profile, {"temp": 61.5}) == {"temperature": 61.5}


def test_identity_on_a_whole_number_field_rounds_half_up(profiles: dict[str, VoiceProfile]) -> None:
    ac = profiles["air_conditioner"]
    assert ac.plan("SetTemperature", 22.5, {}) == PlannedCommand(
        "set_target_temperature", {"target_temperature": 23}, {"temperature": 23})
    assert ac.plan("SetTemperature", 22.4, {}).params == {"target_temperature": 22}
    assert ac.plan("SetTemperature", 30.0, {}).params == {"target_temperature": 30}


def test_identity_without_a_range_takes_any_number() -> None:
    profile = gadget()
    assert profile.plan("SetColorTemperature", -40, {}).params == {"count": -40}
    assert profile.plan("IncrementColorTemperature", 1000, {"count": 5}).params == {"count": 1005}


# ----------------------------------------------------------------------------- relative intents


def test_relative_steps_clamp_at_both_limits(profiles: dict[str, VoiceProfile]) -> None:
    light, ac, curtain = profiles["light"], profiles["air_conditioner"], profiles["curtain"]
    assert light.plan("IncrementBrightness", None, {"brightness": 50}).params == {"brightness": 60}
    assert light.plan("IncrementBrightness", None, {"brightness": 95}) == PlannedCommand(
        "set_brightness", {"brightness": 100}, {"brightness": 100})
    assert light.plan("IncrementBrightness", None, {"brightness": 100}).params == {"brightness": 100}
    assert light.plan("DecrementBrightness", None, {"brightness": 5}).params == {"brightness": 1}
    assert light.plan("DecrementBrightness", None, {"brightness": 1}).params == {"brightness": 1}
    assert ac.plan("DecrementTemperature", 5, {"target_temperature": 17}).params == {"target_temperature": 16}
    assert ac.plan("IncrementTemperature", None, {"target_temperature": 30}).params == {"target_temperature": 30}
    assert ac.plan("IncrementTemperature", None, {"target_temperature": 29}).params == {"target_temperature": 30}
    assert curtain.plan("DecrementPercentage", None, {"position": 4}).params == {"position": 0}
    assert curtain.plan("IncrementPercentage", None, {"position": 96}).params == {"position": 100}
    # A reading already past the limit comes back inside it.
    assert ac.plan("IncrementTemperature", None, {"target_temperature": 31}).params == {"target_temperature": 30}


def test_relative_steps_work_in_voice_units(profiles: dict[str, VoiceProfile]) -> None:
    light = profiles["light"]
    # 4000 K is 35 %; +10 % is 45 %, i.e. 2700 + 44/99 * 3800 = 4388.9 K.
    assert light.plan("IncrementColorTemperature", None, {"color_temperature": 4000}) == PlannedCommand(
        "set_color_temperature", {"color_temperature": 4389}, {"colorTemperature": 45})
    assert light.plan("DecrementColorTemperature", None, {"color_temperature": 2800}).params == {
        "color_temperature": 2700}
    assert light.plan("IncrementColorTemperature", None, {"color_temperature": 6400}).params == {
        "color_temperature": 6500}
    thermostat = profiles["thermostat"]
    assert thermostat.plan("DecrementTemperature", 0.5, {"target_temperature": 22}).params == {
        "target_temperature": 21.5}
    assert gadget().plan("IncrementTemperature", None, {"temp": 34.8}).params == {"temp": 35}


def test_a_request_value_overrides_the_step(profiles: dict[str, VoiceProfile]) -> None:
    light, ac = profiles["light"], profiles["air_conditioner"]
    assert light.plan("IncrementBrightness", 25, {"brightness": 50}).params == {"brightness": 75}
    assert light.plan("DecrementBrightness", 25, {"brightness": 50}).params == {"brightness": 25}
    assert light.plan("DecrementBrightness", 2.5, {"brightness": 50}).params == {"brightness": 48}
    assert ac.plan("DecrementTemperature", 3, {"target_temperature": 24}).params == {"target_temperature": 21}
    assert ac.plan("IncrementFanSpeed", 2, {"fan_speed": "low"}).params == {"fan_speed": "high"}


def test_stepping_through_an_enum_stops_at_its_ends(profiles: dict[str, VoiceProfile]) -> None:
    ac = profiles["air_conditioner"]

    def up(speed: str) -> Any:
        return ac.plan("IncrementFanSpeed", None, {"fan_speed": speed}).params["fan_speed"]

    def down(speed: str) -> Any:
        return ac.plan("DecrementFanSpeed", None, {"fan_speed": speed}).params["fan_speed"]

    assert [up("low"), up("medium"), up("high")] == ["medium", "high", "high"]
    assert [down("high"), down("medium"), down("low")] == ["medium", "low", "low"]
    assert ac.plan("IncrementFanSpeed", 5, {"fan_speed": "low"}).expected == {"fanSpeed": "high"}
    # "auto" is not on the low-mid-high scale (`order`): there is no "one faster than auto".
    code, msg = refused(ac, "IncrementFanSpeed", None, {"fan_speed": "auto"})
    assert code == 1103 and "auto" in msg and "low, mid, high" in msg
    assert refused(ac, "DecrementFanSpeed", None, {})[0] == 1103  # the default is auto too


def test_without_an_order_steps_follow_the_table() -> None:
    profile = gadget()  # mode: eco, normal, turbo (boost)
    assert profile.plan("IncrementFanSpeed", None, {"mode": "eco"}).params == {"mode": "normal"}
    assert profile.plan("IncrementFanSpeed", None, {"mode": "normal"}).params == {"mode": "boost"}
    assert profile.plan("IncrementFanSpeed", None, {"mode": "boost"}).params == {"mode": "boost"}
    assert profile.plan("DecrementFanSpeed", None, {"mode": "eco"}).params == {"mode": "eco"}
    assert profile.plan("DecrementFanSpeed", 2, {"mode": "boost"}).expected == {"mode": "eco"}


def test_without_a_current_value_the_spec_default_is_the_start(profiles: dict[str, VoiceProfile]) -> None:
    light, ac, curtain = profiles["light"], profiles["air_conditioner"], profiles["curtain"]
    assert light.plan("DecrementBrightness", None, {}).params == {"brightness": 90}  # default 100
    assert ac.plan("IncrementTemperature", None, {}).params == {"target_temperature": 25}  # default 24
    assert curtain.plan("IncrementPercentage", None, {}).params == {"position": 10}  # default 0
    assert gadget().plan("IncrementFanSpeed", None, {}).params == {"mode": "boost"}  # default normal
    # A state value of the wrong type is no current value either.
    assert light.plan("DecrementBrightness", None, {"brightness": "dim"}).params == {"brightness": 90}


def test_without_a_current_value_or_default_a_relative_intent_is_refused() -> None:
    profile = gadget()
    code, msg = refused(profile, "IncrementTemperature", None, {})
    assert code == 1103
    assert "current temperature is unknown" in msg and "temp" in msg
    assert refused(profile, "IncrementTemperature", None, {"temp": None})[0] == 1103
    assert refused(profile, "IncrementColorTemperature", None, {})[0] == 1103


# ----------------------------------------------------------------------------- request errors


def test_unknown_intent_is_2008(profiles: dict[str, VoiceProfile]) -> None:
    code, msg = refused(profiles["light"], "Fly", None)
    assert code == 2008 and '"Fly"' in msg
    assert refused(profiles["light"], "turnon", None)[0] == 2008  # names are case-sensitive, like Tuya's
    assert refused(profiles["light"], "", None)[0] == 2008
    assert refused(profiles["light"], "AdjustUp", None)[0] == 2008


def test_an_intent_the_product_does_not_declare_is_2003(profiles: dict[str, VoiceProfile]) -> None:
    code, msg = refused(profiles["light"], "Open", None)
    assert code == 2003 and "Open" in msg and "TurnOn" in msg
    assert refused(profiles["switch"], "SetBrightness", 50)[0] == 2003
    assert refused(profiles["curtain"], "AdjustUpBrightness", None)[0] == 2003  # an alias of a known intent


def test_a_set_intent_without_a_value_is_1100(profiles: dict[str, VoiceProfile]) -> None:
    code, msg = refused(profiles["light"], "SetBrightness", None)
    assert code == 1100 and "brightness 1..100" in msg
    assert refused(profiles["light"], "SetColor", None)[0] == 1100
    assert refused(profiles["air_conditioner"], "SetMode", None)[0] == 1100


@pytest.mark.parametrize(
    ("product", "intent", "value", "fragment"),
    [
        ("light", "SetBrightness", "50", 'brightness must be a number, got "50"'),
        ("light", "SetBrightness", True, "brightness must be a number, got true"),
        ("light", "SetBrightness", [50], "must be a number"),
        ("light", "SetColorTemperature", {"value": 50}, "must be a number"),
        ("air_conditioner", "SetMode", 3, "mode must be a name"),
        ("air_conditioner", "SetFanSpeed", True, "fanSpeed must be a name"),
        ("light", "SetColor", "red", "color must be an object with h, s and v"),
        ("light", "SetColor", {"h": 0, "s": 100}, "color must be an object with h, s and v"),
        ("light", "SetColor", {"h": 0, "s": 100, "v": 100, "w": 5}, "color must be an object with h, s and v"),
        ("light", "SetColor", {"h": 0, "s": "100", "v": 100}, 'color.s must be a number, got "100"'),
        ("light", "SetColor", {"h": False, "s": 100, "v": 100}, "color.h must be a number"),
        ("light", "IncrementBrightness", "ten", "takes an optional step size (a number)"),
        ("air_conditioner", "IncrementFanSpeed", True, "takes an optional step size"),
        ("thermostat", "SetTemperature", "22", "temperature must be a number"),
    ],
)
def test_a_value_of_the_wrong_type_is_1104(profiles: dict[str, VoiceProfile], product: str, intent: str,
                                           value: Any, fragment: str) -> None:
    code, msg = refused(profiles[product], intent, value, {"brightness": 50, "fan_speed": "low"})
    assert code == 1104, msg
    assert fragment in msg


@pytest.mark.parametrize(
    ("product", "intent", "value", "fragment"),
    [
        ("light", "SetBrightness", 250, "brightness must be 1..100, got 250"),
        ("light", "SetBrightness", 0, "brightness must be 1..100, got 0"),
        ("light", "SetColorTemperature", 100.5, "colorTemperature must be 1..100, got 100.5"),
        ("light", "SetColor", {"h": 400, "s": 100, "v": 100}, "color.h must be 0..360, got 400"),
        ("light", "SetColor", {"h": 10, "s": -1, "v": 100}, "color.s must be 0..100, got -1"),
        ("curtain", "SetPercentage", 101, "percentage must be 0..100, got 101"),
        ("air_conditioner", "SetTemperature", 31, "temperature must be 16..30, got 31"),
        ("air_conditioner", "SetTemperature", 15.9, "temperature must be 16..30, got 15.9"),
        ("thermostat", "SetTemperature", 4, "temperature must be 5..35, got 4"),
        ("light", "IncrementBrightness", -10, "must be greater than 0, got -10"),
        ("light", "DecrementBrightness", 0, "must be greater than 0, got 0"),
        ("air_conditioner", "IncrementFanSpeed", 1.5, "a whole number of steps, 1 or more, got 1.5"),
        ("air_conditioner", "DecrementFanSpeed", 0, "a whole number of steps"),
    ],
)
def test_a_value_out_of_range_is_1101(profiles: dict[str, VoiceProfile], product: str, intent: str, value: Any,
                                      fragment: str) -> None:
    code, msg = refused(profiles[product], intent, value, {"brightness": 50, "fan_speed": "low"})
    assert code == 1101, msg
    assert fragment in msg


def test_an_unknown_name_is_2008(profiles: dict[str, VoiceProfile]) -> None:
    code, msg = refused(profiles["air_conditioner"], "SetMode", "turbo")
    assert code == 2008 and 'mode must be one of cool, heat, auto, dry, fan, got "turbo"' in msg
    code, msg = refused(profiles["air_conditioner"], "SetFanSpeed", "medium")
    assert code == 2008 and "one of auto, low, mid, high" in msg
    assert refused(profiles["thermostat"], "SetMode", "dry")[0] == 2008


def test_a_value_between_the_checked_limits_that_the_command_refuses_is_1101() -> None:
    # set_stepped accepts only 0, 5 and 10: the load-time check tries the ends (0 and 10), the
    # request-time check catches what lies between.
    voice = copy.deepcopy(GADGET["voice"])
    voice["intents"]["SetBrightness"] = {"command": "set_stepped", "property": "level"}
    profile = gadget(voice)
    assert profile.plan("SetBrightness", 100, {}).params == {"level": 10}
    code, msg = refused(profile, "SetBrightness", 30)
    assert code == 1101 and "set_stepped refuses" in msg and "params.level must be one of 0, 5, 10" in msg


# ----------------------------------------------------------------------------- aliases


@pytest.mark.parametrize(
    ("alias", "canonical"),
    [
        ("TurnOn", "TurnOn"),
        ("AdjustUpBrightness", "IncrementBrightness"),
        ("AdjustDownBrightness", "DecrementBrightness"),
        ("AdjustUpColorTemperature", "IncrementColorTemperature"),
        ("AdjustDownPercentage", "DecrementPercentage"),
        ("AdjustUpTemperature", "IncrementTemperature"),
        ("AdjustDownFanSpeed", "DecrementFanSpeed"),
        ("Stop", "Pause"),
        ("SetWindSpeed", "SetFanSpeed"),
        ("AdjustUpWindSpeed", "IncrementFanSpeed"),
        ("DecrementWindSpeed", "DecrementFanSpeed"),
        ("Query", None),
        ("Discover", None),
        ("AdjustUpMode", None),
        ("Fly", None),
        ("stop", None),
    ],
)
def test_canonical_intent(alias: str, canonical: str | None) -> None:
    assert canonical_intent(alias) == canonical


def test_aliases_plan_like_their_canonical_intent(profiles: dict[str, VoiceProfile]) -> None:
    assert profiles["light"].plan("AdjustDownBrightness", None, {"brightness": 50}).params == {"brightness": 40}
    assert profiles["light"].plan("AdjustUpColorTemperature", 5, {"color_temperature": 2700}).expected == {
        "colorTemperature": 6}
    assert profiles["curtain"].plan("Stop", None, {}) == PlannedCommand("pause", {}, {})
    assert profiles["air_conditioner"].plan("SetWindSpeed", "high", {}).params == {"fan_speed": "high"}
    assert profiles["air_conditioner"].plan("AdjustUpWindSpeed", None, {"fan_speed": "low"}).params == {
        "fan_speed": "medium"}
    # Discovery lists only canonical names.
    for profile in profiles.values():
        assert all(name in CATALOGUE for name in profile.supported_intents())


# ----------------------------------------------------------------------------- load-time checks


def voice_problems(edit: Mapping[str, Any], product: dict[str, Any] | None = None) -> dict[str, str]:
    """The problems of GADGET with its voice section edited: {"a.b.c": value or DELETE}."""
    data = copy.deepcopy(product or GADGET)
    for dotted, value in edit.items():
        *parents, last = dotted.split(".")
        node = data
        for key in parents:
            node = node[key]
        if value is DELETE:
            del node[last]
        else:
            node[last] = value
    spec = parse_spec("gadget", data, "gadget.json")
    with pytest.raises(SpecError) as info:
        build_voice_profile(spec)
    for problem in info.value.problems:
        assert problem.source == "gadget.json"
    return {p.path: p.reason for p in info.value.problems}


DELETE = object()
PR = "voice.properties"
IN = "voice.intents"


@pytest.mark.parametrize(
    ("edit", "path", "fragment"),
    [
        # the section
        ({"voice.categories": "x"}, "$.voice.categories", "unknown key (allowed: category, properties, intents)"),
        ({"voice.category": DELETE}, "$.voice.category", "is required"),
        ({"voice.category": " "}, "$.voice.category", "is required"),
        ({"voice.category": 7}, "$.voice.category", "is required"),
        ({"voice.properties": []}, "$.voice.properties", "must be an object"),
        ({"voice.intents": DELETE}, "$.voice.intents", "is required"),
        ({"voice.intents": ["TurnOn"]}, "$.voice.intents", "must be an object"),
        ({"voice.intents": {}}, "$.voice.intents", "lists no intent"),
        # properties
        ({f"{PR}.x": "power"}, "$.voice.properties.x", "must be an object with at least telemetry"),
        ({f"{PR}.x": {"telemetry": "power", "values": {"on": True}, "scale": 2}}, "$.voice.properties.x.scale",
         "unknown key"),
        ({f"{PR}. x": {"telemetry": "level"}}, "$.voice.properties. x", "property names must be non-empty"),
        ({f"{PR}.x": {"range": [1, 100]}}, "$.voice.properties.x.telemetry", "is required"),
        ({f"{PR}.x": {"telemetry": "brightness"}}, "$.voice.properties.x.telemetry",
         "'brightness' is not a telemetry field of gadget (fields: power, level"),
        ({f"{PR}.x": {"telemetry": "level", "range": [1, 100], "values": {"a": 1}}}, "$.voice.properties.x",
         "at most one of range, values and hsv, not range and values"),
        ({f"{PR}.x": {"telemetry": "level", "order": ["a"]}}, "$.voice.properties.x.order", "only to a values table"),
        # range
        ({f"{PR}.level.range": [1]}, "$.voice.properties.level.range", "must be [low, high]"),
        ({f"{PR}.level.range": [100, 1]}, "$.voice.properties.level.range", "low < high"),
        ({f"{PR}.level.range": [5, 5]}, "$.voice.properties.level.range", "low < high"),
        ({f"{PR}.level.range": ["1", "100"]}, "$.voice.properties.level.range", "two whole numbers"),
        ({f"{PR}.level.range": [0.5, 100]}, "$.voice.properties.level.range", "two whole numbers"),
        ({f"{PR}.level.range": "1..100"}, "$.voice.properties.level.range", "must be [low, high]"),
        ({f"{PR}.count.range": [1, 100]}, "$.voice.properties.count.range",
         "telemetry count has no min and max"),
        ({f"{PR}.x": {"telemetry": "fixed", "range": [1, 100]}}, "$.voice.properties.x.range",
         "min = max (3): nothing to map onto"),
        ({"telemetry.count.min": 0, f"{PR}.count.range": [1, 100]}, "$.voice.properties.count.range",
         "telemetry count has only one of min and max"),
        # values
        ({f"{PR}.powerstate.values": {}}, "$.voice.properties.powerstate.values", "must be a non-empty object"),
        ({f"{PR}.powerstate.values": [True, False]}, "$.voice.properties.powerstate.values",
         "must be a non-empty object"),
        ({f"{PR}.powerstate.values": {"on": "yes", "off": False}}, "$.voice.properties.powerstate.values.on",
         '"yes" does not fit telemetry power: must be true or false'),
        ({f"{PR}.mode.values": {"eco": "eco", "max": "turbo"}}, "$.voice.properties.mode.values.max",
         '"turbo" does not fit telemetry mode: must be one of eco, normal, boost'),
        ({f"{PR}.x": {"telemetry": "level", "values": {"low": 1, "high": 11}}}, "$.voice.properties.x.values.high",
         "11 does not fit telemetry level: must be at most 10"),
        ({f"{PR}.powerstate.values": {"on": True, "off": False, "yes": True}},
         "$.voice.properties.powerstate.values.yes", "true is already the value of 'on'"),
        ({f"{PR}.powerstate.values": {"on": True, "": False}}, "$.voice.properties.powerstate.values.",
         "voice names must be non-empty"),
        ({f"{PR}.mode.order": ["eco", "fast"]}, "$.voice.properties.mode.order",
         "distinct voice names from values (eco, normal, turbo)"),
        ({f"{PR}.mode.order": ["eco", "eco"]}, "$.voice.properties.mode.order", "distinct voice names"),
        ({f"{PR}.mode.order": []}, "$.voice.properties.mode.order", "distinct voice names"),
        ({f"{PR}.mode.order": "eco,turbo"}, "$.voice.properties.mode.order", "distinct voice names"),
        # hsv
        ({f"{PR}.color.hsv": {"h": 360, "s": 100}}, "$.voice.properties.color.hsv", "must be an object {h, s, v}"),
        ({f"{PR}.color.hsv": {"h": 360, "s": 100, "v": 100, "w": 1}}, "$.voice.properties.color.hsv",
         "must be an object {h, s, v}"),
        ({f"{PR}.color.hsv": {"h": 360, "s": 0, "v": 100}}, "$.voice.properties.color.hsv.s",
         "must be a number greater than 0, got 0"),
        ({f"{PR}.color.hsv": {"h": "360", "s": 100, "v": 100}}, "$.voice.properties.color.hsv.h",
         "must be a number greater than 0"),
        ({f"{PR}.x": {"telemetry": "level", "hsv": {"h": 360, "s": 100, "v": 100}}}, "$.voice.properties.x.hsv",
         "a colour needs an object field, but telemetry level is int"),
        # no conversion where one is needed
        ({f"{PR}.x": {"telemetry": "power"}}, "$.voice.properties.x",
         "telemetry power is a bool field without a string enum: give values"),
        ({f"{PR}.x": {"telemetry": "color"}}, "$.voice.properties.x", "give values (a table of voice names) or hsv"),
        ({f"{PR}.x": {"telemetry": "label"}}, "$.voice.properties.x", "label is a string field without a string enum"),
        # intent names
        ({f"{IN}.Fly": {"command": "turn_on"}}, "$.voice.intents.Fly", "unknown intent (known: TurnOn, TurnOff"),
        ({f"{IN}.AdjustUpBrightness": {"command": "set_level", "property": "level", "step": 10}},
         "$.voice.intents.AdjustUpBrightness", "an alias of IncrementBrightness: write the canonical name"),
        ({f"{IN}.Stop": {"command": "turn_off"}}, "$.voice.intents.Stop", "an alias of Pause"),
        ({f"{IN}.Query": {"command": "turn_off"}}, "$.voice.intents.Query", "unknown intent"),
        # intent shape
        ({f"{IN}.Pause": "turn_off"}, "$.voice.intents.Pause", "must be an object with at least a command"),
        ({f"{IN}.Pause": {"command": "turn_off", "cmd": "x"}}, "$.voice.intents.Pause.cmd",
         "unknown key (allowed: command, property, param, params, step, value)"),
        ({f"{IN}.Pause": {}}, "$.voice.intents.Pause.command", "is required"),
        ({f"{IN}.Pause": {"command": "halt"}}, "$.voice.intents.Pause.command",
         "'halt' is not a command of gadget (commands: turn_on"),
        # property of an intent
        ({f"{IN}.SetBrightness.property": "brightness"}, "$.voice.intents.SetBrightness.property",
         '"brightness" is not a property of this voice section'),
        ({f"{IN}.SetBrightness.property": DELETE}, "$.voice.intents.SetBrightness.property",
         "is required: SetBrightness needs the voice property it changes"),
        ({f"{IN}.IncrementBrightness.property": DELETE}, "$.voice.intents.IncrementBrightness.property",
         "is required"),
        ({f"{IN}.SetColor.property": "level"}, "$.voice.intents.SetColor.property",
         "SetColor needs a property that is colour (hsv); level is number (range, or a number field)"),
        ({f"{IN}.SetMode.property": "level"}, "$.voice.intents.SetMode.property",
         "SetMode needs a property that is named (values, or an enum field)"),
        ({f"{IN}.SetBrightness.property": "mode"}, "$.voice.intents.SetBrightness.property",
         "SetBrightness needs a property that is number (range, or a number field); mode is named"),
        ({f"{IN}.SetFanSpeed.property": "color"}, "$.voice.intents.SetFanSpeed.property",
         "needs a property that is named (values, or an enum field) or number (range, or a number field)"),
        # step
        ({f"{IN}.IncrementBrightness.step": DELETE}, "$.voice.intents.IncrementBrightness.step",
         "is required: how far IncrementBrightness moves"),
        ({f"{IN}.IncrementBrightness.step": -10}, "$.voice.intents.IncrementBrightness.step",
         "must be a positive number for IncrementBrightness, got -10"),
        ({f"{IN}.DecrementBrightness.step": 10}, "$.voice.intents.DecrementBrightness.step",
         "must be a negative number for DecrementBrightness, got 10"),
        ({f"{IN}.DecrementBrightness.step": 0}, "$.voice.intents.DecrementBrightness.step", "must be a negative"),
        ({f"{IN}.IncrementBrightness.step": "10"}, "$.voice.intents.IncrementBrightness.step", "must be a positive"),
        ({f"{IN}.IncrementBrightness.step": True}, "$.voice.intents.IncrementBrightness.step", "must be a positive"),
        ({f"{IN}.IncrementFanSpeed.step": 1.5}, "$.voice.intents.IncrementFanSpeed.step",
         "the step counts names and must be a whole number, got 1.5"),
        ({f"{IN}.SetBrightness.step": 10}, "$.voice.intents.SetBrightness.step", "only relative intents"),
        ({f"{IN}.TurnOff.step": 1}, "$.voice.intents.TurnOff.step", "only relative intents"),
        # fixed value
        ({f"{IN}.SetBrightness.value": 50}, "$.voice.intents.SetBrightness.value",
         "SetBrightness takes its value from the request"),
        ({f"{IN}.TurnOff.value": DELETE}, "$.voice.intents.TurnOff.value",
         "is required with a property: the value of powerstate after TurnOff"),
        ({f"{IN}.TurnOff": {"command": "turn_off", "value": "off"}}, "$.voice.intents.TurnOff.value",
         "needs a property"),
        ({f"{IN}.TurnOff.value": "shut"}, "$.voice.intents.TurnOff.value", "powerstate must be one of on, off"),
        ({f"{IN}.TurnOff.value": False}, "$.voice.intents.TurnOff.value", "powerstate must be a name"),
        ({f"{IN}.Open": {"command": "set_half", "property": "half", "value": 3}}, "$.voice.intents.Open.value",
         "half must be 0..2, got 3"),
        # fixed params
        ({f"{IN}.Pause": {"command": "turn_off", "params": [1]}}, "$.voice.intents.Pause.params", "must be an object"),
        ({f"{IN}.Pause": {"command": "turn_off", "params": {"now": True}}}, "$.voice.intents.Pause.params.now",
         "is not a parameter of turn_off (parameters: none)"),
        ({f"{IN}.Pause": {"command": "set_level", "params": {"level": 11}}}, "$.voice.intents.Pause.params.level",
         "11 must be at most 10"),
        ({f"{IN}.Pause": {"command": "set_mode", "params": {"mode": "sleep"}}}, "$.voice.intents.Pause.params.mode",
         '"sleep" must be one of eco, normal, boost'),
        # which parameter receives the value
        ({f"{IN}.SetBrightness.param": "speed"}, "$.voice.intents.SetBrightness.param",
         '"speed" is not a parameter of set_level (parameters: level)'),
        ({f"{IN}.SetBrightness": {"command": "set_pair", "property": "level"}}, "$.voice.intents.SetBrightness.param",
         "set_pair has several parameters (level, mode): name the one that receives level"),
        ({f"{IN}.SetBrightness": {"command": "set_pair", "property": "level", "param": "level",
                                 "params": {"level": 3}}},
         "$.voice.intents.SetBrightness.param", "level is also given in params"),
        ({f"{IN}.Pause": {"command": "set_level", "param": "level"}}, "$.voice.intents.Pause.param",
         "needs a property"),
        ({f"{IN}.SetBrightness.command": "turn_on"}, "$.voice.intents.SetBrightness.command",
         "turn_on has no parameter to receive level: SetBrightness needs a command that takes one"),
        ({f"{IN}.SetBrightness": {"command": "set_pair", "property": "level", "param": "level"}},
         "$.voice.intents.SetBrightness.params", "set_pair requires mode: give it in params"),
        ({f"{IN}.Pause": {"command": "set_pair"}}, "$.voice.intents.Pause.params",
         "set_pair requires level, mode: give them in params"),
        # the parameter must take what the property gives
        ({f"{IN}.SetBrightness.command": "set_power"}, "$.voice.intents.SetBrightness.command",
         "set_power.power is bool but level reads the int field level"),
        ({f"{IN}.SetTemperature.command": "set_whole_temp"}, "$.voice.intents.SetTemperature.command",
         "set_whole_temp.temp is int but temperature reads the float field temp"),
        ({f"{IN}.SetColor.command": "set_level"}, "$.voice.intents.SetColor.command",
         "set_level.level is int, but a colour is an object"),
        ({f"{IN}.SetBrightness.command": "set_narrow"}, "$.voice.intents.SetBrightness.command",
         'level 100 becomes {"level": 10}, which set_narrow refuses: params.level must be at most 5'),
        ({f"{IN}.TurnOn": {"command": "set_power", "property": "mode", "value": "eco"}},
         "$.voice.intents.TurnOn.command", 'which set_power refuses: params.power must be true or false'),
        ({f"{IN}.SetMode.command": "set_level"}, "$.voice.intents.SetMode.command", "set_level refuses"),
        ({f"{IN}.SetMode": {"command": "set_pair", "property": "mode", "params": {"level": 3}}, "voice.properties.mode":
          {"telemetry": "mode", "values": {"eco": "eco", "normal": "normal"}}}, None, ""),
    ],
)
def test_each_voice_section_rule_names_the_json_path(edit: dict[str, Any], path: str | None, fragment: str) -> None:
    if path is None:  # a valid variation, to show the rule above is not over-eager
        data = copy.deepcopy(GADGET)
        for dotted, value in edit.items():
            *parents, last = dotted.split(".")
            node = data
            for key in parents:
                node = node[key]
            node[last] = value
        assert build_voice_profile(parse_spec("gadget", data, "gadget.json")) is not None
        return
    problems = voice_problems(edit)
    assert path in problems, problems
    assert fragment in problems[path], problems[path]


def test_a_voice_section_that_is_not_an_object_is_a_spec_problem() -> None:
    data = copy.deepcopy(GADGET)
    data["voice"] = ["light"]
    with pytest.raises(SpecError) as info:
        parse_spec("gadget", data, "gadget.json")
    assert [(p.path, p.reason) for p in info.value.problems] == [("$.voice", "must be an object")]


def test_a_product_without_a_voice_section_has_no_profile() -> None:
    data = copy.deepcopy(GADGET)
    del data["voice"]
    assert build_voice_profile(parse_spec("gadget", data, "gadget.json")) is None


def test_every_problem_of_a_section_is_reported_at_once() -> None:
    problems = voice_problems({
        "voice.category": DELETE,
        f"{PR}.level.range": [1],
        f"{IN}.Fly": {"command": "turn_on"},
        f"{IN}.IncrementTemperature.step": -1,
        f"{IN}.Pause": {"command": "halt"},
    })
    assert set(problems) == {
        "$.voice.category",
        "$.voice.properties.level.range",
        "$.voice.intents.Fly",
        "$.voice.intents.IncrementTemperature.step",
        "$.voice.intents.Pause.command",
    }


def test_an_intent_on_a_broken_property_repeats_nothing() -> None:
    # level's own problem is reported once; the intents using it add nothing.
    problems = voice_problems({f"{PR}.level.range": [1]})
    assert list(problems) == ["$.voice.properties.level.range"]


def test_load_voice_profiles_reports_every_product_at_once(catalog: Catalog) -> None:
    broken_light = copy.deepcopy(catalog.products["light"].voice) or {}
    broken_light["intents"]["SetBrightness"]["command"] = "dim"
    broken_ac = copy.deepcopy(catalog.products["air_conditioner"].voice) or {}
    broken_ac["properties"]["fanSpeed"]["values"]["mid"] = "middle"
    products: dict[str, ProductSpec] = dict(catalog.products)
    for product_id, voice in (("light", broken_light), ("air_conditioner", broken_ac)):
        spec = catalog.products[product_id]
        products[product_id] = ProductSpec(spec.product_id, spec.name, spec.description, spec.commands,
                                           spec.telemetry, spec.events, voice, spec.source)
    with pytest.raises(SpecError) as info:
        load_voice_profiles(Catalog(products))
    found = {(Path(p.source).name, p.path) for p in info.value.problems}
    assert found == {
        ("light.json", "$.voice.intents.SetBrightness.command"),
        ("air_conditioner.json", "$.voice.properties.fanSpeed.values.mid"),
    }
    assert all(isinstance(p, SpecProblem) and str(p).startswith(p.source) for p in info.value.problems)


def test_products_without_voice_are_left_out(catalog: Catalog) -> None:
    data = copy.deepcopy(GADGET)
    del data["voice"]
    products = {**catalog.products, "gadget": parse_spec("gadget", data, "gadget.json")}
    assert "gadget" not in load_voice_profiles(Catalog(products))
    assert set(load_voice_profiles(Catalog(products))) == set(catalog.products)
