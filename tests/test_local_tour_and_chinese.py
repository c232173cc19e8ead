"""The offline assistant's greeting tour ("hello", "what can you do", "你好", "你能做什么") and
wholly Chinese answers to Chinese requests, failures included."""

from __future__ import annotations

import re
from typing import Any

import pytest
from test_local_engine import PRODUCTS, RecordingTools, _Store, context, converse, make_registry

from deviceagentd.agent.local import Say, Vocabulary, plan
from deviceagentd.agent.local.tour import wants_tour
from deviceagentd.agent.types import ToolCall, ToolResult, TurnContext
from deviceagentd.core.catalog import load_catalog
from deviceagentd.core.errors import BrokerUnavailable, CommandTimeout
from deviceagentd.core.metrics import Metrics
from deviceagentd.core.registry import DeviceRegistry

DEVICE_IDS = re.compile(r"[a-z]+(-[a-z0-9]+)+")


def english_left(text: str) -> str:
    """Latin letters in a Chinese answer once device ids and units are taken out: should be none."""
    return re.sub(r"[^A-Za-z]", "", DEVICE_IDS.sub("", text).replace("°C", "").replace("h", ""))


@pytest.mark.parametrize("text", ["hello", "Hello!", "hi", "hey there", "good morning", "what can you do",
                                  "What can you do?", "help", "hi, what can you do?", "who are you",
                                  "what can I ask you"])
async def test_english_greetings_get_a_tour_of_this_site(text: str) -> None:
    registry = make_registry()
    assert wants_tour(text)
    reply, _, tools = await converse(registry, text)
    assert tools.calls == []
    assert reply.startswith("Hello! I'm this site's assistant")
    assert "7 devices (6 online)" in reply
    assert "air conditioner, light, curtain, switch, thermostat" in reply
    assert "“which devices are online”" in reply and "“any alerts today”" in reply


@pytest.mark.parametrize("text", ["你好", "您好！", "嗨", "早上好", "你能做什么", "你能做什么？", "你可以做什么",
                                  "你会什么", "您好，你能做什么？", "帮助", "你是谁", "我能问什么"])
async def test_chinese_greetings_get_a_chinese_tour(text: str) -> None:
    registry = make_registry()
    assert wants_tour(text)
    reply, _, tools = await converse(registry, text)
    assert tools.calls == []
    assert reply.startswith("您好！我是这里的设备助手")
    assert "7台设备（6台在线）：空调、灯、窗帘、开关、温控器" in reply
    assert english_left(reply) == "", reply


@pytest.mark.parametrize("text", ["hello, turn off the air conditioner", "hi what is the temperature of thermostat-001",
                                  "你好，打开客厅的灯", "hello, could you turn on the light",
                                  "what can you do with ac-1"])
async def test_a_greeting_with_a_request_does_the_request(text: str) -> None:
    assert not wants_tour(text)
    _, _, tools = await converse(make_registry(), text, "living-room-light")
    assert tools.calls, text


def test_every_example_in_the_tour_is_understood() -> None:
    """What the tour suggests, the engine must do (a tool call, or asking which device)."""
    registry = make_registry()
    vocabulary = Vocabulary.build(registry.catalog)
    for greeting in ("hello", "你好"):
        [say] = plan(greeting, context(greeting), registry, vocabulary).steps
        assert isinstance(say, Say)
        examples = re.findall(r"“([^”]+)”", say.text)
        assert len(examples) == 5, say.text
        for example in examples:
            steps = plan(example, context(example), registry, vocabulary).steps
            assert all(not (isinstance(s, Say) and not s.understood) for s in steps), (example, steps)


async def test_a_site_without_devices_says_so() -> None:
    empty = DeviceRegistry(load_catalog(PRODUCTS), store=_Store(), metrics=Metrics(), offline_after_s=0)
    reply, _, _ = await converse(empty, "hello")
    assert "No device has connected yet" in reply
    reply, _, _ = await converse(empty, "你好")
    assert "这里还没有设备连接上来" in reply and english_left(reply) == ""


class FailingCommands(RecordingTools):
    """The real tools, with a command path that fails the way the gateway's does."""

    def __init__(self, registry: DeviceRegistry, error: Exception | None = None, answer: tuple[int, str] | None = None):
        super().__init__(registry)
        commands = self.inner.commands

        async def send(device_id: str, command: str, params: dict[str, Any] | None = None,
                       timeout_ms: int | None = None, origin: dict[str, Any] | None = None) -> Any:
            if error is not None:
                raise error
            outcome = await commands.send(device_id, command, params, timeout_ms, origin)
            if answer is not None:
                outcome.code, outcome.msg = answer
            return outcome

        self.inner.commands = type("Commands", (), {"send": staticmethod(send)})()  # type: ignore[assignment]


@pytest.mark.parametrize(("failure", "words"), [
    ("offline", "抱歉，温控器 thermostat-002 离线了，现在无法设置目标温度。"),
    ("timeout", "抱歉，温控器 thermostat-001 在10秒内没有回应。"),
    ("broker", "抱歉，网关和设备之间的消息服务器断开了，请稍后再试。"),
    ("refused", "抱歉，温控器 thermostat-001 没有执行设置目标温度（错误码409，设备说：“busy”）。"),
])
async def test_failures_are_told_in_chinese(failure: str, words: str) -> None:
    registry = make_registry()
    device = "thermostat-002" if failure == "offline" else "thermostat-001"
    tools: RecordingTools
    if failure == "timeout":
        tools = FailingCommands(registry, CommandTimeout("did not answer", "req-1"))
    elif failure == "broker":
        tools = FailingCommands(registry, BrokerUnavailable("down"))
    elif failure == "refused":
        tools = FailingCommands(registry, answer=(409, "busy"))
    else:
        tools = RecordingTools(registry)
    reply, _, _ = await converse(registry, f"把{device}的目标温度设为20度", tools=tools)
    assert reply == words
    # The same failure asked in English keeps its English words.
    english, _, _ = await converse(registry, f"set the target temperature of {device} to 20",
                                   tools=type(tools)(registry) if failure == "offline" else tools)
    assert english.startswith("Sorry, ")


async def test_a_tool_error_without_facts_is_still_chinese() -> None:
    registry = make_registry()

    class Broken(RecordingTools):
        async def call(self, call: ToolCall, context: TurnContext) -> ToolResult:
            self.calls.append(call)
            return ToolResult(call.id, call.name, False, error="something English went wrong")

    reply, _, _ = await converse(registry, "打开客厅的灯", tools=Broken(registry))
    assert reply == "抱歉，没有成功，请稍后再试。"


async def test_a_value_the_spec_refuses_is_explained_in_chinese() -> None:
    registry = make_registry()
    reply, _, tools = await converse(registry, "把空调温度设为24.5度")
    assert tools.calls == []
    assert english_left(reply) == "", reply
    reply, _, _ = await converse(registry, "thermostat-001 的温度是多少")
    assert english_left(reply) == "", reply
    reply, _, _ = await converse(registry, "哪些设备在线")
    assert english_left(reply.replace("Bedroom light", "").replace("Living room light", "")) == "", reply
