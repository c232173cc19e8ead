"""DeviceSpec parsing (SPEC §1): aliases, type names, and every bad-spec rule reported with
the file, the JSON path and the reason, all problems at once."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from deviceagentd.core.catalog import load_catalog
from deviceagentd.core.spec import SpecError, SpecProblem, load_spec_file, parse_spec
from deviceagentd.core.values import check_params, check_value

GOOD: dict[str, Any] = {
    "name": "Gadget",
    "description": "A test gadget.",
    "commands": {
        "set_level": {
            "description": "Set the level.",
            "parameters": {"level": {"type": "int", "min": 0, "max": 10, "required": True, "unit": "%"}},
        },
        "reset": {"description": "Reset."},
    },
    "telemetry": {
        "level": {"type": "int", "min": 0, "max": 10},
        "mode": {"type": "enum", "enum": ["a", "b"], "defaultValue": "a"},
    },
    "events": {
        "overheat": {"description": "Too hot.", "eventType": "alert",
                     "outputData": {"temperature": {"type": "float", "required": True}}},
        "hello": {"description": "Hi."},
    },
}


def problems_of(data: Any, product_id: str = "gadget") -> list[SpecProblem]:
    with pytest.raises(SpecError) as info:
        parse_spec(product_id, data, "gadget.json")
    return info.value.problems


def paths_of(data: Any, product_id: str = "gadget") -> dict[str, str]:
    return {p.path: p.reason for p in problems_of(data, product_id)}


def test_a_good_spec() -> None:
    spec = parse_spec("gadget", GOOD, "gadget.json")
    assert spec.product_id == "gadget"
    assert spec.name == "Gadget"
    assert spec.source == "gadget.json"
    level = spec.commands["set_level"].params["level"]
    assert (level.type, level.min, level.max, level.required, level.unit) == ("int", 0, 10, True, "%")
    assert spec.commands["reset"].params == {}
    assert spec.telemetry["mode"].enum == ("a", "b")
    assert spec.telemetry["mode"].default == "a"
    assert spec.events["overheat"].event_type == "alert"
    assert spec.events["hello"].event_type == "info"  # the default
    assert spec.events["overheat"].output["temperature"].type == "float"


def test_name_defaults_to_the_product_id_and_sections_are_optional() -> None:
    spec = parse_spec("bare", {})
    assert spec.name == "bare"
    assert (spec.commands, spec.telemetry, spec.events, spec.voice) == ({}, {}, {}, None)


def test_properties_is_an_alias_of_telemetry() -> None:
    data = {k: v for k, v in GOOD.items() if k != "telemetry"}
    data["properties"] = GOOD["telemetry"]
    spec = parse_spec("gadget", data)
    assert set(spec.telemetry) == {"level", "mode"}
    # Errors under the alias name the alias.
    data["properties"] = {"level": {"type": "weird"}}
    assert "$.properties.level.type" in paths_of(data)


def test_telemetry_and_properties_together_are_refused() -> None:
    assert "$" in paths_of({"telemetry": {}, "properties": {}})


@pytest.mark.parametrize(
    ("spelling", "name"),
    [("int", "int"), ("integer", "int"), ("float", "float"), ("number", "float"), ("bool", "bool"),
     ("boolean", "bool"), ("string", "string"), ("object", "object"), ("array", "array"),
     ("Integer", "int"), ("NUMBER", "float")],
)
def test_type_aliases(spelling: str, name: str) -> None:
    spec = parse_spec("gadget", {"telemetry": {"x": {"type": spelling}}})
    assert spec.telemetry["x"].type == name
    assert spec.to_json()["telemetry"]["x"]["type"] == name


def test_enum_type_and_enum_on_other_types() -> None:
    spec = parse_spec("gadget", {"telemetry": {
        "mode": {"type": "enum", "enum": ["eco", "boost"]},
        "speed": {"type": "int", "enum": [1, 2, 3]},
        "label": {"type": "string", "enum": ["x", "y"]},
    }})
    assert check_value(spec.telemetry["mode"], "eco") is None
    assert check_value(spec.telemetry["mode"], "turbo") is not None
    assert check_value(spec.telemetry["speed"], 2) is None
    assert check_value(spec.telemetry["speed"], 4) is not None
    assert check_value(spec.telemetry["speed"], "2") is not None
    assert check_value(spec.telemetry["label"], "y") is None
    assert check_value(spec.telemetry["label"], "z") is not None


def test_required_defaults_to_false() -> None:
    spec = parse_spec("gadget", {"commands": {"go": {"parameters": {"speed": {"type": "int"}}}}})
    assert spec.commands["go"].params["speed"].required is False
    assert check_params(spec.commands["go"], {}) == []


def test_values_checks() -> None:
    spec = parse_spec("gadget", GOOD)
    level = spec.telemetry["level"]
    assert check_value(level, 5) is None
    assert check_value(level, 5.0) is None  # JSON has one number type
    assert check_value(level, 5.5) == "must be an integer"
    assert check_value(level, True) == "must be an integer"
    assert check_value(level, 11) == "must be at most 10"
    assert check_value(level, -1) == "must be at least 0"
    errors = check_params(spec.commands["set_level"], {"lvl": 1})
    assert {e.field for e in errors} == {"params.level", "params.lvl"}


@pytest.mark.parametrize(
    ("data", "path", "fragment"),
    [
        ({"colour": 1}, "$.colour", "unknown key"),
        ({"name": 5}, "$.name", "must be a string"),
        ({"description": []}, "$.description", "must be a string"),
        ({"commands": []}, "$.commands", "must be an object"),
        ({"commands": {"go": 1}}, "$.commands.go", "must be an object"),
        ({"commands": {"a/b": {}}}, "$.commands.a/b", "names must be"),
        ({"commands": {"": {}}}, "$.commands.", "names must be"),
        ({"commands": {" go": {}}}, "$.commands. go", "names must be"),
        ({"commands": {"go": {"description": 1}}}, "$.commands.go.description", "must be a string"),
        ({"commands": {"go": {"parameters": []}}}, "$.commands.go.parameters", "must be an object"),
        ({"commands": {"go": {"parameters": {"p": "int"}}}}, "$.commands.go.parameters.p", "at least a type"),
        ({"commands": {"go": {"parameters": {"p": {}}}}}, "$.commands.go.parameters.p.type", "must be one of"),
        ({"commands": {"go": {"parameters": {"p": {"type": "decimal"}}}}},
         "$.commands.go.parameters.p.type", "must be one of"),
        ({"commands": {"go": {"parameters": {"p": {"type": 3}}}}}, "$.commands.go.parameters.p.type",
         "must be one of"),
        ({"commands": {"go": {"parameters": {"p+": {"type": "int"}}}}}, "$.commands.go.parameters.p+",
         "names must be"),
        ({"commands": {"go": {"parameters": {"p": {"type": "int", "required": "yes"}}}}},
         "$.commands.go.parameters.p.required", "true or false"),
        ({"telemetry": {"t": {"type": "int", "colour": "red"}}}, "$.telemetry.t.colour", "unknown key"),
        ({"telemetry": {"t": {"type": "enum"}}}, "$.telemetry.t.enum", "needs an enum list"),
        ({"telemetry": {"t": {"type": "enum", "enum": []}}}, "$.telemetry.t.enum", "non-empty list"),
        ({"telemetry": {"t": {"type": "string", "enum": "a"}}}, "$.telemetry.t.enum", "non-empty list"),
        ({"telemetry": {"t": {"type": "int", "min": "0"}}}, "$.telemetry.t.min", "must be a number"),
        ({"telemetry": {"t": {"type": "int", "max": True}}}, "$.telemetry.t.max", "must be a number"),
        ({"telemetry": {"t": {"type": "int", "min": 5, "max": 1}}}, "$.telemetry.t", "greater than max"),
        ({"telemetry": {"t": {"type": "string", "min": 1}}}, "$.telemetry.t", "only to int and float"),
        ({"telemetry": {"t": {"type": "float", "unit": 3}}}, "$.telemetry.t.unit", "must be a string"),
        ({"telemetry": {"t": {"type": "float", "description": 3}}}, "$.telemetry.t.description",
         "must be a string"),
        ({"telemetry": []}, "$.telemetry", "must be an object"),
        ({"events": {"e": {"eventType": "fatal"}}}, "$.events.e.eventType", "must be one of"),
        ({"events": {"e": 5}}, "$.events.e", "must be an object"),
        ({"events": {"e#": {}}}, "$.events.e#", "names must be"),
        ({"events": {"e": {"outputData": {"x": {"type": "nope"}}}}}, "$.events.e.outputData.x.type",
         "must be one of"),
        ({"events": []}, "$.events", "must be an object"),
        ({"voice": "yes"}, "$.voice", "must be an object"),
    ],
)
def test_each_bad_spec_rule_names_the_json_path(data: dict[str, Any], path: str, fragment: str) -> None:
    problems = problems_of(data)
    assert any(p.path == path and fragment in p.reason for p in problems), problems
    for problem in problems:
        assert problem.source == "gadget.json"
        assert str(problem).startswith(f"gadget.json: {problem.path}: ")


def test_a_spec_that_is_not_an_object() -> None:
    for data in ([], "spec", 3, None):
        assert paths_of(data) == {"$": "a DeviceSpec must be a JSON object"}


def test_a_bad_product_id_from_the_file_name() -> None:
    assert any(p.startswith("$ (product id") for p in paths_of({}, product_id="a+b"))


def test_every_problem_is_reported_at_once() -> None:
    data = {
        "colour": "red",
        "commands": {"go": {"parameters": {"speed": {"type": "fast"}, "n": {"type": "int", "min": "x"}}}},
        "telemetry": {"t": {"type": "enum"}},
        "events": {"e": {"eventType": "loud"}},
        "voice": 1,
    }
    assert set(paths_of(data)) == {
        "$.colour",
        "$.commands.go.parameters.speed.type",
        "$.commands.go.parameters.n.min",
        "$.telemetry.t.enum",
        "$.events.e.eventType",
        "$.voice",
    }


def test_load_spec_file_names_the_file(tmp_path: Path) -> None:
    good = tmp_path / "gadget.json"
    good.write_text(json.dumps(GOOD))
    assert load_spec_file(good).product_id == "gadget"
    broken = tmp_path / "broken.json"
    broken.write_text('{"name": "x",')
    with pytest.raises(SpecError) as info:
        load_spec_file(broken)
    [problem] = info.value.problems
    assert (problem.source, problem.path) == (str(broken), "$")
    assert "not valid JSON" in problem.reason
    not_utf8 = tmp_path / "latin.json"
    not_utf8.write_bytes(b'{"name": "\xe9"}')
    with pytest.raises(SpecError):
        load_spec_file(not_utf8)
    with pytest.raises(SpecError) as info:
        load_spec_file(tmp_path / "missing.json")
    assert "cannot read" in info.value.problems[0].reason


def test_catalog_reports_every_file_at_once(tmp_path: Path) -> None:
    (tmp_path / "gadget.json").write_text(json.dumps(GOOD))
    (tmp_path / "bad1.json").write_text(json.dumps({"telemetry": {"t": {"type": "nope"}}}))
    (tmp_path / "bad2.json").write_text(json.dumps({"events": {"e": {"eventType": "x"}}}))
    (tmp_path / "notes.txt").write_text("not a product")
    with pytest.raises(SpecError) as info:
        load_catalog(tmp_path)
    found = {(Path(p.source).name, p.path) for p in info.value.problems}
    assert found == {("bad1.json", "$.telemetry.t.type"), ("bad2.json", "$.events.e.eventType")}
    (tmp_path / "bad1.json").unlink()
    (tmp_path / "bad2.json").unlink()
    catalog = load_catalog(tmp_path)
    assert set(catalog.products) == {"gadget"}
    assert "gadget" in catalog
    with pytest.raises(SpecError):
        load_catalog(tmp_path / "nowhere")


def test_to_json_is_normalised() -> None:
    spec = parse_spec("gadget", {"properties": {"n": {"type": "integer", "default": 3}},
                                 "commands": {"go": {"parameters": {"on": {"type": "boolean", "required": True}}}},
                                 "events": {"e": {"outputData": {"v": {"type": "number"}}}}})
    out = spec.to_json()
    assert out["productId"] == "gadget"
    assert out["telemetry"]["n"] == {"type": "int", "description": "", "defaultValue": 3}
    assert out["commands"]["go"]["parameters"]["on"] == {"type": "bool", "description": "", "required": True}
    assert out["events"]["e"] == {"description": "", "eventType": "info",
                                  "outputData": {"v": {"type": "float", "description": ""}}}
