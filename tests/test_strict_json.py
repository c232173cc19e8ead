"""Strict JSON in and out (deviceagentd.strictjson): property tests of the decoder every outside
input goes through, and a check that no route serves JSON another way."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from deviceagentd import strictjson
from deviceagentd.strictjson import JsonInputError

PACKAGE = Path(__file__).resolve().parent.parent / "deviceagentd"

# What strict JSON can hold: finite floats, 64-bit ints, well-formed text.
scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
)
documents = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)


def depth_of(value: Any) -> int:
    if isinstance(value, list):
        return 1 + max((depth_of(item) for item in value), default=0)
    if isinstance(value, dict):
        return 1 + max((depth_of(item) for item in value.values()), default=0)
    return 0


@given(documents)
def test_whatever_strict_json_holds_round_trips(value: Any) -> None:
    text = strictjson.dumps(value)
    assert strictjson.loads(text.encode(), max_depth=100) == value
    # And any other JSON parser agrees with it.
    assert json.loads(text, parse_constant=lambda name: pytest.fail(f"{name} served")) == value


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=200) | st.text(max_size=200).map(str.encode))
def test_any_bytes_decode_or_raise_json_input_error_only(data: bytes) -> None:
    try:
        value = strictjson.loads(data)
    except JsonInputError as exc:
        assert exc.reason in ("not_utf8", "too_deep", "not_json", "number_out_of_range", "lone_surrogate")
        return
    # Whatever was accepted can be served again as strict JSON, unchanged.
    assert strictjson.loads(strictjson.dumps(value)) == value


@given(st.integers(min_value=1, max_value=3000), st.sampled_from(["[", '{"a":']))
def test_nesting_deeper_than_the_limit_is_refused_at_any_depth(depth: int, opener: str) -> None:
    closer = "]" if opener == "[" else "}"
    text = opener * depth + "1" + closer * depth
    if depth <= 32:
        assert depth_of(strictjson.loads(text)) == depth
    else:
        with pytest.raises(JsonInputError) as info:
            strictjson.loads(text)
        assert info.value.reason == "too_deep"


def test_a_million_brackets_fail_fast_as_too_deep() -> None:
    with pytest.raises(JsonInputError) as info:
        strictjson.loads(b"[" * 1_000_000)
    assert info.value.reason == "too_deep"


def test_brackets_inside_strings_do_not_count_as_nesting() -> None:
    value = {"a": "[[[[" * 100, "b": ["{\"", "\\", "]]]]" * 100]}
    assert strictjson.loads(json.dumps(value)) == value


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ('{"extra": 1e400}', "number_out_of_range"),
        ('{"x": -1e400}', "number_out_of_range"),
        ('{"t": ' + "9" * 400 + "}", "number_out_of_range"),
        ('{"t": ' + "9" * 5000 + "}", "number_out_of_range"),  # past Python's own 4300-digit guard
        ('{"n": 9223372036854775808}', "number_out_of_range"),
        ('{"n": NaN}', "not_json"),
        ('{"n": Infinity}', "not_json"),
        ('{"n": -Infinity}', "not_json"),
        ('{"requestId": "a\\ud800b"}', "lone_surrogate"),
        ('{"m": ["x", "\\udfff"]}', "lone_surrogate"),
        ('{"\\ud800": 1}', "lone_surrogate"),
        ('{"a": 1', "not_json"),
    ],
)
def test_what_is_not_strict_json_is_refused(text: str, reason: str) -> None:
    with pytest.raises(JsonInputError) as info:
        strictjson.loads(text.encode())
    assert info.value.reason == reason


def test_the_edges_of_what_is_accepted() -> None:
    assert strictjson.loads('{"n": 9223372036854775807, "m": -9223372036854775808}') == {
        "n": 2**63 - 1, "m": -(2**63)}
    assert strictjson.loads('{"f": 1.7976931348623157e308, "g": 5e-324}')["f"] == 1.7976931348623157e308
    # A surrogate pair written as escapes is one proper character.
    assert strictjson.loads('{"s": "\\ud83d\\ude00"}') == {"s": "\U0001f600"}
    assert strictjson.loads(b'\xef\xbb\xbf{}'.decode("utf-8-sig").encode()) == {}


def test_dumps_never_writes_what_a_client_cannot_parse() -> None:
    # A value that slipped in (an old database row, a bug) is replaced, never served as Infinity.
    text = strictjson.dumps({"a": float("inf"), "b": [float("nan"), 1.5], "c": "x\ud800y", "\udc00k": 1})
    assert json.loads(text, parse_constant=lambda name: pytest.fail(name)) == {
        "a": None, "b": [None, 1.5], "c": "x\ufffdy", "\ufffdk": 1}
    text.encode("utf-8")
    assert math.isfinite(json.loads(strictjson.dumps(1e308)))


def test_no_route_serves_json_with_aiohttp_json_response() -> None:
    """Every JSON the API serves goes through http.responses.json_response (strict): aiohttp's
    web.json_response would write Infinity. New routes (other modules) are checked too."""
    offenders = [
        f"{path.relative_to(PACKAGE.parent)}:{number}"
        for path in PACKAGE.rglob("*.py")
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if re.search(r"\bweb\.json_response\(|\bjson_response\(.*dumps=", line)
    ]
    assert offenders == []


@pytest.mark.parametrize(("data", "reason", "says"), [
    (b"", "empty", "the payload is empty; send a JSON object"),
    (b"[1, 2]", "not_object", "the payload must be a JSON object"),
    (b"42", "not_object", "the payload must be a JSON object"),
    (b"{", "not_json", "the payload is not valid JSON: not valid JSON"),
    (b"[" * 1000 + b"]" * 1000, "too_deep", "the payload is not valid JSON: arrays and objects may nest"),
    (b'{"a": "\\ud800"}', "lone_surrogate", "the payload is not valid JSON: $.a holds a lone UTF-16 surrogate"),
    (b"\xff{}", "not_utf8", "the payload is not valid JSON: the text is not UTF-8"),
])
def test_a_body_that_is_not_one_json_object_is_refused_naming_what_it_is(data: bytes, reason: str, says: str) -> None:
    with pytest.raises(strictjson.JsonInputError) as caught:
        strictjson.loads_object(data, "payload")
    assert caught.value.reason == reason and caught.value.detail.startswith(says)


def test_one_json_object_is_decoded() -> None:
    assert strictjson.loads_object(b'{"command": "on", "params": {"level": 5}}', "body") == {
        "command": "on", "params": {"level": 5}}
