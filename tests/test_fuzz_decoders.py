"""Property tests (hypothesis) of every decoder and validator that takes input from outside
(issue 13): each either returns a value the rest of the gateway can use or raises its own
documented error, whatever it is given; none raises anything else."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import cbor2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from deviceagentd import strictjson
from deviceagentd.core.catalog import load_catalog
from deviceagentd.core.clock import Clock
from deviceagentd.core.events import EventRecorder
from deviceagentd.core.metrics import Metrics
from deviceagentd.core.registry import DeviceRegistry, Rejected
from deviceagentd.core.spec import SpecError, parse_spec
from deviceagentd.core.values import check_params, check_value
from deviceagentd.mqtt.codec import DecodeError, decode
from deviceagentd.mqtt.ntp import BadNtpRequest, parse_request
from deviceagentd.store.records import DeviceRecord, EventRecord, NewEvent
from deviceagentd.voice import messages
from deviceagentd.voice.messages import BadMessage
from deviceagentd.voice.protocol import BinaryCodec, ProtocolError
from deviceagentd.voiceplatform.errors import VoicePlatformError
from deviceagentd.voiceplatform.service import _check_envelope, _endpoint_id, _json_object
from deviceagentd.voiceplatform.signing import RequestVerifier, SigningSettings

PRODUCTS = load_catalog(Path(__file__).resolve().parent.parent / "etc" / "deviceagentd" / "products")
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Anything a JSON or CBOR decoder can produce, and some things only CBOR can (bytes, huge ints,
# NaN, non-string keys), to check that the validators behind the decoders cope too.
scalars = (st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
           | st.binary(max_size=8))
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8) | st.integers(), inner,
                                                                max_size=4),
    max_leaves=15,
)
# What json.loads can produce (string keys; Python's json also yields infinities and huge ints).
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=10)
json_objects = st.dictionaries(st.text(max_size=10), json_values, max_size=6)


def json_clean(value: Any) -> bool:
    """What the store and the API need: JSON types only, finite floats, 64-bit ints, text keys."""
    if value is None or isinstance(value, bool | str):
        return True
    if isinstance(value, int):
        return -(2**63) <= value < 2**63
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, list):
        return all(json_clean(item) for item in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and json_clean(v) for k, v in value.items())
    return False


# ------------------------------------------------------------------------ MQTT payloads


@FUZZ
@given(st.binary(max_size=400), st.sampled_from([None, "application/json", "application/cbor", "text/plain"]))
def test_any_payload_decodes_to_a_clean_object_or_a_decode_error(payload: bytes, content_type: str | None) -> None:
    try:
        body, encoding = decode(payload, content_type, 4096)
    except DecodeError as exc:
        assert exc.reason and exc.detail
        return
    assert isinstance(body, dict) and encoding in ("json", "cbor") and json_clean(body)
    strictjson.dumps(body)


@FUZZ
@given(values)
def test_any_cbor_value_is_accepted_clean_or_refused(value: Any) -> None:
    try:
        payload = cbor2.dumps({"type": "state", "data": value})
    except (ValueError, TypeError, OverflowError):
        return  # not encodable at all
    try:
        body, _ = decode(payload, "application/cbor", 1 << 16)
    except DecodeError:
        return
    assert json_clean(body)


@FUZZ
@given(json_objects)
def test_any_json_object_is_accepted_clean_or_refused(value: dict[str, Any]) -> None:
    payload = json.dumps(value).encode()
    try:
        body, _ = decode(payload, None, 1 << 16)
    except DecodeError as exc:
        assert exc.reason in ("unsupported_json_value", "bad_json", "too_large")
        return
    assert json_clean(body) and body == value


@FUZZ
@given(st.binary(max_size=200) | json_objects.map(lambda o: json.dumps(o).encode())
       | st.dictionaries(st.sampled_from(["deviceSendTime", "requestId"]), values).map(
           lambda o: cbor2.dumps(o, default=lambda e, v: e.encode(repr(v)))))
def test_any_time_sync_request_is_parsed_or_refused(payload: bytes) -> None:
    try:
        request = parse_request(payload, None)
    except BadNtpRequest as exc:
        assert exc.reason
        return
    assert isinstance(request.device_send_time, int) and request.device_send_time >= 0


# ------------------------------------------------------------------------ the core


class _NullStore:
    def save_device(self, record: DeviceRecord) -> None:
        pass

    def add_event(self, event: NewEvent) -> EventRecord:
        return EventRecord(**vars(event), id=1)


@FUZZ
@given(st.sampled_from(sorted(PRODUCTS.products)), json_objects | st.dictionaries(
    st.sampled_from(["type", "data", "metadata", "ts"]), json_values, max_size=4))
def test_telemetry_and_events_of_any_shape_are_accepted_or_rejected(product: str, body: dict[str, Any]) -> None:
    # What the codec hands on: JSON values (test_any_cbor_value_is_accepted_clean_or_refused
    # shows that nothing else gets through it).
    registry = DeviceRegistry(PRODUCTS, _NullStore(), Metrics(), 60.0, Clock())
    events = EventRecorder(registry, _NullStore(), Clock())
    for accept in (lambda: registry.accept_telemetry(product, "dev-1", body, "json"),
                   lambda: events.accept(product, "dev-1", body, "json")):
        try:
            accept()
        except Rejected as exc:
            assert exc.reason
    device = registry.get("dev-1")
    if device is not None:
        strictjson.dumps(device.to_json())


@FUZZ
@given(values)
def test_check_value_never_raises(value: Any) -> None:
    for spec in PRODUCTS.products.values():
        for command in spec.commands.values():
            for field in command.params.values():
                assert check_value(field, value) is None or isinstance(check_value(field, value), str)
            check_params(command, value)
            check_params(command, {"x": value, **{name: value for name in command.params}})


@FUZZ
@given(st.dictionaries(st.sampled_from(["name", "description", "telemetry", "commands", "events", "voice",
                                         "version", "productId"]), json_values, max_size=6) | json_values)
def test_any_product_file_content_is_a_spec_or_a_spec_error(data: Any) -> None:
    # Product files are JSON (core.spec.load_spec_file): string keys only.
    try:
        spec = parse_spec("fuzz", data)
    except SpecError as exc:
        assert exc.problems
        return
    strictjson.dumps(spec.to_json())


# ------------------------------------------------------------------------ voice


@FUZZ
@given(st.sampled_from([1, 2, 3]), st.binary(max_size=300))
def test_any_binary_voice_frame_decodes_or_is_a_protocol_error(version: int, data: bytes) -> None:
    try:
        frame = BinaryCodec(version).decode(data)
    except ProtocolError:
        return
    assert len(frame.payload) <= len(data)


@FUZZ
@given(json_objects | st.dictionaries(st.sampled_from(["type", "mode", "state", "visionRefs", "version",
                                                       "audio_params", "sessionId", "language"]), values,
                                      max_size=5).map(lambda d: {"type": "listen", **d}))
def test_any_voice_control_message_parses_or_is_a_bad_message(message: dict[str, Any]) -> None:
    try:
        kind = messages.message_type(message)
        if kind == "hello":
            messages.parse_hello(message, None, {})
        else:
            messages.parse(message)
    except BadMessage as exc:
        assert exc.code
    with pytest.raises(BadMessage):
        messages.message_type([message])


# ------------------------------------------------------------------------ voice platform


@FUZZ
@given(st.binary(max_size=300) | json_objects.map(lambda o: json.dumps(o).encode())
       | st.dictionaries(st.sampled_from(["message_id", "version", "command", "endpoint"]), values, max_size=4)
       .map(lambda o: json.dumps(o, default=repr).encode()))
def test_any_execute_body_is_an_envelope_or_a_tuya_error(raw: bytes) -> None:
    try:
        body = _json_object(raw)
        _check_envelope(body)
        _endpoint_id(body)
    except VoicePlatformError as exc:
        assert exc.code in (1100, 1104, 1109)


class _FixedClock(Clock):
    def wall_ms(self) -> int:
        return 1_800_000_000_000


@FUZZ
@given(st.dictionaries(st.sampled_from(["client_id", "sign", "sign_method", "t", "nonce", "access_token",
                                         "Signature-Headers"]), st.text(max_size=70), max_size=7),
       st.binary(max_size=100))
def test_any_signature_headers_verify_or_are_refused_with_a_tuya_code(headers: dict[str, str], body: bytes) -> None:
    verifier = RequestVerifier(SigningSettings("client-1", "secret"), _FixedClock())
    try:
        verifier.verify(method="POST", path="/v1.0/voice/execute", query={}, headers=headers, body=body,
                        business=True)
    except VoicePlatformError as exc:
        assert exc.code in (1002, 1004, 1005, 1013, 1105)
