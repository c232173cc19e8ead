"""Topic templates and the device payload codec (SPEC §2 topics and "Encoding")."""

from __future__ import annotations

import datetime
import json

import cbor2
import pytest

from deviceagentd.mqtt.codec import DecodeError, content_type_of, decode, encode, sniff_encoding
from deviceagentd.mqtt.topics import (
    TEMPLATE_NAMES,
    BadTopicId,
    ParsedTopic,
    TopicKind,
    TopicParser,
    TopicTemplates,
    id_problem,
    subscription_filter,
    template_problems,
)

LIMIT = 256 * 1024

# --------------------------------------------------------------------------------- topics


def test_default_templates_are_the_spec_table() -> None:
    t = TopicTemplates()
    assert t.format(TopicKind.PRODUCT_IN, "thermostat") == "device-agent/thermostat/in"
    assert t.format(TopicKind.PRODUCT_OUT, "thermostat") == "device-agent/thermostat/out"
    assert t.format(TopicKind.DEVICE_IN, "thermostat", "t1") == "device-agent/thermostat/device/t1/in"
    assert t.format(TopicKind.DEVICE_OUT, "thermostat", "t1") == "device-agent/thermostat/device/t1/out"
    assert t.format(TopicKind.COMMAND, "thermostat", "t1") == "device-agent/thermostat/device/t1/commands"
    assert t.format(TopicKind.RESPONSE, "thermostat", "t1") == "device-agent/thermostat/device/t1/responses"
    assert t.format(TopicKind.TELEMETRY, "thermostat", "t1") == "v1/thermostat/t1/telemetry"
    assert t.format(TopicKind.EVENT, "thermostat", "t1") == "v1/thermostat/t1/event"
    assert t.format(TopicKind.NTP_REQUEST, "thermostat", "t1") == "device-agent/thermostat/device/t1/ntp/request"
    assert t.format(TopicKind.NTP_RESPONSE, "thermostat", "t1") == "device-agent/thermostat/device/t1/ntp/response"
    assert set(TEMPLATE_NAMES) == {k.value for k in TopicKind}
    for name in TEMPLATE_NAMES:
        assert template_problems(name, getattr(t, name)) == [], name


@pytest.mark.parametrize(
    ("topic", "expected"),
    [
        ("v1/thermostat/t-001/telemetry", ParsedTopic(TopicKind.TELEMETRY, "thermostat", "t-001")),
        ("v1/light/lamp.1/event", ParsedTopic(TopicKind.EVENT, "light", "lamp.1")),
        ("device-agent/curtain/device/c1/responses", ParsedTopic(TopicKind.RESPONSE, "curtain", "c1")),
        ("device-agent/curtain/device/c1/ntp/request", ParsedTopic(TopicKind.NTP_REQUEST, "curtain", "c1")),
        ("device-agent/curtain/device/c1/in", ParsedTopic(TopicKind.DEVICE_IN, "curtain", "c1")),
        ("device-agent/curtain/in", ParsedTopic(TopicKind.PRODUCT_IN, "curtain", "")),
        ("v1/thermostat/空调-1/telemetry", ParsedTopic(TopicKind.TELEMETRY, "thermostat", "空调-1")),
    ],
)
def test_parse_inbound_topics(topic: str, expected: ParsedTopic) -> None:
    assert TopicParser(TopicTemplates()).parse(topic) == expected


@pytest.mark.parametrize(
    "topic",
    [
        "v1/thermostat/t1/telemetry/extra",
        "v2/thermostat/t1/telemetry",
        "device-agent/thermostat/device/t1/commands",  # gateway→device: never parsed as inbound
        "device-agent/thermostat/device/t1/ntp/response",
        "something/else",
        "",
    ],
)
def test_topics_matching_no_inbound_template_give_none(topic: str) -> None:
    assert TopicParser(TopicTemplates()).parse(topic) is None


@pytest.mark.parametrize(
    "topic",
    [
        "v1/thermostat//telemetry",
        "v1//t1/telemetry",
        "v1///telemetry",
        "device-agent//device/c1/responses",
        "device-agent/curtain/device//ntp/request",
        "v1/thermo+stat/t1/telemetry",
        "v1/thermostat/t#1/telemetry",
        "device-agent//in",
    ],
)
def test_empty_ids_or_ids_with_wildcards_are_bad_topic_ids(topic: str) -> None:
    with pytest.raises(BadTopicId):
        TopicParser(TopicTemplates()).parse(topic)


def test_an_id_with_a_slash_cannot_be_told_from_extra_levels() -> None:
    # `[^/]*` per placeholder: a `/` inside an id makes the topic not match at all.
    parser = TopicParser(TopicTemplates())
    assert parser.parse("v1/thermostat/a/b/telemetry") is None


def test_custom_templates_parse_and_format() -> None:
    t = TopicTemplates(
        telemetry="site/{productId}/{deviceId}/up/state",
        event="site/{productId}/{deviceId}/up/event",
        command="site/{deviceId}/{productId}/down/cmd",
        response="site/{deviceId}/{productId}/up/reply",
        ntp_request="time/{productId}/{deviceId}",
    )
    parser = TopicParser(t)
    assert parser.parse("site/light/l1/up/state") == ParsedTopic(TopicKind.TELEMETRY, "light", "l1")
    assert parser.parse("site/l1/light/up/reply") == ParsedTopic(TopicKind.RESPONSE, "light", "l1")
    assert parser.parse("time/light/l1") == ParsedTopic(TopicKind.NTP_REQUEST, "light", "l1")
    assert parser.parse("v1/light/l1/telemetry") is None  # the default no longer applies
    assert t.format(TopicKind.COMMAND, "light", "l1") == "site/l1/light/down/cmd"
    assert subscription_filter(t.command) == "site/+/+/down/cmd"
    with pytest.raises(BadTopicId):
        parser.parse("site/light//up/state")


def test_a_template_with_special_regex_characters_is_matched_literally() -> None:
    t = TopicTemplates(telemetry="a.b/{productId}/(x)/{deviceId}/tele*")
    parser = TopicParser(t)
    assert parser.parse("a.b/light/(x)/l1/tele*") == ParsedTopic(TopicKind.TELEMETRY, "light", "l1")
    assert parser.parse("aXb/light/(x)/l1/teleee") is None


def test_subscription_filters() -> None:
    t = TopicTemplates()
    assert subscription_filter(t.telemetry) == "v1/+/+/telemetry"
    assert subscription_filter(t.ntp_request) == "device-agent/+/device/+/ntp/request"


@pytest.mark.parametrize(
    ("name", "template", "fragment"),
    [
        ("telemetry", "", "non-empty"),
        ("telemetry", "/v1/{productId}/{deviceId}", "leading or trailing /"),
        ("telemetry", "v1/{productId}/{deviceId}/", "leading or trailing /"),
        ("telemetry", "v1/+/{productId}/{deviceId}", "no + #"),
        ("telemetry", "v1/{productId}/{deviceId}/#", "no + #"),
        ("telemetry", "v1/{product}/{productId}/{deviceId}", "other braces"),
        ("telemetry", "v1/{productId}/{productId}/{deviceId}", "more than once"),
        ("telemetry", "v1/x{productId}/{deviceId}", "whole topic level"),
        ("telemetry", "v1/{productId}-{deviceId}", "whole topic level"),
        ("telemetry", "v1/{deviceId}/telemetry", "must contain {productId}"),
        ("command", "v1/{productId}/commands", "must contain {deviceId}"),
    ],
)
def test_bad_templates_are_reported(name: str, template: str, fragment: str) -> None:
    problems = template_problems(name, template)
    assert any(fragment in p for p in problems), problems


def test_product_level_templates_need_no_device_id() -> None:
    assert template_problems("product_in", "agents/{productId}/ask") == []
    assert template_problems("product_out", "agents/{productId}") == []
    assert template_problems("device_in", "agents/{productId}/ask") != []


def test_id_problem() -> None:
    assert id_problem("t-001") is None
    assert id_problem("") == "must not be empty"
    for bad in ("a/b", "a+b", "a#b"):
        assert id_problem(bad) == "must not contain + # or /"


# --------------------------------------------------------------------------------- codec


def test_json_by_content_type_and_by_first_byte() -> None:
    body = {"type": "state", "data": {"temperature": 21.5, "name": "客厅"}}
    payload = json.dumps(body, ensure_ascii=False).encode()
    assert decode(payload, "application/json", LIMIT) == (body, "json")
    assert decode(payload, "application/json; charset=utf-8", LIMIT) == (body, "json")
    assert decode(payload, None, LIMIT) == (body, "json")
    assert decode(b"  \r\n\t" + payload, None, LIMIT) == (body, "json")


def test_cbor_by_content_type_and_by_first_byte() -> None:
    body = {"type": "state", "data": {"temperature": 21.5, "on": True, "list": [1, None, "x"], "big": 2**62}}
    payload = cbor2.dumps(body)
    assert 0xA0 <= payload[0] <= 0xBF
    assert decode(payload, "application/cbor", LIMIT) == (body, "cbor")
    assert decode(payload, "APPLICATION/CBOR", LIMIT) == (body, "cbor")
    assert decode(payload, None, LIMIT) == (body, "cbor")


def test_content_type_wins_over_first_byte() -> None:
    payload = json.dumps({"a": 1}).encode()
    with pytest.raises(DecodeError) as info:
        decode(payload, "application/cbor", LIMIT)
    # A JSON object read as CBOR is not a CBOR map: rejected, not guessed.
    assert info.value.reason in ("bad_cbor", "not_object")


def test_unknown_content_type_is_rejected() -> None:
    with pytest.raises(DecodeError) as info:
        decode(b'{"a":1}', "text/plain", LIMIT)
    assert info.value.reason == "unknown_encoding"


def test_too_large_is_checked_before_decoding() -> None:
    payload = json.dumps({"blob": "x" * 3000}).encode()
    with pytest.raises(DecodeError) as info:
        decode(payload, None, 2048)
    assert info.value.reason == "too_large"
    assert decode(payload, None, len(payload))[0]["blob"] == "x" * 3000
    with pytest.raises(DecodeError) as info:
        decode(b"\xff" * 5000, "application/cbor", 4096)
    assert info.value.reason == "too_large"


@pytest.mark.parametrize(
    "payload",
    [b'{"type": "status", ', b"{not json}", b'{"a": 1}}', b'{"a": "\xff\xfe"}', b"{" * 10],
)
def test_bad_json(payload: bytes) -> None:
    with pytest.raises(DecodeError) as info:
        decode(payload, None, LIMIT)
    assert info.value.reason == "bad_json"


@pytest.mark.parametrize(
    "payload",
    [
        cbor2.dumps({"type": "state", "data": {"x": 1}})[:-3],  # truncated
        b"\xa1\x61",  # map with a truncated key
        b"\xa2\x61a\x01\x61a\x02",  # duplicate key
        b"\xbf\x61a\x01\xff",  # indefinite-length map
        b"\xa1\x61a\x7f\x61b\xff",  # indefinite-length text
        b"\xa1\x61a\xfc",  # reserved additional info
    ],
)
def test_bad_cbor(payload: bytes) -> None:
    with pytest.raises(DecodeError) as info:
        decode(payload, "application/cbor", LIMIT)
    assert info.value.reason == "bad_cbor"


def test_deep_nesting_is_rejected_for_both_encodings() -> None:
    deep_json = b'{"a":' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    with pytest.raises(DecodeError) as info:
        decode(deep_json, None, 1 << 20)
    assert info.value.reason == "bad_json"
    deep_cbor = b"\xa1\x61a" + b"\x81" * 100_000 + b"\x00"
    with pytest.raises(DecodeError) as info:
        decode(deep_cbor, "application/cbor", 1 << 20)
    assert info.value.reason == "bad_cbor"


def test_moderate_nesting_is_fine() -> None:
    value: object = 1
    for _ in range(10):
        value = [value]
    body = {"a": value}
    assert decode(cbor2.dumps(body), None, LIMIT)[0] == body
    assert decode(json.dumps(body).encode(), None, LIMIT)[0] == body


@pytest.mark.parametrize(
    "payload",
    [
        b"\xa1\x61a" + b"\xd8\x1c" + b"\x80",  # {"a": 28([])}
        b"\xa1\x61a" + b"\x82\xd8\x1c\x80\xd8\x1d\x00",  # {"a": [28([]), 29(0)]}
    ],
    ids=["tag28", "tag29"],
)
def test_cbor_value_sharing_tags_are_rejected(payload: bytes) -> None:
    with pytest.raises(DecodeError) as info:
        decode(payload, "application/cbor", LIMIT)
    assert info.value.reason == "bad_cbor"


def test_cbor_self_reference_does_not_crash() -> None:
    # 28([29(0)]): a list that contains itself.
    payload = b"\xa1\x61a\xd8\x1c\x81\xd8\x1d\x00"
    with pytest.raises(DecodeError):
        decode(payload, "application/cbor", LIMIT)


@pytest.mark.parametrize(
    ("payload", "content_type"),
    [
        (b"[1, 2]", None),
        (b'"text"', None),
        (b"42", None),
        (b"-1", None),
        (b"true", None),
        (b"null", None),
        (b"[1, 2]", "application/json"),
        (b"42", "application/json"),
        (cbor2.dumps([1, 2]), "application/cbor"),
        (cbor2.dumps("text"), "application/cbor"),
        (cbor2.dumps(7), "application/cbor"),
    ],
)
def test_non_object_payloads_are_rejected(payload: bytes, content_type: str | None) -> None:
    with pytest.raises(DecodeError) as info:
        decode(payload, content_type, LIMIT)
    assert info.value.reason == "not_object"


@pytest.mark.parametrize("payload", [b"", b"   ", b"\x00\x01", b"hello", b"\x80"])
def test_unrecognisable_payloads_are_rejected(payload: bytes) -> None:
    with pytest.raises(DecodeError) as info:
        decode(payload, None, LIMIT)
    assert info.value.reason in ("unknown_encoding", "not_object")


# CBOR can carry what the gateway cannot store or serve as JSON; such payloads are refused
# whole (counted, logged), never half-stored.
UNSUPPORTED = ("bad_cbor", "unsupported_cbor_value")


@pytest.mark.parametrize("key", [1, b"bytes", 2.5, True, None])
def test_cbor_maps_need_text_keys(key: object) -> None:
    payload = cbor2.dumps({key: 1, "type": "state"})
    with pytest.raises(DecodeError) as info:
        decode(payload, "application/cbor", LIMIT)
    assert info.value.reason in UNSUPPORTED


def test_nested_maps_need_text_keys_too() -> None:
    with pytest.raises(DecodeError) as info:
        decode(cbor2.dumps({"data": {"ok": 1, "more": {1: "x"}}}), None, LIMIT)
    assert info.value.reason in UNSUPPORTED
    assert "$.data.more" in info.value.detail


@pytest.mark.parametrize(
    ("value", "where"),
    [
        (b"\x00\x01", "$.data.v"),
        (float("nan"), "$.data.v"),
        (float("inf"), "$.data.v"),
        (2**64, "$.data.v"),
        (-(2**63) - 1, "$.data.v"),
        ([1, b"x"], "$.data.v[1]"),
        (cbor2.CBORTag(4000, "x"), "$.data.v"),
        (cbor2.undefined, "$.data.v"),
        ({1, 2}, "$.data.v"),
    ],
)
def test_cbor_values_without_a_json_equivalent_are_refused(value: object, where: str) -> None:
    with pytest.raises(DecodeError) as info:
        decode(cbor2.dumps({"type": "state", "data": {"v": value}}), "application/cbor", LIMIT)
    assert info.value.reason in UNSUPPORTED
    assert where in info.value.detail


def test_cbor_datetime_tags_are_refused_or_plain() -> None:
    payload = cbor2.dumps({"at": datetime.datetime(2024, 3, 9, tzinfo=datetime.UTC)})
    try:
        body, _ = decode(payload, None, LIMIT)
    except DecodeError as exc:
        assert exc.reason in UNSUPPORTED
    else:
        json.dumps(body)  # whatever comes out must be storable as JSON


@pytest.mark.parametrize("payload", [b'{"t": NaN}', b'{"t": Infinity}', b'{"t": -Infinity}'])
def test_json_nan_and_infinity_are_refused(payload: bytes) -> None:
    with pytest.raises(DecodeError) as info:
        decode(payload, None, LIMIT)
    assert info.value.reason == "bad_json"


def test_64_bit_integers_are_fine() -> None:
    body = {"max": 2**63 - 1, "min": -(2**63)}
    assert decode(cbor2.dumps(body), None, LIMIT)[0] == body


def test_encode_round_trips_and_content_types() -> None:
    body = {"cmd": "set_mode", "params": {"mode": "eco"}, "requestId": "r1", "ts": 1710000010000}
    as_json = encode(body, "json")
    assert json.loads(as_json) == body
    assert b" " not in as_json
    assert encode({"text": "温度"}, "json") == '{"text":"温度"}'.encode()
    as_cbor = encode(body, "cbor")
    assert cbor2.loads(as_cbor) == body
    assert decode(as_cbor, None, LIMIT) == (body, "cbor")
    assert content_type_of("cbor") == "application/cbor"
    assert content_type_of("json") == "application/json"


def test_sniff_encoding() -> None:
    assert sniff_encoding(b"{}", None) == "json"
    assert sniff_encoding(b"\xa0", None) == "cbor"
    assert sniff_encoding(b"\xbf", None) == "cbor"
    assert sniff_encoding(b"\xa0", "application/json") == "json"
    with pytest.raises(DecodeError):
        sniff_encoding(b"\xc0", None)
