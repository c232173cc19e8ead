"""The offline agent and time: what it plans for timers, alarms, reminders, recurring commands,
cancelling and listing, in English and Chinese (agent/local/later.py), with the site's local time
fixed at Monday 2026-12-07 15:20 in Asia/Shanghai."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from test_local_engine import context, make_registry

from deviceagentd.agent.local import Vocabulary, plan
from deviceagentd.core.registry import DeviceRegistry

NOW = datetime(2026, 12, 7, 15, 20, tzinfo=ZoneInfo("Asia/Shanghai"))


@pytest.fixture(scope="module")
def registry() -> DeviceRegistry:
    return make_registry()


def cmd(device_id: str, command: str, **params: Any) -> dict[str, Any]:
    return {"type": "command", "deviceId": device_id, "command": command, "params": params}


def later(when: dict[str, Any], action: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    return "create_schedule", {**when, "action": action}


ALARM_EN = {"type": "alarm", "language": "en"}
ALARM_ZH = {"type": "alarm", "language": "zh"}

CASES: list[tuple[str, str | None, list[tuple[str, dict[str, Any]]]]] = [
    # Timers: a command in so long.
    ("in 10 minutes turn off the light in the bedroom", None,
     [later({"inSeconds": 600}, cmd("bedroom-light", "turn_off"))]),
    ("turn off the AC in 30 minutes", None, [later({"inSeconds": 1800}, cmd("ac-1", "turn_off"))]),
    ("close the curtain in half an hour", None, [later({"inSeconds": 1800}, cmd("curtain-1", "close"))]),
    ("set it to 24 in an hour", "thermostat-001",
     [later({"inSeconds": 3600}, cmd("thermostat-001", "set_target_temperature", target_temperature=24))]),
    ("关灯十分钟后", "living-room-light", [later({"inSeconds": 600}, cmd("living-room-light", "turn_off"))]),
    ("十分钟后把卧室的灯关掉", None, [later({"inSeconds": 600}, cmd("bedroom-light", "turn_off"))]),
    ("半小时后关空调", None, [later({"inSeconds": 1800}, cmd("ac-1", "turn_off"))]),
    ("一个小时后打开窗帘", None, [later({"inSeconds": 3600}, cmd("curtain-1", "open"))]),
    # At a time of day: the next time the clock shows it ("at 11" at 15:20 is 23:00).
    ("at 11 close the curtain", None, [later({"at": "23:00"}, cmd("curtain-1", "close"))]),
    ("turn on the light in the living room at 7:30 pm", None,
     [later({"at": "19:30"}, cmd("living-room-light", "turn_on"))]),
    ("下午5点开客厅的灯", None, [later({"at": "17:00"}, cmd("living-room-light", "turn_on"))]),
    ("明天早上8点打开窗帘", None, [later({"at": "2026-12-08T08:00"}, cmd("curtain-1", "open"))]),
    # Recurring.
    ("every day at 23:00 close the curtains", None,
     [later({"at": "23:00", "repeat": "daily"}, cmd("curtain-1", "close"))]),
    ("every weekday at 7 open the curtain", None,
     [later({"at": "07:00", "repeat": "weekdays"}, cmd("curtain-1", "open"))]),
    ("on mondays at 9 pm turn off the AC", None, [later({"at": "21:00", "repeat": "mon"}, cmd("ac-1", "turn_off"))]),
    ("every 15 minutes turn on the plug", None, [later({"cron": "*/15 * * * *"}, cmd("switch-1", "turn_on"))]),
    ("每天晚上11点关窗帘", None, [later({"at": "23:00", "repeat": "daily"}, cmd("curtain-1", "close"))]),
    ("工作日早上七点半打开窗帘", None, [later({"at": "07:30", "repeat": "weekdays"}, cmd("curtain-1", "open"))]),
    ("每周一三五早上8点打开窗帘", None, [later({"at": "08:00", "repeat": "mon,wed,fri"}, cmd("curtain-1", "open"))]),
    ("周末早上9点打开窗帘", None, [later({"at": "09:00", "repeat": "weekends"}, cmd("curtain-1", "open"))]),
    # Alarms ring on the speaker the request came from; an alarm "at 7" is in the morning.
    ("wake me up at 7", None, [later({"at": "07:00"}, ALARM_EN)]),
    ("wake me up tomorrow at 6:45 am", None, [later({"at": "2026-12-08T06:45"}, ALARM_EN)]),
    ("set an alarm for 7:30", None, [later({"at": "07:30"}, ALARM_EN)]),
    ("every weekday at 7 wake me up", None, [later({"at": "07:00", "repeat": "weekdays"}, ALARM_EN)]),
    ("明天早上7点叫醒我", None, [later({"at": "2026-12-08T07:00"}, ALARM_ZH)]),
    ("设一个早上六点半的闹钟", None, [later({"at": "06:30"}, ALARM_ZH)]),
    ("每天早上七点叫我起床", None, [later({"at": "07:00", "repeat": "daily"}, ALARM_ZH)]),
    # Reminders and bare timers are spoken.
    ("remind me to check the oven in 20 minutes", None,
     [later({"inSeconds": 1200}, {"type": "say", "text": "Reminder: check the oven", "language": "en"})]),
    ("二十分钟后提醒我关火", None,
     [later({"inSeconds": 1200}, {"type": "say", "text": "提醒您：关火", "language": "zh"})]),
    ("set a timer for 10 minutes", None,
     [later({"inSeconds": 600}, {"type": "say", "text": "Time's up!", "language": "en"})]),
    ("定时五分钟", None, [later({"inSeconds": 300}, {"type": "say", "text": "时间到了！", "language": "zh"})]),
    # Cancelling and listing.
    ("cancel my alarm", None, [("cancel_schedule", {"kind": "alarm", "all": False})]),
    ("cancel all my timers", None, [("cancel_schedule", {"kind": "timer", "all": True})]),
    ("don't wake me up", None, [("cancel_schedule", {"kind": "alarm", "all": False})]),
    ("取消闹钟", None, [("cancel_schedule", {"kind": "alarm", "all": False})]),
    ("取消所有提醒", None, [("cancel_schedule", {"kind": "reminder", "all": True})]),
    ("what alarms do I have", None, [("list_schedules", {})]),
    ("我有哪些闹钟", None, [("list_schedules", {})]),
    # Not about later: planned as before.
    ("turn on the light in the bedroom", None, [("send_command", {"device_id": "bedroom-light",
                                                                 "command": "turn_on", "params": {}})]),
    ("raise the target temperature by 2 degrees", "thermostat-001",
     [("send_command", {"device_id": "thermostat-001", "command": "set_target_temperature",
                        "params": {"target_temperature": 24}})]),
]


@pytest.mark.parametrize(("text", "device", "calls"), CASES)
def test_plans_about_later(registry: DeviceRegistry, text: str, device: str | None,
                           calls: list[tuple[str, dict[str, Any]]]) -> None:
    got = plan(text, context(text, device, registry), registry, Vocabulary.build(registry.catalog), NOW).tool_calls()
    assert got == calls


@pytest.mark.parametrize(("text", "words"), [
    ("set an alarm", "When should I wake you up?"),
    ("remind me", "When?"),
    ("闹钟", "几点叫醒您？"),
    ("what is the temperature of thermostat-001 in 10 minutes", "not questions"),
    ("十分钟后 thermostat-001 的温度是多少", "不能定时查询"),
])
def test_what_it_cannot_schedule_it_says(registry: DeviceRegistry, text: str, words: str) -> None:
    planned = plan(text, context(text, None, registry), registry, Vocabulary.build(registry.catalog), NOW)
    assert planned.tool_calls() == []
    assert any(words in sentence for sentence in planned.sayings()), planned.sayings()
