"""/api/chat (SSE), the session routes and /api/vision/frames against the real daemon, on both
ports; MQTT text requests through the same agent."""

from __future__ import annotations

import asyncio
import base64
import json
import shutil
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import gmqtt
import pytest
from daemon_harness import PRODUCTS_DIR, RunningDaemon, start_daemon, wait_until
from mosquitto_broker import MosquittoBroker

from deviceagentd.agent.types import Delta, ProviderError, Tools, TurnContext, TurnEvent
from deviceagentd.core.spec import load_spec_file
from deviceagentd.simulator import SimulatedDevice, SimulatorOptions

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\rIHDR" + bytes(64)


class SlowProvider:
    """Says one word, then thinks for a long time (interrupt and disconnect tests)."""

    name = "slow"

    def __init__(self) -> None:
        self.cancelled = asyncio.Event()

    async def run(self, context: TurnContext, tools: Tools) -> AsyncIterator[TurnEvent]:
        yield Delta("Thinking")
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            self.cancelled.set()
            raise
        yield Delta(" done")


class BrokenProvider:
    """A provider whose every answer is unusable (and no fallback is configured)."""

    name = "broken"

    async def run(self, context: TurnContext, tools: Tools) -> AsyncIterator[TurnEvent]:
        raise ProviderError("provider_error", "the model returned nothing")
        yield Delta("")  # an async generator


def parse_sse(raw: str) -> list[tuple[str, dict[str, Any]]]:
    """(event name, data) pairs, as an EventSource reader sees them."""
    events = []
    for block in raw.replace("\r\n", "\n").split("\n\n"):
        name, data = "message", []
        for line in block.split("\n"):
            if line.startswith(":") or not line:
                continue
            field, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if field == "event":
                name = value
            elif field == "data":
                data.append(value)
        if data:
            events.append((name, json.loads("\n".join(data))))
    return events


def data_lines_client(raw: str) -> str:
    """What the EMQX SDKs do: read only `data:` lines, append textChunk, replace with text."""
    text = ""
    for line in raw.splitlines():
        if not line.startswith("data:"):
            continue
        data = json.loads(line[5:].strip())
        if "textChunk" in data:
            text += data["textChunk"]
        if "text" in data:
            text = data["text"]
    return text


async def post_chat(base_url: str, body: dict[str, Any], session: aiohttp.ClientSession) -> tuple[int, str]:
    async with session.post(f"{base_url}/api/chat", json=body, headers={"Accept": "text/event-stream"}) as resp:
        return resp.status, await resp.text()


@pytest.fixture
async def gateway(broker: MosquittoBroker, tmp_path: Path) -> AsyncIterator[RunningDaemon]:
    running = await start_daemon(broker.url, tmp_path / "state")
    try:
        yield running
    finally:
        await running.stop()


@pytest.fixture
async def thermostat(broker: MosquittoBroker, gateway: RunningDaemon) -> AsyncIterator[SimulatedDevice]:
    device = SimulatedDevice(load_spec_file(PRODUCTS_DIR / "thermostat.json"), "thermostat-001",
                             SimulatorOptions(url=broker.url))
    await device.start()
    await wait_until(lambda: gateway.daemon.registry.get("thermostat-001") is not None)
    try:
        yield device
    finally:
        await device.stop()


async def test_seed_chat_example_streams_tool_calls_and_reply(gateway: RunningDaemon,
                                                              thermostat: SimulatedDevice) -> None:
    status, raw = await post_chat(gateway.base_url, {
        "message": "Check the current temperature and set the target temperature to 24",
        "stream": True,
        "sessionId": "demo-session",
        "metadata": {"productId": "thermostat", "deviceId": "thermostat-001"},
    }, gateway.session)
    assert status == 200, raw
    events = parse_sse(raw)
    names = [name for name, _ in events]
    assert names[0] == "session" and events[0][1] == {"sessionId": "demo-session"}
    assert names[-1] == "done" and names.count("done") == 1 and "error" not in names
    calls = [data for name, data in events if name == "tool_call"]
    assert [c["name"] for c in calls] == ["get_device_state", "send_command"]
    assert calls[1]["arguments"]["params"] == {"target_temperature": 24}
    results = [data for name, data in events if name == "tool_result"]
    assert all(r["ok"] for r in results)
    done = events[-1][1]
    assert done["sessionId"] == "demo-session" and "24" in done["text"]
    assert "".join(d["textChunk"] for n, d in events if n == "delta") == done["text"]
    assert data_lines_client(raw) == done["text"]
    assert thermostat.state["target_temperature"] == 24
    # The command log says the agent sent it, for which session.
    status, log = await gateway.request("GET", "/api/devices/thermostat-001/commands?limit=1")
    assert status == 200 and log["commands"][0]["command"] == "set_target_temperature", log
    assert log["commands"][0]["origin"] == {"channel": "agent", "sessionId": "demo-session"}

    status, history = await gateway.request("GET", "/api/sessions/demo-session/history")
    assert status == 200
    assert [m["role"] for m in history["messages"]] == ["user", "assistant"]
    assert history["messages"][1]["text"] == done["text"]
    assert [c["name"] for c in history["messages"][1]["toolCalls"]] == ["get_device_state", "send_command"]


async def test_chat_works_on_the_voice_port_too(gateway: RunningDaemon, thermostat: SimulatedDevice) -> None:
    status, raw = await post_chat(gateway.voice_url, {"message": "what is the current temperature", "stream": True,
                                                      "metadata": {"deviceId": "thermostat-001"}}, gateway.session)
    assert status == 200
    assert parse_sse(raw)[-1][0] == "done"
    async with gateway.session.get(f"{gateway.voice_url}/api/devices/thermostat-001") as resp:
        assert resp.status == 404  # only chat and vision live on the voice port


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl not installed")
async def test_curl_n_reads_the_stream(gateway: RunningDaemon, thermostat: SimulatedDevice) -> None:
    body = json.dumps({"message": "what is the current temperature", "stream": True,
                       "metadata": {"productId": "thermostat", "deviceId": "thermostat-001"}})
    proc = await asyncio.create_subprocess_exec(
        "curl", "-sN", f"{gateway.base_url}/api/chat", "-H", "Content-Type: application/json",
        "-H", "Accept: text/event-stream", "-d", body, stdout=subprocess.PIPE)
    out, _ = await asyncio.wait_for(proc.communicate(), 20)
    events = parse_sse(out.decode())
    assert events[0][0] == "session" and events[-1][0] == "done"
    assert "28" in events[-1][1]["text"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"stream": True}, "message"),
        ({"message": "", "stream": True}, "message"),
        ({"message": "x" * 4001, "stream": True}, "message"),
        ({"message": "hi"}, "stream"),
        ({"message": "hi", "stream": False}, "stream"),
        ({"message": "hi", "stream": "true"}, "stream"),
        ({"message": "hi", "stream": True, "visionRefs": "frame-1"}, "visionRefs"),
        ({"message": "hi", "stream": True, "visionRefs": [{"capturedAt": "x"}]}, "visionRefs[0].frameId"),
        ({"message": "hi", "stream": True, "metadata": "thermostat"}, "metadata"),
        ({"message": "hi", "stream": True, "colour": "red"}, "colour"),
    ],
)
async def test_bad_chat_requests_are_400_with_the_field(gateway: RunningDaemon, body: dict[str, Any],
                                                        field: str) -> None:
    status, answer = await gateway.request("POST", "/api/chat", json_body=body)
    assert status == 400
    assert field in [d["field"] for d in answer["error"]["details"]]


async def test_unknown_frame_in_chat_is_404_naming_it(gateway: RunningDaemon) -> None:
    status, answer = await gateway.request("POST", "/api/chat", json_body={
        "message": "look", "stream": True, "visionRefs": [{"frameId": "frame-0123456789abcdef0123456789abcdef"}]})
    assert status == 404 and answer["error"]["details"]["frameId"] == "frame-0123456789abcdef0123456789abcdef"


@pytest.mark.parametrize("method,path", [
    ("GET", "/api/sessions/nobody/history"),
    ("POST", "/api/sessions/nobody/interrupt"),
    ("DELETE", "/api/sessions/nobody"),
])
async def test_unknown_session_is_404(gateway: RunningDaemon, method: str, path: str) -> None:
    status, answer = await gateway.request(method, path)
    assert status == 404 and answer["error"]["code"] == "session_not_found"


async def test_delete_clears_history(gateway: RunningDaemon, thermostat: SimulatedDevice) -> None:
    await post_chat(gateway.base_url, {"message": "which devices are online", "stream": True, "sessionId": "s-del"},
                    gateway.session)
    assert (await gateway.request("DELETE", "/api/sessions/s-del")) == (200, {"deleted": True})
    status, _ = await gateway.request("GET", "/api/sessions/s-del/history")
    assert status == 404


async def test_interrupt_ends_stream_with_done_interrupted(broker: MosquittoBroker, tmp_path: Path) -> None:
    provider = SlowProvider()
    gateway = await start_daemon(broker.url, tmp_path / "state", provider=provider)
    try:
        async def chat() -> tuple[int, str]:
            return await post_chat(gateway.base_url, {"message": "think", "stream": True, "sessionId": "s-int"},
                                   gateway.session)

        pending = asyncio.create_task(chat())
        await wait_until(lambda: gateway.daemon.agent.busy("s-int"))
        # A second request to the busy session is refused, clearly.
        status, answer = await gateway.request("POST", "/api/chat",
                                               json_body={"message": "again", "stream": True, "sessionId": "s-int"})
        assert status == 409 and answer["error"]["code"] == "conflict"
        assert await gateway.request("POST", "/api/sessions/s-int/interrupt") == (200, {"interrupted": True})
        status, raw = await asyncio.wait_for(pending, 5)
        events = parse_sse(raw)
        assert events[-1] == ("done", {"sessionId": "s-int", "text": "Thinking", "interrupted": True})
        assert provider.cancelled.is_set()
        _, history = await gateway.request("GET", "/api/sessions/s-int/history")
        assert history["messages"][-1]["interrupted"] is True
        assert await gateway.request("POST", "/api/sessions/s-int/interrupt") == (200, {"interrupted": False})
    finally:
        await gateway.stop()


async def test_client_disconnect_cancels_the_turn(broker: MosquittoBroker, tmp_path: Path) -> None:
    provider = SlowProvider()
    gateway = await start_daemon(broker.url, tmp_path / "state", provider=provider)
    try:
        async with aiohttp.ClientSession() as session:
            resp = await session.post(f"{gateway.base_url}/api/chat",
                                      json={"message": "think", "stream": True, "sessionId": "s-gone"})
            assert resp.status == 200
            # Read until the provider has started talking, then go away mid-stream.
            while not (await resp.content.readline()).startswith(b"event: delta"):
                pass
            resp.close()
        await asyncio.wait_for(provider.cancelled.wait(), 5)
        await wait_until(lambda: not gateway.daemon.agent.busy("s-gone"))
    finally:
        await gateway.stop()


async def test_shutdown_closes_open_streams(broker: MosquittoBroker, tmp_path: Path) -> None:
    gateway = await start_daemon(broker.url, tmp_path / "state", provider=SlowProvider())
    pending = asyncio.create_task(post_chat(gateway.base_url, {"message": "think", "stream": True, "sessionId": "s-x"},
                                            gateway.session))
    await wait_until(lambda: gateway.daemon.agent.busy("s-x"))
    await asyncio.wait_for(gateway.daemon.stop(), 10)
    status, raw = await asyncio.wait_for(pending, 5)
    assert status == 200 and parse_sse(raw)[-1] == ("error", {"code": "shutting_down",
                                                              "message": "the gateway is shutting down"})
    await gateway.session.close()


# ---------------------------------------------------------------------------------- vision


def frame_body(**overrides: Any) -> dict[str, Any]:
    body = {"sessionId": "demo-session", "deviceId": "thermostat-001", "mimeType": "image/png",
            "imageBase64": base64.b64encode(PNG).decode(), "source": "camera"}
    body.update(overrides)
    return body


async def test_vision_frame_upload_and_local_reply(gateway: RunningDaemon) -> None:
    for base in (gateway.base_url, gateway.voice_url):
        async with gateway.session.post(f"{base}/api/vision/frames", json=frame_body()) as resp:
            assert resp.status == 200
            frame = await resp.json()
        assert frame["frameId"].startswith("frame-") and frame["mimeType"] == "image/png"
        assert frame["source"] == "camera" and frame["capturedAt"].endswith("Z")
    status, raw = await post_chat(gateway.base_url, {
        "message": "Use this image to check whether the device screen looks abnormal", "stream": True,
        "sessionId": "demo-session", "visionRefs": [{"frameId": frame["frameId"], "capturedAt": frame["capturedAt"],
                                                     "source": "camera"}]}, gateway.session)
    assert status == 200
    name, done = parse_sse(raw)[-1]
    assert name == "done" and "vision" in done["text"].lower()


@pytest.mark.parametrize(
    ("overrides", "status", "code"),
    [
        ({"imageBase64": "not base64!!"}, 400, "invalid_base64"),
        ({"mimeType": "image/gif"}, 400, "unsupported_mime_type"),
        ({"mimeType": "image/jpeg"}, 400, "mime_mismatch"),
        ({"imageBase64": base64.b64encode(b"\x89PNG\r\n\x1a\n" + bytes(5000)).decode()}, 413, "frame_too_large"),
    ],
)
async def test_bad_frames(broker: MosquittoBroker, tmp_path: Path, overrides: dict[str, Any], status: int,
                          code: str) -> None:
    gateway = await start_daemon(broker.url, tmp_path / "state", vision_max_frame_bytes=4096)
    try:
        got, answer = await gateway.request("POST", "/api/vision/frames", json_body=frame_body(**overrides))
        assert (got, answer["error"]["code"]) == (status, code)
    finally:
        await gateway.stop()


async def test_frame_without_session_is_400(gateway: RunningDaemon) -> None:
    body = frame_body()
    del body["sessionId"]
    status, answer = await gateway.request("POST", "/api/vision/frames", json_body=body)
    assert status == 400 and answer["error"]["details"][0]["field"] == "sessionId"


# ---------------------------------------------------------------------------------- MQTT text requests


async def text_client(broker: MosquittoBroker, name: str,
                      topic: str) -> tuple[gmqtt.Client, asyncio.Queue[tuple[str, dict[str, Any]]]]:
    """An MQTT client subscribed to `topic`, and the queue its (JSON) messages land in."""
    replies: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue()
    client = gmqtt.Client(name)
    client.on_message = lambda _c, topic, payload, _q, _p: replies.put_nowait((topic, json.loads(payload)))
    await client.connect(broker.host, broker.port)
    client.subscribe(topic, qos=1)
    await asyncio.sleep(0.2)
    return client, replies


async def test_mqtt_text_request_gets_one_reply_with_ids_echoed(broker: MosquittoBroker, gateway: RunningDaemon,
                                                                thermostat: SimulatedDevice) -> None:
    client, replies = await text_client(broker, "text-client", "device-agent/#")
    try:
        client.publish("device-agent/thermostat/device/thermostat-001/in", json.dumps({
            "prompt": "Check the current temperature", "metadata": {"source": "mqtt-client"}, "requestId": "r-1"}),
            qos=1)
        # The malformed ones get no reply, only a counted rejection.
        client.publish("device-agent/thermostat/in", b"{not json", qos=1)
        client.publish("device-agent/thermostat/in", json.dumps({"text": "no prompt"}), qos=1)
        client.publish("device-agent/thermostat/in", json.dumps({"prompt": "which devices are online"}), qos=1)
        got: dict[str, dict[str, Any]] = {}
        while len(got) < 2:
            topic, body = await asyncio.wait_for(replies.get(), 10)
            if topic.endswith("/out"):
                got[topic] = body
        device_reply = got["device-agent/thermostat/device/thermostat-001/out"]
        assert device_reply["sessionId"] == "session-default:thermostat:thermostat-001"
        assert "28" in device_reply["text"]
        assert device_reply["metadata"]["requestId"] == "r-1" and device_reply["metadata"]["source"] == "mqtt-client"
        assert device_reply["timestamp"].endswith("Z") and device_reply["metadata"]["timestamp"].endswith("Z")
        product_reply = got["device-agent/thermostat/out"]
        assert product_reply["sessionId"] == "session-default:thermostat"
        assert "thermostat-001" in product_reply["text"]
        rejects = gateway.daemon.metrics.rejects
        assert rejects.get({"kind": "text_request", "reason": "bad_json"}) == 1
        assert rejects.get({"kind": "text_request", "reason": "missing_prompt"}) == 1
        await asyncio.sleep(0.3)
        assert replies.empty() or all(not t.endswith("/out") for t, _ in [await replies.get()])
    finally:
        await client.disconnect()


async def test_a_failed_text_request_is_answered_in_the_language_it_was_asked_in(broker: MosquittoBroker,
                                                                                tmp_path: Path) -> None:
    gateway = await start_daemon(broker.url, tmp_path / "state", provider=BrokenProvider())
    client, replies = await text_client(broker, "text-client-languages", "device-agent/+/out")
    try:
        client.publish("device-agent/thermostat/in", json.dumps({"prompt": "现在温度是多少", "requestId": "zh"}), qos=1)
        client.publish("device-agent/switch/in", json.dumps({"prompt": "what is on", "requestId": "en"}), qos=1)
        # A Chinese sentence naming an English device id is still Chinese.
        client.publish("device-agent/switch/in", json.dumps({"prompt": "关闭 switch-001 的电源", "requestId": "mixed"}),
                       qos=1)
        got: dict[str, str] = {}
        while len(got) < 3:
            _, body = await asyncio.wait_for(replies.get(), 10)
            got[body["requestId"]] = body["text"]
        assert got["zh"] == got["mixed"] == "抱歉，我无法回答：the model returned nothing"
        assert got["en"] == "Sorry, I could not answer: the model returned nothing"
    finally:
        await client.disconnect()
        await gateway.stop()


async def test_text_request_flood_does_not_starve_devices(broker: MosquittoBroker, tmp_path: Path) -> None:
    gateway = await start_daemon(broker.url, tmp_path / "state", provider=SlowProvider(),
                                 agent_text_requests_concurrency=1, agent_text_requests_queue=5)
    client = gmqtt.Client("flooder")
    await client.connect(broker.host, broker.port)
    device = SimulatedDevice(load_spec_file(PRODUCTS_DIR / "switch.json"), "flood-switch",
                             SimulatorOptions(url=broker.url))
    try:
        for i in range(200):
            client.publish("device-agent/switch/in", json.dumps({"prompt": f"hello {i}", "sessionId": f"f{i}"}), qos=0)
        await device.start()
        await wait_until(lambda: gateway.daemon.registry.get("flood-switch") is not None, timeout=10)
        status, result = await gateway.request("POST", "/api/devices/flood-switch/commands",
                                               json_body={"command": "turn_on"})
        assert status == 200 and result["ok"] is True
        await wait_until(lambda: gateway.daemon.metrics.rejects.get(
            {"kind": "text_request", "reason": "queue_full"}) >= 150, timeout=10)
        assert gateway.daemon.text_requests.waiting <= 5
    finally:
        await device.stop()
        await client.disconnect()
        await gateway.stop()


@pytest.mark.parametrize(
    ("topic", "payload", "reason"),
    [
        ("device-agent/nope/in", {"prompt": "hi"}, "unknown_product"),
        ("device-agent/thermostat/in", {"prompt": "hi", "sessionId": 5}, "bad_session_id"),
        ("device-agent/thermostat/in", {"prompt": "hi", "metadata": "x"}, "bad_metadata"),
        ("device-agent/thermostat/in", {"prompt": "hi", "requestId": True}, "bad_request_id"),
        ("device-agent/thermostat/in", {"prompt": "x" * 4001}, "bad_prompt"),
        ("device-agent/thermostat/in", [1, 2], "not_object"),
    ],
)
async def test_bad_text_requests_are_counted_not_answered(broker: MosquittoBroker, gateway: RunningDaemon,
                                                          topic: str, payload: Any, reason: str) -> None:
    client = gmqtt.Client("bad-text")
    await client.connect(broker.host, broker.port)
    try:
        client.publish(topic, json.dumps(payload), qos=1)
        await wait_until(lambda: gateway.daemon.metrics.rejects.get({"kind": "text_request", "reason": reason}) == 1)
        assert gateway.daemon.text_requests.waiting == 0
        assert gateway.daemon.metrics.messages_out.get({"kind": "text_reply"}) == 0
    finally:
        await client.disconnect()
