"""The offline agent (provider `local`): corpus accuracy, replies, device choice, safety."""

from __future__ import annotations

import re
from datetime import UTC, tzinfo
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from local_corpus import CORPUS, HELD_OUT, SITE, Case

from deviceagentd.agent.local import LocalProvider, Vocabulary, plan
from deviceagentd.agent.tools import DeviceTools
from deviceagentd.agent.types import (
    ChatMessage,
    Delta,
    ImageInput,
    Provider,
    ToolCall,
    ToolCallFinished,
    ToolCallStarted,
    ToolResult,
    ToolSpec,
    TurnContext,
    TurnEvent,
)
from deviceagentd.core.catalog import Catalog, load_catalog
from deviceagentd.core.clock import Clock
from deviceagentd.core.commands import CommandOutcome
from deviceagentd.core.errors import DeviceOffline, InvalidInput
from deviceagentd.core.metrics import Metrics
from deviceagentd.core.registry import DeviceRegistry
from deviceagentd.core.spec import parse_spec
from deviceagentd.core.values import check_params
from deviceagentd.store.records import DeviceRecord, EventRecord, NewEvent

PRODUCTS = Path(__file__).resolve().parent.parent / "etc" / "deviceagentd" / "products"
MIN_ACCURACY = 0.9


# --------------------------------------------------------------------------- the site


class _Store:
    def save_device(self, record: DeviceRecord) -> None:
        pass

    def add_event(self, event: NewEvent) -> EventRecord:
        return EventRecord(**vars(event), id=1)


def make_registry(catalog: Catalog | None = None) -> DeviceRegistry:
    registry = DeviceRegistry(catalog or load_catalog(PRODUCTS), store=_Store(), metrics=Metrics(), offline_after_s=0)
    for device in SITE:
        body = {"type": "status", "data": {"status": "online", "state": dict(device.state)},
                "metadata": dict(device.metadata)}
        registry.accept_telemetry(device.product_id, device.device_id, body, "json")
        if not device.online:
            registry.accept_telemetry(device.product_id, device.device_id,
                                      {"type": "status", "data": {"status": "offline"}}, "json")
    return registry


@pytest.fixture(scope="module")
def registry() -> DeviceRegistry:
    return make_registry()


@pytest.fixture(scope="module")
def vocabulary(registry: DeviceRegistry) -> Vocabulary:
    return Vocabulary.build(registry.catalog)


def context(text: str, device_id: str | None = None, registry: DeviceRegistry | None = None,
            history: list[ChatMessage] | None = None, images: list[ImageInput] | None = None) -> TurnContext:
    product_id = None
    if device_id is not None and registry is not None:
        device = registry.get(device_id)
        product_id = device.product_id if device is not None else None
    return TurnContext("session-1", text, history or [], product_id, device_id, images or [])


# --------------------------------------------------------------------------- fake site tools


class _Commands:
    """The command path without MQTT: same checks and errors as CommandService, instant answer."""

    def __init__(self, registry: DeviceRegistry) -> None:
        self.registry = registry
        # Who each command came from, as the command log would keep it.
        self.origins: list[dict[str, Any] | None] = []

    async def send(self, device_id: str, command: str, params: dict[str, Any] | None = None,
                   timeout_ms: int | None = None, origin: dict[str, Any] | None = None) -> CommandOutcome:
        self.origins.append(origin)
        device = self.registry.get(device_id)
        assert device is not None
        spec = self.registry.catalog.get(device.product_id)
        assert spec is not None
        command_spec = spec.commands.get(command)
        if command_spec is None:
            raise InvalidInput(f"{command!r} is not a command of {spec.product_id}")
        errors = check_params(command_spec, params)
        if errors:
            raise InvalidInput("; ".join(f"{e.field} {e.reason}" for e in errors))
        if not device.online:
            raise DeviceOffline(f"device {device_id!r} is offline")
        return CommandOutcome("req-1", 0, "ok", None, 1.0)


class _Events:
    async def query_events(self, device_id: str | None, *, limit: int, before: int | None = None,
                           event: str | None = None, since_ms: int | None = None,
                           levels: frozenset[str] | None = None) -> list[EventRecord]:
        rows = [
            EventRecord("ac-1", "air_conditioner", "filter_dirty", "warning", True, {"hours_used": 500},
                        1_714_557_720_000, 1_714_557_720_000, id=2),
            EventRecord("thermostat-001", "thermostat", "online", "info", True, {}, 1_714_550_000_000,
                        1_714_550_000_000, source="gateway", id=1),
        ]
        return [r for r in rows if (levels is None or r.level in levels)
                and (device_id is None or r.device_id == device_id)][:limit]


class RecordingTools:
    """The real DeviceTools over the test registry, recording every call."""

    def __init__(self, registry: DeviceRegistry) -> None:
        self.inner = DeviceTools(registry, _Commands(registry), _Events(), Clock())  # type: ignore[arg-type]
        self.calls: list[ToolCall] = []

    def specs(self) -> list[ToolSpec]:
        return self.inner.specs()

    async def call(self, call: ToolCall, context: TurnContext) -> ToolResult:
        self.calls.append(call)
        return await self.inner.call(call, context)


class FixedClock(Clock):
    def __init__(self, wall_ms: int) -> None:
        self.now_ms = wall_ms

    def wall_ms(self) -> int:
        return self.now_ms


async def converse(registry: DeviceRegistry, text: str, device_id: str | None = None, zone: tzinfo = UTC,
                   now_ms: int | None = None, tools: Any = None,
                   **kwargs: Any) -> tuple[str, list[TurnEvent], RecordingTools]:
    tools = tools or RecordingTools(registry)
    provider = LocalProvider(registry, zone, FixedClock(now_ms) if now_ms is not None else None)
    events = [e async for e in provider.run(context(text, device_id, registry, **kwargs), tools)]
    reply = "".join(e.text for e in events if isinstance(e, Delta))
    return reply, events, tools


# --------------------------------------------------------------------------- the corpus


def _is_chinese(text: str) -> bool:
    return re.search("[\u4e00-\u9fff]", text) is not None


def _accuracy(cases: tuple[Case, ...], registry: DeviceRegistry, vocabulary: Vocabulary) -> tuple[float, list[str]]:
    misses: list[str] = []
    for case in cases:
        got = plan(case.text, context(case.text, case.device, registry), registry, vocabulary).tool_calls()
        expected = [(name, args) for name, args in case.calls]
        if got != expected:
            misses.append(f"{case.text!r} (session {case.device}): expected {expected}, got {got}")
    return 1 - len(misses) / len(cases), misses


def test_corpus_is_big_enough_bilingual_and_covers_every_product(registry: DeviceRegistry) -> None:
    assert len(CORPUS) >= 150
    assert sum(_is_chinese(c.text) for c in CORPUS) / len(CORPUS) >= 0.4
    touched = {registry.get(args["device_id"]).product_id  # type: ignore[union-attr]
               for case in CORPUS for name, args in case.calls if name == "send_command"}
    assert touched == set(registry.catalog.products)
    assert any(len(c.calls) > 1 for c in CORPUS) and any(not c.calls for c in CORPUS)


def test_corpus_expectations_are_valid_commands(registry: DeviceRegistry) -> None:
    """A typo in an expectation must not pass as an engine miss (or vice versa)."""
    for case in CORPUS + HELD_OUT:
        for name, args in case.calls:
            if name != "send_command":
                continue
            device = registry.get(args["device_id"])
            assert device is not None, case.text
            spec = registry.catalog.get(device.product_id)
            assert spec is not None and args["command"] in spec.commands, case.text
            assert check_params(spec.commands[args["command"]], args["params"]) == [], case.text


@pytest.mark.parametrize(("name", "cases"), [("corpus", CORPUS), ("held-out", HELD_OUT)])
def test_corpus_accuracy(name: str, cases: tuple[Case, ...], registry: DeviceRegistry, vocabulary: Vocabulary,
                         capsys: pytest.CaptureFixture[str]) -> None:
    accuracy, misses = _accuracy(cases, registry, vocabulary)
    english = tuple(c for c in cases if not _is_chinese(c.text))
    chinese = tuple(c for c in cases if _is_chinese(c.text))
    en, _ = _accuracy(english, registry, vocabulary)
    zh, _ = _accuracy(chinese, registry, vocabulary)
    with capsys.disabled():
        print(f"\n{name}: {accuracy:.1%} of {len(cases)} (English {en:.1%} of {len(english)}, "
              f"Chinese {zh:.1%} of {len(chinese)})")
        for miss in misses:
            print("  miss:", miss)
    assert accuracy >= MIN_ACCURACY, "\n".join(misses)


def test_plans_never_invent_a_command_or_an_invalid_value(registry: DeviceRegistry, vocabulary: Vocabulary) -> None:
    for case in CORPUS + HELD_OUT:
        for session in (None, "thermostat-001", "living-room-light", "ac-1"):
            calls = plan(case.text, context(case.text, session, registry), registry, vocabulary).tool_calls()
            for name, args in calls:
                if name != "send_command":
                    continue
                device = registry.get(args["device_id"])
                assert device is not None
                spec = registry.catalog.get(device.product_id)
                assert spec is not None
                assert args["command"] in spec.commands, (case.text, session, args)
                assert check_params(spec.commands[args["command"]], args["params"]) == [], (case.text, args)


# --------------------------------------------------------------------------- replies


async def test_state_question_in_english_and_chinese(registry: DeviceRegistry) -> None:
    reply, events, tools = await converse(registry, "what is the current temperature", "thermostat-001")
    assert reply == "The current temperature is 28 °C."
    assert [c.name for c in tools.calls] == ["get_device_state"]
    assert isinstance(events[0], ToolCallStarted) and isinstance(events[1], ToolCallFinished)

    reply, _, _ = await converse(registry, "查看当前温度", "thermostat-001")
    assert reply == "当前温度是28°C。"


async def test_yes_no_question_about_a_switch(registry: DeviceRegistry) -> None:
    reply, _, _ = await converse(registry, "is the light on", "bedroom-light")
    assert reply == "No, the Light bedroom-light is off."
    reply, _, _ = await converse(registry, "卧室的灯开着吗")
    assert reply == "没有，灯 bedroom-light 现在是关的。"


async def test_commands_with_numbers_enums_and_on_off(registry: DeviceRegistry) -> None:
    reply, _, tools = await converse(registry, "set the target temperature to 24", "thermostat-001")
    assert reply == "Done: the target temperature of thermostat-001 is now 24 °C."
    assert tools.calls[0].arguments == {"device_id": "thermostat-001", "command": "set_target_temperature",
                                        "params": {"target_temperature": 24}}

    reply, _, _ = await converse(registry, "把目标温度设为24度", "thermostat-001")
    assert reply == "好的，thermostat-001 的目标温度已设为24°C。"

    reply, _, tools = await converse(registry, "switch the mode to cool", "thermostat-001")
    assert reply == "Done: the mode of thermostat-001 is now cool."

    reply, _, tools = await converse(registry, "turn off the bedroom light")
    assert reply == "Done: turned off bedroom-light."
    assert tools.calls[0].arguments["command"] == "turn_off"

    reply, _, _ = await converse(registry, "关掉卧室的灯")
    assert reply == "好的，已关闭 bedroom-light。"


async def test_compound_request_runs_each_part_in_order(registry: DeviceRegistry) -> None:
    text = "check the current temperature and set the target temperature to 24"
    reply, events, tools = await converse(registry, text, "thermostat-001")
    kinds = [type(e).__name__ for e in events]
    assert kinds == ["ToolCallStarted", "ToolCallFinished", "Delta", "ToolCallStarted", "ToolCallFinished", "Delta"]
    assert [c.name for c in tools.calls] == ["get_device_state", "send_command"]
    assert reply == ("The current temperature is 28 °C. "
                     "Done: the target temperature of thermostat-001 is now 24 °C.")
    assert len({c.id for c in tools.calls}) == 2


async def test_ambiguous_device_is_asked_not_guessed(registry: DeviceRegistry) -> None:
    reply, _, tools = await converse(registry, "turn on the light")
    assert tools.calls == []
    assert reply == "Which one do you mean: bedroom-light (Bedroom light) or living-room-light (Living room light)?"
    reply, _, tools = await converse(registry, "开灯")
    assert tools.calls == [] and reply.startswith("您指的是哪一个：")


async def test_device_by_id_name_room_and_session(registry: DeviceRegistry) -> None:
    _, _, tools = await converse(registry, "turn off living-room-light")
    assert tools.calls[0].arguments["device_id"] == "living-room-light"
    _, _, tools = await converse(registry, "turn off the coffee machine")
    assert tools.calls[0].arguments["device_id"] == "switch-1"
    _, _, tools = await converse(registry, "what is the temperature in the office")
    assert tools.calls[0].arguments["device_id"] == "thermostat-002"
    _, _, tools = await converse(registry, "turn on the light", "living-room-light")
    assert tools.calls[0].arguments["device_id"] == "living-room-light"


async def test_offline_device_is_preferred_less_and_its_failure_is_told(registry: DeviceRegistry) -> None:
    _, _, tools = await converse(registry, "what mode is the thermostat in")
    assert tools.calls[0].arguments["device_id"] == "thermostat-001"
    reply, _, tools = await converse(registry, "set thermostat-002 to 20")
    assert tools.calls[0].arguments["device_id"] == "thermostat-002"
    assert reply == "Sorry, the Thermostat thermostat-002 is offline, so it cannot set target temperature now."


async def test_out_of_range_value_is_not_sent(registry: DeviceRegistry) -> None:
    reply, _, tools = await converse(registry, "set the target temperature to 50", "thermostat-001")
    assert tools.calls == []
    assert reply == ("The target temperature of thermostat-001 can be set from 5 to 35 °C (not 50), "
                     "so I did not change it.")
    reply, _, tools = await converse(registry, "set the air conditioner to 24.5 degrees")
    assert tools.calls == [] and "whole number from 16 to 30 °C" in reply
    reply, _, tools = await converse(registry, "把目标温度设为50度", "thermostat-001")
    assert tools.calls == [] and reply == "thermostat-001 的目标温度必须是5到35°C（您说的是50），所以没有修改。"


async def test_negative_values_keep_their_sign(registry: DeviceRegistry) -> None:
    reply, _, tools = await converse(registry, "set the target temperature to -5", "thermostat-001")
    assert tools.calls == [] and "(not -5)" in reply


async def test_everything_means_every_device_that_can(registry: DeviceRegistry) -> None:
    expected = ["ac-1", "bedroom-light", "living-room-light", "switch-1"]
    _, _, tools = await converse(registry, "turn off everything", "thermostat-001")
    assert [c.arguments["device_id"] for c in tools.calls] == expected
    _, _, tools = await converse(registry, "所有设备都关掉")
    assert [c.name for c in tools.calls] == ["send_command"] * 5


async def test_read_only_field_and_missing_command(registry: DeviceRegistry) -> None:
    reply, _, tools = await converse(registry, "set the humidity to 50", "thermostat-001")
    assert tools.calls == [] and reply == "The current humidity of thermostat-001 can only be read, not set."
    reply, _, tools = await converse(registry, "turn on the thermostat", "thermostat-001")
    assert tools.calls == []
    assert reply == "The Thermostat thermostat-001 cannot do that; it can: set target temperature, set mode."


@pytest.mark.parametrize("text", [
    "blink the light", "set the volume to 30", "turn on the TV", "open the garage door", "lock the door",
    "play some music", "order a pizza", "把音量调到30", "打开电视", "让灯闪烁一下", "放点音乐",
    "set the fan to turbo", "set the mode to party", "set an alarm for 7", "turn on thermostat-009",
])
async def test_unknown_words_never_send_a_command(registry: DeviceRegistry, text: str) -> None:
    for session in (None, "living-room-light", "ac-1"):
        _, _, tools = await converse(registry, text, session)
        assert [c for c in tools.calls if c.name == "send_command"] == [], (text, session)


async def test_not_understood_says_what_it_can_do(registry: DeviceRegistry) -> None:
    reply, _, tools = await converse(registry, "tell me a joke")
    assert tools.calls == []
    assert reply.startswith("I don't know “joke”. I can: read device state (e.g. “what is the ")
    assert "list online devices, and show recent alerts." in reply
    reply, _, _ = await converse(registry, "what about it", "thermostat-001")
    assert reply == ("I don't understand “what about it”. I can: read device state (e.g. “what is the current "
                     "temperature”), send commands (e.g. “set the target temperature to 22”), list online "
                     "devices, and show recent alerts.")
    reply, _, _ = await converse(registry, "怎么样", "thermostat-001")
    assert reply == ("我没听懂“怎么样”。我可以：查看设备状态（例如“查看当前温度”）、"
                     "发送命令（例如“把目标温度设为22”）、列出在线设备、查看最近的告警。")


async def test_image_questions_need_a_vision_model(registry: DeviceRegistry) -> None:
    frame = ImageInput("frame-1", "image/jpeg", b"\xff\xd8", "2024-05-01T10:00:00.000Z", "camera-1")
    reply, _, tools = await converse(registry, "what is this?", images=[frame])
    assert tools.calls == [] and "vision model" in reply and "openai" in reply
    reply, _, tools = await converse(registry, "what do you see in this picture")
    assert tools.calls == [] and "vision model" in reply
    reply, _, tools = await converse(registry, "这张图片里有什么")
    assert tools.calls == [] and "视觉模型" in reply


async def test_devices_online_and_alerts_today(registry: DeviceRegistry) -> None:
    reply, _, tools = await converse(registry, "which devices are online")
    assert tools.calls[0].name == "list_devices" and tools.calls[0].arguments == {"status": "online"}
    assert reply.startswith("Online devices (6): ac-1 (Air conditioner, online, off), bedroom-light (Light, ")
    assert "thermostat-002" not in reply
    # Events say their values, at the site's local time (site.timezone): 10:02 UTC is 18:02 in Shanghai.
    shanghai, evening = ZoneInfo("Asia/Shanghai"), 1_714_564_800_000  # 2024-05-01 20:00 +08:00
    reply, _, tools = await converse(registry, "any alerts today", zone=shanghai, now_ms=evening)
    assert tools.calls[0].arguments == {"since_hours": 24, "levels": ["alert", "warning", "error"]}
    assert reply == "1 alert in the last 24 hours: ac-1 filter_dirty (warning, today 18:02): hours used 500 h."
    reply, _, _ = await converse(registry, "今天有告警吗", zone=shanghai, now_ms=evening)
    assert reply == "过去24小时内有1条告警：ac-1 滤网脏了（警告，今天18:02）：使用时长 500h。"
    reply, _, _ = await converse(registry, "any alerts today", zone=ZoneInfo("America/New_York"), now_ms=evening)
    assert "(warning, today 06:02)" in reply  # the same moment, another site
    reply, _, _ = await converse(registry, "what happened to thermostat-001", zone=shanghai,
                                 now_ms=evening + 86_400_000)
    assert reply.endswith("thermostat-001 went online (yesterday 15:53).")
    reply, _, _ = await converse(registry, "thermostat-001 有什么事件", zone=shanghai, now_ms=evening + 5 * 86_400_000)
    assert reply.endswith("thermostat-001 上线（2024年5月1日15:53）。")


async def test_relative_change_starts_from_the_reported_state(registry: DeviceRegistry) -> None:
    _, _, tools = await converse(registry, "make the light brighter", "living-room-light")
    assert tools.calls[0].arguments["params"] == {"brightness": 90}
    _, _, tools = await converse(registry, "目标温度调高2度", "thermostat-001")
    assert tools.calls[0].arguments["params"] == {"target_temperature": 24}


async def test_it_refers_to_the_device_of_the_previous_turn(registry: DeviceRegistry) -> None:
    earlier = ChatMessage("assistant", "Done: turned on bedroom-light.", 0,
                          [ToolCall("local-1", "send_command",
                                    {"device_id": "bedroom-light", "command": "turn_on", "params": {}})])
    _, _, tools = await converse(registry, "set it to 30%", history=[earlier])
    assert tools.calls[0].arguments == {"device_id": "bedroom-light", "command": "set_brightness",
                                        "params": {"brightness": 30}}


async def test_reply_language_follows_the_question(registry: DeviceRegistry) -> None:
    reply, _, _ = await converse(registry, "thermostat-001 的湿度是多少")
    assert reply == "thermostat-001 的当前湿度是62%。"
    reply, _, _ = await converse(registry, "what's the humidity of thermostat-001")
    assert reply == "The current humidity of thermostat-001 is 62%."


def test_provider_shape(registry: DeviceRegistry) -> None:
    provider: Provider = LocalProvider(registry)
    assert provider.name == "local"


# --------------------------------------------------------------------------- no per-product code


HUMIDIFIER = {
    "name": "Humidifier",
    "description": "A room humidifier that adds moisture to dry air.",
    "commands": {
        "turn_on": {"description": "Switch the humidifier on.", "parameters": {}},
        "turn_off": {"description": "Switch the humidifier off.", "parameters": {}},
        "set_target_humidity": {
            "description": "Set the humidity the humidifier should keep.",
            "parameters": {"target_humidity": {"type": "int", "description": "The new target humidity in percent.",
                                               "required": True, "min": 30, "max": 80, "unit": "%"}},
        },
        "set_mist_level": {
            "description": "Change how much mist the humidifier makes.",
            "parameters": {"mist_level": {"type": "enum", "enum": ["low", "medium", "high"], "required": True,
                                          "description": "The new mist level: low, medium or high."}},
        },
    },
    "telemetry": {
        "humidity": {"type": "int", "description": "The current humidity of the room, in percent.", "unit": "%"},
        "water_level": {"type": "int", "description": "How much water is left in the tank, in percent.",
                        "unit": "%"},
    },
}


async def test_a_new_product_is_understood_from_its_spec_alone() -> None:
    base = load_catalog(PRODUCTS)
    catalog = Catalog({**base.products, "humidifier": parse_spec("humidifier", HUMIDIFIER)})
    registry = make_registry(catalog)
    registry.accept_telemetry("humidifier", "humidifier-1", {
        "type": "status", "data": {"status": "online", "state": {"humidity": 41, "water_level": 70}},
        "metadata": {"name": "Nursery humidifier", "room": "nursery"}}, "json")
    vocabulary = Vocabulary.build(catalog)

    def calls(text: str, session: str | None = None) -> list[tuple[str, dict[str, Any]]]:
        return plan(text, context(text, session, registry), registry, vocabulary).tool_calls()

    assert calls("turn on the humidifier") == [
        ("send_command", {"device_id": "humidifier-1", "command": "turn_on", "params": {}})]
    assert calls("set the target humidity to 45%") == [
        ("send_command", {"device_id": "humidifier-1", "command": "set_target_humidity",
                          "params": {"target_humidity": 45}})]
    assert calls("set the mist level to high in the nursery") == [
        ("send_command", {"device_id": "humidifier-1", "command": "set_mist_level", "params": {"mist_level": "high"}})]
    assert calls("how much water is left in the humidifier") == [("get_device_state", {"device_id": "humidifier-1"})]
    assert calls("set the target humidity to 95%", "humidifier-1") == []
