"""A turn's extra tools (a speaker's own): CombinedTools and the offline engine's matching of
one-parameter tools (agent/local/device_tools.py)."""

from __future__ import annotations

from typing import Any

import pytest

from deviceagentd.agent.extra_tools import CombinedTools, extra_specs
from deviceagentd.agent.local import device_tools
from deviceagentd.agent.types import ToolCall, ToolResult, ToolSpec, TurnContext


def tool(name: str, properties: dict[str, Any]) -> ToolSpec:
    return ToolSpec(name, "", {"type": "object", "properties": properties, "required": list(properties)})


VOLUME = tool("self_audio_speaker_set_volume", {"volume": {"type": "integer", "minimum": 0, "maximum": 100}})
BRIGHTNESS = tool("self_screen_set_brightness", {"brightness": {"type": "integer", "minimum": 0, "maximum": 100}})
THEME = tool("self_screen_set_theme", {"theme": {"type": "string", "enum": ["light", "dark"]}})
MUTE = tool("self_audio_speaker_mute", {"muted": {"type": "boolean"}})
STATUS = tool("self_get_device_status", {})
FREE_TEXT = tool("self_screen_show", {"text": {"type": "string"}})
SPEAKER_TOOLS = [VOLUME, BRIGHTNESS, THEME, MUTE, STATUS, FREE_TEXT]


@pytest.mark.parametrize(("message", "name", "arguments", "strong"), [
    ("set the speaker volume to 40", VOLUME.name, {"volume": 40}, True),
    ("volume 15 please", VOLUME.name, {"volume": 15}, False),
    ("把音量调到40", VOLUME.name, {"volume": 40}, False),
    ("音量调到四十", VOLUME.name, {"volume": 40}, False),
    ("把屏幕亮度调到百分之七十", BRIGHTNESS.name, {"brightness": 70}, True),
    ("set the screen brightness to 70%", BRIGHTNESS.name, {"brightness": 70}, True),
    ("switch the screen theme to dark", THEME.name, {"theme": "dark"}, True),
    ("mute the speaker off", MUTE.name, {"muted": False}, True),
])
def test_one_parameter_tools_are_matched(message: str, name: str, arguments: dict[str, Any], strong: bool) -> None:
    found = device_tools.match(message, SPEAKER_TOOLS)
    assert found is not None
    assert (found.name, found.arguments, found.strong) == (name, arguments, strong)


@pytest.mark.parametrize("message", [
    "set the volume",  # no value
    "what is the temperature",  # nothing of a tool
    "show hello on the screen",  # a free-text parameter is not for the offline engine
    "set the theme to purple",  # not one of the enum
    "turn on the lights",  # no tool parameter named
])
def test_nothing_is_matched_without_a_parameter_and_a_value_of_its_kind(message: str) -> None:
    assert device_tools.match(message, SPEAKER_TOOLS) is None


def test_replies_in_the_language_of_the_request() -> None:
    found = device_tools.match("把音量调到40", [VOLUME])
    assert found is not None
    done = ToolResult("1", VOLUME.name, True, result=True)
    assert device_tools.reply(found, done, "把音量调到40") == "好的，音量已设为40。"
    failed = ToolResult("1", VOLUME.name, False, error="the speaker did not answer")
    assert device_tools.reply(found, failed, "set the volume to 40") == "That did not work: the speaker did not answer"


class Named:
    def __init__(self, *names: str) -> None:
        self.names = names
        self.calls: list[str] = []

    def specs(self) -> list[ToolSpec]:
        return [tool(name, {}) for name in self.names]

    async def call(self, call: ToolCall, context: TurnContext) -> ToolResult:
        self.calls.append(call.name)
        return ToolResult(call.id, call.name, True)


async def test_combined_tools_route_by_name_and_the_site_keeps_its_names() -> None:
    site, extra = Named("list_devices", "send_command"), Named("self_audio_speaker_set_volume", "send_command")
    combined = CombinedTools(site, extra)
    assert [s.name for s in combined.specs()] == ["list_devices", "send_command", "self_audio_speaker_set_volume"]
    assert [s.name for s in extra_specs(site, extra)] == ["self_audio_speaker_set_volume"]
    assert extra_specs(site, None) == ()
    context = TurnContext("s", "m", [])
    await combined.call(ToolCall("1", "send_command", {}), context)
    await combined.call(ToolCall("2", "self_audio_speaker_set_volume", {}), context)
    await combined.call(ToolCall("3", "no_such_tool", {}), context)
    assert site.calls == ["send_command", "no_such_tool"] and extra.calls == ["self_audio_speaker_set_volume"]
