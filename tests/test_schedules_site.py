"""Schedules on a real gateway: a real mosquitto, simulated devices, a rooms file with scenes and
speakers, the HTTP API and the agent. Commands reach the devices through the validated path, scenes
run every step, words play on the room's connected speaker (an event when none is), a device that
disappears is an event, and the offline agent makes, lists and cancels them in English and Chinese.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import voice_samples as vs
from daemon_harness import PRODUCTS_DIR, RunningDaemon, start_daemon, wait_until
from mosquitto_broker import MosquittoBroker
from openai_double import OpenAIDouble, ScriptedCall, text_reply, tool_call_reply
from simulated import start_device
from test_voice_session import VoiceConn, said
from voice_doubles import AsrScript, DashScopeDouble, TtsScript

from deviceagentd.agent.runner import TurnDone, TurnRequest
from deviceagentd.agent.types import ToolCallFinished
from deviceagentd.simulator import SimulatedDevice
from deviceagentd.voice.protocol import BinaryCodec

WAIT_S = 15.0
ZONE = "Europe/Berlin"


class FakeAnnouncer:
    """The voice service's announce(): speaks only on speakers marked connected."""

    def __init__(self) -> None:
        self.connected: set[str] = set()
        self.said: list[tuple[str, str, str | None]] = []

    async def announce(self, device_id: str, text: str, language: str | None = None) -> bool:
        if device_id not in self.connected:
            return False
        self.said.append((device_id, text, language))
        return True


@dataclass
class Hotel:
    gw: RunningDaemon
    announcer: FakeAnnouncer
    suffix: str
    devices: dict[str, SimulatedDevice]

    def id(self, name: str) -> str:
        return f"{name}-{self.suffix}"

    async def create(self, body: dict[str, Any], expect: int = 201) -> dict[str, Any]:
        status, answer = await self.gw.request("POST", "/api/schedules", json_body=body)
        assert status == expect, answer
        assert isinstance(answer, dict)
        return answer

    async def events(self, device_id: str, name: str = "schedule_fired") -> list[dict[str, Any]]:
        events = await self.gw.daemon.store.query_events(device_id, limit=20, event=name)
        return [{"level": e.level, "source": e.source, "productId": e.product_id, **e.data} for e in events]

    async def until_event(self, device_id: str, name: str = "schedule_fired") -> dict[str, Any]:
        deadline = asyncio.get_running_loop().time() + WAIT_S
        while True:
            events = await self.events(device_id, name)
            if events:
                return events[0]
            assert asyncio.get_running_loop().time() < deadline, f"no {name} event for {device_id}"
            await asyncio.sleep(0.05)

    async def say(self, text: str, speaker: str | None = None, session: str | None = None) -> tuple[str, list[Any]]:
        """One turn of the offline agent, as a voice turn from `speaker` would run."""
        return await run_turn(self.gw, text, speaker, session)


async def run_turn(gw: RunningDaemon, text: str, speaker: str | None = None,
                   session: str | None = None) -> tuple[str, list[Any]]:
    """One agent turn: its reply text and tool results."""
    agent = gw.daemon.agent
    request = TurnRequest(text, session_id=session or f"voice-{uuid.uuid4().hex[:8]}", paced=False,
                          speaker_id=speaker)
    session_id, images = await agent.prepare(request)
    events = [event async for event in agent.turn(request, session_id, images)]
    done = [e for e in events if isinstance(e, TurnDone)]
    results = [e.result for e in events if isinstance(e, ToolCallFinished)]
    assert done, events
    return done[0].text, results


def rooms_file(path: Path, suffix: str) -> Path:
    path.write_text(f"""
[[rooms]]
id = "101"
voice_device_ids = ["spk-101-a-{suffix}", "spk-101-b-{suffix}"]
  [[rooms.devices]]
  device_id = "light-{suffix}"
  product = "light"
  name = "lamp"
  [[rooms.devices]]
  device_id = "curtain-{suffix}"
  product = "curtain"
  name = "curtain"
  [[rooms.scenes]]
  id = "night-{suffix}"
  name = "Good night"
  steps = [
    {{ device_id = "light-{suffix}", command = "turn_off" }},
    {{ device_id = "curtain-{suffix}", command = "close" }},
  ]

[[rooms]]
id = "202"
voice_device_ids = ["spk-202-{suffix}"]
""")
    return path



@pytest.fixture
async def hotel(broker: MosquittoBroker, tmp_path: Path) -> AsyncIterator[Hotel]:
    suffix = uuid.uuid4().hex[:6]
    announcer = FakeAnnouncer()
    gw = await start_daemon(broker.url, tmp_path / "state", announcer=announcer, site_timezone=ZONE,
                            voiceplatform_rooms_file=str(rooms_file(tmp_path / "rooms.toml", suffix)))
    devices: dict[str, SimulatedDevice] = {}
    try:
        for product in ("light", "curtain", "thermostat"):
            devices[product] = await start_device(broker, product, f"{product}-{suffix}")
        await wait_until(lambda: gw.daemon.registry.online_count == 3, WAIT_S)
        yield Hotel(gw, announcer, suffix, devices)
    finally:
        for sim in devices.values():
            await sim.stop()
        await gw.stop()


def received(sim: SimulatedDevice) -> list[tuple[str, dict[str, Any]]]:
    return [(c.cmd, c.params) for c in sim.commands_received]


async def test_a_timer_sends_its_command_through_the_validated_path(hotel: Hotel) -> None:
    light = hotel.id("light")
    made = await hotel.create({"name": "lights out", "inSeconds": 1,
                               "action": {"type": "command", "deviceId": light, "command": "turn_off"}})
    assert made["timezone"] == ZONE and made["createdBy"] == {"channel": "http"}
    await wait_until(lambda: ("turn_off", {}) in received(hotel.devices["light"]), WAIT_S)
    event = await hotel.until_event(light)
    assert (event["outcome"], event["source"], event["level"], event["scheduleId"]) == ("ok", "schedule", "info",
                                                                                      made["id"])
    # The command log says who sent it.
    record = await hotel.gw.daemon.store.get_command(event["result"]["requestId"])
    assert record is not None and record.extra == {"origin": {"channel": "schedule", "scheduleId": made["id"]}}
    status, _ = await hotel.gw.request("GET", f"/api/schedules/{made['id']}")
    assert status == 404
    status, page = await hotel.gw.request("GET", f"/api/devices/{light}/events?event=schedule_fired")
    assert status == 200 and page["events"][0]["data"]["outcome"] == "ok"


async def test_a_scene_runs_every_step(hotel: Hotel) -> None:
    await hotel.create({"inSeconds": 1, "action": {"type": "scene", "sceneId": f"night-{hotel.suffix}"}})
    event = await hotel.until_event(f"SCENE#night-{hotel.suffix}")
    assert event["outcome"] == "ok" and event["productId"] == "scene"
    assert [step["ok"] for step in event["result"]["steps"]] == [True, True]
    assert ("turn_off", {}) in received(hotel.devices["light"])
    assert ("close", {}) in received(hotel.devices["curtain"])
    [step] = await hotel.gw.daemon.store.device_commands(hotel.devices["light"].device_id, limit=1)
    assert step.extra == {"origin": {"channel": "schedule", "scheduleId": event["scheduleId"],
                                     "sceneId": f"SCENE#night-{hotel.suffix}"}}


async def test_an_alarm_plays_on_the_first_connected_speaker_of_the_room(hotel: Hotel) -> None:
    second = f"spk-101-b-{hotel.suffix}"
    hotel.announcer.connected.add(second)
    await hotel.create({"inSeconds": 1, "action": {"type": "alarm", "room": "101", "language": "zh"}})
    event = await hotel.until_event(second)
    assert event["outcome"] == "ok" and event["productId"] == "speaker"
    [(speaker, text, language)] = hotel.announcer.said
    assert (speaker, language) == (second, "zh") and text.startswith("现在是") and "起床" in text


async def test_words_for_a_speaker_that_is_not_connected_are_an_event(hotel: Hotel) -> None:
    speaker = f"spk-202-{hotel.suffix}"
    await hotel.create({"inSeconds": 1, "action": {"type": "say", "text": "Checkout is at noon", "speaker": speaker}})
    event = await hotel.until_event(speaker)
    assert (event["outcome"], event["level"], event["result"]) == ("no_speaker", "warning",
                                                                   {"text": "Checkout is at noon"})
    assert hotel.announcer.said == []
    # A room without any connected speaker likewise.
    await hotel.create({"inSeconds": 1, "action": {"type": "say", "text": "Hello", "room": "101"}})
    event = await hotel.until_event("room:101")
    assert event["outcome"] == "no_speaker" and "no speaker of the room" in event["detail"]


async def test_bad_inputs_over_http(hotel: Hotel) -> None:
    light = hotel.id("light")
    command = {"type": "command", "deviceId": light, "command": "turn_off"}
    cases: list[tuple[dict[str, Any], str, str]] = [
        ({"at": "2027-03-28T02:30", "action": command}, "at", "does not exist in Europe/Berlin"),
        ({"at": "2020-01-01T00:00", "action": command}, "at", "in the past"),
        ({"inSeconds": 5, "action": {**command, "deviceId": "nobody"}}, "action.deviceId", "not registered"),
        ({"inSeconds": 5, "action": {**command, "command": "explode"}}, "action.command", "not a command"),
        ({"inSeconds": 5, "action": {**command, "command": "set_brightness", "params": {"brightness": 900}}},
         "action.params.brightness", "at most"),
        ({"inSeconds": 5, "action": {"type": "scene", "sceneId": "night-nobody"}}, "action.sceneId", "no scene"),
        ({"inSeconds": 5, "action": {"type": "say", "text": "hi", "room": "303"}}, "action.room", "no room"),
    ]
    for body, field, words in cases:
        status, answer = await hotel.gw.request("POST", "/api/schedules", json_body=body)
        assert status == 400, (body, answer)
        assert answer["error"]["code"] == "invalid_request"
        reasons = {item["field"]: item["reason"] for item in answer["error"]["details"]}
        assert field in reasons and words in reasons[field], (body, answer)
    status, listing = await hotel.gw.request("GET", "/api/schedules")
    assert status == 200 and listing["total"] == 0 and listing["timezone"] == ZONE


async def test_a_schedule_for_a_device_that_disappears_records_why(
        broker: MosquittoBroker, tmp_path: Path) -> None:
    suffix = uuid.uuid4().hex[:6]
    gw = await start_daemon(broker.url, tmp_path / "state")
    sim = await start_device(broker, "thermostat", f"thermostat-{suffix}")
    device = f"thermostat-{suffix}"
    try:
        await wait_until(lambda: gw.daemon.registry.get(device) is not None, WAIT_S)
        status, made = await gw.request("POST", "/api/schedules", json_body={
            "inSeconds": 3, "action": {"type": "command", "deviceId": device, "command": "set_mode",
                                        "params": {"mode": "heat"}}})
        assert status == 201, made
    finally:
        await sim.stop()
        await gw.stop()
    # The gateway comes back without the thermostat product: the device is kept but not served.
    products = tmp_path / "products"
    shutil.copytree(PRODUCTS_DIR, products)
    (products / "thermostat.json").unlink()
    gw = await start_daemon(broker.url, tmp_path / "state", products_dir=str(products))
    try:
        assert gw.daemon.schedules.service().get(made["id"]) is not None
        deadline = asyncio.get_running_loop().time() + WAIT_S
        while not (events := await gw.daemon.store.query_events(device, limit=5, event="schedule_fired")):
            assert asyncio.get_running_loop().time() < deadline
            await asyncio.sleep(0.05)
        [event] = events
        assert (event.data["outcome"], event.level) == ("device_gone", "error")
        assert "not configured" in event.data["detail"]
    finally:
        await gw.stop()


async def test_the_offline_agent_schedules_a_command_in_english_and_chinese(hotel: Hotel) -> None:
    light = hotel.id("light")
    reply, results = await hotel.say(f"turn off {light} in 1 second")
    assert [r.name for r in results] == ["create_schedule"] and results[0].ok, results
    # "today", or "tomorrow" a second before midnight.
    assert reply.startswith((f"OK, I'll turn off {light} today at ", f"OK, I'll turn off {light} tomorrow at ")), reply
    await wait_until(lambda: ("turn_off", {}) in received(hotel.devices["light"]), WAIT_S)
    curtain = hotel.id("curtain")
    reply, results = await hotel.say(f"一秒后关闭 {curtain}")
    assert results[0].ok and results[0].result["action"] == {"type": "command", "deviceId": curtain,
                                                             "command": "close", "params": {}}
    assert reply.startswith(("好的，今天", "好的，明天")), reply
    await wait_until(lambda: ("close", {}) in received(hotel.devices["curtain"]), WAIT_S)


async def test_wake_me_up_rings_on_the_speaker_that_heard_it_and_only_it_can_cancel(hotel: Hotel) -> None:
    speaker, other = f"spk-101-a-{hotel.suffix}", f"spk-202-{hotel.suffix}"
    reply, results = await hotel.say("wake me up tomorrow at 7", speaker)
    assert results[0].ok, results
    alarm = results[0].result
    assert alarm["action"] == {"type": "alarm", "text": "", "speaker": speaker, "language": "en"}
    assert alarm["nextRun"].endswith("T07:00:00+01:00") and alarm["createdBy"]["speaker"] == speaker
    assert reply == "OK, I'll wake you up tomorrow at 07:00.", reply
    reply, _ = await hotel.say("明天早上7点半叫醒我", speaker)
    assert reply == "好的，明天 07:30 叫醒您。", reply
    reply, _ = await hotel.say("what alarms do I have", speaker)
    assert reply == "You have 2: the alarm tomorrow at 07:00; the alarm tomorrow at 07:30.", reply
    # Another room's speaker sees none and cancels nothing.
    reply, results = await hotel.say("cancel my alarm", other)
    assert not results[0].ok and reply == "Sorry, no alarm to cancel.", reply
    assert hotel.gw.daemon.schedules.count == 2
    reply, _ = await hotel.say("取消闹钟", speaker)
    assert reply == "已取消：明天 07:00 闹钟。", reply
    reply, _ = await hotel.say("cancel all my alarms", speaker)
    assert reply == "Cancelled the alarm tomorrow at 07:30.", reply
    assert hotel.gw.daemon.schedules.count == 0


async def test_an_alarm_asked_for_in_a_chat_without_a_speaker_is_refused_in_words(hotel: Hotel) -> None:
    reply, results = await hotel.say("wake me up at 7")
    assert not results[0].ok
    assert reply.startswith("Sorry, I can't schedule that: action.speaker say which speaker"), reply
    reply, results = await hotel.say("set an alarm")
    assert results == [] and reply.startswith("When should I wake you up?")


async def test_a_spoken_reminder_comes_back_on_the_same_speaker(broker: MosquittoBroker, tmp_path: Path) -> None:
    """End to end through the voice WebSocket: the speaker asks, the offline agent schedules, and a
    second later the gateway speaks the reminder on that speaker's open session (VoiceService.announce)."""
    vs.require_espeak()
    speaker = f"aa:bb:cc:{uuid.uuid4().hex[:2]}:{uuid.uuid4().hex[:2]}:01"
    async with DashScopeDouble() as ds:
        ds.asr = AsrScript(sentences=["remind me in 2 seconds to drink water"], bytes_per_sentence=32000)
        ds.tts = TtsScript(ms_per_char=5)
        gw = await start_daemon(broker.url, tmp_path / "state", site_timezone=ZONE,
                                voice_aliyun_api_key=ds.api_key, voice_aliyun_url=ds.url)
        try:
            async with aiohttp.ClientSession() as http:
                ws = await http.ws_connect(gw.voice_url + "/ws/voice", headers={"Device-Id": speaker})
                conn = VoiceConn(ws, BinaryCodec(3))
                await conn.hello()
                _, end = await conn.turn(said())
                reply = conn.messages("agent_reply")[-1]["text"]
                assert reply.startswith(("OK, I'll remind you: drink water today at ",
                                         "OK, I'll remind you: drink water tomorrow at ")), reply
                [schedule] = gw.daemon.schedules.service().schedules()
                assert schedule.origin.speaker == speaker
                # Spoken clause by clause: "Reminder:", "drink water".
                await conn.wait("tts", after=end, state="sentence_start", text="drink water")
                await conn.wait("tts", after=end, state="stop")
                deadline = asyncio.get_running_loop().time() + WAIT_S
                while not (events := await gw.daemon.store.query_events(speaker, limit=5, event="schedule_fired")):
                    assert asyncio.get_running_loop().time() < deadline
                    await asyncio.sleep(0.05)
                assert (events[0].data["outcome"], events[0].data["detail"]) == ("ok", f"said on {speaker}")
                await conn.close()
        finally:
            await gw.stop()


async def test_the_schedule_service_loads_only_when_a_site_has_schedules(
        broker: MosquittoBroker, tmp_path: Path) -> None:
    """A gateway without schedules carries none of their code; one with stored schedules loads them
    (and starts its timer) at start."""
    probe = ("import sys, deviceagentd.daemon; "
             "print(sorted(m for m in sys.modules if m.startswith('deviceagentd.schedules')))")
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert loaded.strip() == "['deviceagentd.schedules', 'deviceagentd.schedules.lazy']", loaded
    gw = await start_daemon(broker.url, tmp_path / "state")
    try:
        assert not gw.daemon.schedules.loaded
        status, listing = await gw.request("GET", "/api/schedules")
        assert status == 200 and listing["total"] == 0 and gw.daemon.schedules.loaded
        status, made = await gw.request("POST", "/api/schedules", json_body={
            "at": "07:00", "repeat": "daily", "action": {"type": "alarm", "speaker": "spk-1"}})
        assert status == 201, made
    finally:
        await gw.stop()
    gw = await start_daemon(broker.url, tmp_path / "state")
    try:
        assert gw.daemon.schedules.loaded and gw.daemon.schedules.count == 1
        assert any(task.get_name() == "schedules" for task in gw.daemon._tasks)
    finally:
        await gw.stop()


async def test_a_cloud_model_schedules_through_the_same_tool(broker: MosquittoBroker, tmp_path: Path) -> None:
    """The openai provider gets create_schedule with its JSON Schema; the model's call makes a
    schedule that runs the command on the device."""
    suffix = uuid.uuid4().hex[:6]
    async with OpenAIDouble(expected_api_key="sk-test") as double:
        double.script(
            tool_call_reply(ScriptedCall("create_schedule", json.dumps({
                "name": "eco in a second", "inSeconds": 1, "action": {
                    "type": "command", "deviceId": f"thermostat-{suffix}", "command": "set_mode",
                    "params": {"mode": "eco"}}}))),
            text_reply("I'll switch it to eco in a second."),
        )
        gw = await start_daemon(broker.url, tmp_path / "state", agent_provider="openai",
                                openai_base_url=double.base_url, openai_model="gpt-test", openai_api_key="sk-test",
                                openai_max_retries=0)
        sim = await start_device(broker, "thermostat", f"thermostat-{suffix}")
        try:
            await wait_until(lambda: gw.daemon.registry.online_count == 1, WAIT_S)
            text, results = await run_turn(gw, "switch the thermostat to eco in a second")
            assert text == "I'll switch it to eco in a second." and results[0].ok, results
            assert results[0].result["createdBy"]["channel"] == "agent"
            await wait_until(lambda: ("set_mode", {"mode": "eco"}) in received(sim), WAIT_S)
            tools = {t["function"]["name"]: t["function"] for t in double.requests[0].body["tools"]}
            assert tools["create_schedule"]["parameters"]["required"] == ["action"]
            assert double.problems == []
        finally:
            await sim.stop()
            await gw.stop()
