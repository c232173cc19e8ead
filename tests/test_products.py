"""The example products in etc/deviceagentd/products: they load, and the thermostat is the one
of the seed document (shared/seeds/000_*.txt, the API reference's payload examples)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from deviceagentd.core.catalog import load_catalog
from deviceagentd.core.spec import FieldSpec, ProductSpec
from deviceagentd.core.values import check_params, check_value

PRODUCTS_DIR = Path(__file__).resolve().parents[1] / "etc" / "deviceagentd" / "products"
EXAMPLE_PRODUCTS = {"thermostat", "light", "curtain", "air_conditioner", "switch"}

# The seed's payload examples, copied verbatim.
SEED_ONLINE_STATE = {"temperature": 28, "humidity": 62, "mode": "auto"}
SEED_COMMAND: dict[str, Any] = {
    "cmd": "set_target_temperature",
    "params": {"target_temperature": 24},
    "requestId": "req-001",
    "ts": 1710000010000,
}
SEED_EVENT_DATA: dict[str, Any] = {"event": "temperature_alert", "temperature": 38.5, "level": "warning"}


@pytest.fixture(scope="module")
def products() -> dict[str, ProductSpec]:
    return load_catalog(PRODUCTS_DIR).products


@pytest.fixture(scope="module")
def thermostat(products: dict[str, ProductSpec]) -> ProductSpec:
    return products["thermostat"]


def test_every_product_file_loads_and_the_examples_are_there(products: dict[str, ProductSpec]) -> None:
    assert set(products) >= EXAMPLE_PRODUCTS
    for path in PRODUCTS_DIR.glob("*.json"):
        assert products[path.stem].source == str(path)


def test_thermostat_reports_the_seed_state_with_matching_types_and_defaults(thermostat: ProductSpec) -> None:
    for name, value in SEED_ONLINE_STATE.items():
        field = thermostat.telemetry[name]
        assert check_value(field, value) is None, name
        # A simulated thermostat starts like the seed's example device.
        assert field.default == value, name
    assert {"auto", "cool", "heat"} <= set(thermostat.telemetry["mode"].enum or ())
    assert thermostat.telemetry["temperature"].type == "float"
    assert thermostat.telemetry["temperature"].unit == "°C"
    assert "target_temperature" in thermostat.telemetry


def test_thermostat_command_is_the_seed_command(thermostat: ProductSpec) -> None:
    command = thermostat.commands[SEED_COMMAND["cmd"]]
    param = command.params["target_temperature"]
    assert (param.type, param.required, param.unit) == ("float", True, "°C")
    assert param.min is not None and param.max is not None and param.min <= 24 <= param.max
    assert check_params(command, SEED_COMMAND["params"]) == []
    assert "set_mode" in thermostat.commands


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"target_temperature": 99}, "params.target_temperature"),
        ({"target_temperature": "warm"}, "params.target_temperature"),
        ({}, "params.target_temperature"),
        ({"target_temperature": 24, "fan": True}, "params.fan"),
    ],
)
def test_bad_thermostat_params_fail(thermostat: ProductSpec, params: dict[str, object], field: str) -> None:
    errors = check_params(thermostat.commands["set_target_temperature"], params)
    assert [e.field for e in errors] == [field]


def test_thermostat_event_is_the_seed_event(thermostat: ProductSpec) -> None:
    event = thermostat.events[SEED_EVENT_DATA["event"]]
    assert event.event_type == SEED_EVENT_DATA["level"]
    assert check_value(event.output["temperature"], SEED_EVENT_DATA["temperature"]) is None


def _all_described(spec: ProductSpec) -> list[tuple[str, str]]:
    items: list[tuple[str, str]] = [(f"{spec.product_id}", spec.description)]

    def fields(prefix: str, specs: dict[str, FieldSpec]) -> None:
        items.extend((f"{prefix}.{f.name}", f.description) for f in specs.values())

    for command in spec.commands.values():
        items.append((f"{spec.product_id}.commands.{command.name}", command.description))
        fields(f"{spec.product_id}.commands.{command.name}", command.params)
    fields(f"{spec.product_id}.telemetry", spec.telemetry)
    for event in spec.events.values():
        items.append((f"{spec.product_id}.events.{event.name}", event.description))
        fields(f"{spec.product_id}.events.{event.name}", event.output)
    return items


def test_every_name_has_a_sentence_describing_it(products: dict[str, ProductSpec]) -> None:
    # An offline intent engine builds its vocabulary from these descriptions.
    for product_id in EXAMPLE_PRODUCTS:
        for where, text in _all_described(products[product_id]):
            assert text[:1].isupper() and text.endswith("."), f"{where}: {text!r}"


def test_every_command_parameter_is_a_state_field(products: dict[str, ProductSpec]) -> None:
    # So a command's effect is visible in the state, and the simulator applies it generically.
    for product_id in EXAMPLE_PRODUCTS:
        spec = products[product_id]
        for command in spec.commands.values():
            for name, param in command.params.items():
                field = spec.telemetry.get(name)
                assert field is not None, f"{product_id}.{command.name}.{name}"
                assert (param.type, param.enum, param.min, param.max) == (
                    field.type, field.enum, field.min, field.max,
                ), f"{product_id}.{command.name}.{name}"


def test_ranges_follow_what_voice_platforms_expect(products: dict[str, ProductSpec]) -> None:
    light = products["light"].telemetry
    assert (light["brightness"].min, light["brightness"].max) == (1, 100)
    assert (light["color_temperature"].min, light["color_temperature"].max) == (2700, 6500)
    curtain = products["curtain"].telemetry
    assert (curtain["position"].min, curtain["position"].max) == (0, 100)
    ac = products["air_conditioner"].telemetry
    assert (ac["target_temperature"].min, ac["target_temperature"].max) == (16, 30)
    assert set(ac["mode"].enum or ()) == {"cool", "heat", "auto", "dry", "fan"}
    assert set(ac["fan_speed"].enum or ()) == {"auto", "low", "medium", "high"}
    for product_id in ("light", "air_conditioner", "switch"):
        assert products[product_id].telemetry["power"].type == "bool"
