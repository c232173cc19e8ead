"""Checking values against FieldSpecs: command parameters, telemetry fields, event fields."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from deviceagentd.core.spec import CommandSpec, FieldSpec

_TYPE_WORDS = {
    "int": "an integer",
    "float": "a number",
    "bool": "true or false",
    "string": "a string",
    "object": "an object",
    "array": "an array",
}


@dataclass(frozen=True)
class FieldError:
    field: str
    reason: str

    def to_json(self) -> dict[str, str]:
        return {"field": self.field, "reason": self.reason}


def check_value(spec: FieldSpec, value: Any, check_range: bool = True) -> str | None:
    """Return why `value` does not fit `spec`, or None when it does.

    `check_range=False` checks type and enum only: a sensor reading outside the spec's range is
    still a reading (a 61 °C room is news, not noise), while a command out of range is refused.
    """
    kind = spec.type
    if kind == "int":
        # JSON has one number type; 24.0 is a fair way to write the integer 24.
        is_integral_float = isinstance(value, float) and value.is_integer()
        if (isinstance(value, bool) or not isinstance(value, int)) and not is_integral_float:
            return "must be an integer"
    elif kind == "float":
        # math.isfinite() of an int past float range raises OverflowError: ints are finite.
        if isinstance(value, bool) or not isinstance(value, int | float) or (
            isinstance(value, float) and not math.isfinite(value)
        ):
            return "must be a number"
    elif kind == "bool":
        if not isinstance(value, bool):
            return "must be true or false"
    elif kind == "string":
        if not isinstance(value, str):
            return "must be a string"
    elif kind == "object":
        if not isinstance(value, dict):
            return "must be an object"
    elif kind == "array" and not isinstance(value, list):
        return "must be an array"
    if spec.enum is not None and not _in_enum(value, spec.enum):
        return f"must be one of {', '.join(str(v) for v in spec.enum)}"
    if check_range and kind in ("int", "float"):
        if spec.min is not None and value < spec.min:
            return f"must be at least {_num(spec.min)}"
        if spec.max is not None and value > spec.max:
            return f"must be at most {_num(spec.max)}"
    return None


def _in_enum(value: Any, allowed: tuple[Any, ...]) -> bool:
    # `True == 1` in Python; an enum of numbers must not accept a boolean.
    return any(value == v and type(value) is type(v) for v in allowed) or (
        not isinstance(value, bool)
        and isinstance(value, int | float)
        and any(not isinstance(v, bool) and isinstance(v, int | float) and v == value for v in allowed)
    )


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


def check_params(command: CommandSpec, params: Any) -> list[FieldError]:
    """Every problem with a command's params; empty when they may be sent to the device."""
    if params is None:
        params = {}
    if not isinstance(params, dict):
        return [FieldError("params", "must be an object")]
    errors: list[FieldError] = []
    for name, spec in command.params.items():
        if name not in params:
            if spec.required:
                errors.append(FieldError(f"params.{name}", "is required"))
            continue
        reason = check_value(spec, params[name])
        if reason:
            errors.append(FieldError(f"params.{name}", reason))
    for name in params:
        if name not in command.params:
            allowed = ", ".join(command.params) or "none"
            errors.append(FieldError(f"params.{name}", f"is not a parameter of {command.name} (allowed: {allowed})"))
    return errors


def describe_type(spec: FieldSpec) -> str:
    if spec.type == "enum" and spec.enum is not None:
        return "one of " + ", ".join(str(v) for v in spec.enum)
    return _TYPE_WORDS.get(spec.type, spec.type)
