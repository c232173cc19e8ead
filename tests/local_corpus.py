"""Utterances for the offline agent (provider `local`) with the tool calls a person would expect.

Written as people talk to a gateway, before the engine existed; the expected calls say what a
careful human operator would do with each request at the site below. An empty list means "do
not touch anything": answer, ask which device, explain a limit, or say it is not understood.

Imported by tests/test_local_engine.py (accuracy test) and usable by a benchmark script.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# --------------------------------------------------------------------------- the site


@dataclass(frozen=True)
class SiteDevice:
    device_id: str
    product_id: str
    online: bool
    state: dict[str, Any]
    metadata: dict[str, Any]


SITE: tuple[SiteDevice, ...] = (
    SiteDevice("thermostat-001", "thermostat", True,
               {"temperature": 28, "humidity": 62, "mode": "auto", "target_temperature": 22},
               {"name": "Living room thermostat", "room": "living room"}),
    SiteDevice("thermostat-002", "thermostat", False,
               {"temperature": 19.5, "humidity": 48, "mode": "eco", "target_temperature": 20},
               {"name": "Office thermostat", "room": "office"}),
    SiteDevice("living-room-light", "light", True,
               {"power": True, "brightness": 80, "color_temperature": 4000, "color": {"h": 0, "s": 0, "v": 100}},
               {"name": "Living room light", "room": "living room"}),
    SiteDevice("bedroom-light", "light", True,
               {"power": False, "brightness": 40, "color_temperature": 3000, "color": {"h": 0, "s": 0, "v": 100}},
               {"name": "Bedroom light", "room": "bedroom"}),
    SiteDevice("curtain-1", "curtain", True, {"position": 0, "motion": "stopped"},
               {"name": "Living room curtain", "room": "living room"}),
    SiteDevice("ac-1", "air_conditioner", True,
               {"power": False, "mode": "cool", "target_temperature": 26, "current_temperature": 29.5,
                "fan_speed": "auto"},
               {"name": "Bedroom air conditioner", "room": "bedroom"}),
    SiteDevice("switch-1", "switch", True, {"power": True, "power_usage": 850},
               {"name": "Coffee machine", "room": "kitchen"}),
)

# --------------------------------------------------------------------------- expected calls

Call = tuple[str, dict[str, Any]]
ALERT_LEVELS = ["alert", "warning", "error"]


def state(device_id: str) -> Call:
    return ("get_device_state", {"device_id": device_id})


def cmd(device_id: str, command: str, **params: Any) -> Call:
    return ("send_command", {"device_id": device_id, "command": command, "params": params})


def devices(**args: Any) -> Call:
    return ("list_devices", args)


def events(**args: Any) -> Call:
    return ("get_recent_events", args)


@dataclass(frozen=True)
class Case:
    text: str
    # The session's device (TurnContext.device_id), or None for a fresh session.
    device: str | None
    calls: list[Call] = field(default_factory=list)


T1, T2 = "thermostat-001", "thermostat-002"
LIVING, BEDROOM = "living-room-light", "bedroom-light"
CURTAIN, AC, SWITCH = "curtain-1", "ac-1", "switch-1"
RED = {"h": 0, "s": 100, "v": 100}
BLUE = {"h": 240, "s": 100, "v": 100}
GREEN = {"h": 120, "s": 100, "v": 100}

CORPUS: tuple[Case, ...] = (
    # ---------------------------------------------------------------- thermostat, English
    Case("what is the current temperature", T1, [state(T1)]),
    Case("What's the temperature in the living room?", None, [state(T1)]),
    Case("how humid is it", T1, [state(T1)]),
    Case("what's the humidity", T1, [state(T1)]),
    Case("what's the target temperature", T1, [state(T1)]),
    Case("what mode is the thermostat in", None, [state(T1)]),
    Case("what is the temperature in the office", None, [state(T2)]),
    Case("temperature and humidity please", T1, [state(T1)]),
    Case("set the target temperature to 24", T1, [cmd(T1, "set_target_temperature", target_temperature=24)]),
    Case("set the thermostat to 21.5 degrees", None, [cmd(T1, "set_target_temperature", target_temperature=21.5)]),
    Case("Set the thermostat to 24 °C", None, [cmd(T1, "set_target_temperature", target_temperature=24)]),
    Case("set the temperature to 23", T1, [cmd(T1, "set_target_temperature", target_temperature=23)]),
    Case("set thermostat-002 to 20", None, [cmd(T2, "set_target_temperature", target_temperature=20)]),
    Case("switch the mode to cool", T1, [cmd(T1, "set_mode", mode="cool")]),
    Case("put the thermostat in eco mode", None, [cmd(T1, "set_mode", mode="eco")]),
    Case("change the thermostat mode to heating", None, [cmd(T1, "set_mode", mode="heat")]),
    Case("turn off the thermostat", T1, [cmd(T1, "set_mode", mode="off")]),
    Case("set the mode to automatic", T1, [cmd(T1, "set_mode", mode="auto")]),
    Case("check the current temperature and set the target temperature to 24", T1,
         [state(T1), cmd(T1, "set_target_temperature", target_temperature=24)]),
    Case("set the temperature to 24 and the mode to heat", T1,
         [cmd(T1, "set_target_temperature", target_temperature=24), cmd(T1, "set_mode", mode="heat")]),
    Case("raise the target temperature by 2 degrees", T1, [cmd(T1, "set_target_temperature", target_temperature=24)]),
    Case("set the target temperature to 50", T1, []),
    Case("turn on the thermostat", T1, []),
    Case("set the humidity to 50", T1, []),
    # ---------------------------------------------------------------- thermostat, Chinese
    Case("查看当前温度", T1, [state(T1)]),
    Case("现在室内温度是多少", T1, [state(T1)]),
    Case("湿度多少", T1, [state(T1)]),
    Case("温度和湿度分别是多少", T1, [state(T1)]),
    Case("温控器现在是什么模式", None, [state(T1)]),
    Case("办公室的温度是多少", None, [state(T2)]),
    Case("目标温度是多少？", T1, [state(T1)]),
    Case("把目标温度设为24度", T1, [cmd(T1, "set_target_temperature", target_temperature=24)]),
    Case("温度调到二十二度", T1, [cmd(T1, "set_target_temperature", target_temperature=22)]),
    Case("把温控器调到26度", None, [cmd(T1, "set_target_temperature", target_temperature=26)]),
    Case("把温度设成23.5度", T1, [cmd(T1, "set_target_temperature", target_temperature=23.5)]),
    Case("目标温度调高2度", T1, [cmd(T1, "set_target_temperature", target_temperature=24)]),
    Case("切换到制冷模式", T1, [cmd(T1, "set_mode", mode="cool")]),
    Case("温控器设为节能模式", None, [cmd(T1, "set_mode", mode="eco")]),
    Case("模式改成制热", T1, [cmd(T1, "set_mode", mode="heat")]),
    Case("关闭温控器", T1, [cmd(T1, "set_mode", mode="off")]),
    Case("查看当前温度，然后把目标温度设为24度", T1,
         [state(T1), cmd(T1, "set_target_temperature", target_temperature=24)]),
    Case("把目标温度设为50度", T1, []),
    Case("把湿度调到50%", T1, []),
    Case("打开温控器", T1, []),
    # ---------------------------------------------------------------- light, English
    Case("is the light on", BEDROOM, [state(BEDROOM)]),
    Case("is the bedroom light on?", None, [state(BEDROOM)]),
    Case("how bright is the living room light", None, [state(LIVING)]),
    Case("what's the colour temperature of the bedroom light", None, [state(BEDROOM)]),
    Case("turn off the bedroom light", None, [cmd(BEDROOM, "turn_off")]),
    Case("turn on the light", LIVING, [cmd(LIVING, "turn_on")]),
    Case("turn on the light", None, []),
    Case("switch on the living room light", None, [cmd(LIVING, "turn_on")]),
    Case("lights off in the living room", None, [cmd(LIVING, "turn_off")]),
    Case("open the bedroom light", None, [cmd(BEDROOM, "turn_on")]),
    Case("turn it off", BEDROOM, [cmd(BEDROOM, "turn_off")]),
    Case("set the brightness to 50%", BEDROOM, [cmd(BEDROOM, "set_brightness", brightness=50)]),
    Case("dim the bedroom light to 20 percent", None, [cmd(BEDROOM, "set_brightness", brightness=20)]),
    Case("brightness 100", LIVING, [cmd(LIVING, "set_brightness", brightness=100)]),
    Case("make the light brighter", LIVING, [cmd(LIVING, "set_brightness", brightness=90)]),
    Case("set the living room light to 3000K", None, [cmd(LIVING, "set_color_temperature", color_temperature=3000)]),
    Case("set the colour temperature to 5000 kelvin", LIVING,
         [cmd(LIVING, "set_color_temperature", color_temperature=5000)]),
    Case("set the light to warm white", LIVING, [cmd(LIVING, "set_color_temperature", color_temperature=2700)]),
    Case("make the bedroom light red", None, [cmd(BEDROOM, "set_color", color=RED)]),
    Case("change the light color to green", LIVING, [cmd(LIVING, "set_color", color=GREEN)]),
    Case("set the brightness to 0", BEDROOM, []),
    Case("set the colour temperature to 9000K", LIVING, []),
    Case("turn off all the lights", None, [cmd(BEDROOM, "turn_off"), cmd(LIVING, "turn_off")]),
    Case("turn on the bedroom light and set it to 30%", None,
         [cmd(BEDROOM, "turn_on"), cmd(BEDROOM, "set_brightness", brightness=30)]),
    Case("turn off the bedroom light and the air conditioner", None, [cmd(BEDROOM, "turn_off"), cmd(AC, "turn_off")]),
    Case("blink the light", LIVING, []),
    Case("set the volume to 30", LIVING, []),
    Case("turn on the TV", LIVING, []),
    # ---------------------------------------------------------------- light, Chinese
    Case("卧室的灯开着吗", None, [state(BEDROOM)]),
    Case("灯亮着吗", BEDROOM, [state(BEDROOM)]),
    Case("客厅灯的亮度是多少", None, [state(LIVING)]),
    Case("卧室灯现在的色温是多少", None, [state(BEDROOM)]),
    Case("关掉卧室的灯", None, [cmd(BEDROOM, "turn_off")]),
    Case("关灯", LIVING, [cmd(LIVING, "turn_off")]),
    Case("开灯", BEDROOM, [cmd(BEDROOM, "turn_on")]),
    Case("打开客厅的灯", None, [cmd(LIVING, "turn_on")]),
    Case("把客厅的灯关了", None, [cmd(LIVING, "turn_off")]),
    Case("开灯", None, []),
    Case("把卧室灯的亮度调到30%", None, [cmd(BEDROOM, "set_brightness", brightness=30)]),
    Case("亮度调到百分之六十", LIVING, [cmd(LIVING, "set_brightness", brightness=60)]),
    Case("把灯调暗一点", LIVING, [cmd(LIVING, "set_brightness", brightness=70)]),
    Case("灯调到最亮", BEDROOM, [cmd(BEDROOM, "set_brightness", brightness=100)]),
    Case("把客厅灯的色温设为4000K", None, [cmd(LIVING, "set_color_temperature", color_temperature=4000)]),
    Case("色温调到暖白", LIVING, [cmd(LIVING, "set_color_temperature", color_temperature=2700)]),
    Case("把灯调成蓝色", LIVING, [cmd(LIVING, "set_color", color=BLUE)]),
    Case("卧室灯换成红色", None, [cmd(BEDROOM, "set_color", color=RED)]),
    Case("亮度调到0", LIVING, []),
    Case("关掉所有的灯", None, [cmd(BEDROOM, "turn_off"), cmd(LIVING, "turn_off")]),
    Case("打开卧室的灯，亮度调到50%", None, [cmd(BEDROOM, "turn_on"), cmd(BEDROOM, "set_brightness", brightness=50)]),
    Case("让灯闪烁一下", LIVING, []),
    Case("把音量调到30", LIVING, []),
    Case("打开电视", LIVING, []),
    # ---------------------------------------------------------------- curtain, English
    Case("open the curtain", None, [cmd(CURTAIN, "open")]),
    Case("close the curtains", None, [cmd(CURTAIN, "close")]),
    Case("stop the curtain", CURTAIN, [cmd(CURTAIN, "pause")]),
    Case("pause", CURTAIN, [cmd(CURTAIN, "pause")]),
    Case("open the curtain halfway", None, [cmd(CURTAIN, "set_position", position=50)]),
    Case("set the curtain to 30%", None, [cmd(CURTAIN, "set_position", position=30)]),
    Case("move the curtain to 75 percent", None, [cmd(CURTAIN, "set_position", position=75)]),
    Case("how far open is the curtain?", None, [state(CURTAIN)]),
    Case("is the curtain moving", None, [state(CURTAIN)]),
    Case("what's the curtain position", None, [state(CURTAIN)]),
    Case("set the curtain position to 120", None, []),
    Case("close the curtain and turn off the living room light", None,
         [cmd(CURTAIN, "close"), cmd(LIVING, "turn_off")]),
    Case("open the curtain and turn on the bedroom light", None, [cmd(CURTAIN, "open"), cmd(BEDROOM, "turn_on")]),
    # ---------------------------------------------------------------- curtain, Chinese
    Case("打开窗帘", None, [cmd(CURTAIN, "open")]),
    Case("关上窗帘", None, [cmd(CURTAIN, "close")]),
    Case("拉上窗帘", None, [cmd(CURTAIN, "close")]),
    Case("窗帘停一下", None, [cmd(CURTAIN, "pause")]),
    Case("暂停窗帘", None, [cmd(CURTAIN, "pause")]),
    Case("把窗帘开到一半", None, [cmd(CURTAIN, "set_position", position=50)]),
    Case("窗帘开到百分之三十", None, [cmd(CURTAIN, "set_position", position=30)]),
    Case("把窗帘位置设为80", None, [cmd(CURTAIN, "set_position", position=80)]),
    Case("窗帘开了多少", None, [state(CURTAIN)]),
    Case("窗帘现在是什么状态", None, [state(CURTAIN)]),
    Case("窗帘开合度调到150%", None, []),
    Case("拉开窗帘，然后关掉客厅的灯", None, [cmd(CURTAIN, "open"), cmd(LIVING, "turn_off")]),
    Case("关灯并且关窗帘", LIVING, [cmd(LIVING, "turn_off"), cmd(CURTAIN, "close")]),
    # ---------------------------------------------------------------- air conditioner, English
    Case("turn on the air conditioner", None, [cmd(AC, "turn_on")]),
    Case("turn the AC off", None, [cmd(AC, "turn_off")]),
    Case("set the AC to 24 degrees", None, [cmd(AC, "set_target_temperature", target_temperature=24)]),
    Case("set the air conditioner to cool mode", None, [cmd(AC, "set_mode", mode="cool")]),
    Case("switch the mode to dry", AC, [cmd(AC, "set_mode", mode="dry")]),
    Case("heat mode please", AC, [cmd(AC, "set_mode", mode="heat")]),
    Case("set the ac to fan mode", None, [cmd(AC, "set_mode", mode="fan")]),
    Case("fan speed high", AC, [cmd(AC, "set_fan_speed", fan_speed="high")]),
    Case("set the fan to low", None, [cmd(AC, "set_fan_speed", fan_speed="low")]),
    Case("what is the room temperature in the bedroom", None, [state(AC)]),
    Case("is the air conditioner on?", None, [state(AC)]),
    Case("what mode is the ac in", None, [state(AC)]),
    Case("set the bedroom temperature to 25", None, [cmd(AC, "set_target_temperature", target_temperature=25)]),
    Case("set the AC to 35 degrees", None, []),
    Case("set the air conditioner to 24.5 degrees", None, []),
    Case("turn on the AC and set it to 22 degrees", None,
         [cmd(AC, "turn_on"), cmd(AC, "set_target_temperature", target_temperature=22)]),
    Case("turn on the AC, set it to cool mode and the fan to high", None,
         [cmd(AC, "turn_on"), cmd(AC, "set_mode", mode="cool"), cmd(AC, "set_fan_speed", fan_speed="high")]),
    Case("check the temperature then turn on the air conditioner", T1, [state(T1), cmd(AC, "turn_on")]),
    Case("switch the mode to cool", None, []),
    # ---------------------------------------------------------------- air conditioner, Chinese
    Case("打开空调", None, [cmd(AC, "turn_on")]),
    Case("关空调", None, [cmd(AC, "turn_off")]),
    Case("空调调到26度", None, [cmd(AC, "set_target_temperature", target_temperature=26)]),
    Case("把空调设为制冷模式", None, [cmd(AC, "set_mode", mode="cool")]),
    Case("空调切换到除湿模式", None, [cmd(AC, "set_mode", mode="dry")]),
    Case("空调开送风模式", None, [cmd(AC, "set_mode", mode="fan")]),
    Case("空调设成自动模式", None, [cmd(AC, "set_mode", mode="auto")]),
    Case("制热模式", AC, [cmd(AC, "set_mode", mode="heat")]),
    Case("风速调到高", AC, [cmd(AC, "set_fan_speed", fan_speed="high")]),
    Case("把空调风速调成自动", None, [cmd(AC, "set_fan_speed", fan_speed="auto")]),
    Case("空调现在几度", None, [state(AC)]),
    Case("卧室空调开着吗", None, [state(AC)]),
    Case("卧室温度是多少", None, [state(AC)]),
    Case("空调温度调到10度", None, []),
    Case("打开空调，调到制冷模式，温度设为24度", None,
         [cmd(AC, "turn_on"), cmd(AC, "set_mode", mode="cool"),
          cmd(AC, "set_target_temperature", target_temperature=24)]),
    Case("查一下温度再把空调打开", T1, [state(T1), cmd(AC, "turn_on")]),
    Case("把 ac-1 设为 24 度", None, [cmd(AC, "set_target_temperature", target_temperature=24)]),
    # ---------------------------------------------------------------- switch, English
    Case("turn off the coffee machine", None, [cmd(SWITCH, "turn_off")]),
    Case("switch on the plug", None, [cmd(SWITCH, "turn_on")]),
    Case("switch off the switch", None, [cmd(SWITCH, "turn_off")]),
    Case("turn the kitchen plug off", None, [cmd(SWITCH, "turn_off")]),
    Case("turn on switch-1", None, [cmd(SWITCH, "turn_on")]),
    Case("is the switch on", None, [state(SWITCH)]),
    Case("how much power is the coffee machine using", None, [state(SWITCH)]),
    Case("power usage of switch-1", None, [state(SWITCH)]),
    # ---------------------------------------------------------------- switch, Chinese
    Case("打开开关", None, [cmd(SWITCH, "turn_on")]),
    Case("关掉厨房的插座", None, [cmd(SWITCH, "turn_off")]),
    Case("关闭switch-1", None, [cmd(SWITCH, "turn_off")]),
    Case("插座现在的功率是多少", None, [state(SWITCH)]),
    Case("开关是开着的吗", None, [state(SWITCH)]),
    Case("厨房插座用了多少电", None, [state(SWITCH)]),
    # ---------------------------------------------------------------- device by id
    Case("what is the state of thermostat-002", None, [state(T2)]),
    Case("turn off living-room-light", None, [cmd(LIVING, "turn_off")]),
    Case("open curtain-1", None, [cmd(CURTAIN, "open")]),
    Case("thermostat-001 的温度是多少", None, [state(T1)]),
    Case("查看 bedroom-light 的状态", None, [state(BEDROOM)]),
    # ---------------------------------------------------------------- devices and events, English
    Case("which devices are online", None, [devices(status="online")]),
    Case("how many devices are online?", T1, [devices(status="online")]),
    Case("what devices are offline?", None, [devices(status="offline")]),
    Case("list all devices", None, [devices()]),
    Case("show me all the lights", None, [devices(product_id="light")]),
    Case("any alerts today", None, [events(since_hours=24, levels=ALERT_LEVELS)]),
    Case("any alerts today?", T1, [events(since_hours=24, levels=ALERT_LEVELS)]),
    Case("show recent events", None, [events()]),
    Case("were there any errors in the last 2 hours", None, [events(since_hours=2, levels=["error"])]),
    Case("any alerts from the thermostat this week", None,
         [events(device_id=T1, since_hours=168, levels=ALERT_LEVELS)]),
    Case("did the air conditioner report any faults", None, [events(device_id=AC, levels=["error"])]),
    Case("which devices are online and any alerts today", None,
         [devices(status="online"), events(since_hours=24, levels=ALERT_LEVELS)]),
    # ---------------------------------------------------------------- devices and events, Chinese
    Case("哪些设备在线", None, [devices(status="online")]),
    Case("有几个设备在线？", None, [devices(status="online")]),
    Case("有哪些设备离线了", None, [devices(status="offline")]),
    Case("列出所有设备", None, [devices()]),
    Case("看看所有的灯", None, [devices(product_id="light")]),
    Case("今天有告警吗", None, [events(since_hours=24, levels=ALERT_LEVELS)]),
    Case("最近有什么事件", None, [events()]),
    Case("过去3小时有没有故障", None, [events(since_hours=3, levels=["error"])]),
    Case("空调今天有报警吗", None, [events(device_id=AC, since_hours=24, levels=ALERT_LEVELS)]),
    Case("本周有告警吗", None, [events(since_hours=168, levels=ALERT_LEVELS)]),
    Case("哪些设备在线，今天有没有告警", None,
         [devices(status="online"), events(since_hours=24, levels=ALERT_LEVELS)]),
    # ---------------------------------------------------------------- more compounds
    Case("关掉所有的灯，然后拉上窗帘", None,
         [cmd(BEDROOM, "turn_off"), cmd(LIVING, "turn_off"), cmd(CURTAIN, "close")]),
    Case("打开卧室的灯和空调", None, [cmd(BEDROOM, "turn_on"), cmd(AC, "turn_on")]),
    Case("查看温度和湿度，然后切换到节能模式", T1, [state(T1), cmd(T1, "set_mode", mode="eco")]),
    Case("set the living room light to 60% and open the curtain", None,
         [cmd(LIVING, "set_brightness", brightness=60), cmd(CURTAIN, "open")]),
    Case("turn off the coffee machine and close the curtain", None, [cmd(SWITCH, "turn_off"), cmd(CURTAIN, "close")]),
    # ---------------------------------------------------------------- not for us: no tool call
    Case("hello", None, []),
    Case("tell me a joke", None, []),
    Case("order a pizza", T1, []),
    Case("play some music", LIVING, []),
    Case("lock the door", None, []),
    Case("what's the weather tomorrow", None, []),
    Case("it's too hot in here", None, []),
    Case("你好", None, []),
    Case("讲个笑话", None, []),
    Case("明天天气怎么样", None, []),
    Case("帮我订一张机票", T1, []),
    Case("锁门", None, []),
    Case("放点音乐", LIVING, []),
    Case("what do you see in this picture", None, []),
    Case("what is on the screen", T1, []),
    Case("这张图片里有什么", None, []),
    Case("看看摄像头画面", None, []),
)

PURPLE = {"h": 270, "s": 100, "v": 100}

# Written after the first version of the engine passed CORPUS, and run once as it stood to
# measure how it does on phrasings it was not built around (the report gives both numbers).
# Kept as written: misses here are the engine's known weaknesses, not wrong expectations.
HELD_OUT: tuple[Case, ...] = (
    # ---------------------------------------------------------------- English
    Case("what's the thermostat reading", None, [state(T1)]),
    Case("how warm is it in the living room", None, [state(T1)]),
    Case("tell me the humidity in the office", None, [state(T2)]),
    Case("could you set the thermostat to 19 please", None, [cmd(T1, "set_target_temperature", target_temperature=19)]),
    Case("I'd like it at 23 degrees", T1, [cmd(T1, "set_target_temperature", target_temperature=23)]),
    Case("make it 2 degrees cooler", T1, [cmd(T1, "set_target_temperature", target_temperature=20)]),
    Case("thermostat to eco", None, [cmd(T1, "set_mode", mode="eco")]),
    Case("put the heating on", T1, [cmd(T1, "set_mode", mode="heat")]),
    Case("what's the office thermostat set to", None, [state(T2)]),
    Case("dim the living room light", None, [cmd(LIVING, "set_brightness", brightness=70)]),
    Case("lights on in the bedroom", None, [cmd(BEDROOM, "turn_on")]),
    Case("can you switch off the bedroom lamp", None, [cmd(BEDROOM, "turn_off")]),
    Case("set the bedroom light brightness to 75", None, [cmd(BEDROOM, "set_brightness", brightness=75)]),
    Case("make the living room light cool white", None,
         [cmd(LIVING, "set_color_temperature", color_temperature=6500)]),
    Case("change the bedroom light to purple", None, [cmd(BEDROOM, "set_color", color=PURPLE)]),
    Case("is the living room light off", None, [state(LIVING)]),
    Case("what colour is the bedroom light", None, [state(BEDROOM)]),
    Case("shut the curtains", None, [cmd(CURTAIN, "close")]),
    Case("curtain to 40%", None, [cmd(CURTAIN, "set_position", position=40)]),
    Case("stop the blinds", None, [cmd(CURTAIN, "pause")]),
    Case("is the curtain open or closed", None, [state(CURTAIN)]),
    Case("open curtains fully", None, [cmd(CURTAIN, "open")]),
    Case("air con on", None, [cmd(AC, "turn_on")]),
    Case("set the bedroom AC to heat mode", None, [cmd(AC, "set_mode", mode="heat")]),
    Case("AC fan speed to medium", None, [cmd(AC, "set_fan_speed", fan_speed="medium")]),
    Case("make the air conditioner colder", None, [cmd(AC, "set_target_temperature", target_temperature=25)]),
    Case("what's the AC set to", None, [state(AC)]),
    Case("how hot is the bedroom", None, [state(AC)]),
    Case("power off the AC", None, [cmd(AC, "turn_off")]),
    Case("turn the coffee machine back on", None, [cmd(SWITCH, "turn_on")]),
    Case("how many watts is the plug drawing", None, [state(SWITCH)]),
    Case("cut power to the coffee machine", None, [cmd(SWITCH, "turn_off")]),
    Case("which devices are offline right now", None, [devices(status="offline")]),
    Case("show me every device", None, [devices()]),
    Case("what happened today", None, [events(since_hours=24)]),
    Case("any warnings in the last 3 hours", None, [events(since_hours=3, levels=["warning"])]),
    Case("has the light had any problems", LIVING, [events(device_id=LIVING, levels=ALERT_LEVELS)]),
    Case("list the thermostats", None, [devices(product_id="thermostat")]),
    Case("set the thermostat to 22 and turn on the living room light", None,
         [cmd(T1, "set_target_temperature", target_temperature=22), cmd(LIVING, "turn_on")]),
    Case("turn off the light in the bedroom and close the curtain", None,
         [cmd(BEDROOM, "turn_off"), cmd(CURTAIN, "close")]),
    Case("what's the temperature and the humidity in the living room", None, [state(T1)]),
    Case("set the AC to 20 and the fan to auto", None,
         [cmd(AC, "set_target_temperature", target_temperature=20), cmd(AC, "set_fan_speed", fan_speed="auto")]),
    Case("good morning", None, []),
    Case("what time is it", None, []),
    # An alarm is a schedule now (agent/local/later.py); it rings on the conversation's speaker.
    Case("set an alarm for 7", None,
         [("create_schedule", {"at": "07:00", "action": {"type": "alarm", "language": "en"}})]),
    Case("turn on the oven", None, []),
    Case("open the garage door", None, []),
    Case("what's the brightness", T1, []),
    Case("set the AC to 100 degrees", None, []),
    Case("set brightness to 150%", LIVING, []),
    # ---------------------------------------------------------------- Chinese
    Case("客厅现在多少度", None, [state(T1)]),
    Case("办公室温控器的湿度", None, [state(T2)]),
    Case("温控器调成自动模式", None, [cmd(T1, "set_mode", mode="auto")]),
    Case("温度设定为二十五度", T1, [cmd(T1, "set_target_temperature", target_temperature=25)]),
    Case("把温度降低1度", T1, [cmd(T1, "set_target_temperature", target_temperature=21)]),
    Case("温控器关掉", None, [cmd(T1, "set_mode", mode="off")]),
    Case("现在是什么模式", T1, [state(T1)]),
    Case("卧室的灯调亮一点", None, [cmd(BEDROOM, "set_brightness", brightness=50)]),
    Case("把客厅的灯调成绿色", None, [cmd(LIVING, "set_color", color=GREEN)]),
    Case("客厅灯开着没", None, [state(LIVING)]),
    Case("卧室灯亮度设成80", None, [cmd(BEDROOM, "set_brightness", brightness=80)]),
    Case("把灯光调成冷白光", LIVING, [cmd(LIVING, "set_color_temperature", color_temperature=6500)]),
    Case("关闭所有灯光", None, [cmd(BEDROOM, "turn_off"), cmd(LIVING, "turn_off")]),
    Case("把窗帘全部打开", None, [cmd(CURTAIN, "open")]),
    Case("窗帘关一半", None, [cmd(CURTAIN, "set_position", position=50)]),
    Case("窗帘停下来", None, [cmd(CURTAIN, "pause")]),
    Case("窗帘开到70%", None, [cmd(CURTAIN, "set_position", position=70)]),
    Case("窗帘现在开着吗", None, [state(CURTAIN)]),
    Case("空调开到制热", None, [cmd(AC, "set_mode", mode="heat")]),
    Case("空调温度调低两度", None, [cmd(AC, "set_target_temperature", target_temperature=24)]),
    Case("空调风速调到中档", None, [cmd(AC, "set_fan_speed", fan_speed="medium")]),
    Case("把空调关了", None, [cmd(AC, "turn_off")]),
    Case("卧室空调现在多少度", None, [state(AC)]),
    Case("空调开着没有", None, [state(AC)]),
    Case("打开插座", None, [cmd(SWITCH, "turn_on")]),
    Case("咖啡机的插座关掉", None, [cmd(SWITCH, "turn_off")]),
    Case("插座功率多少", None, [state(SWITCH)]),
    Case("现在有哪些设备在线", None, [devices(status="online")]),
    Case("离线的设备有哪些", None, [devices(status="offline")]),
    Case("所有设备的状态", None, [devices()]),
    Case("最近一小时有没有报警", None, [events(since_hours=1, levels=ALERT_LEVELS)]),
    Case("温控器今天有什么异常吗", None, [events(device_id=T1, since_hours=24, levels=ALERT_LEVELS)]),
    Case("看一下最近的事件", None, [events()]),
    Case("今天有没有错误", None, [events(since_hours=24, levels=["error"])]),
    Case("空调有没有故障", None, [events(device_id=AC, levels=["error"])]),
    Case("先打开客厅的灯，再把窗帘拉上", None, [cmd(LIVING, "turn_on"), cmd(CURTAIN, "close")]),
    Case("把空调调到24度，风速调成低", None,
         [cmd(AC, "set_target_temperature", target_temperature=24), cmd(AC, "set_fan_speed", fan_speed="low")]),
    Case("查看卧室温度然后打开空调", None, [state(AC), cmd(AC, "turn_on")]),
    Case("播放音乐", None, []),
    Case("今天几号", None, []),
    Case("打开窗户", None, []),
    Case("帮我把扫地机器人打开", None, []),
    Case("你是谁", None, []),
    Case("这个画面里有人吗", None, []),
    Case("把温度设为100度", T1, []),
    Case("亮度调到200", BEDROOM, []),
)
