"""The offline agent's sentences, in the language of the question (English or Chinese).

One sentence per step. Labels come from the specs: a field's name with spaces ("target
temperature"), "current …" when its description starts that way; Chinese labels translate
those words with the generic lexicon, and fall back to the English label.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any

from deviceagentd.agent.local import lexicon
from deviceagentd.agent.local.steps import Command, EventsQuery, Listing, Reading, ToolStep
from deviceagentd.agent.local.text import Language
from deviceagentd.agent.types import ToolFailure, ToolResult
from deviceagentd.core.catalog import Catalog
from deviceagentd.core.registry import Device
from deviceagentd.core.spec import CommandSpec, FieldSpec, ProductSpec

MAX_LISTED_EVENTS = 5
MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
ZH_LEVELS = {"info": "信息", "alert": "提醒", "warning": "警告", "error": "错误"}


@dataclass(frozen=True)
class Replies:
    catalog: Catalog
    language: Language
    # The session's device: sentences about it need not name it.
    session_device_id: str | None = None
    # The site's time zone (site.timezone) and the time now, for the times of events.
    zone: tzinfo = UTC
    now_ms: int = 0

    @property
    def zh(self) -> bool:
        return self.language == "zh"

    def join(self, sentences: Sequence[str]) -> str:
        return ("" if self.zh else " ").join(s for s in sentences if s)

    # ------------------------------------------------------------------ without a tool

    def vision(self) -> str:
        if self.zh:
            return ("我看不了图片：回答图片相关的问题需要视觉模型，离线助手没有这个能力。"
                    "请配置 openai 提供方（agent.provider = \"openai\"）并使用支持视觉的模型。")
        return ("I can't look at images: questions about pictures need a vision model, which the offline "
                "assistant does not have. Configure the openai provider (agent.provider = \"openai\") with a "
                "vision-capable model.")

    def unknown(self, text: str, word: str | None, example_product: ProductSpec | None) -> str:
        if self.zh:
            opening = f"我不认识“{word}”。" if word else f"我没听懂“{text.strip()}”。"
        else:
            opening = f"I don't know “{word}”." if word else f"I don't understand “{text.strip()}”."
        return opening + " " * (not self.zh) + self.capabilities(example_product)

    def capabilities(self, product: ProductSpec | None) -> str:
        query, command = example_fields(product)
        if self.zh:
            state = f"查看设备状态（例如“查看{self.label(query)}”）" if query else "查看设备状态"
            if command is not None:
                param, value = command
                send = f"发送命令（例如“把{self.label(param)}设为{value}”）"
            else:
                send = "发送命令"
            return f"我可以：{state}、{send}、列出在线设备、查看最近的告警。"
        state = f"read device state (e.g. “what is the {self.label(query)}”)" if query else "read device state"
        if command is not None:
            param, value = command
            send = f"send commands (e.g. “set the {self.label(param)} to {value}”)"
        else:
            send = "send commands"
        return f"I can: {state}, {send}, list online devices, and show recent alerts."

    def ambiguous(self, devices: Sequence[Device]) -> str:
        names = [self._listed(d) for d in devices]
        if self.zh:
            return f"您指的是哪一个：{'、'.join(names)}？"
        return f"Which one do you mean: {_or_list(names)}?"

    def no_device(self, text: str) -> str:
        if self.zh:
            return f"没有找到与“{text}”相符的设备。"
        return f"I found no device matching “{text}”."

    def incapable(self, device: Device) -> str:
        spec = self.catalog.get(device.product_id)
        actions = [self.command_words(c) for c in spec.commands.values()] if spec is not None else []
        who = self.device_phrase(device)
        if self.zh:
            can = f"它可以：{'、'.join(actions)}。" if actions else "它不接受命令。"
            return f"{who}做不到这一点，{can}"
        can = f"it can: {', '.join(actions)}." if actions else "it accepts no commands."
        return f"{_capital(who)} cannot do that; {can}"

    def does_not_report(self, device: Device) -> str:
        spec = self.catalog.get(device.product_id)
        fields = [self.label(f) for f in spec.telemetry.values()] if spec is not None else []
        who = self.device_phrase(device)
        if self.zh:
            return f"{who}没有这项数据，它上报：{'、'.join(fields)}。"
        return f"{_capital(who)} does not report that; it reports: {', '.join(fields)}."

    def read_only(self, device: Device, field: FieldSpec) -> str:
        if self.zh:
            return f"{device.device_id} 的{self.label(field)}只能查看，不能设置。"
        return f"The {self.label(field)} of {device.device_id} can only be read, not set."

    def invalid_value(self, device: Device, param: FieldSpec, value: Any, reason: str) -> str:
        label = self.label(param)
        unit = self.unit(param)
        low, high = param.min, param.max
        whole = reason == "must be an integer"
        if low is not None and high is not None:
            if self.zh:
                kind = "之间的整数" if whole else ""
                return (f"{device.device_id} 的{label}必须是{_num(low)}到{_num(high)}{unit.strip()}{kind}"
                        f"（您说的是{_num(value)}），所以没有修改。")
            allowed = "must be a whole number" if whole else "can be set"
            return (f"The {label} of {device.device_id} {allowed} from {_num(low)} to {_num(high)}{unit} "
                    f"(not {_num(value)}), so I did not change it.")
        if self.zh:
            return f"{device.device_id} 的{label}不能设为{_num(value)}：{self._reason_zh(reason, param)}。"
        return f"The {label} of {device.device_id} cannot be {_num(value)}: it {reason}."

    def no_current(self, device: Device, param: FieldSpec) -> str:
        if self.zh:
            return f"不知道 {device.device_id} 当前的{self.label(param)}，请直接说一个数值。"
        return f"I don't know the current {self.label(param)} of {device.device_id}; tell me a value."

    # ------------------------------------------------------------------ tool results

    def result(self, step: ToolStep, result: ToolResult) -> str:
        if not result.ok:
            if self.zh:
                return self.failure_zh(result.failure)
            words = (result.error or "").rstrip(".")
            return f"Sorry, {words}."
        data = result.result if isinstance(result.result, dict) else {}
        if isinstance(step, Reading):
            return self.reading(step, data)
        if isinstance(step, Command):
            return self.done(step)
        if isinstance(step, Listing):
            return self.listing(step, data)
        return self.events(step, data)

    def reading(self, step: Reading, data: dict[str, Any]) -> str:
        spec = self.catalog.get(str(data.get("productId")))
        state = data.get("state") if isinstance(data.get("state"), dict) else {}
        assert isinstance(state, dict)
        device_id = str(data.get("deviceId", step.device_id))
        online = bool(data.get("online"))
        sentences: list[str] = []
        if step.fields and spec is not None:
            for name in step.fields:
                field = spec.telemetry.get(name)
                if field is not None:
                    sentences.append(self._field_sentence(device_id, spec, field, state, step.expect))
        else:
            sentences.append(self._whole_state(device_id, spec, state, online))
            online = True  # the whole-state sentence already says offline
        if not online:
            sentences.append(f"（{device_id} 已离线，这是它最后一次上报的数据。）" if self.zh
                             else f"({device_id} is offline; this is its last report.)")
        return self.join(sentences)

    def _field_sentence(self, device_id: str, spec: ProductSpec, field: FieldSpec, state: dict[str, Any],
                        expect: bool | None) -> str:
        label = self.label(field)
        about_session = device_id == self.session_device_id
        if field.name not in state:
            if self.zh:
                return f"{device_id} 还没有上报{label}。"
            return f"{device_id} has not reported its {label} yet."
        value = state[field.name]
        text = self.value(field, value)
        if field.type == "bool" and expect is not None and isinstance(value, bool):
            if self.zh:
                answer = "是的" if value == expect else "没有"
                return f"{answer}，{self.product_name(spec)} {device_id} 现在是{text}的。"
            answer = "Yes" if value == expect else "No"
            return f"{answer}, the {spec.name} {device_id} is {text}."
        if self.zh:
            subject = label if about_session else f"{device_id} 的{label}"
            return f"{subject}是{text}。"
        subject = f"The {label}" if about_session else f"The {label} of {device_id}"
        return f"{subject} is {text}."

    def _whole_state(self, device_id: str, spec: ProductSpec | None, state: dict[str, Any], online: bool) -> str:
        parts: list[str] = []
        fields = list(spec.telemetry.values()) if spec is not None else []
        for field in fields:
            if field.name in state:
                parts.append(f"{self.label(field)} {self.value(field, state[field.name])}")
        known = {f.name for f in fields}
        parts.extend(f"{name} {_plain_value(value)}" for name, value in state.items() if name not in known)
        product = self.product_name(spec) if spec is not None else ""
        if self.zh:
            status = "在线" if online else "离线"
            body = "，".join(parts) if parts else "还没有上报数据"
            return f"{device_id}（{product}，{status}）：{body}。"
        status = "online" if online else "offline"
        body = ", ".join(parts) if parts else "no state reported yet"
        return f"{device_id} ({product}, {status}): {body}."

    def done(self, step: Command) -> str:
        spec = self._command_spec(step)
        if spec is not None and step.params:
            sentences = []
            for name, value in step.params.items():
                param = spec.params.get(name)
                label = self.label(param) if param is not None else name
                text = self.value(param, value) if param is not None else _plain_value(value)
                if self.zh:
                    sentences.append(f"好的，{step.device_id} 的{label}已设为{text}。")
                else:
                    sentences.append(f"Done: the {label} of {step.device_id} is now {text}.")
            return self.join(sentences)
        words = step.command.split("_")
        if self.zh:
            verb = _translate(" ".join(words)) or step.command
            return f"好的，已{verb} {step.device_id}。"
        past = " ".join([_past(words[0]), *words[1:]])
        return f"Done: {past} {step.device_id}."

    def listing(self, step: Listing, data: dict[str, Any]) -> str:
        devices = [d for d in data.get("devices", []) if isinstance(d, dict)]
        entries = [self._listed_json(d, with_product=step.product_id is None) for d in devices]
        spec = self.catalog.get(step.product_id) if step.product_id else None
        if self.zh:
            if step.status == "online":
                title, none = "在线设备", "现在没有在线的设备。"
            elif step.status == "offline":
                title, none = "离线设备", "现在没有离线的设备。"
            elif spec is not None:
                title, none = self.product_name(spec), f"还没有{self.product_name(spec)}设备。"
            else:
                title, none = "设备", "还没有任何设备。"
            return f"{title}（{len(entries)}台）：{'、'.join(entries)}。" if entries else none
        if step.status == "online":
            title, none = "Online devices", "No devices are online."
        elif step.status == "offline":
            title, none = "Offline devices", "No devices are offline."
        elif spec is not None:
            title, none = f"{spec.name} devices", f"There are no {spec.name} devices yet."
        else:
            title, none = "Devices", "There are no devices yet."
        return f"{title} ({len(entries)}): {', '.join(entries)}." if entries else none

    def events(self, step: EventsQuery, data: dict[str, Any]) -> str:
        found = [e for e in data.get("events", []) if isinstance(e, dict)]
        hours = step.since_hours if step.since_hours is not None else 24
        levels = step.levels
        if self.zh:
            noun = "事件" if levels is None else "错误" if levels == ("error",) else "警告" if levels == (
                "warning",) else "告警"
            period = f"过去{_zh_period(hours)}内" + (f" {step.device_id} " if step.device_id else "")
            if not found:
                return f"{period}没有{noun}。"
            listed = "；".join(self.event_text(e) for e in found[:MAX_LISTED_EVENTS])
            more = f"；等共{len(found)}条" if len(found) > MAX_LISTED_EVENTS else ""
            return f"{period}有{len(found)}条{noun}：{listed}{more}。"
        noun = "events" if levels is None else "errors" if levels == ("error",) else "warnings" if levels == (
            "warning",) else "alerts"
        period = f"in the last {_en_period(hours)}" + (f" for {step.device_id}" if step.device_id else "")
        if not found:
            return f"No {noun} {period}."
        if len(found) == 1:
            noun = noun[:-1]
        listed = "; ".join(self.event_text(e) for e in found[:MAX_LISTED_EVENTS])
        more = f"; and {len(found) - MAX_LISTED_EVENTS} more" if len(found) > MAX_LISTED_EVENTS else ""
        return f"{len(found)} {noun} {period}: {listed}{more}."

    def failure_zh(self, failure: ToolFailure | None) -> str:
        """A failed tool call in Chinese, from its facts (the tools' own words are English)."""
        if failure is None:
            return "抱歉，没有成功，请稍后再试。"
        who = self._who_zh(failure)
        action = self._command_zh(failure.command) if failure.command else "执行这个命令"
        if failure.kind == "device_offline":
            return f"抱歉，{who}离线了，现在无法{action}。"
        if failure.kind == "timeout":
            return f"抱歉，{who}在{failure.code}秒内没有回应。"
        if failure.kind == "broker_down":
            return "抱歉，网关和设备之间的消息服务器断开了，请稍后再试。"
        if failure.kind == "invalid_params":
            return f"抱歉，{who}不接受这些参数，所以没有执行。"
        if failure.kind == "refused":
            said = f"，设备说：“{failure.detail}”" if failure.detail else ""
            return f"抱歉，{who}没有执行{action}（错误码{failure.code}{said}）。"
        if failure.kind == "no_device":
            return f"抱歉，没有设备“{failure.device_id}”。"
        return "抱歉，没有成功，请稍后再试。"

    def _reason_zh(self, reason: str, field: FieldSpec) -> str:
        """check_value's reasons, in Chinese."""
        fixed = {"must be an integer": "必须是整数", "must be a number": "必须是数字",
                 "must be true or false": "必须是开或关", "must be a string": "必须是文字",
                 "must be an object": "格式不对", "must be an array": "必须是列表"}
        if reason in fixed:
            return fixed[reason]
        if reason.startswith("must be one of") and field.enum is not None:
            return f"只能是{'、'.join(self.value(field, v) for v in field.enum)}之一"
        if reason.startswith("must be at least") and field.min is not None:
            return f"不能小于{_num(field.min)}{self.unit(field)}"
        if reason.startswith("must be at most") and field.max is not None:
            return f"不能大于{_num(field.max)}{self.unit(field)}"
        return "不符合设备的规格"

    # ------------------------------------------------------------------ events

    def event_text(self, event: dict[str, Any]) -> str:
        """One event with its values, at the site's local time: "ac-1 filter_dirty (warning,
        today 18:02): hours used 500"; online/offline with why."""
        device = str(event.get("deviceId"))
        name = str(event.get("event"))
        level = str(event.get("level"))
        data = event.get("data") if isinstance(event.get("data"), dict) else {}
        assert isinstance(data, dict)
        when = self.when(str(event.get("ts") or ""))
        if event.get("source") == "gateway" and name in ("online", "offline"):
            reason = str(data.get("reason", ""))
            if self.zh:
                went = "上线" if name == "online" else "离线"
                return f"{device} {went}（{when}" + (f"，{_reason_of_lifecycle_zh(reason)}" if reason else "") + "）"
            return f"{device} went {name} ({when}" + (f", {reason}" if reason else "") + ")"
        spec = self.catalog.get(str(event.get("productId")))
        event_spec = spec.events.get(name) if spec is not None else None
        fields = event_spec.output if event_spec is not None else {}
        values = []
        for key, raw in data.items():
            field = fields.get(key)
            label = key.replace("_", " ")
            shown = self.value(field, raw) if field is not None else _plain_value(raw)
            values.append(f"{(_translate(label) or key) if self.zh else label} {shown}")
        if self.zh:
            title = _translate(name.replace("_", " ")) or name
            head = f"{device} {title}（{ZH_LEVELS.get(level, level)}，{when}）"
            return head + (f"：{'，'.join(values)}" if values else "")
        head = f"{device} {name} ({level}, {when})"
        return head + (f": {', '.join(values)}" if values else "")

    def when(self, iso: str) -> str:
        """An ISO time as the site's clock shows it: today/yesterday HH:MM, else the date."""
        try:
            moment = datetime.fromisoformat(iso).astimezone(self.zone)
        except ValueError:
            return iso
        clock = moment.strftime("%H:%M")
        if self.now_ms:
            today = datetime.fromtimestamp(self.now_ms / 1000, self.zone).date()
            if moment.date() == today:
                return f"今天{clock}" if self.zh else f"today {clock}"
            if moment.date() == today - timedelta(days=1):
                return f"昨天{clock}" if self.zh else f"yesterday {clock}"
        if self.zh:
            return f"{moment.year}年{moment.month}月{moment.day}日{clock}"
        return f"{MONTHS[moment.month - 1]} {moment.day} {moment.year} {clock}"

    def _who_zh(self, failure: ToolFailure) -> str:
        """"温控器 thermostat-002 ", or "设备" without a device."""
        if not failure.device_id:
            return "设备"
        spec = self.catalog.get(failure.product_id) if failure.product_id else None
        name = self.product_name(spec) if spec is not None else ""
        return f"{name} {failure.device_id} ".lstrip()

    def _command_zh(self, command: str) -> str:
        english = command.replace("_", " ")
        return _translate(english) or command

    # ------------------------------------------------------------------ words

    def label(self, field: FieldSpec) -> str:
        english = field_label(field)
        return (_translate(english) or english) if self.zh else english

    def product_name(self, spec: ProductSpec) -> str:
        return (_translate(spec.name.lower()) or spec.name) if self.zh else spec.name

    def device_phrase(self, device: Device) -> str:
        spec = self.catalog.get(device.product_id)
        name = self.product_name(spec) if spec is not None else device.product_id
        return f"{name} {device.device_id} " if self.zh else f"the {name} {device.device_id}"

    def command_words(self, command: CommandSpec) -> str:
        english = command.name.replace("_", " ")
        return (_translate(english) or english) if self.zh else english

    def unit(self, field: FieldSpec) -> str:
        if not field.unit:
            return ""
        return field.unit if self.zh or field.unit == "%" else " " + field.unit

    def value(self, field: FieldSpec | None, value: Any) -> str:
        if isinstance(value, bool):
            if self.zh:
                return "开" if value else "关"
            return "on" if value else "off"
        if isinstance(value, int | float):
            return _num(value) + (self.unit(field) if field is not None else "")
        if isinstance(value, str):
            return (_translate(value.lower()) or value) if self.zh else value
        colour = _colour_name(value)
        if colour is not None:
            return (_translate(colour) or colour) if self.zh else colour
        return _plain_value(value)

    def _listed(self, device: Device) -> str:
        name = device.metadata.get("name") if isinstance(device.metadata.get("name"), str) else None
        if not name:
            return device.device_id
        return f"{device.device_id}（{name}）" if self.zh else f"{device.device_id} ({name})"

    def _listed_json(self, device: dict[str, Any], with_product: bool) -> str:
        spec = self.catalog.get(str(device.get("productId")))
        details: list[str] = []
        if with_product:
            details.append(self.product_name(spec) if spec is not None else str(device.get("productId")))
        online = bool(device.get("online"))
        details.append(("在线" if online else "离线") if self.zh else ("online" if online else "offline"))
        state = device.get("state") if isinstance(device.get("state"), dict) else {}
        assert isinstance(state, dict)
        if spec is not None:
            switch = next((f for f in spec.telemetry.values() if f.type == "bool" and f.name in state), None)
            if switch is not None:
                details.append(self.value(switch, state[switch.name]))
        if self.zh:
            return f"{device.get('deviceId')}（{'，'.join(details)}）"
        return f"{device.get('deviceId')} ({', '.join(details)})"

    def _command_spec(self, step: Command) -> CommandSpec | None:
        for spec in self.catalog.products.values():
            command = spec.commands.get(step.command)
            if command is not None and set(step.params) <= set(command.params):
                return command
        return None


def field_label(field: FieldSpec) -> str:
    """"target temperature"; "current temperature" when the description says "The current …"."""
    label = field.name.replace("_", " ")
    if field.description.lower().startswith(f"the current {label}") and not label.startswith("current"):
        return "current " + label
    return label


def example_fields(product: ProductSpec | None) -> tuple[FieldSpec | None, tuple[FieldSpec, str] | None]:
    if product is None:
        return None, None
    numeric = [f for f in product.telemetry.values() if f.type in ("int", "float")]
    query = next((f for f in numeric if field_label(f).startswith("current")), numeric[0] if numeric else None)
    for command in product.commands.values():
        for param in command.params.values():
            if param.type in ("int", "float") and param.min is not None and param.max is not None:
                same = product.telemetry.get(param.name)
                default = same.default if same is not None else None
                if isinstance(default, int | float) and param.min <= default <= param.max:
                    return query, (param, _num(default))
                return query, (param, _num(round((param.min + param.max) / 2)))
    return query, None


def _translate(english: str) -> str | None:
    """English words → Chinese with the generic lexicon, longest phrase first; None if a word is missing."""
    words = english.lower().split()
    out: list[str] = []
    index = 0
    while index < len(words):
        for size in range(len(words) - index, 0, -1):
            phrase = " ".join(words[index:index + size])
            if phrase in lexicon.EN_TO_ZH:
                out.append(lexicon.EN_TO_ZH[phrase])
                index += size
                break
        else:
            return None
    return "".join(out)


def _colour_name(value: Any) -> str | None:
    """{"h": 240, "s": 100, "v": 100} → "blue", for the colours people name; else None."""
    if not isinstance(value, dict) or set(value) != {"h", "s", "v"} or value["v"] != 100:
        return None
    for name, hue in lexicon.COLOURS.items():
        if (hue is None and value["s"] == 0) or (hue is not None and value["s"] == 100 and value["h"] == hue):
            return name
    return None


def _reason_of_lifecycle_zh(reason: str) -> str:
    """The registry's reasons for online/offline, in Chinese."""
    known = {"message received": "收到了它的消息", "device reported offline": "设备报告离线"}
    if reason in known:
        return known[reason]
    silent = re.fullmatch(r"no message for (\S+) s", reason)
    return f"{silent.group(1)}秒没有消息" if silent else reason


def _en_period(hours: float) -> str:
    if hours >= 48 and hours % 24 == 0:
        return f"{_num(hours / 24)} days"
    if hours == 1:
        return "hour"
    return f"{_num(hours)} hours"


def _zh_period(hours: float) -> str:
    if hours >= 48 and hours % 24 == 0:
        return f"{_num(hours / 24)}天"
    return f"{_num(hours)}小时"


def _past(verb: str) -> str:
    if verb in lexicon.IRREGULAR_PAST:
        return lexicon.IRREGULAR_PAST[verb]
    return verb + "d" if verb.endswith("e") else verb + "ed"


def _or_list(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " or " + items[-1]


def _capital(text: str) -> str:
    return text[:1].upper() + text[1:]


def _num(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _plain_value(value: Any) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k} {_plain_value(v)}" for k, v in value.items())
    if isinstance(value, list):
        return ", ".join(_plain_value(v) for v in value)
    return _num(value)
