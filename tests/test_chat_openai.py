"""The daemon configured for an OpenAI-compatible endpoint: tool calls reach real devices,
images reach the model, and an unreachable endpoint falls back to the offline engine."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from daemon_harness import PRODUCTS_DIR, RunningDaemon, start_daemon, wait_until
from mosquitto_broker import MosquittoBroker, free_port
from openai_double import OpenAIDouble, ScriptedCall, text_reply, tool_call_reply
from test_chat_api import PNG, parse_sse, post_chat

from deviceagentd.agent.runner import FALLBACK_NOTE
from deviceagentd.core.spec import load_spec_file
from deviceagentd.simulator import SimulatedDevice, SimulatorOptions


@pytest.fixture
async def thermostat(broker: MosquittoBroker) -> AsyncIterator[SimulatedDevice]:
    device = SimulatedDevice(load_spec_file(PRODUCTS_DIR / "thermostat.json"), "thermostat-ai",
                             SimulatorOptions(url=broker.url))
    await device.start()
    try:
        yield device
    finally:
        await device.stop()


async def openai_gateway(broker: MosquittoBroker, tmp_path: Path, base_url: str,
                         device: SimulatedDevice | None = None) -> RunningDaemon:
    gateway = await start_daemon(broker.url, tmp_path / "state", agent_provider="openai", openai_base_url=base_url,
                                 openai_model="gpt-test", openai_api_key="sk-test-secret", openai_max_retries=0)
    if device is not None:
        # The device came online before this gateway subscribed: report again so it registers.
        await device.report_state()
        await wait_until(lambda: gateway.daemon.registry.get(device.device_id) is not None)
    return gateway


async def test_model_tool_call_sends_a_real_command(broker: MosquittoBroker, tmp_path: Path,
                                                    thermostat: SimulatedDevice) -> None:
    async with OpenAIDouble(expected_api_key="sk-test-secret") as double:
        double.script(
            tool_call_reply(ScriptedCall("send_command", '{"device_id": "thermostat-ai", '
                                         '"command": "set_target_temperature", "params": {"target_temperature": 21}}')),
            text_reply("Done, ", "the target is now 21 °C."),
        )
        gateway = await openai_gateway(broker, tmp_path, double.base_url, thermostat)
        try:
            status, raw = await post_chat(gateway.base_url, {"message": "make it 21 degrees", "stream": True,
                                                             "metadata": {"deviceId": "thermostat-ai"}},
                                          gateway.session)
            assert status == 200
            events = parse_sse(raw)
            assert [n for n, _ in events] == ["session", "tool_call", "tool_result", "delta", "delta", "done"]
            assert events[2][1]["ok"] is True
            assert events[-1][1]["text"] == "Done, the target is now 21 °C."
            assert thermostat.state["target_temperature"] == 21
            # The model saw the tools in OpenAI's format and got the tool's result back.
            first, second = double.requests[0].body, double.requests[1].body
            assert {t["function"]["name"] for t in first["tools"]} == {
                "list_devices", "get_device_state", "send_command", "get_recent_events", "create_schedule",
                "list_schedules", "cancel_schedule"}
            assert second["messages"][-1]["role"] == "tool"
            assert double.problems == []
        finally:
            await gateway.stop()


async def test_a_command_the_spec_does_not_have_is_refused_in_words(broker: MosquittoBroker, tmp_path: Path,
                                                                    thermostat: SimulatedDevice) -> None:
    async with OpenAIDouble() as double:
        double.script(
            tool_call_reply(ScriptedCall("send_command", '{"device_id": "thermostat-ai", "command": "self_destruct"}')),
            text_reply("I cannot do that."),
        )
        gateway = await openai_gateway(broker, tmp_path, double.base_url, thermostat)
        try:
            _, raw = await post_chat(gateway.base_url, {"message": "blow it up", "stream": True}, gateway.session)
            result = next(data for name, data in parse_sse(raw) if name == "tool_result")
            assert result["ok"] is False and "self_destruct" in result["error"]
            assert thermostat.commands_received == []
        finally:
            await gateway.stop()


async def test_image_question_sends_the_frame_as_an_image_part(broker: MosquittoBroker, tmp_path: Path) -> None:
    async with OpenAIDouble() as double:
        double.script(text_reply("The screen looks normal."))
        gateway = await openai_gateway(broker, tmp_path, double.base_url)
        try:
            status, frame = await gateway.request("POST", "/api/vision/frames", json_body={
                "sessionId": "v", "mimeType": "image/png", "imageBase64": base64.b64encode(PNG).decode()})
            assert status == 200
            body = {"message": "does the screen look abnormal?", "stream": True, "sessionId": "v",
                    "visionRefs": [{"frameId": frame["frameId"]}]}
            _, raw = await post_chat(gateway.base_url, body, gateway.session)
            assert parse_sse(raw)[-1][1]["text"] == "The screen looks normal."
            user = double.requests[0].body["messages"][-1]
            parts = user["content"]
            image = next(p for p in parts if p["type"] == "image_url")
            assert image["image_url"]["url"] == "data:image/png;base64," + base64.b64encode(PNG).decode()
        finally:
            await gateway.stop()


async def test_unreachable_endpoint_falls_back_to_the_offline_engine(broker: MosquittoBroker, tmp_path: Path,
                                                                     thermostat: SimulatedDevice) -> None:
    gateway = await openai_gateway(broker, tmp_path, f"http://127.0.0.1:{free_port()}/v1", thermostat)
    try:
        status, raw = await post_chat(gateway.base_url, {"message": "what is the current temperature", "stream": True,
                                                         "metadata": {"deviceId": "thermostat-ai"}}, gateway.session)
        assert status == 200
        done = parse_sse(raw)[-1]
        assert done[0] == "done" and done[1]["text"].startswith(FALLBACK_NOTE) and "28" in done[1]["text"]
        assert "sk-test-secret" not in raw
    finally:
        await gateway.stop()
