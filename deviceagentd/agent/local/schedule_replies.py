"""The offline agent's sentences about schedules (made, listed, cancelled), English or Chinese."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from deviceagentd.agent.local.replies import Replies
from deviceagentd.agent.local.steps import Cancelling, ScheduleListing, ScheduleStep, Scheduling
from deviceagentd.agent.types import ToolResult

MAX_LISTED = 5
# How the offline agent words a reminder it schedules (planner.py): said as is when it rings.
REMINDER_EN = "Reminder: "
REMINDER_ZH = "提醒您："
_EN_REPEAT = {"daily": "every day", "weekdays": "every weekday", "weekends": "every weekend"}
_ZH_REPEAT = {"daily": "每天", "weekdays": "每个工作日", "weekends": "每个周末"}
_EN_DAYS = {"mon": "Monday", "tue": "Tuesday", "wed": "Wednesday", "thu": "Thursday", "fri": "Friday",
            "sat": "Saturday", "sun": "Sunday"}
_ZH_DAYS = {"mon": "一", "tue": "二", "wed": "三", "thu": "四", "fri": "五", "sat": "六", "sun": "日"}


def ask_when(replies: Replies, alarm: bool) -> str:
    if replies.zh:
        return "什么时候？例如“明天早上7点”或“十分钟后”。" if not alarm else "几点叫醒您？例如“明天早上7点”。"
    if alarm:
        return "When should I wake you up? Say for example “at 7:30 tomorrow”."
    return "When? Say for example “in 10 minutes” or “every day at 23:00”."


def cannot_schedule(replies: Replies) -> str:
    if replies.zh:
        return "我可以定时执行设备命令、设闹钟和提醒，但不能定时查询。"
    return "I can schedule device commands, alarms and reminders, not questions."


def schedule_result(replies: Replies, step: ScheduleStep, result: ToolResult) -> str:
    if not result.ok:
        words = (result.error or "").rstrip(".")
        return f"没有成功：{words}。" if replies.zh else f"Sorry, {words}."
    data = result.result if isinstance(result.result, dict) else {}
    if isinstance(step, Scheduling):
        return _created(replies, data)
    if isinstance(step, ScheduleListing):
        return _listed(replies, [s for s in data.get("schedules", []) if isinstance(s, dict)])
    assert isinstance(step, Cancelling)
    cancelled = [s for s in data.get("cancelled", []) if isinstance(s, dict)]
    things = [_describe(replies, s) for s in cancelled]
    if replies.zh:
        return "已取消：" + "；".join(things) + "。"
    return "Cancelled " + "; ".join(things) + "."


def _created(replies: Replies, schedule: dict[str, Any]) -> str:
    what = _what(replies, schedule.get("action") or {})
    when = _when(replies, schedule)
    if replies.zh:
        return f"好的，{when}{what}。"
    return f"OK, I'll {what} {when}."


def _listed(replies: Replies, schedules: list[dict[str, Any]]) -> str:
    if not schedules:
        return "您现在没有闹钟或定时任务。" if replies.zh else "You have no alarms, timers or reminders."
    shown = [_describe(replies, s) for s in schedules[:MAX_LISTED]]
    more = len(schedules) - len(shown)
    if replies.zh:
        tail = f"，还有{more}个" if more else ""
        return f"您有{len(schedules)}个：" + "；".join(shown) + tail + "。"
    tail = f", and {more} more" if more else ""
    return f"You have {len(schedules)}: " + "; ".join(shown) + tail + "."


def _describe(replies: Replies, schedule: dict[str, Any]) -> str:
    what = _what(replies, schedule.get("action") or {}, noun=True)
    when = _when(replies, schedule)
    return f"{when}{what}" if replies.zh else f"{what} {when}"


def _what(replies: Replies, action: dict[str, Any], noun: bool = False) -> str:
    kind = action.get("type")
    if kind == "alarm":
        return ("叫醒您" if not noun else "闹钟") if replies.zh else ("wake you up" if not noun else "the alarm")
    if kind == "say":
        text = str(action.get("text", ""))
        if replies.zh:
            return text if not noun else f"提醒“{text.removeprefix('提醒您：')}”"
        if text.startswith(REMINDER_EN):
            return f"remind you: {text.removeprefix(REMINDER_EN)}" if not noun else \
                f"the reminder “{text.removeprefix(REMINDER_EN)}”"
        return f"say “{text}”" if not noun else f"“{text}”"
    if kind == "scene":
        return f"运行场景 {action.get('sceneId')}" if replies.zh else f"run the scene {action.get('sceneId')}"
    device_id = str(action.get("deviceId", ""))
    command = str(action.get("command", ""))
    spec = next((p.commands[command] for p in replies.catalog.products.values() if command in p.commands), None)
    words = replies.command_words(spec) if spec is not None else command.replace("_", " ")
    params = action.get("params") or {}
    values = ", ".join(f"{k} {v}" for k, v in params.items()) if isinstance(params, dict) else ""
    if replies.zh:
        extra = f"（{values}）" if values else ""
        return f"{words} {device_id}{extra}"
    extra = f" ({values})" if values else ""
    return f"{words} {device_id}{extra}"


def _when(replies: Replies, schedule: dict[str, Any]) -> str:
    when = schedule.get("when") or {}
    repeat = when.get("repeat")
    next_run = schedule.get("nextRun")
    moment = datetime.fromisoformat(next_run) if isinstance(next_run, str) else None
    clock = f"{moment.hour:02d}:{moment.minute:02d}" if moment is not None else str(when.get("at", ""))
    if repeat == "cron":
        first = f"（下次 {clock}）" if replies.zh else f" (next at {clock})"
        return (f"按计划“{when.get('cron')}”{first}" if replies.zh
                else f"on the schedule “{when.get('cron')}”{first}")
    if repeat == "days":
        days = [str(d) for d in when.get("days", [])]
        if replies.zh:
            return "每周" + "、".join(_ZH_DAYS.get(d, d) for d in days) + f" {clock} "
        return "every " + ", ".join(_EN_DAYS.get(d, d) for d in days) + f" at {clock}"
    if repeat is not None:
        if replies.zh:
            return f"{_ZH_REPEAT.get(repeat, repeat)} {clock} "
        return f"{_EN_REPEAT.get(repeat, repeat)} at {clock}"
    if moment is None:
        return ""
    now = datetime.now(moment.tzinfo)
    ahead = (moment.date() - now.date()).days
    if replies.zh:
        day = {0: "今天", 1: "明天", 2: "后天"}.get(ahead, f"{moment.month}月{moment.day}日")
        return f"{day} {clock} "
    day = {0: "today", 1: "tomorrow"}.get(ahead, moment.strftime("on %a %d %b"))
    return f"{day} at {clock}"
