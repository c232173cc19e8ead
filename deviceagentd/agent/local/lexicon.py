"""The generic words of the offline agent: English synonyms, a small Chinese↔English lexicon,
units, colours and the function words of both languages.

Nothing here names a product, a command or a field of a product: those words come from the
DeviceSpecs (vocabulary.py). This file only knows how people say things — "AC" means air
conditioner, 温度 means temperature, 调到 means "set to" — so a new product whose spec uses
ordinary words is understood without touching the code.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

# Canonical unit tokens. Spec units are normalised to these too (°C → "°c", K → "k").
UNITS = frozenset({"°c", "%", "k", "w", "h", "day", "week"})

# English surface word → canonical words (space separated). Applied before stemming.
EN_WORDS: Mapping[str, str] = MappingProxyType({
    # categories of devices
    "lamp": "light", "lamps": "light", "bulb": "light", "bulbs": "light", "lighting": "light",
    "ac": "air conditioner", "aircon": "air conditioner", "conditioning": "conditioner",
    "con": "conditioner", "plug": "switch", "plugs": "switch", "socket": "switch", "sockets": "switch",
    "outlet": "switch",
    "blind": "curtain", "blinds": "curtain", "drape": "curtain", "drapes": "curtain", "shade": "curtain",
    "shades": "curtain",
    # fields people name differently
    "temp": "temperature", "temps": "temperature", "colour": "color", "colours": "color",
    "humid": "humidity", "moisture": "humidity", "bright": "brightness",
    "moving": "motion", "movement": "motion",
    "using": "usage", "use": "usage", "uses": "usage", "used": "usage", "consumption": "usage",
    "consuming": "usage", "drawing": "usage",
    "state": "status", "condition": "status",
    # relative changes
    "brighter": "brightness raise", "brighten": "brightness raise",
    "dim": "brightness lower", "dimmer": "brightness lower", "darker": "brightness lower",
    "darken": "brightness lower",
    "warmer": "temperature raise", "hotter": "temperature raise",
    "cooler": "temperature lower", "colder": "temperature lower",
    "increase": "raise", "up": "raise", "higher": "raise", "boost": "raise", "more": "raise",
    "decrease": "lower", "down": "lower", "reduce": "lower", "less": "lower",
    "maximum": "maximum", "max": "maximum", "full": "maximum", "highest": "maximum",
    "minimum": "minimum", "min": "minimum", "lowest": "minimum",
    # on, off and friends
    "shut": "off close", "cut": "off", "activate": "on", "enable": "on", "deactivate": "off", "disable": "off",
    # values
    "halfway": "50 %", "half": "50 %",
    # units
    "percent": "%", "pct": "%", "degrees": "°c", "degree": "°c", "celsius": "°c", "°": "°c", "c": "°c",
    "kelvin": "k", "k": "k", "w": "w", "h": "h", "watts": "w", "watt": "w", "hours": "h", "hour": "h",
    "hrs": "h", "hr": "h",
    "days": "day", "weeks": "week",
    # events
    "alarm": "alert", "alarms": "alert", "problem": "alert", "problems": "alert", "issue": "alert",
    "issues": "alert", "failure": "fault", "failures": "fault", "happened": "event",
    # everything
    "everything": "all", "every": "all", "each": "all", "both": "all",
    # vision
    "pic": "picture", "pics": "picture", "photograph": "photo", "snapshot": "photo",
})

# Chinese term → canonical English words ("" drops a function word). Matched longest first.
ZH_WORDS: Mapping[str, str] = MappingProxyType({
    # categories of devices, rooms
    "灯": "light", "灯光": "light", "电灯": "light", "台灯": "light", "吊灯": "light", "照明": "light",
    "温控器": "thermostat", "恒温器": "thermostat", "温控": "thermostat",
    "窗帘": "curtain", "窗簾": "curtain", "百叶窗": "curtain",
    "空调": "air conditioner", "冷气机": "air conditioner",
    "开关": "switch", "插座": "switch", "插头": "switch",
    "设备": "device", "装置": "device",
    "客厅": "living room", "卧室": "bedroom", "主卧": "bedroom", "次卧": "bedroom", "厨房": "kitchen",
    "办公室": "office", "书房": "study", "餐厅": "dining room", "浴室": "bathroom", "卫生间": "bathroom",
    "阳台": "balcony", "车库": "garage", "室内": "room", "屋里": "room", "房间": "room",
    "室温": "room temperature",
    # fields
    "温度": "temperature", "目标": "target", "目标温度": "target temperature", "设定温度": "target temperature",
    "当前": "current", "目前": "current", "实时": "current", "现在": "now",
    "湿度": "humidity", "模式": "mode", "亮度": "brightness", "色温": "color temperature",
    "颜色": "color", "色彩": "color", "风速": "fan speed", "风量": "fan speed", "风扇": "fan",
    "位置": "position", "开合度": "position", "开度": "position",
    "功率": "power usage", "用电": "power usage", "耗电": "power usage", "用了": "usage",
    "多少电": "how much power", "电源": "power", "状态": "status", "情况": "status",
    # on, off, open, close, pause
    "打开": "on open", "开启": "on open", "开": "on open", "启动": "on", "拉开": "open",
    "开着": "on", "亮着": "on", "关着": "off",
    "关闭": "off close", "关掉": "off close", "关上": "off close", "关了": "off close", "关": "off close",
    "拉上": "close", "合上": "close",
    "暂停": "pause", "停止": "stop", "停下": "stop", "停": "stop",
    # setting
    "设为": "set to", "设置为": "set to", "设成": "set to", "设置成": "set to", "设定为": "set to",
    "设定成": "set to", "设到": "set to", "设置到": "set to", "调到": "set to", "调成": "set to",
    "调为": "set to", "调至": "set to", "调整到": "set to", "调整为": "set to", "改成": "set to",
    "改为": "set to", "改到": "set to", "换成": "set to", "变成": "set to", "切换到": "set to",
    "切换成": "set to", "切换为": "set to", "切到": "set to", "拉到": "set to", "开到": "open to",
    "调": "set", "调整": "set", "设置": "set", "设定": "set", "设": "set", "切换": "set", "改": "set",
    "换": "set",
    # relative changes
    "调高": "raise", "升高": "raise", "提高": "raise", "调大": "raise", "加大": "raise", "增加": "raise",
    "高一点": "raise", "高一些": "raise", "调低": "lower", "降低": "lower", "调小": "lower",
    "减小": "lower", "减少": "lower", "低一点": "lower", "低一些": "lower",
    "调亮": "brightness raise", "亮一点": "brightness raise", "亮一些": "brightness raise",
    "更亮": "brightness raise", "调暗": "brightness lower", "暗一点": "brightness lower",
    "暗一些": "brightness lower", "更暗": "brightness lower", "亮": "brightness", "暗": "brightness lower",
    "最亮": "brightest", "最暗": "dimmest", "最大": "maximum", "最高": "maximum", "最小": "minimum",
    "最低": "minimum",
    # values
    "制冷": "cool", "冷气": "cool", "制热": "heat", "暖气": "heat", "加热": "heat", "自动": "auto",
    "送风": "fan", "通风": "fan", "除湿": "dry", "抽湿": "dry", "干燥": "dry", "节能": "eco",
    "省电": "eco", "经济": "eco", "高": "high", "高速": "high", "高档": "high", "中": "medium",
    "中速": "medium", "中档": "medium", "低": "low", "低速": "low", "低档": "low",
    "暖白": "warm white", "暖白光": "warm white", "暖光": "warm white", "冷白": "cool white",
    "冷白光": "cool white", "冷光": "cool white", "白光": "white", "一半": "50 %", "全开": "fully open",
    "全关": "fully closed",
    "红色": "red", "红": "red", "绿色": "green", "绿": "green", "蓝色": "blue", "蓝": "blue",
    "黄色": "yellow", "黄": "yellow", "紫色": "purple", "紫": "purple", "橙色": "orange", "橙": "orange",
    "粉色": "pink", "粉红": "pink", "粉红色": "pink", "白色": "white", "白": "white", "青色": "cyan",
    # units
    "度": "°c", "摄氏度": "°c", "开尔文": "k", "瓦": "w", "小时": "h", "个小时": "h",
    # questions
    "查看": "check", "查询": "check", "查一下": "check", "查": "check", "看看": "check",
    "看一下": "check", "看下": "check", "告诉我": "tell", "显示": "show", "多少": "how much",
    "几": "how many", "什么": "what", "吗": "?", "么": "?", "呢": "?", "是否": "whether",
    "有没有": "any ?", "没有": "?", "没": "?", "是不是": "whether", "怎么样": "how", "如何": "how", "哪些": "which",
    "哪个": "which", "哪": "which",
    # devices and events
    "在线": "online", "离线": "offline", "掉线": "offline", "不在线": "offline", "列出": "list",
    "列举": "list", "所有": "all", "全部": "all", "每个": "all", "告警": "alert", "报警": "alert",
    "警报": "alert", "警告": "warning", "异常": "alert", "故障": "fault", "错误": "error",
    "事件": "event", "今天": "today", "今日": "today", "本周": "this week", "这周": "this week",
    "这个星期": "this week", "昨天": "yesterday", "最近": "recent", "过去": "last",
    # joining requests
    "然后": "then", "并且": "and", "并": "and", "再": "then", "同时": "and", "还有": "and",
    "以及": "and", "和": "and", "跟": "and", "接着": "then", "之后": "then", "另外": "and",
    # pointing
    "它": "it", "这个": "it", "那个": "it",
    # vision
    "图片": "picture", "照片": "photo", "图像": "image", "画面": "picture", "屏幕": "screen",
    "截图": "screenshot", "摄像头": "camera", "相机": "camera", "视频": "video",
    # function words
    "的": "", "了": "", "一下": "", "一点": "", "一些": "", "吧": "", "啊": "", "呀": "", "请": "please",
    "帮我": "", "帮忙": "", "给我": "", "我": "", "你": "", "在": "", "是": "is", "都": "", "些": "",
    "个": "", "着": "", "得": "", "地": "", "也": "", "还": "", "就": "", "要": "", "想": "", "能": "",
    "可以": "", "麻烦": "", "这": "", "那": "", "里": "", "啦": "", "哦": "", "嗯": "", "有": "any",
    "下": "", "一": "", "为": "to", "成": "to", "到": "to", "从": "", "给": "", "上": "", "多": "",
    "点": "", "内": "", "以来": "", "分别": "", "把": "", "将": "", "让": "",
})
ZH_MAX_LEN = max(len(term) for term in ZH_WORDS)

# English word pairs that mean something else together ("how warm" asks for a temperature;
# "warm" alone is a shade of white).
EN_PAIRS: Mapping[tuple[str, str], str] = MappingProxyType({
    ("how", "warm"): "how temperature", ("how", "hot"): "how temperature", ("how", "cold"): "how temperature",
    ("how", "humid"): "how humidity",
})

# Rooms the lexicon can translate (客厅 → living room). They are known words only where a
# device's metadata says so: "the garage door" must stay unknown at a site without a garage.
PLACE_WORDS = frozenset({"living", "room", "bedroom", "kitchen", "office", "study", "dining", "bathroom",
                         "balcony", "garage"})

# Chinese unit characters that only mean a unit right after a number ("3天" but not "天气").
ZH_UNITS_AFTER_NUMBER: Mapping[str, str] = MappingProxyType({"天": "day", "周": "week", "星期": "week"})

# Words that carry no meaning of their own here; never "unknown" to the guard in parser.py.
EN_FILLER = frozenset({
    "a", "an", "the", "to", "of", "in", "on", "at", "by", "for", "from", "with", "and", "then", "or", "but", "not",
    "no", "yes", "please", "me", "my", "mine", "it", "its", "is", "are", "be", "been", "being", "was", "were", "am",
    "do", "does", "did", "done", "can", "could", "would", "will", "shall", "should", "may", "might", "must", "you",
    "your", "i", "we", "us", "our", "they", "them", "their", "he", "she", "his", "her", "this", "that", "these",
    "those", "there", "here", "now", "right", "just", "some", "any", "all", "what", "how", "which", "who", "whom",
    "when", "where", "why", "much", "many", "too", "very", "so", "into", "onto", "set", "turn", "switch", "make",
    "change", "put", "get", "give", "show", "tell", "check", "read", "let", "see", "know", "want", "like", "need",
    "have", "has", "had", "currently", "still", "again", "also", "about", "ok", "okay", "thanks",
    "thank", "hey", "hi", "hello", "level", "value", "reading", "bit", "little", "slightly", "status", "anything",
    "something", "one", "ones", "going", "go", "come", "back", "whether", "report", "reported", "say", "says",
    "said", "last", "past", "recently", "time", "times", "device", "kindly", "pls",
    "there's",
})

# Determiners: an unknown word right after one is a thing we do not know ("the TV").
DETERMINERS = frozenset({"the", "a", "an", "my", "this", "that", "some", "your", "our", "his", "her", "their"})

# Words that open a question, and the words that make one anywhere in a clause.
QUESTION_OPENERS = frozenset({
    "what", "how", "which", "is", "are", "does", "do", "did", "was", "were", "has", "have", "check",
    "show", "tell", "read", "get", "whether", "?", "any", "list",
})
QUESTION_MARKERS = frozenset({"?", "what", "how", "which", "whether", "check", "status"})

# Verbs that make a clause a command when it opens with one.
COMMAND_VERBS = frozenset({
    "set", "turn", "switch", "make", "change", "put", "adjust", "move", "open", "close", "stop", "pause",
    "raise", "lower", "start", "bring", "on", "off", "keep",
})
# Verbs too general to identify a command by themselves ("set", "turn" in set_mode, turn_on).
GENERIC_VERBS = frozenset({"set", "turn", "switch", "make", "change", "put", "adjust", "get", "do", "go"})

# Words said before the request proper ("could you please …").
POLITE_OPENERS = frozenset({
    "please", "can", "could", "would", "will", "you", "i", "want", "to", "like", "need", "let", "us", "me",
    "kindly", "hey", "ok", "okay", "so", "now", "just", "also", "pls", "d",
})

# Words that split a request into parts.
CONJUNCTIONS = frozenset({"and", "then", "also", "plus"})
SEPARATORS = frozenset({",", ";", ".", "!", "。", "、", "；", "！"})

PRONOUNS = frozenset({"it", "this", "that"})
# Words that narrow a field down ("the current temperature") without naming one.
QUALIFIERS = frozenset({"current", "now"})
ALL_WORDS = frozenset({"all"})

# On and off, and the words that mean the same for things that open rather than switch.
TRUE_WORDS = frozenset({"on", "open"})
FALSE_WORDS = frozenset({"off", "close"})
# A curtain "turned on" opens; a light "opened" (开灯) switches on; "stop" is "pause".
KEY_ALIASES: Mapping[str, frozenset[str]] = MappingProxyType({
    "on": frozenset({"open"}), "open": frozenset({"on"}), "off": frozenset({"close"}),
    "close": frozenset({"off"}), "stop": frozenset({"pause"}), "pause": frozenset({"stop"}),
})

RAISE_WORDS = frozenset({"raise"})
LOWER_WORDS = frozenset({"lower"})
MAX_WORDS = frozenset({"maximum"})
MIN_WORDS = frozenset({"minimum"})

# Events: the words asking for them and the levels each stands for.
EVENT_WORDS: Mapping[str, tuple[str, ...]] = MappingProxyType({
    "alert": ("alert", "warning", "error"),
    "warning": ("warning",),
    "error": ("error",),
    "fault": ("error",),
    "event": (),
})
LIST_WORDS = frozenset({"online", "offline", "list"})
TIME_WORDS = frozenset({"today", "yesterday", "recent", "week", "h", "day"})

VISION_WORDS = frozenset({"picture", "photo", "image", "screen", "screenshot", "camera", "video"})

# Colour names → hue in degrees (saturation 100), or None for white (saturation 0).
COLOURS: Mapping[str, int | None] = MappingProxyType({
    "red": 0, "orange": 30, "yellow": 60, "green": 120, "cyan": 180, "blue": 240, "purple": 270,
    "violet": 270, "pink": 330, "white": None,
})

# Replies: English words → Chinese, phrases first (labels, product names, verbs, values).
EN_TO_ZH: Mapping[str, str] = MappingProxyType({
    "turn on": "打开", "turn off": "关闭", "color temperature": "色温", "fan speed": "风速",
    "power usage": "功率", "air conditioner": "空调", "current temperature": "当前温度",
    "target temperature": "目标温度",
    "temperature": "温度", "target": "目标", "current": "当前", "humidity": "湿度", "mode": "模式",
    "brightness": "亮度", "color": "颜色", "position": "位置", "motion": "运动状态", "power": "电源",
    "usage": "用量", "fan": "送风", "speed": "速度", "light": "灯", "thermostat": "温控器",
    "curtain": "窗帘", "switch": "开关", "set": "设置", "open": "打开", "close": "关闭", "pause": "暂停",
    "stop": "停止", "on": "开", "off": "关闭", "cool": "制冷", "heat": "制热", "auto": "自动",
    "dry": "除湿", "eco": "节能", "low": "低", "medium": "中", "high": "高", "opening": "正在打开",
    "closing": "正在关闭", "stopped": "已停止", "red": "红色", "orange": "橙色", "yellow": "黄色",
    "green": "绿色", "cyan": "青色", "blue": "蓝色", "purple": "紫色", "violet": "紫色", "pink": "粉色",
    "white": "白色",
    # Event names and their fields, for event summaries.
    "alert": "告警", "filter dirty": "滤网脏了", "filter": "滤网", "fault": "故障", "fault code": "故障码",
    "overheat": "过热", "lamp failure": "灯泡故障", "failure": "故障", "obstacle detected": "检测到障碍物",
    "motor fault": "电机故障", "overload": "过载", "hours used": "使用时长", "reason": "原因",
})

# Past tense of command verbs for "Done: turned off …" (regular verbs just take -ed).
IRREGULAR_PAST: Mapping[str, str] = MappingProxyType({"set": "set", "put": "put", "stop": "stopped",
                                                       "shut": "shut"})
