"""The AsyncAPI 3.0 document of the device side, the voice WebSocket and the fleet uplink
(deviceagentd/http/asyncapi.json, served at /api/asyncapi.json): valid against the official
AsyncAPI 3.0.0 JSON Schema, tied to the code's topic templates, and true: what a real gateway
accepts and sends over a real Mosquitto (the site's, and a TLS "cloud" one for the uplink)
validates against it, and its examples are accepted.

tests/data/asyncapi-3.0.0.schema.json.gz is `schemas/3.0.0-without-$id.json` of the npm package
@asyncapi/specs 6.11.1 (Apache-2.0), the schema AsyncAPI's own parser validates with.
"""

from __future__ import annotations

import asyncio
import copy
import gzip
import json
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import cbor2
import jsonschema
import pytest
import test_uplink_cloud
import voice_samples as vs
from daemon_harness import RunningDaemon, start_daemon, wait_until
from mosquitto_broker import MosquittoBroker
from simulated_site import Sims
from test_mqtt_support import RawDevice
from test_voice_session import Rig, ScriptedProvider, said, start_rig
from test_voice_xiaozhi import offline_agent, tools_listed
from uplink_site import CloudBroker, CloudSubscriber
from voice_doubles import AsrScript
from xiaozhi_firmware import FirmwareDevice

import deviceagentd
from deviceagentd.agent.types import Delta, ProviderError, TurnContext, TurnEvent
from deviceagentd.config import UplinkConfig, UplinkTopics
from deviceagentd.http.routes_console import ASYNCAPI_PATH, load_asyncapi
from deviceagentd.mqtt.ntp import parse_request
from deviceagentd.mqtt.topics import TopicKind, TopicTemplates
from deviceagentd.uplink import presence
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
# The uplink's channels (on the cloud broker) → their UplinkTopics template.
UPLINK_CHANNEL_OF_TOPIC = {
    "uplinkLifecycle": "lifecycle", "uplinkState": "state", "uplinkEvents": "events",
    "uplinkCommandResult": "command_result", "uplinkGatewayStatus": "gateway_status",
    "uplinkGatewayHealth": "gateway_health", "uplinkCommands": "commands", "uplinkChat": "chat",
    "uplinkChatResult": "chat_result",
}
# The channel whose address is the caller's MQTT 5 response topic (no fixed address).
RESPONSE_CHANNEL = "uplinkResponseTopic"
# The channels the gateway takes requests on → their request message.
REQUEST_CHANNELS = {"uplinkCommands": "uplinkCommandRequest", "uplinkChat": "uplinkChatRequest"}


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


def channels_on(doc: dict[str, Any], server: str) -> set[str]:
    return {name for name, channel in doc["channels"].items()
            if {"$ref": f"#/servers/{server}"} in channel.get("servers", [])}


def test_the_addresses_are_the_default_topic_templates(doc: dict[str, Any]) -> None:
    templates = TopicTemplates()
    for channel, kind in CHANNEL_OF_KIND.items():
        assert doc["channels"][channel]["address"] == templates.template(kind), channel
    assert channels_on(doc, "broker") == set(CHANNEL_OF_KIND)
    assert doc["info"]["version"] == deviceagentd.__version__
    assert load_asyncapi() == doc  # what the server loads is the file


def test_the_uplink_addresses_are_the_default_uplink_topics(doc: dict[str, Any]) -> None:
    """Every uplink.topics template is a channel on the cloud server with that address and its
    {siteId}/{deviceId} parameters; the cloud server has no other channel but the response topic's."""
    uplink = UplinkTopics()
    templates = {name: getattr(uplink, name) for name in uplink.__dataclass_fields__}
    assert set(UPLINK_CHANNEL_OF_TOPIC.values()) == set(templates)
    assert channels_on(doc, "cloud") == {*UPLINK_CHANNEL_OF_TOPIC, RESPONSE_CHANNEL}
    for channel, name in UPLINK_CHANNEL_OF_TOPIC.items():
        address = doc["channels"][channel]["address"]
        assert address == templates[name], channel
        assert set(doc["channels"][channel]["parameters"]) == set(re.findall(r"\{(\w+)\}", address)), channel
    assert doc["channels"][RESPONSE_CHANNEL]["address"] is None
    # The server's MQTT binding: the connection the uplink really makes.
    config = UplinkConfig()
    cloud = doc["servers"]["cloud"]
    binding = cloud["bindings"]["mqtt"]
    assert (binding["keepAlive"], binding["sessionExpiryInterval"], binding["cleanSession"]) == (
        config.keepalive_s, config.session_expiry_s, False)
    assert binding["clientId"] == UplinkConfig(site_id="{siteId}").effective_client_id
    will = binding["lastWill"]
    assert (will["topic"], will["qos"], will["retain"]) == (uplink.gateway_status, 1, True)
    assert will["message"] == presence.will(deviceagentd.__version__).decode()
    assert_payload(doc, "uplinkWill", json.loads(will["message"]))
    assert cloud["protocol"] in ("mqtt", "mqtts") and cloud["protocolVersion"] == str(config.protocol_version)
    # Retained exactly where the gateway publishes with retain (presence.py): status and health.
    retained = {op["channel"]["$ref"].rsplit("/", 1)[1] for op in doc["operations"].values()
                if op.get("bindings", {}).get("mqtt", {}).get("retain")}
    assert retained == {"uplinkGatewayStatus", "uplinkGatewayHealth"}


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


# ---------------------------------------------------------------------------------------------
# The uplink: what a running gateway publishes on the cloud broker, and the requests it takes
# ---------------------------------------------------------------------------------------------

CLOUD_SITE = test_uplink_cloud.SITE
# Sent by the gateway but optional, and not sent by this test: shown only when a turn is interrupted.
NEVER_SENT_HERE = {("uplinkChatReply", "interrupted")}


def uplink_channel(doc: dict[str, Any], topic: str) -> str:
    """The uplink channel of a topic on the cloud broker: the one whose address (with this site and
    any device) matches it, or the response topic's for a topic under the site's replies."""
    found = []
    for name in channels_on(doc, "cloud"):
        address = doc["channels"][name]["address"]
        if address is None:
            continue
        pattern = re.escape(address).replace(r"\{siteId\}", re.escape(CLOUD_SITE)).replace(r"\{deviceId\}", "[^/]+")
        if re.fullmatch(pattern, topic):
            found.append(name)
    if not found and topic.startswith(f"sites/{CLOUD_SITE}/replies/"):
        found.append(RESPONSE_CHANNEL)
    assert len(found) == 1, f"{topic}: channels {found}"
    return found[0]


def uplink_message(doc: dict[str, Any], topic: str, body: Any) -> str:
    """The one documented message of the topic's channel that `body` validates against (the
    gateway's schemas are closed: an undocumented field fails)."""
    channel = uplink_channel(doc, topic)
    names = [name for name in doc["channels"][channel]["messages"] if payload_validator(doc, name).is_valid(body)]
    assert len(names) == 1, f"{topic}: {body!r} validates against {names} of {channel}"
    return names[0]


def failing_provider() -> ScriptedProvider:
    """Answers every turn, except one asking to fail: a provider error (a 502 chat reply)."""

    async def script(provider: ScriptedProvider, context: TurnContext) -> AsyncIterator[TurnEvent]:
        if "fail" in context.message:
            raise ProviderError("provider_auth", "the cloud model rejected the API key")
        yield Delta("All devices are fine.")

    return ScriptedProvider(script=script)


async def test_what_the_gateway_publishes_on_the_cloud_broker_is_documented_message_by_message(
        doc: dict[str, Any], broker: MosquittoBroker, cloud: CloudBroker, sims: Sims,
        tmp_path: Path) -> None:
    """A gateway with its uplink through a TLS cloud Mosquitto: a device's lifecycle, state and
    event, a command's outcome, cloud commands and chats answered (on the MQTT 5 response topic
    and on the default result topics, with and without errors), birth, health, the last will (the
    connection cut without a DISCONNECT) and the clean offline. Every message must be exactly one
    of its channel's documented messages; every request body sent is a documented request."""
    sub = CloudSubscriber(cloud.broker.port)
    await sub.connect()
    running = await start_daemon(broker.url, tmp_path / "state", provider=failing_provider(),
                                 **test_uplink_cloud.uplink_settings(cloud, uplink_state_min_interval_s=0,
                                                                     uplink_health_interval_s=1))
    requests: list[tuple[str, dict[str, Any]]] = []

    def request(topic: str, body: dict[str, Any], **properties: Any) -> None:
        requests.append((topic, body))
        sub.publish(topic, body, **properties)

    try:
        await test_uplink_cloud.subscribed(running)
        sim = await test_uplink_cloud.online(sims, running)
        device = sim.device_id
        commands = test_uplink_cloud.commands(device)
        chat = f"sites/{CLOUD_SITE}/gateway/chat"
        await sim.report_state(target_temperature=21)
        await sim.emit_event("temperature_alert")
        await running.request("POST", f"/api/devices/{device}/commands",
                              json_body={"command": "set_mode", "params": {"mode": "heat"}})
        replies = f"sites/{CLOUD_SITE}/replies/console-1"
        request(commands, {"command": "set_target_temperature", "params": {"target_temperature": 22.5},
                           "requestId": "a-1", "timeoutMs": 10000}, response_topic=replies, correlation_data=b"\x01a")
        request(commands, {"command": "set_mode", "params": {"mode": "eco"}, "requestId": "a-2"})
        request(commands, {"command": "set_mode", "params": {"mode": "turbo"}, "requestId": "a-3"})
        request(test_uplink_cloud.commands("ghost-1"), {"command": "set_mode", "params": {"mode": "eco"},
                                                        "requestId": "a-4"}, response_topic=replies,
                correlation_data=b"g")
        sub.publish(commands, b"{not json", response_topic=replies, correlation_data=b"j")
        request(chat, {"text": "list the devices", "requestId": "a-5"})
        request(chat, {"text": "please fail", "sessionId": "ops-1", "requestId": "a-6"}, response_topic=replies,
                correlation_data=b"c")
        request(chat, {"text": "   ", "requestId": "a-7"})
        result = f"sites/{CLOUD_SITE}/devices/{device}/commands/result"
        await test_uplink_cloud.reply_on(sub, result, 2)
        await test_uplink_cloud.reply_on(sub, replies, 4)
        await test_uplink_cloud.reply_on(sub, f"sites/{CLOUD_SITE}/gateway/chat/result", 2)
        await wait_until(lambda: sub.on("/gateway/health") and sub.on(f"/devices/{device}/events"), WAIT_S)
        # Cut the uplink's TCP connection without a DISCONNECT: the broker publishes the will, and
        # the gateway reconnects and says online again.
        uplink = running.daemon.uplink
        assert uplink is not None and uplink.connection._client is not None
        births = len(sub.on("/gateway/status"))
        uplink.connection._client._connection._transport.abort()
        await wait_until(lambda: any(m.body.get("reason") == "connection lost" for m in sub.on("/gateway/status")),
                         WAIT_S)
        await wait_until(lambda: len(sub.on("/gateway/status")) >= births + 2, WAIT_S)
        await sim.stop()
        await wait_until(lambda: any(m.body.get("status") == "offline"
                                     for m in sub.on(f"/devices/{device}/lifecycle")), WAIT_S)
    finally:
        await running.stop()
    await wait_until(lambda: any(m.body.get("reason") == "shutdown" for m in sub.on("/gateway/status")), WAIT_S)
    await sub.disconnect()

    seen: dict[str, list[Any]] = {}
    for received in sub.messages:
        if uplink_channel(doc, received.topic) in REQUEST_CHANNELS:
            continue  # this test's own requests (its subscription is sites/#)
        name = uplink_message(doc, received.topic, received.body)
        seen.setdefault(name, []).append(received.body)
        assert received.properties.get("content_type") in (None, ["application/json"]), received
        if uplink_channel(doc, received.topic) == RESPONSE_CHANNEL:
            assert received.properties.get("correlation_data"), received  # the request's, as the binding says
    assert set(seen) == {"uplinkLifecycle", "uplinkState", "uplinkEvent", "uplinkCommandOutcome",
                         "uplinkCommandReply", "uplinkErrorReply", "uplinkChatReply", "uplinkChatErrorReply",
                         "uplinkBirth", "uplinkOffline", "uplinkWill", "uplinkHealth"}
    codes = {b["error"]["code"] for b in seen["uplinkErrorReply"] + seen["uplinkChatErrorReply"]}
    assert codes == {"invalid_request", "device_not_found", "invalid_json", "provider_auth"}
    assert None in {b["requestId"] for b in seen["uplinkErrorReply"]}  # the payload that was not JSON
    assert {"channel": "uplink"} in [b.get("origin") for b in seen["uplinkCommandOutcome"]]
    assert_every_field_is_needed(doc, seen)

    # The requests: the valid ones are documented requests, the blank chat is not.
    for topic, body in requests:
        name = REQUEST_CHANNELS[uplink_channel(doc, topic)]
        assert payload_validator(doc, name).is_valid(body) == (body["text"].strip() != "" if "text" in body
                                                               else True), body
    for name in ("uplinkCommandRequest", "uplinkChatRequest"):
        for example in doc["components"]["messages"][name]["examples"]:
            assert_payload(doc, name, example["payload"])
    assert not payload_validator(doc, "uplinkCommandRequest").is_valid({"command": "set_mode", "priority": 1})
    assert not payload_validator(doc, "uplinkChatRequest").is_valid({"text": "hi", "metadata": {}})


def assert_every_field_is_needed(doc: dict[str, Any], seen: dict[str, list[Any]]) -> None:
    """Each documented field of what the gateway sends was sent, and is needed: the document
    without it rejects a message the gateway really published."""
    for name, bodies in seen.items():
        schema = payload_schema(doc, name)
        for prop in schema["properties"]:
            if (name, prop) in NEVER_SENT_HERE:
                continue
            assert any(prop in body for body in bodies), f"{name}.{prop} is documented but was never sent"
            broken = copy.deepcopy(doc)
            del payload_schema(broken, name)["properties"][prop]
            validator = payload_validator(broken, name)
            assert not all(validator.is_valid(body) for body in bodies), f"{name} without {prop} still validates"


def payload_schema(doc: dict[str, Any], message: str) -> Any:
    schema = deref(doc, doc["components"]["messages"][message]["payload"])
    assert schema.get("additionalProperties") is False, f"{message}: what the gateway sends has a closed schema"
    return schema
