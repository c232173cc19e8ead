"""Decoded device payloads must be storable and servable as JSON: the codec refuses the rest."""

from __future__ import annotations

import cbor2
import pytest

from deviceagentd.mqtt.codec import DecodeError, decode


@pytest.mark.parametrize(
    ("value", "where"),
    [
        ({"data": {"image": b"\x89PNG"}}, "$.data.image"),
        ({"data": {1: "x"}}, "$.data"),
        ({"data": {"t": float("nan")}}, "$.data.t"),
        ({"data": {"t": float("inf")}}, "$.data.t"),
        ({"data": {"n": 2**64}}, "$.data.n"),
        ({"data": [1, {"when": cbor2.CBORTag(1, 1700000000)}]}, "$.data[1].when"),
    ],
)
def test_cbor_values_without_a_json_equivalent_are_rejected(value: dict[object, object], where: str) -> None:
    with pytest.raises(DecodeError) as info:
        decode(cbor2.dumps(value), None, 10_000)
    assert info.value.reason == "unsupported_cbor_value"
    assert where in info.value.detail


@pytest.mark.parametrize("payload", [b'{"t": NaN}', b'{"t": Infinity}', b'{"t": -Infinity}'])
def test_json_non_numbers_are_rejected(payload: bytes) -> None:
    with pytest.raises(DecodeError) as info:
        decode(payload, None, 1000)
    assert info.value.reason == "bad_json"


def test_plain_cbor_map_decodes() -> None:
    body = {"type": "state", "data": {"temperature": 21.5, "on": True, "tags": ["a", None], "n": -(2**63)}}
    assert decode(cbor2.dumps(body), "application/cbor", 10_000) == (body, "cbor")
