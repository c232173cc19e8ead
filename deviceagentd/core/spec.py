"""DeviceSpec: the capability model of one product, parsed and checked from its JSON file.

A spec that does not validate is reported with the file, the JSON path and the reason
(SPEC §1), so the installer can fix the file without reading our code.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Spellings accepted in spec files, mapped to the one name the rest of the code uses.
TYPE_ALIASES: dict[str, str] = {
    "int": "int",
    "integer": "int",
    "float": "float",
    "number": "float",
    "bool": "bool",
    "boolean": "bool",
    "string": "string",
    "enum": "enum",
    "object": "object",
    "array": "array",
}
EVENT_TYPES = ("info", "alert", "warning", "error")
TOP_LEVEL_KEYS = {"name", "description", "commands", "telemetry", "properties", "events", "voice"}
FIELD_KEYS = {"type", "description", "required", "enum", "min", "max", "unit", "defaultValue"}


@dataclass(frozen=True)
class FieldSpec:
    """A typed value: a command parameter, a telemetry field or an event output field."""

    name: str
    type: str
    description: str = ""
    required: bool = False
    enum: tuple[Any, ...] | None = None
    min: float | None = None
    max: float | None = None
    unit: str | None = None
    default: Any = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": self.type, "description": self.description}
        if self.required:
            out["required"] = True
        if self.enum is not None:
            out["enum"] = list(self.enum)
        if self.min is not None:
            out["min"] = self.min
        if self.max is not None:
            out["max"] = self.max
        if self.unit is not None:
            out["unit"] = self.unit
        if self.default is not None:
            out["defaultValue"] = self.default
        return out


@dataclass(frozen=True)
class CommandSpec:
    name: str
    description: str
    params: dict[str, FieldSpec]


@dataclass(frozen=True)
class EventSpec:
    name: str
    description: str
    event_type: str
    output: dict[str, FieldSpec]


@dataclass(frozen=True)
class ProductSpec:
    product_id: str
    name: str
    description: str
    commands: dict[str, CommandSpec]
    telemetry: dict[str, FieldSpec]
    events: dict[str, EventSpec]
    voice: dict[str, Any] | None = None
    source: str = ""

    def to_json(self) -> dict[str, Any]:
        """The spec as served by `GET /api/products/:productId` (normalised type names)."""
        return {
            "productId": self.product_id,
            "name": self.name,
            "description": self.description,
            "commands": {
                c.name: {
                    "description": c.description,
                    "parameters": {p.name: p.to_json() for p in c.params.values()},
                }
                for c in self.commands.values()
            },
            "telemetry": {f.name: f.to_json() for f in self.telemetry.values()},
            "events": {
                e.name: {
                    "description": e.description,
                    "eventType": e.event_type,
                    "outputData": {f.name: f.to_json() for f in e.output.values()},
                }
                for e in self.events.values()
            },
        }


@dataclass(frozen=True)
class SpecProblem:
    source: str
    path: str
    reason: str

    def __str__(self) -> str:
        return f"{self.source}: {self.path}: {self.reason}"


class SpecError(Exception):
    def __init__(self, problems: list[SpecProblem]) -> None:
        super().__init__("; ".join(str(p) for p in problems))
        self.problems = problems


@dataclass
class _Checker:
    """Collects every problem in one pass so the installer sees them all at once."""

    source: str
    problems: list[SpecProblem] = field(default_factory=list)

    def fail(self, path: str, reason: str) -> None:
        self.problems.append(SpecProblem(self.source, path, reason))

    def text(self, value: Any, path: str, default: str = "") -> str:
        if value is None:
            return default
        if not isinstance(value, str):
            self.fail(path, "must be a string")
            return default
        return value

    def mapping(self, value: Any, path: str) -> dict[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.fail(path, "must be an object")
            return {}
        return value

    def name(self, value: str, path: str) -> None:
        if not value or any(c in value for c in "/+#") or value != value.strip():
            self.fail(path, "names must be non-empty, without spaces at the ends or / + #")

    def number(self, value: Any, path: str) -> float | None:
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.fail(path, "must be a number")
            return None
        return value

    def field_spec(self, name: str, raw: Any, path: str) -> FieldSpec | None:
        self.name(name, path)
        if not isinstance(raw, dict):
            self.fail(path, "must be an object with at least a type")
            return None
        for key in raw:
            if key not in FIELD_KEYS and key != "default":
                self.fail(f"{path}.{key}", f"unknown key (allowed: {', '.join(sorted(FIELD_KEYS))})")
        raw_type = raw.get("type")
        if not isinstance(raw_type, str) or raw_type.lower() not in TYPE_ALIASES:
            self.fail(f"{path}.type", f"must be one of {', '.join(TYPE_ALIASES)}")
            return None
        type_name = TYPE_ALIASES[raw_type.lower()]
        enum_raw = raw.get("enum")
        enum: tuple[Any, ...] | None = None
        if enum_raw is not None:
            if not isinstance(enum_raw, list) or not enum_raw:
                self.fail(f"{path}.enum", "must be a non-empty list")
            else:
                enum = tuple(enum_raw)
        if type_name == "enum" and enum is None:
            self.fail(f"{path}.enum", "type enum needs an enum list")
        required = raw.get("required", False)
        if not isinstance(required, bool):
            self.fail(f"{path}.required", "must be true or false")
            required = False
        low = self.number(raw.get("min"), f"{path}.min")
        high = self.number(raw.get("max"), f"{path}.max")
        if (low is not None or high is not None) and type_name not in ("int", "float"):
            self.fail(path, "min/max apply only to int and float fields")
        if low is not None and high is not None and low > high:
            self.fail(path, f"min {low} is greater than max {high}")
        unit = raw.get("unit")
        if unit is not None and not isinstance(unit, str):
            self.fail(f"{path}.unit", "must be a string")
            unit = None
        default = raw.get("defaultValue", raw.get("default"))
        return FieldSpec(
            name=name,
            type=type_name,
            description=self.text(raw.get("description"), f"{path}.description"),
            required=required,
            enum=enum,
            min=low,
            max=high,
            unit=unit,
            default=default,
        )

    def fields(self, raw: Any, path: str) -> dict[str, FieldSpec]:
        out: dict[str, FieldSpec] = {}
        for name, value in self.mapping(raw, path).items():
            spec = self.field_spec(name, value, f"{path}.{name}")
            if spec is not None:
                out[name] = spec
        return out


def parse_spec(product_id: str, data: Any, source: str = "<memory>") -> ProductSpec:
    """Build a ProductSpec from decoded JSON, or raise SpecError listing every problem."""
    check = _Checker(source)
    check.name(product_id, "$ (product id, from the file name)")
    if not isinstance(data, dict):
        raise SpecError([SpecProblem(source, "$", "a DeviceSpec must be a JSON object")])
    for key in data:
        if key not in TOP_LEVEL_KEYS:
            check.fail(f"$.{key}", f"unknown key (allowed: {', '.join(sorted(TOP_LEVEL_KEYS))})")
    if "telemetry" in data and "properties" in data:
        check.fail("$", "give either telemetry or properties (its alias), not both")
    telemetry_key = "properties" if "properties" in data else "telemetry"

    commands: dict[str, CommandSpec] = {}
    for name, raw in check.mapping(data.get("commands"), "$.commands").items():
        path = f"$.commands.{name}"
        check.name(name, path)
        if not isinstance(raw, dict):
            check.fail(path, "must be an object")
            continue
        commands[name] = CommandSpec(
            name=name,
            description=check.text(raw.get("description"), f"{path}.description"),
            params=check.fields(raw.get("parameters"), f"{path}.parameters"),
        )

    events: dict[str, EventSpec] = {}
    for name, raw in check.mapping(data.get("events"), "$.events").items():
        path = f"$.events.{name}"
        check.name(name, path)
        if not isinstance(raw, dict):
            check.fail(path, "must be an object")
            continue
        event_type = raw.get("eventType", "info")
        if event_type not in EVENT_TYPES:
            check.fail(f"{path}.eventType", f"must be one of {', '.join(EVENT_TYPES)}")
            event_type = "info"
        events[name] = EventSpec(
            name=name,
            description=check.text(raw.get("description"), f"{path}.description"),
            event_type=event_type,
            output=check.fields(raw.get("outputData"), f"{path}.outputData"),
        )

    voice = data.get("voice")
    if voice is not None and not isinstance(voice, dict):
        check.fail("$.voice", "must be an object")
        voice = None

    spec = ProductSpec(
        product_id=product_id,
        name=check.text(data.get("name"), "$.name", default=product_id),
        description=check.text(data.get("description"), "$.description"),
        commands=commands,
        telemetry=check.fields(data.get(telemetry_key), f"$.{telemetry_key}"),
        events=events,
        voice=voice,
        source=source,
    )
    if check.problems:
        raise SpecError(check.problems)
    return spec


def load_spec_file(path: Path) -> ProductSpec:
    source = str(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise SpecError([SpecProblem(source, "$", f"cannot read: {exc.strerror}")]) from exc
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SpecError([SpecProblem(source, "$", f"not valid JSON: {exc}")]) from exc
    return parse_spec(path.stem, data, source)
