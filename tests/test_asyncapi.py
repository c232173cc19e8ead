"""The AsyncAPI 3.0 document of the device side and the voice WebSocket
(deviceagentd/http/asyncapi.json, served at /api/asyncapi.json): valid against the official
AsyncAPI 3.0.0 JSON Schema, tied to the code's topic templates, and true: what a real gateway
accepts and sends over a real Mosquitto validates against it, and its examples are accepted.

tests/data/asyncapi-3.0.0.schema.json.gz is `schemas/3.0.0-without-$id.json` of the npm package
@asyncapi/specs 6.11.1 (Apache-2.0), the schema AsyncAPI's own parser validates with.
"""

from __future__ import annotations

import asyncio
import copy
import gzip
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import cbor2
import jsonschema
import pytest
from daemon_harness import RunningDaemon, start_daemon, wait_until
from mosquitto_broker import MosquittoBroker
from test_mqtt_support import RawDevice

import deviceagentd
from deviceagentd.http.routes_console import ASYNCAPI_PATH, load_asyncapi
from deviceagentd.mqtt.ntp import parse_request
from deviceagentd.mqtt.topics import TopicKind, TopicTemplates

SCHEMA = Path(__file__).resolve().parent / "data" / "asyncapi-3.0.0.schema.json.gz"
WAIT_S = 15.0
CHANNEL_OF_KIND = {
    "telemetry": TopicKind.TELEMETRY, "event": TopicKind.EVENT, "commands": TopicKind.COMMAND,
    "responses": TopicKind.RESPONSE, "ntpRequest": TopicKind.NTP_REQUEST, "ntpResponse": TopicKind.NTP_RESPONSE,
    "deviceIn": TopicKind.DEVICE_IN, "deviceOut": TopicKind.DEVICE_OUT, "productIn": TopicKind.PRODUCT_IN,
    "productOut": TopicKind.PRODUCT_OUT,
}


@pytest.fixture(scope="module")
def doc() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(ASYNCAPI_PATH.read_text(encoding="utf-8"))
    return loaded


@pytest.fixture(scope="module")
def official() -> jsonschema.Draft7Validator:
    return jsonschema.Draft7Validator(json.loads(gzip.decompress(SCHEMA.read_bytes())))


def resolve(doc: dict[str, Any], ref: str) -> Any:
    node: Any = doc
    for part in ref.removeprefix("#/").split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


def deref(doc: dict[str, Any], node: Any) -> Any:
    while isinstance(node, dict) and "$ref" in node:
        node = resolve(doc, node["$ref"])
    return node


def payload_validator(doc: dict[str, Any], message: str) -> jsonschema.Draft7Validator:
    """A validator for one component message's payload (its $refs resolve inside the document)."""
    schema = {"$ref": f"#/components/messages/{message}/payload", **{k: v for k, v in doc.items() if k == "components"}}
    return jsonschema.Draft7Validator(schema, format_checker=jsonschema.Draft7Validator.FORMAT_CHECKER)


def assert_payload(doc: dict[str, Any], message: str, value: Any) -> None:
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in payload_validator(doc, message).iter_errors(value)]
    assert not errors, f"{message}: {value!r}: {errors}"


def test_the_official_schema_accepts_it_and_rejects_broken_copies(
        doc: dict[str, Any], official: jsonschema.Draft7Validator) -> None:
    assert [e.message for e in official.iter_errors(doc)] == []
    for breaking in (lambda d: d.pop("info"), lambda d: d["operations"]["raiseEvent"].update(action="publish"),
                     lambda d: d["channels"]["telemetry"].update(address=7),
                     lambda d: d["servers"]["broker"].pop("protocol")):
        broken = copy.deepcopy(doc)
        breaking(broken)
        assert list(official.iter_errors(broken)), "the validator must be able to say no"


def test_every_ref_resolves_and_operations_use_their_channels_messages(doc: dict[str, Any]) -> None:
    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            if "$ref" in node:
                yield node["$ref"]
            for value in node.values():
                yield from walk(value)
        elif isinstance(node, list):
            for value in node:
                yield from walk(value)

    for ref in walk(doc):
        resolve(doc, ref)
    for name, operation in doc["operations"].items():
        channel = operation["channel"]["$ref"]
        for message in operation["messages"]:
            assert message["$ref"].startswith(channel + "/messages/"), (name, message)
        if "reply" in operation:
            for message in operation["reply"]["messages"]:
                assert message["$ref"].startswith(operation["reply"]["channel"]["$ref"] + "/messages/"), name
    used = {m["$ref"].rsplit("/", 1)[1] for op in doc["operations"].values() for m in op["messages"]}
    for channel_name, channel in doc["channels"].items():
        assert set(channel["messages"]) <= used, f"{channel_name} has messages no operation sends or receives"


def test_the_addresses_are_the_default_topic_templates(doc: dict[str, Any]) -> None:
    templates = TopicTemplates()
    for channel, kind in CHANNEL_OF_KIND.items():
        assert doc["channels"][channel]["address"] == templates.template(kind), channel
    assert doc["info"]["version"] == deviceagentd.__version__
    assert load_asyncapi() == doc  # what the server loads is the file


def test_every_example_validates(doc: dict[str, Any]) -> None:
    seen = 0
    for name, message in doc["components"]["messages"].items():
        for example in message.get("examples", []):
            assert_payload(doc, name, example["payload"])
            seen += 1
    assert seen >= 15
    with pytest.raises(AssertionError):
        assert_payload(doc, "ntpRequest", {"deviceSendTime": "soon"})
    with pytest.raises(AssertionError):
        assert_payload(doc, "event", {"type": "event", "data": {"level": "info"}})
    # The gateway's own parser takes the documented request.
    [request] = doc["components"]["messages"]["ntpRequest"]["examples"]
    parsed = parse_request(json.dumps(request["payload"]).encode(), "application/json")
    assert parsed.device_send_time == request["payload"]["deviceSendTime"]


@pytest.fixture
async def gateway(broker: MosquittoBroker, tmp_path: Path) -> AsyncIterator[RunningDaemon]:
    gw = await start_daemon(broker.url, tmp_path / "state")
    try:
        yield gw
    finally:
        await gw.stop()


async def test_a_device_speaking_the_document_is_understood_and_answered(
        doc: dict[str, Any], broker: MosquittoBroker, gateway: RunningDaemon) -> None:
    """Publish the documented examples as a device would, and check what the gateway sends back
    against the document (JSON, then CBOR)."""
    messages = doc["components"]["messages"]
    examples = {name: [e["payload"] for e in m.get("examples", [])] for name, m in messages.items()}
    for encoding in ("json", "cbor"):
        await speak_the_document(doc, broker, gateway, examples, encoding)


async def speak_the_document(doc: dict[str, Any], broker: MosquittoBroker, gateway: RunningDaemon,
                             examples: dict[str, list[Any]], encoding: str) -> None:
    device_id = f"thermostat-{encoding}"
    device = await RawDevice(broker.url, "thermostat", device_id).connect()
    replies = await RawDevice(broker.url, "thermostat", device_id).connect(subscribe=False)
    try:
        replies.client.subscribe(replies.topic(TopicKind.DEVICE_OUT))
        online, _ = examples["status"]
        await device.send(TopicKind.TELEMETRY, online, encoding=encoding)
        await device.send(TopicKind.TELEMETRY, examples["state"][0], encoding=encoding)
        await device.send(TopicKind.EVENT, examples["event"][0], encoding=encoding)
        registry = gateway.daemon.registry
        await wait_until(lambda: (d := registry.get(device_id)) is not None
                         and d.state.get("temperature") == 28.5, WAIT_S)
        status, events = await gateway.request("GET", f"/api/devices/{device_id}/events?event=temperature_alert")
        assert status == 200 and events["events"][0]["data"] == {"temperature": 38.5}

        await device.send(TopicKind.NTP_REQUEST, examples["ntpRequest"][0], encoding=encoding, qos=0)
        answer = await device.expect(lambda r: r.topic.endswith("/ntp/response"))
        assert_payload(doc, "ntpResponse", answer.body())
        assert (answer.content_type == "application/cbor") == (encoding == "cbor")

        command = asyncio.create_task(gateway.request(
            "POST", f"/api/devices/{device_id}/commands",
            json_body={"command": "set_target_temperature", "params": {"target_temperature": 24}}))
        sent = await device.command()
        assert_payload(doc, "command", sent.body())
        [ok, _] = examples["commandResponse"]
        await device.send(TopicKind.RESPONSE, {**ok, "requestId": sent.body()["requestId"]}, encoding=encoding)
        status, result = await command
        assert status == 200 and result["ok"] is True

        await device.send(TopicKind.DEVICE_IN, examples["textRequest"][0], encoding=encoding)
        reply = await replies.expect(lambda r: r.topic.endswith("/out"))
        assert_payload(doc, "textReply", reply.body())

        await device.send(TopicKind.TELEMETRY, examples["status"][1], encoding=encoding)  # the last will
        await wait_until(lambda: not registry.get(device_id).online, WAIT_S)  # type: ignore[union-attr]
    finally:
        await device.disconnect()
        await replies.disconnect()


async def test_the_voice_socket_answers_as_documented(doc: dict[str, Any], gateway: RunningDaemon) -> None:
    url = gateway.voice_url.replace("http://", "ws://") + doc["channels"]["voice"]["address"]
    async with aiohttp.ClientSession() as session, session.ws_connect(url) as ws:
        await ws.send_str(json.dumps({"type": "listen", "mode": "auto"}))  # before hello
        first = json.loads((await ws.receive(timeout=10)).data)
        assert_payload(doc, "voiceError", first)
        [hello] = doc["components"]["messages"]["voiceHello"]["examples"]
        await ws.send_str(json.dumps(hello["payload"]))
        answer = json.loads((await ws.receive(timeout=10)).data)
        # A gateway with speech recognition says hello; one without says why not.
        assert_payload(doc, "voiceServerHello" if answer["type"] == "hello" else "voiceError", answer)


async def test_the_document_is_served(gateway: RunningDaemon, doc: dict[str, Any]) -> None:
    status, served = await gateway.request("GET", "/api/asyncapi.json")
    assert status == 200 and served == doc


def test_cbor_example_round_trips(doc: dict[str, Any]) -> None:
    """Integer times stay integers in CBOR (major type 0), as the document says."""
    [request] = doc["components"]["messages"]["ntpRequest"]["examples"]
    encoded = cbor2.dumps(request["payload"])
    assert cbor2.loads(encoded) == request["payload"]
    assert parse_request(encoded, None).encoding == "cbor"
