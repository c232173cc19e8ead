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
import voice_samples as vs
from daemon_harness import RunningDaemon, start_daemon, wait_until
from mosquitto_broker import MosquittoBroker
from test_mqtt_support import RawDevice
from test_voice_session import Rig, ScriptedProvider, said, start_rig
from test_voice_xiaozhi import offline_agent, tools_listed
from voice_doubles import AsrScript
from xiaozhi_firmware import FirmwareDevice

import deviceagentd
from deviceagentd.agent.types import Delta, TurnContext, TurnEvent
from deviceagentd.http.routes_console import ASYNCAPI_PATH, load_asyncapi
from deviceagentd.mqtt.ntp import parse_request
from deviceagentd.mqtt.topics import TopicKind, TopicTemplates
from deviceagentd.voice import audio
from deviceagentd.voice import messages as voice_messages
from deviceagentd.voice.audio import AudioParams
from deviceagentd.voice.dialect import WARNINGS, EmqxDialect, XiaozhiDialect
from deviceagentd.voice.events import ReplyText, SentenceStart, Transcript, TurnOver

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
    hellos = doc["components"]["messages"]["voiceHello"]["examples"]
    assert {h["name"] for h in hellos} == {"browser", "xiaozhiFirmware"}
    for hello in hellos:
        async with aiohttp.ClientSession() as session, session.ws_connect(url) as ws:
            await ws.send_str(json.dumps({"type": "listen", "mode": "auto"}))  # before hello
            first = json.loads((await ws.receive(timeout=10)).data)
            assert voice_message(doc, "hear", first) == "voiceError"
            await ws.send_str(json.dumps(hello["payload"]))
            answer = json.loads((await ws.receive(timeout=10)).data)
            # A gateway with speech recognition says hello; one without says why not.
            assert voice_message(doc, "hear", answer) in ("voiceServerHello", "voiceError")
            if answer["type"] == "hello":
                assert answer["audio_params"]["format"] == hello["payload"]["audio_params"]["format"]


# ---------------------------------------------------------------------------------------------
# The voice channel: every message of both dialects, against the code and a real session
# ---------------------------------------------------------------------------------------------


def voice_message(doc: dict[str, Any], operation: str, message: Any) -> str:
    """The component message of `operation` (speak: client → gateway, hear: gateway → client)
    that documents this JSON message: the one whose payload's `type` is the message's, which it
    must validate against, with no field its schema does not name."""
    names = []
    for ref in doc["operations"][operation]["messages"]:
        name = resolve(doc, ref["$ref"])["$ref"].rsplit("/", 1)[1]
        payload = deref(doc, doc["components"]["messages"][name]["payload"])
        if payload.get("properties", {}).get("type", {}).get("const") == message.get("type"):
            names.append(name)
    assert len(names) == 1, f"{operation}: {len(names)} documented messages of type {message.get('type')!r}"
    [name] = names
    assert_payload(doc, name, message)
    payload = deref(doc, doc["components"]["messages"][name]["payload"])
    undocumented = set(message) - set(payload["properties"])
    assert not undocumented, f"{name}: fields {undocumented} are not in the document"
    return name


def voice_schema_accepts(doc: dict[str, Any], schema: str, value: Any) -> bool:
    validator = jsonschema.Draft7Validator({"$ref": f"#/components/schemas/{schema}", "components": doc["components"]})
    return validator.is_valid(value)


def test_the_voice_vocabulary_is_the_codes(doc: dict[str, Any]) -> None:
    """Each message type the session accepts, each audio format, rate and duration it serves,
    and each message the dialects build is in the document; nothing else is."""
    spoken = set()
    for ref in doc["operations"]["speak"]["messages"]:
        name = resolve(doc, ref["$ref"])["$ref"].rsplit("/", 1)[1]
        payload = deref(doc, doc["components"]["messages"][name]["payload"])
        if payload.get("type") == "object":
            spoken.add(payload["properties"]["type"]["const"])
    assert spoken == set(voice_messages.MESSAGE_TYPES)
    # Audio: what parse_audio_params accepts is exactly what AudioParams allows.
    rates = sorted({*audio.INPUT_RATES, *audio.OPUS_RATES, 11025, 22050, 32000, 44100, 96000})
    for fmt in (*audio.FORMATS, audio.OPUS, "flac"):
        for rate in rates:
            for frame_ms in (5, 10, 20, 25, 30, 40, 60, 80, 100, 120, 240, 1000, 1010):
                for channels in (1, 2):
                    params = {"format": fmt, "sample_rate": rate, "channels": channels, "frame_duration": frame_ms}
                    try:
                        audio.parse_audio_params(params)
                        served = True
                    except audio.AudioFormatError:
                        served = False
                    assert voice_schema_accepts(doc, "AudioParams", params) == served, params
    output = doc["components"]["schemas"]["OutputAudioParams"]["properties"]
    assert output["sample_rate"]["enum"] == list(audio.OUTPUT_RATES)
    assert output["format"]["enum"] == ["pcm", audio.OPUS]
    # What the dialects build.
    codes = doc["components"]["schemas"]["VoiceError"]["properties"]["code"]["examples"]
    assert set(WARNINGS) <= set(codes)
    xiaozhi, emqx = XiaozhiDialect(), EmqxDialect()
    for params in (AudioParams(16000, 60, format=audio.OPUS), AudioParams(24000, 60)):
        for dialect in (xiaozhi, emqx):
            assert voice_message(doc, "hear", dialect.hello("s-1", 1, params, "aliyun")) == "voiceServerHello"
    built = [*xiaozhi.messages(Transcript("hi", True, None)), *xiaozhi.messages(ReplyText("Hi.", False)),
             *xiaozhi.messages(SentenceStart("Hi.")), *xiaozhi.messages(TurnOver(True)), *xiaozhi.aborted(),
             *xiaozhi.error("internal_error", "boom"), *xiaozhi.error("bad_audio", "junk"),
             *emqx.messages(Transcript("hi", False, "t-1")), *emqx.messages(Transcript("hi", True, None)),
             *emqx.messages(ReplyText("Hi.", True)), *emqx.messages(SentenceStart("Hi.")),
             *emqx.messages(TurnOver(True)), *emqx.error("no_speech", "quiet")]
    names = [voice_message(doc, "hear", m) for m in built]
    assert {"voiceStt", "voiceLlm", "voiceTts", "voiceAlert", "voiceError", "voiceAsr", "voiceAgentReply",
            "voiceTtsComplete"} <= set(names)
    assert not voice_schema_accepts(doc, "VoiceTts", {"type": "tts", "state": "sentence_start"})
    assert not voice_schema_accepts(doc, "VoiceLlm", {"type": "llm", "text": "😶", "emotion": "neutral", "x": 1})


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    the_rig = await start_rig()
    try:
        yield the_rig
    finally:
        await the_rig.close()
    assert the_rig.ds.problems == [] and the_rig.oa.problems == []


async def test_a_xiaozhi_session_is_documented_message_by_message(doc: dict[str, Any], rig: Rig) -> None:
    """Stock XiaoZhi firmware, replayed from its code (tests/xiaozhi_firmware.py), through the
    whole dialect: Opus hello, MCP handshake and a tool call, iot and ping, the wake word and its
    greeting, a spoken turn in realtime mode, abort, corrupt audio, a failed turn; every message
    either way must be a documented message that validates, with no undocumented field."""
    vs.require_espeak()
    offline_agent(rig)
    rig.ds.asr = AsrScript(sentences=["set the speaker volume to 40"], bytes_per_sentence=32000)
    device = FirmwareDevice(rig.url, version=3)
    assert await device.open()
    try:
        await tools_listed(rig, device)
        await device.send_text('{"session_id":"' + device.session_id + '","type":"iot","update":true,'
                               '"descriptors":[{"name":"Speaker","methods":{}}]}')
        await device.send_text('{"type":"ping"}')
        await device.speak(said("ni hao xiao zhi", lead_s=0.1, tail_s=0.1))
        await device.wake_word_detected("你好小智")
        await device.start_listening("auto")
        greeted = await device.wait_for("tts", state="stop")
        await device.start_listening("realtime")
        await device.speak(said())
        stt = await device.wait_for("stt", after=greeted)
        await device.wait_for("tts", after=stt, state="stop")
        assert device.mcp.calls == [("self.audio_speaker.set_volume", {"volume": 40})]
        mark = len(device.json)
        await device.abort_speaking(wake_word=True)
        await device.wait_for("tts", after=mark, state="stop")
        await device.start_listening("manual")
        await device.send_packet(b"\xff\xff\xff\xff\xff")
        await device.wait_for("error", code="bad_audio")
        await device.stop_listening()

        async def broken(provider: ScriptedProvider, context: TurnContext) -> AsyncIterator[TurnEvent]:
            raise RuntimeError("boom")
            yield Delta("")

        rig.agent.provider = rig.agent.fallback = rig.provider
        rig.provider.script = broken
        mark = len(device.json)
        await device.wake_word_detected("what is the current temperature")
        await device.wait_for("alert", after=mark)
        await device.wait_for("tts", after=mark, state="stop")
    finally:
        await device.close()

    heard = [voice_message(doc, "hear", m) for m in device.received]
    assert set(heard) == {"voiceServerHello", "voiceMcpRequest", "voiceStt", "voiceLlm", "voiceTts", "voiceError",
                          "voiceAlert"}
    assert device.received[0]["audio_params"]["format"] == "opus"
    assert {m["state"] for m in device.messages("tts")} == {"start", "sentence_start", "stop"}
    assert {m["payload"]["method"] for m in device.messages("mcp")} == {"initialize", "tools/list", "tools/call"}
    # The reply audio: one Opus packet of the announced duration per binary message.
    assert device.played and device.decode_failures == 0
    sent = [json.loads(text) for text in device.sent]
    spoken = [voice_message(doc, "speak", m) for m in sent]
    assert set(spoken) == {"voiceHello", "voiceMcpReply", "voiceIot", "voicePing", "voiceListen", "voiceAbort"}
    assert {m.get("state") for m in sent if m["type"] == "listen"} == {"detect", "start", "stop"}


@pytest.mark.parametrize(("params", "served"), [
    ({"format": "opus", "sample_rate": 44100, "channels": 1, "frame_duration": 60}, False),
    ({"format": "opus", "sample_rate": 16000, "channels": 1, "frame_duration": 25}, False),
    ({"format": "opus", "sample_rate": 24000, "channels": 1, "frame_duration": 20}, True),
])
async def test_an_opus_hello_is_refused_exactly_when_the_document_refuses_it(
        doc: dict[str, Any], rig: Rig, params: dict[str, Any], served: bool) -> None:
    hello = {"type": "hello", "version": 1, "features": {"mcp": False}, "transport": "websocket",
             "audio_params": params}
    assert voice_schema_accepts(doc, "VoiceClientHello", hello) == served
    conn = await rig.connect(version=1)
    await conn.send(hello)
    _, answer = await conn.wait("hello" if served else "alert")
    names = [voice_message(doc, "hear", m) for m in conn.messages()]
    assert names == (["voiceServerHello"] if served else ["voiceError", "voiceAlert"]), conn.messages()
    if served:
        assert answer["audio_params"] == {**params, "sample_rate": 16000}  # our output rate


async def test_the_document_is_served(gateway: RunningDaemon, doc: dict[str, Any]) -> None:
    status, served = await gateway.request("GET", "/api/asyncapi.json")
    assert status == 200 and served == doc


def test_cbor_example_round_trips(doc: dict[str, Any]) -> None:
    """Integer times stay integers in CBOR (major type 0), as the document says."""
    [request] = doc["components"]["messages"]["ntpRequest"]["examples"]
    encoded = cbor2.dumps(request["payload"])
    assert cbor2.loads(encoded) == request["payload"]
    assert parse_request(encoded, None).encoding == "cbor"
