"""Device payload encoding: JSON (UTF-8) or CBOR, decided by MQTT 5 content type or first byte.

Payloads come from devices we do not control, so decoding is bounded (size, nesting) and every
failure is one `DecodeError` with a reason name used for counting and logging.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import cbor2

from deviceagentd import strictjson

Encoding = Literal["json", "cbor"]
CONTENT_TYPES: dict[str, Encoding] = {"application/json": "json", "application/cbor": "cbor"}
MAX_DEPTH = 32


class DecodeError(Exception):
    """`reason` is a stable name: too_large, bad_json, bad_cbor, not_object, unknown_encoding,
    unsupported_json_value, unsupported_cbor_value."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def _reject_shared_refs(*_decoder: Any) -> Any:
    raise ValueError("CBOR value sharing (tags 28/29) is not accepted")


# What the rest of the gateway can store and serve as JSON: 64-bit integers, finite floats.
_INT_LIMIT = strictjson.INT_LIMIT
# JSON input the strict decoder refuses for its values, not its syntax.
_JSON_VALUE_REASONS = ("number_out_of_range", "lone_surrogate")


def _json_problem(value: Any, path: str) -> str | None:
    """Where a decoded CBOR value holds something JSON cannot (bytes, tags, NaN, huge ints)."""
    if value is None or isinstance(value, bool | str):
        return None
    if isinstance(value, int):
        return None if -_INT_LIMIT <= value < _INT_LIMIT else f"{path} is an integer beyond 64 bits"
    if isinstance(value, float):
        return None if math.isfinite(value) else f"{path} is not a finite number"
    if isinstance(value, list):
        for index, item in enumerate(value):
            problem = _json_problem(item, f"{path}[{index}]")
            if problem:
                return problem
        return None
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                return f"{path} has a map key that is not a text string"
            problem = _json_problem(item, f"{path}.{key}")
            if problem:
                return problem
        return None
    return f"{path} is a CBOR {type(value).__name__}, which has no JSON equivalent"


def sniff_encoding(payload: bytes, content_type: str | None) -> Encoding:
    if content_type:
        kind = CONTENT_TYPES.get(content_type.split(";", 1)[0].strip().lower())
        if kind is None:
            raise DecodeError("unknown_encoding", f"content type {content_type!r} is not JSON or CBOR")
        return kind
    first = payload.lstrip(b" \t\r\n")[:1]
    if first == b"{":
        return "json"
    # CBOR major type 5 (map) is 0xa0..0xbf.
    if first and 0xA0 <= first[0] <= 0xBF:
        return "cbor"
    if first in (b"[", b'"') or first.isdigit() or first in (b"t", b"f", b"n", b"-"):
        raise DecodeError("not_object", "payload is JSON but not an object")
    raise DecodeError("unknown_encoding", "payload is neither a JSON object nor a CBOR map")


def decode(payload: bytes, content_type: str | None, max_bytes: int) -> tuple[dict[str, Any], Encoding]:
    """Decode one device payload into a dict, or raise DecodeError."""
    if len(payload) > max_bytes:
        raise DecodeError("too_large", f"{len(payload)} bytes is over the limit of {max_bytes}")
    encoding = sniff_encoding(payload, content_type)
    value: Any
    if encoding == "json":
        try:
            value = strictjson.loads(payload, max_depth=MAX_DEPTH)
        except strictjson.JsonInputError as exc:
            reason = "unsupported_json_value" if exc.reason in _JSON_VALUE_REASONS else "bad_json"
            raise DecodeError(reason, exc.detail) from exc
    else:
        try:
            value = cbor2.loads(
                payload,
                max_depth=MAX_DEPTH,
                allow_indefinite=False,
                allow_duplicate_keys=False,
                semantic_decoders={28: _reject_shared_refs, 29: _reject_shared_refs},
            )
        except (cbor2.CBORDecodeError, ValueError, TypeError, OverflowError, MemoryError) as exc:
            raise DecodeError("bad_cbor", str(exc)) from exc
    if not isinstance(value, dict):
        raise DecodeError("not_object", f"payload decodes to {type(value).__name__}, not an object")
    if encoding == "cbor":
        problem = _json_problem(value, "$")
        if problem:
            raise DecodeError("unsupported_cbor_value", problem)
    return value, encoding


def encode(value: dict[str, Any], encoding: Encoding) -> bytes:
    if encoding == "cbor":
        return bytes(cbor2.dumps(value))
    return strictjson.dumps_bytes(value)


def content_type_of(encoding: Encoding) -> str:
    return "application/cbor" if encoding == "cbor" else "application/json"
