"""Requests about later, in English and Chinese: when ("in 10 minutes", "at 7:30 pm", "tomorrow
morning at 7", "every day at 23:00", "every weekday", "十分钟后", "明天早上7点", "每天晚上11点",
"工作日早上7点"), what ("wake me up", "叫醒我", "remind me to …", "提醒我…", a device command), and
"cancel my alarm" / "取消闹钟" / "what alarms do I have" / "我有哪些闹钟".

`find_later` takes the time expression out of the message; the rest is planned like any other
request, and its commands become schedules. Pure: the current local time is passed in.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from deviceagentd.agent.local.text import convert_chinese_numbers, language_of, normalise

ALARM_KINDS = ("alarm", "timer", "reminder", "any")


@dataclass(frozen=True)
class Later:
    """What the message asks for later. Exactly one of: `when` (+ alarm/reminder/timer or a command in
    `rest`), `cancel`, `listing`; `when` may be None when the message names no time ("set an alarm")."""

    when: dict[str, Any] | None
    rest: str
    alarm: bool = False
    reminder: str | None = None
    timer: bool = False
    cancel: str | None = None
    cancel_all: bool = False
    listing: bool = False


# ----------------------------------------------------------------------------- English

_EN_NUMBERS = {
    "a": 1, "an": 1, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8,
    "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "fifteen": 15, "twenty": 20, "thirty": 30,
    "forty": 40, "forty-five": 45, "fifty": 50, "sixty": 60, "ninety": 90, "a couple of": 2, "half an": 0.5,
    "half a": 0.5,
}
_EN_NUMBER = r"(\d+(?:\.\d+)?|" + "|".join(sorted((re.escape(w) for w in _EN_NUMBERS), key=len, reverse=True)) + ")"
_EN_UNIT = r"(seconds?|secs?|minutes?|mins?|hours?|hrs?)"
_EN_RELATIVE = re.compile(rf"\b(?:in|after|within)\s+{_EN_NUMBER}\s*{_EN_UNIT}\b"
                          rf"|\b{_EN_NUMBER}\s*{_EN_UNIT}\s+from now\b")
_EN_TIMER_FOR = re.compile(rf"\bfor\s+{_EN_NUMBER}\s*{_EN_UNIT}\b")
_EN_EVERY_N = re.compile(r"\bevery\s+(\d+)\s*(minutes?|mins?|hours?|hrs?)\b|\bevery\s+(minute|hour)\b")
_EN_WEEKDAY_NAMES = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_EN_REPEAT = re.compile(
    r"\b(?:every|each)\s+(day|morning|evening|night|afternoon|weekday|weekend|"
    r"(?:mon|tues|wednes|thurs|fri|satur|sun)day)s?\b"
    r"|\bon\s+(weekdays|weekends|(?:mon|tues|wednes|thurs|fri|satur|sun)days)\b"
    r"|\b(daily|nightly)\b")
_EN_DAY = re.compile(r"\b(today|tonight|tomorrow|this (?:morning|afternoon|evening))"
                     r"(?:\s+(morning|afternoon|evening|night))?\b")
# "at 7", "for 6:45", "7:30 pm", "noon"; not "at 23 degrees" or "by 2 degrees" (values, not times).
_EN_TIME = re.compile(
    r"\b(?:(?:at|for|by)\s+)?(\d{1,2})(?::(\d{2}))?\s*(a\.?m\.?|p\.?m\.?|o'?clock)(?![a-z])"
    r"|\b(?:at|for)\s+(\d{1,2})(?::(\d{2}))?(?![\d.:%°a-z])"
    r"(?!\s*(?:degrees?|°|%|percent|kelvin|k\b|watts?|w\b|c\b|celsius|fahrenheit|minutes?|mins?|hours?|seconds?))"
    r"|\b(?:at\s+)?(noon|midnight)\b")
_EN_ALARM = re.compile(r"\bwake\s+(?:me\s+)?up\b|\bwake\s+me\b|\balarm\b|\bwake-?up call\b")
_EN_REMIND = re.compile(r"\bremind\s+me\s+(?:to\s+|that\s+|about\s+)?(.+)$")
_EN_REMIND_BARE = re.compile(r"\bremind\s+me\b|\breminder\b")
_EN_TIMER = re.compile(r"\btimer\b")
_EN_CANCEL = re.compile(r"\b(?:cancel|delete|remove|clear|disable|turn off|stop|don'?t|do not)\b")
_EN_KIND = re.compile(r"\b(alarms?|wake[- ]?up(?: calls?)?|wake me|timers?|reminders?|schedules?|plans?)\b")
_EN_LIST = re.compile(r"\b(?:what|which|list|show|any|have i|do i have|tell me)\b")
_EN_ALL = re.compile(r"\b(?:all|every|each)\b")
# Words left hanging at either end once the time is taken out ("… and then", "please …").
_EN_EDGES = re.compile(r"^(?:(?:and|then|please|,)\s*)+|(?:\s*(?:and|then|please|,))+$")


def _en_number(text: str) -> float:
    return float(text) if text[0].isdigit() else float(_EN_NUMBERS[text])


def _en_seconds(number: str, unit: str) -> int:
    value = _en_number(number)
    factor = 3600 if unit.startswith("h") else 1 if unit.startswith("s") else 60
    return max(1, round(value * factor))


def _find_en(text: str, now: datetime) -> Later | None:
    kind_match = _EN_KIND.search(text)
    if kind_match is not None and _EN_CANCEL.search(text):
        return Later(None, "", cancel=_en_kind(kind_match.group(1)), cancel_all=bool(_EN_ALL.search(text)))
    if kind_match is not None and _EN_LIST.search(text) and not _EN_TIME.search(text):
        return Later(None, "", listing=True)
    alarm = bool(_EN_ALARM.search(text))
    reminder_match = _EN_REMIND.search(text)
    timer = bool(_EN_TIMER.search(text)) or (reminder_match is None and bool(_EN_REMIND_BARE.search(text)))
    spans: list[tuple[int, int]] = []
    when: dict[str, Any] | None = None
    repeat, pm_hint = None, None
    if (m := _EN_EVERY_N.search(text)) is not None:
        spans.append(m.span())
        if m.group(3):
            when = {"cron": "* * * * *" if m.group(3) == "minute" else "0 * * * *"}
        else:
            step = int(m.group(1))
            when = {"cron": f"*/{step} * * * *" if m.group(2).startswith("m") else f"0 */{step} * * *"}
    elif (m := _EN_REPEAT.search(text)) is not None:
        spans.append(m.span())
        word = (m.group(1) or m.group(2) or m.group(3)).rstrip("s") if not m.group(2) else m.group(2)
        repeat, pm_hint = _en_repeat(word)
    relative = _EN_RELATIVE.search(text) or (_EN_TIMER_FOR.search(text) if timer else None)
    if when is None and relative is not None:
        spans.append(relative.span())
        groups = [g for g in relative.groups() if g is not None]
        when = {"inSeconds": _en_seconds(groups[0], groups[1])}
    day_offset = 0
    if when is None and (m := _EN_DAY.search(text)) is not None:
        spans.append(m.span())
        day_word, part = m.group(1), m.group(2)
        day_offset = 1 if day_word == "tomorrow" else 0
        hint_word = part or day_word
        pm_hint = True if any(w in hint_word for w in ("afternoon", "evening", "night", "tonight")) else (
            False if "morning" in hint_word else pm_hint)
    if when is None and (m := _EN_TIME.search(text)) is not None:
        spans.append(m.span())
        if m.group(6):
            hour, minute = (12, 0) if m.group(6) == "noon" else (0, 0)
            suffix = None
        else:
            hour = int(m.group(1) or m.group(4))
            minute = int(m.group(2) or m.group(5) or 0)
            suffix = m.group(3)
            if suffix and suffix.startswith("p") and hour < 12:
                hour += 12
            elif suffix and suffix.startswith("a") and hour == 12:
                hour = 0
            if not (suffix and suffix[0] in "ap"):
                hour = _resolve_hour(hour, minute, pm_hint, alarm, now, day_offset, repeat is not None)
        if hour > 23 or minute > 59:
            return None
        when = _at(hour, minute, now, day_offset, repeat)
    elif when is None and repeat is not None and alarm:
        when = None  # "wake me up every weekday": no time said; asked back
    if when is None and not (alarm or reminder_match or timer):
        return None
    rest = _cut(text, spans)
    reminder = None
    if reminder_match is not None:
        reminder = _cut(text[reminder_match.start(1):], [(s - reminder_match.start(1), e - reminder_match.start(1))
                                                         for s, e in spans if s >= reminder_match.start(1)])
        # "remind me in 2 minutes to drink water": the "to" is left in front once the time is out.
        reminder = re.sub(r"^(?:to|that|about)\s+", "", reminder.strip(" .,!?")) or None
    return Later(when, _EN_EDGES.sub("", rest.strip(" ,.!?")).strip() if not (alarm or reminder) else "", alarm,
                 reminder, timer and not alarm and reminder is None)


def _en_kind(word: str) -> str:
    if word.startswith(("alarm", "wake")):
        return "alarm"
    if word.startswith("timer"):
        return "timer"
    if word.startswith("reminder"):
        return "reminder"
    return "any"


def _en_repeat(word: str) -> tuple[str, bool | None]:
    if word in ("day", "daily"):
        return "daily", None
    if word == "morning":
        return "daily", False
    if word in ("evening", "night", "nightly", "afternoon"):
        return "daily", True
    if word.startswith("weekday"):
        return "weekdays", None
    if word.startswith("weekend"):
        return "weekends", None
    name = word.rstrip("s")
    for full in _EN_WEEKDAY_NAMES:
        if full.startswith(name[:3]):
            return full[:3], None
    return "daily", None  # pragma: no cover - the pattern admits nothing else


# ----------------------------------------------------------------------------- Chinese

_ZH_UNITS = {"秒": 1, "秒钟": 1, "分": 60, "分钟": 60, "小时": 3600, "钟头": 3600, "刻钟": 900}
_ZH_AMOUNT = r"(\d+(?:\.\d+)?|一|半|两)\s*(?:个)?\s*(秒钟|秒|分钟|分|小时|钟头|刻钟)"
_ZH_RELATIVE = re.compile(rf"(?:过)?\s*{_ZH_AMOUNT}\s*(?:后|以后|之后)|过\s*{_ZH_AMOUNT}")
_ZH_TIMER = re.compile(r"(?:定时|计时|倒计时)\s*(\d+(?:\.\d+)?|一|半)\s*(?:个)?\s*(秒钟|秒|分钟|分|小时|钟头)")
_ZH_EVERY_N = re.compile(r"每隔?\s*(\d+)\s*(?:个)?\s*(分钟|小时)|每(?:个)?(小时|分钟)")
_ZH_WEEKDAY = "一二三四五六日天1234567"
_ZH_REPEAT = re.compile(rf"(每个?工作日|工作日|周一到周五|星期一到星期五|每个?周末|周末"
                        rf"|每个?(?:周|星期|礼拜)([{_ZH_WEEKDAY}]+)|每天|每日|天天|每晚|每早)")
_ZH_DAY = re.compile(r"(今天|今晚|明天|明早|明晚|后天)")
_ZH_PERIOD = re.compile(r"(早上|早晨|清晨|上午|中午|下午|傍晚|晚上|夜里|凌晨|半夜)")
_ZH_TIME = re.compile(r"(\d{1,2})\s*(?:点|时|:|：)\s*(?:(\d{1,2})\s*分?|(半)|(一刻)|(三刻))?")
_ZH_ALARM = re.compile(r"叫醒我|叫我起床|喊我起床|叫醒|闹钟|闹铃|起床")
_ZH_REMIND = re.compile(r"提醒我\s*(.+)$")
_ZH_TIMER_WORD = re.compile(r"定时|计时")
_ZH_CANCEL = re.compile(r"取消|删除|删掉|关掉闹钟|不用|不要|别")
_ZH_KIND = re.compile(r"(闹钟|闹铃|叫醒|定时|计时|提醒|计划|日程)")
_ZH_LIST = re.compile(r"哪些|什么|查看|看看|列出|几个|有没有")
_ZH_ALL = re.compile(r"所有|全部|都")
_ZH_FILLER = re.compile(r"^(?:请|帮我|给我|麻烦)|(?:的时候|吧|哦|啊|了)$")
_ZH_PM = ("下午", "傍晚", "晚上", "夜里", "今晚", "明晚", "每晚")
_ZH_AM = ("早上", "早晨", "清晨", "上午", "凌晨", "明早", "每早")


def _zh_number(text: str) -> float:
    return {"一": 1.0, "半": 0.5, "两": 2.0}.get(text) or float(text)


def _find_zh(raw: str, now: datetime) -> Later | None:
    # Weekday names first, before numbers are converted: 每周一三五 is Monday, Wednesday, Friday,
    # not the number 135.
    repeat = None
    if (found := _ZH_REPEAT.search(raw)) is not None:
        repeat = _zh_repeat(found.group(1), found.group(2))
        raw = _cut(raw, [found.span()]).replace(" ", "")
    text = convert_chinese_numbers(raw)
    kind_match = _ZH_KIND.search(text)
    if kind_match is not None and _ZH_CANCEL.search(text):
        return Later(None, "", cancel=_zh_kind(kind_match.group(1)), cancel_all=bool(_ZH_ALL.search(text)))
    if kind_match is not None and _ZH_LIST.search(text) and not _ZH_TIME.search(text):
        return Later(None, "", listing=True)
    alarm = bool(_ZH_ALARM.search(text))
    reminder_match = _ZH_REMIND.search(text)
    timer = bool(_ZH_TIMER_WORD.search(text))
    spans: list[tuple[int, int]] = []
    when: dict[str, Any] | None = None
    if (m := _ZH_EVERY_N.search(text)) is not None:
        spans.append(m.span())
        repeat = None
        if m.group(3):
            when = {"cron": "0 * * * *" if m.group(3) == "小时" else "* * * * *"}
        else:
            step = int(m.group(1))
            when = {"cron": f"*/{step} * * * *" if m.group(2) == "分钟" else f"0 */{step} * * *"}
    relative = _ZH_RELATIVE.search(text) or _ZH_TIMER.search(text)
    if when is None and relative is not None:
        spans.append(relative.span())
        groups = [g for g in relative.groups() if g is not None]
        when = {"inSeconds": max(1, round(_zh_number(groups[0]) * _ZH_UNITS[groups[1]]))}
    day_offset = 0
    pm_hint: bool | None = None
    if when is None and (m := _ZH_DAY.search(text)) is not None:
        spans.append(m.span())
        day_offset = {"明天": 1, "明早": 1, "明晚": 1, "后天": 2}.get(m.group(1), 0)
        pm_hint = True if m.group(1) in _ZH_PM else (False if m.group(1) in _ZH_AM else None)
    if repeat is not None and found is not None and found.group(1) in ("每晚",):
        pm_hint = True
    if when is None and (m := _ZH_PERIOD.search(text)) is not None:
        spans.append(m.span())
        pm_hint = True if m.group(1) in _ZH_PM else (None if m.group(1) == "中午" else False)
        noon = m.group(1) == "中午"
    else:
        noon = False
    if when is None and (m := _ZH_TIME.search(text)) is not None:
        spans.append(m.span())
        hour = int(m.group(1))
        minute = int(m.group(2)) if m.group(2) else 30 if m.group(3) else 15 if m.group(4) else 45 if m.group(5) else 0
        if pm_hint and hour < 12:
            hour += 12
        elif noon and hour < 6:
            hour += 12  # 中午1点 is 13:00
        elif pm_hint is False and hour == 12:
            hour = 0
        elif pm_hint is None and not noon:
            hour = _resolve_hour(hour, minute, None, alarm, now, day_offset, repeat is not None)
        if hour > 23 or minute > 59:
            return None
        when = _at(hour, minute, now, day_offset, repeat)
    if when is None and not (alarm or reminder_match or timer):
        return None
    rest = _cut(text, spans)
    reminder = None
    if reminder_match is not None:
        start = reminder_match.start(1)
        own = [(s - start, e - start) for s, e in spans if s >= start]
        reminder = _cut(text[start:], own).strip(" ，。！？") or None
    if alarm or reminder:
        rest = ""
    rest = re.sub(r"^(?:后|以后|之后|的时候)|(?:后|以后|之后)$", "", rest.strip(" ，。！？,"))
    return Later(when, _ZH_FILLER.sub("", rest).strip(" ，。！？,"), alarm, reminder,
                 timer and not alarm and reminder is None)


def _zh_kind(word: str) -> str:
    if word in ("闹钟", "闹铃", "叫醒"):
        return "alarm"
    if word in ("定时", "计时"):
        return "timer"
    if word == "提醒":
        return "reminder"
    return "any"


def _zh_repeat(word: str, days: str | None) -> str:
    if "工作日" in word or "到" in word:
        return "weekdays"
    if "周末" in word:
        return "weekends"
    if days:
        names = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
        index = {c: i for i, c in enumerate("一二三四五六日")} | {"天": 6} | {str(i + 1): i for i in range(7)}
        return ",".join(dict.fromkeys(names[index[c]] for c in days))
    return "daily"


# ----------------------------------------------------------------------------- shared


def find_later(message: str, now: datetime) -> Later | None:
    """The later-request in `message` (None: not about later); `now` is the site's local time."""
    text = normalise(message)
    if language_of(message) == "zh":
        return _find_zh(text, now)
    return _find_en(text, now)


def _resolve_hour(hour: int, minute: int, pm_hint: bool | None, alarm: bool, now: datetime, day_offset: int,
                  recurring: bool) -> int:
    """"at 7" without am/pm: the morning for an alarm, else the next time the clock shows it."""
    if hour >= 12 or hour == 0:
        return hour
    if pm_hint is not None:
        return hour + 12 if pm_hint else hour
    if alarm or recurring or day_offset:
        return hour
    morning = now.replace(hour=hour, minute=minute, second=0, microsecond=0)
    return hour if morning > now else hour + 12 if morning + timedelta(hours=12) > now else hour


def _at(hour: int, minute: int, now: datetime, day_offset: int, repeat: str | None) -> dict[str, Any]:
    clock = f"{hour:02d}:{minute:02d}"
    if repeat is not None:
        return {"at": clock, "repeat": repeat}
    if day_offset:
        day = (now + timedelta(days=day_offset)).date()
        return {"at": f"{day.isoformat()}T{clock}"}
    return {"at": clock}


def _cut(text: str, spans: list[tuple[int, int]]) -> str:
    out = []
    position = 0
    for start, end in sorted(spans):
        if start >= position:
            out.append(text[position:start])
            position = end
    out.append(text[position:])
    return re.sub(r"\s+", " ", " ".join(out)).strip()
