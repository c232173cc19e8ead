"""Greetings and "what can you do": a short tour of what this site can do, in the language asked.

"hello", "hi, what can you do?", "你好", "你能做什么" get the site's devices (how many, how many
online, of which products) and a few requests to try, made from the products present, each
one the engine itself understands.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence

from deviceagentd.agent.local.replies import Replies, example_fields, field_label
from deviceagentd.core.registry import Device
from deviceagentd.core.spec import ProductSpec

_EN_GREETING = r"(hi|hello|hey|hiya|howdy|greetings|good (morning|afternoon|evening|day))( there)?"
_EN_HELP = (r"(what (can|could) (you|i) (do|ask|say)( for me| here| you)?|what do you do|what are you|who are you"
            r"|what are you able to do|help( me)?|how (do|can) i use (you|this)|what should i (say|ask))")
_ZH_GREETING = r"(你好|您好|嗨|哈喽|哈啰|喂|早上好|上午好|中午好|下午好|晚上好|早)"
_ZH_HELP = (r"(你(能|可以|会)(做|干)?(什么|啥)(事)?|你能帮我(做)?什么|你是谁|怎么用|如何使用|帮助|帮帮我"
            r"|我(能|可以)(问|说)(些)?什么)")
_PART = re.compile(rf"^(please |{_EN_GREETING} )?({_EN_GREETING}|{_EN_HELP})( please)?$"
                   rf"|^{_ZH_GREETING}?({_ZH_GREETING}|{_ZH_HELP})[啊呀呢吗嘛哦]?$")
_SPLIT = re.compile(r"[\s]*[,，.。!！?？;；~～、]+[\s]*")


def wants_tour(message: str) -> bool:
    """The whole message is a greeting and/or a question about what the assistant can do."""
    text = unicodedata.normalize("NFKC", message).lower().strip()
    parts = [p.strip() for p in _SPLIT.split(text) if p.strip()]
    return bool(parts) and all(_PART.match(re.sub(r"\s+", " ", part)) for part in parts)


def tour(replies: Replies, devices: Sequence[Device]) -> str:
    catalog = replies.catalog
    present: list[ProductSpec] = []
    for device in devices:
        spec = catalog.get(device.product_id)
        if spec is not None and spec not in present:
            present.append(spec)
    examples = _examples(replies, present)
    online = sum(1 for d in devices if d.online)
    names = [replies.product_name(spec) for spec in present]
    if replies.zh:
        if devices:
            site = f"这里有{len(devices)}台设备（{online}台在线）：{'、'.join(names)}。"
        else:
            site = "这里还没有设备连接上来；设备一上线，我就能查看和控制它们。"
        tries = "、".join(f"“{e}”" for e in examples)
        return f"您好！我是这里的设备助手，离线也能用。{site}您可以这样问我：{tries}。"
    if devices:
        listed = ", ".join(n.lower() for n in names)
        site = f"This site has {len(devices)} device{'s' * (len(devices) != 1)} ({online} online): {listed}."
    else:
        site = "No device has connected yet; once they do, I can read and control them."
    tries = ", ".join(f"“{e}”" for e in examples)
    return f"Hello! I'm this site's assistant, and I work offline. {site} Try: {tries}."


def _examples(replies: Replies, products: Sequence[ProductSpec]) -> list[str]:
    """Up to five requests to try: a reading, a setting, a switch, the device list, the alerts."""
    out: list[str] = []
    reading = next((q for q, _ in map(example_fields, products) if q is not None and
                    field_label(q).startswith("current")), None)
    if reading is not None:
        label = replies.label(reading)
        out.append(f"{label}是多少" if replies.zh else f"what is the {label}")
    setting = next((c for _, c in map(example_fields, products) if c is not None), None)
    if setting is not None:
        param, value = setting
        label = replies.label(param)
        out.append(f"把{label}设为{value}" if replies.zh else f"set the {label} to {value}")
    switch = next((spec for spec in products if "turn_off" in spec.commands), None)
    if switch is not None:
        name = replies.product_name(switch)
        out.append(f"关闭{name}" if replies.zh else f"turn off the {name.lower()}")
    out.append("哪些设备在线" if replies.zh else "which devices are online")
    out.append("今天有告警吗" if replies.zh else "any alerts today")
    return out
