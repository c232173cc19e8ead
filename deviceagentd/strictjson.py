"""JSON in and out of the gateway, strictly: RFC 8259 text that any client can parse.

Python's `json` is lenient both ways: it reads `NaN`/`Infinity`, turns `1e400` into an
infinity, accepts integers of any size and lone UTF-16 surrogates (`"\\ud800"`), recurses
until the interpreter's stack limit, and writes `Infinity` back out. Every one of those became
a 500 or invalid JSON served to every client. So everything that reads JSON from outside (MQTT
payloads, HTTP bodies, voice messages, the voice platform) goes through `loads`, and everything
the API serves through `dumps`.

`loads` accepts exactly what the rest of the gateway can store, compute with and serve again:
objects and arrays nested at most `max_depth` deep, finite numbers, integers within 64 bits,
and well-formed Unicode text.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

DEFAULT_MAX_DEPTH = 32
INT_LIMIT = 2**63
"""Integers must lie in [-2**63, 2**63): SQLite's INTEGER and every client's int64."""

# A JSON string (with its escapes) or one bracket: enough to measure nesting without parsing.
_TOKENS = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}]', re.DOTALL)
_SURROGATE = re.compile("[\ud800-\udfff]")


class JsonInputError(ValueError):
    """Input that is not strict JSON. `reason` is a stable name; the message says where."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise JsonInputError("number_out_of_range", f"the number {text[:40]} is too large for a 64-bit float")
    return value


def _int64(text: str) -> int:
    # Checked by length first: int() of a 5,000-digit text raises ValueError of its own, and
    # JSON forbids leading zeros, so more than 20 characters is always out of range.
    if len(text) > 20 or not -INT_LIMIT <= (value := int(text)) < INT_LIMIT:
        raise JsonInputError("number_out_of_range", f"the integer {text[:40]}… does not fit in 64 bits")
    return value


def _reject_constant(name: str) -> Any:
    raise JsonInputError("not_json", f"{name} is not a JSON number")


# One decoder for every call: json.loads with options builds a new decoder each time, which is
# a measurable share of ingest time.
_DECODER = json.JSONDecoder(parse_float=_finite_float, parse_int=_int64, parse_constant=_reject_constant)


def nesting_depth(text: str, limit: int) -> int:
    """How deeply arrays and objects nest in `text`, counting no further than `limit` + 1."""
    depth = deepest = 0
    for match in _TOKENS.finditer(text):
        token = match.group()
        if token in "[{":
            depth += 1
            if depth > deepest:
                deepest = depth
                if deepest > limit:
                    break
        elif token in "]}":
            depth -= 1
    return deepest


def loads(data: bytes | bytearray | str, *, max_depth: int = DEFAULT_MAX_DEPTH) -> Any:
    """Decode strict JSON, or raise JsonInputError (reasons: not_utf8, too_deep, not_json,
    number_out_of_range, lone_surrogate)."""
    if not isinstance(data, str):
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise JsonInputError("not_utf8", f"the text is not UTF-8 ({exc.reason} at byte {exc.start})") from exc
    else:
        text = data
    # Counting brackets is cheap; only text that could nest too deeply is measured exactly.
    if text.count("[") + text.count("{") > max_depth and nesting_depth(text, max_depth) > max_depth:
        raise JsonInputError("too_deep", f"arrays and objects may nest at most {max_depth} deep")
    try:
        value = _DECODER.decode(text)
    except JsonInputError:
        raise
    except RecursionError as exc:  # only if max_depth was set near the interpreter's limit
        raise JsonInputError("too_deep", "arrays and objects nest too deeply") from exc
    except ValueError as exc:
        raise JsonInputError("not_json", f"not valid JSON: {exc}") from exc
    if "\\u" in text:
        where = lone_surrogate_path(value, "$")
        if where is not None:
            raise JsonInputError("lone_surrogate", f"{where} holds a lone UTF-16 surrogate, which is not Unicode text")
    return value


def loads_object(data: bytes | bytearray | str, what: str) -> dict[str, Any]:
    """Decode a request body that must be one JSON object (an HTTP body, an MQTT payload), or
    raise JsonInputError whose detail names `what` (reasons: empty, not_object, and those of loads)."""
    if not data:
        raise JsonInputError("empty", f"the {what} is empty; send a JSON object")
    try:
        value = loads(data)
    except JsonInputError as exc:
        raise JsonInputError(exc.reason, f"the {what} is not valid JSON: {exc.detail}") from exc
    if not isinstance(value, dict):
        raise JsonInputError("not_object", f"the {what} must be a JSON object")
    return value


def lone_surrogate_path(value: Any, path: str) -> str | None:
    """The path of the first string (or key) holding a lone surrogate, or None."""
    if isinstance(value, str):
        return path if _SURROGATE.search(value) else None
    if isinstance(value, list):
        for index, item in enumerate(value):
            found = lone_surrogate_path(item, f"{path}[{index}]")
            if found is not None:
                return found
    elif isinstance(value, dict):
        for key, item in value.items():
            if _SURROGATE.search(key):
                return f"{path} (a key)"
            found = lone_surrogate_path(item, f"{path}.{key}")
            if found is not None:
                return found
    return None


def dumps(value: Any, *, indent: int | None = None, compact: bool = True) -> str:
    """Strict JSON text: never NaN or Infinity, never a lone surrogate.

    Values that cannot be written that way (a non-finite float from an old database row, a
    surrogate from a bug elsewhere) are replaced (null, U+FFFD) rather than failing the
    response: a client must always get parseable JSON.
    """
    separators = (",", ":") if compact and indent is None else (",", ": ") if indent is not None else (", ", ": ")
    try:
        text = json.dumps(value, ensure_ascii=False, allow_nan=False, separators=separators, indent=indent)
        text.encode("utf-8")
    except (ValueError, UnicodeEncodeError):
        text = json.dumps(_sanitized(value), ensure_ascii=False, allow_nan=False, separators=separators,
                          indent=indent)
    return text


def dumps_bytes(value: Any) -> bytes:
    return dumps(value).encode("utf-8")


def _sanitized(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, str):
        return _SURROGATE.sub("\ufffd", value)
    if isinstance(value, list | tuple):
        return [_sanitized(item) for item in value]
    if isinstance(value, dict):
        return {_SURROGATE.sub("\ufffd", str(key)): _sanitized(item) for key, item in value.items()}
    return value
