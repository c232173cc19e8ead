"""The voice platform API end to end (SPEC §6, seeds/003): a real daemon on a real broker with
simulated devices, called the way a speaker platform calls it."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from daemon_harness import wait_until
from mosquitto_broker import MosquittoBroker
from voiceplatform_site import BRAND, running_site, start_device

DISCOVERY = "Tuya.Voice.Platform.Discovery"
QUERY = "Tuya.Voice.Platform.Query"
CONTROL = "Tuya.Voice.Platform.Control"


def props(answer: dict[str, Any]) -> dict[str, Any]:
    return {p["name"]: p["value"] for p in answer["result"]["properties"]}


def failed(answer: dict[str, Any], code: int) -> str:
    assert answer["success"] is False, answer
    assert answer["code"] == code, answer
    assert "result" not in answer or answer["result"] is not None
    return str(answer["msg"])


# ----------------------------------------------------------------------------- happy paths


async def test_discovery_lists_exactly_the_speakers_room(broker: MosquittoBroker, tmp_path: Path) -> None:
    async with running_site(broker.url, tmp_path) as site:
        token = await site.token()
        answer = await site.discover(token)
        assert answer["success"] is True, answer
        assert answer["message_id"] and answer["version"] == "1.0"
        assert answer["command"] == {"interface": DISCOVERY, "intent": "Discover"}
        devices = {d["device_id"]: d for d in answer["result"]["devices"]}
        assert set(devices) == {site.id(n) for n in ("light", "curtain", "ac", "thermostat", "switch", "ghost")}
        lamp = devices[site.id("light")]
        assert lamp["category"] == "light"
        assert lamp["device_name"] == "bedside lamp"
        assert lamp["device_alias_list"] == ["reading light", "lamp"]
        assert lamp["position"] == "bedroom"
        assert {"TurnOn", "TurnOff", "SetBrightness", "IncrementBrightness", "SetColor", "Query"} <= set(
            lamp["supported_intents"])
        assert lamp["online"] is True
        assert devices[site.id("ghost")]["online"] is False
        assert devices[site.id("curtain")]["position"] is None
        assert {"Open", "Close", "Pause", "SetPercentage"} <= set(devices[site.id("curtain")]["supported_intents"])
        assert {"SetTemperature", "SetMode", "SetFanSpeed"} <= set(devices[site.id("ac")]["supported_intents"])
        scenes = {s["scene_id"]: s for s in answer["result"]["scenes"]}
        assert set(scenes) == {f"SCENE#{n}-{site.suffix}" for n in ("sleep", "welcome", "lights-out")}
        assert scenes[f"SCENE#sleep-{site.suffix}"] == {
            "scene_id": f"SCENE#sleep-{site.suffix}", "scene_name": "Sleep mode", "supported_intents": ["TurnOn"]}
        # The other speaker sees only its own room.
        other = await site.discover(await site.token(site.other_speaker))
        assert [d["device_id"] for d in other["result"]["devices"]] == [site.id("light202")]
        assert [s["scene_id"] for s in other["result"]["scenes"]] == [f"SCENE#sleep202-{site.suffix}"]


async def test_query_returns_voice_units(broker: MosquittoBroker, tmp_path: Path) -> None:
    async with running_site(broker.url, tmp_path) as site:
        token = await site.token()
        light = site.devices["light"]
        await light.report_state(power=True, brightness=40, color_temperature=6500, color={"h": 120, "s": 50, "v": 90})
        registry = site.gw.daemon.registry
        await wait_until(lambda: registry.get(light.device_id).state.get("brightness") == 40)  # type: ignore[union-attr]
        answer = await site.query(token, light.device_id)
        assert answer["success"] is True, answer
        assert answer["endpoint"] == {"device_id": light.device_id}
        values = props(answer)
        assert values["powerstate"] == "on"
        assert values["brightness"] == 40
        assert values["colorTemperature"] == 100
        assert values["color"] == {"h": 120, "s": 50, "v": 90}
        thermostat = await site.query(token, site.id("thermostat"))
        assert set(props(thermostat)) >= {"temperature", "currentTemperature", "mode"}


async def test_control_goes_through_the_device_and_returns_the_new_state(broker: MosquittoBroker,
                                                                         tmp_path: Path) -> None:
    async with running_site(broker.url, tmp_path) as site:
        token = await site.token()
        light = site.devices["light"]
        answer = await site.control(token, light.device_id, "SetBrightness", 25, message_id="msg-brightness-25")
        assert answer["success"] is True, answer
        [sent] = await site.gw.daemon.store.device_commands(light.device_id, limit=1)
        assert sent.extra == {"origin": {"channel": "voiceplatform", "voiceId": site.speaker,
                                         "messageId": "msg-brightness-25"}}
        assert answer["command"] == {"interface": CONTROL, "intent": "SetBrightness"}
        assert answer["endpoint"] == {"instance_id": light.device_id}
        assert props(answer)["brightness"] == 25
        assert (light.commands_received[-1].cmd, light.commands_received[-1].params) == (
            "set_brightness", {"brightness": 25})
        assert light.state["brightness"] == 25

        answer = await site.control(token, light.device_id, "TurnOff")
        assert props(answer)["powerstate"] == "off" and light.state["power"] is False

        answer = await site.control(token, light.device_id, "SetColorTemperature", 0 + 1)
        assert light.commands_received[-1].cmd == "set_color_temperature"
        assert 2700 <= light.commands_received[-1].params["color_temperature"] <= 2740

        ac = site.devices["ac"]
        assert (await site.control(token, ac.device_id, "SetTemperature", 22))["success"] is True
        assert ac.state["target_temperature"] == 22
        assert (await site.control(token, ac.device_id, "SetMode", "cool"))["success"] is True
        assert ac.state["mode"] == "cool"
        answer = await site.control(token, ac.device_id, "SetFanSpeed", "mid")
        assert answer["success"] is True, answer
        assert ac.state["fan_speed"] == "medium" and props(answer)["fanSpeed"] == "mid"

        curtain = site.devices["curtain"]
        assert (await site.control(token, curtain.device_id, "Open"))["success"] is True
        assert curtain.state["position"] == 100
        answer = await site.control(token, curtain.device_id, "SetPercentage", 30)
        assert answer["success"] is True and curtain.state["position"] == 30

        switch = site.devices["switch"]
        assert (await site.control(token, switch.device_id, "TurnOn"))["success"] is True
        assert switch.state["power"] is True


async def test_relative_intents_clamp_at_the_limits(broker: MosquittoBroker, tmp_path: Path) -> None:
    async with running_site(broker.url, tmp_path, devices={"light": "light", "ac": "air_conditioner"}) as site:
        token = await site.token()
        light = site.devices["light"]
        await light.report_state(brightness=95)
        registry = site.gw.daemon.registry
        await wait_until(lambda: registry.get(light.device_id).state.get("brightness") == 95)  # type: ignore[union-attr]
        answer = await site.control(token, light.device_id, "IncrementBrightness")
        assert answer["success"] is True, answer
        assert props(answer)["brightness"] == 100 and light.state["brightness"] == 100
        ac = site.devices["ac"]
        await ac.report_state(target_temperature=17)
        await wait_until(lambda: registry.get(ac.device_id).state.get("target_temperature") == 17)  # type: ignore[union-attr]
        answer = await site.control(token, ac.device_id, "DecrementTemperature", 5)
        assert answer["success"] is True, answer
        assert ac.state["target_temperature"] == 16  # the spec's minimum, not 12
        # AdjustUp… is accepted as Increment…
        answer = await site.control(token, ac.device_id, "AdjustUpTemperature")
        assert answer["success"] is True, answer
        assert ac.state["target_temperature"] == 17


async def test_a_retried_message_id_runs_once(broker: MosquittoBroker, tmp_path: Path) -> None:
    async with running_site(broker.url, tmp_path, devices={"light": "light"}) as site:
        token = await site.token()
        light = site.devices["light"]
        await light.report_state(brightness=50)
        registry = site.gw.daemon.registry
        await wait_until(lambda: registry.get(light.device_id).state.get("brightness") == 50)  # type: ignore[union-attr]
        message_id = uuid.uuid4().hex
        first = await site.control(token, light.device_id, "IncrementBrightness", message_id=message_id)
        # Two retries at once and one later: all get the first answer.
        retries = await asyncio.gather(
            site.control(token, light.device_id, "IncrementBrightness", message_id=message_id),
            site.control(token, light.device_id, "IncrementBrightness", message_id=message_id),
        )
        later = await site.control(token, light.device_id, "IncrementBrightness", message_id=message_id)
        for answer in (*retries, later):
            assert {k: v for k, v in answer.items() if k != "t"} == {k: v for k, v in first.items() if k != "t"}
        assert light.state["brightness"] == 60
        assert [c.cmd for c in light.commands_received] == ["set_brightness"]
        # A new message_id runs again.
        await site.control(token, light.device_id, "IncrementBrightness")
        assert light.state["brightness"] == 70


async def test_scenes_run_their_steps_and_report_each(broker: MosquittoBroker, tmp_path: Path) -> None:
    async with running_site(broker.url, tmp_path) as site:
        token = await site.token()
        light, curtain, ac = site.devices["light"], site.devices["curtain"], site.devices["ac"]
        answer = await site.control(token, f"SCENE#sleep-{site.suffix}", "TurnOn")
        assert answer["success"] is True, answer
        assert answer["endpoint"] == {"instance_id": f"SCENE#sleep-{site.suffix}"}
        steps = answer["result"]["steps"]
        assert [(s["device_id"], s["command"], s["success"]) for s in steps] == [
            (light.device_id, "turn_off", True), (curtain.device_id, "close", True),
            (ac.device_id, "set_target_temperature", True)]
        assert light.state["power"] is False and curtain.state["position"] == 0
        assert ac.state["target_temperature"] == 24

        answer = await site.control(token, f"SCENE#welcome-{site.suffix}", "TurnOn")
        assert answer["success"] is True, answer
        assert light.state["brightness"] == 80 and curtain.state["position"] == 100

        # A step that fails (the ceiling light never connected) fails the scene, the others still run.
        answer = await site.control(token, f"SCENE#lights-out-{site.suffix}", "TurnOn")
        assert "1 of 2 steps" in failed(answer, 1103)
        steps = answer["result"]["steps"]
        assert steps[0]["success"] is True
        assert (steps[1]["success"], steps[1]["code"]) == (False, 2001)

        msg = failed(await site.control(token, f"SCENE#sleep-{site.suffix}", "TurnOff"), 2008)
        assert "TurnOn" in msg


async def test_token_lifecycle_over_http(broker: MosquittoBroker, tmp_path: Path) -> None:
    async with running_site(broker.url, tmp_path, devices={}) as site:
        first = await site.obtain()
        assert set(first) == {"token", "refresh_token", "expire_time"} and first["expire_time"] == 7200
        assert (await site.discover(first["token"]))["success"] is True

        refreshed = await site.call("GET", f"/v1.0/token/{first['refresh_token']}")
        assert refreshed["success"] is True, refreshed
        pair = refreshed["result"]
        assert pair["token"] == pair["access_token"] and pair["expire_time"] == 7200
        assert pair["uid"] == site.speaker
        # Rotation: the old pair is dead, the new one works.
        failed(await site.discover(first["token"]), 1011)
        failed(await site.call("GET", f"/v1.0/token/{first['refresh_token']}"), 1011)
        assert (await site.discover(pair["token"]))["success"] is True
        # POST is tolerated for refresh (Tuya's Python connector uses it).
        again = await site.call("POST", f"/v1.0/token/{pair['refresh_token']}")
        assert again["success"] is True, again
        current = again["result"]

        # Obtaining again gives a pair that replaces the earlier one at its first use: until
        # then the earlier one keeps working (an obtain call nobody uses cuts nobody off).
        newest = await site.obtain()
        assert (await site.discover(current["token"]))["success"] is True
        assert (await site.discover(newest["token"]))["success"] is True
        failed(await site.discover(current["token"]), 1011)
        failed(await site.call("GET", f"/v1.0/token/{current['refresh_token']}"), 1011)

        # Invalidate: needs the speaker's own token.
        query = {"code": BRAND, "industry_type": "hotel"}
        other = await site.token(site.other_speaker)
        msg = failed(await site.call("DELETE", f"/v1.0/voice/devices/{site.speaker}/token", query,
                                     access_token=other), 1106)
        assert "another speaker" in msg
        answer = await site.call("DELETE", f"/v1.0/voice/devices/{site.speaker}/token", query,
                                 access_token=newest["token"])
        assert answer == {"success": True, "t": answer["t"], "result": True}
        failed(await site.discover(newest["token"]), 1011)
        failed(await site.call("GET", f"/v1.0/token/{newest['refresh_token']}"), 1011)


async def test_an_expired_access_token_is_1010_and_refresh_still_works(broker: MosquittoBroker,
                                                                       tmp_path: Path) -> None:
    async with running_site(broker.url, tmp_path, devices={}, voiceplatform_access_token_ttl_s=60) as site:
        pair = await site.obtain()
        assert pair["expire_time"] == 60
        platform = site.gw.daemon.voice_platform
        assert platform is not None
        clock = platform.tokens
        # Move the token service's clock past the expiry instead of sleeping a minute.
        real_wall_ms = clock._clock.wall_ms
        clock._clock.wall_ms = lambda: real_wall_ms() + 61_000  # type: ignore[method-assign]
        try:
            assert "expired" in failed(await site.discover(pair["token"]), 1010)
            refreshed = await site.call("GET", f"/v1.0/token/{pair['refresh_token']}")
            assert refreshed["success"] is True, refreshed
            assert (await site.discover(refreshed["result"]["token"]))["success"] is True
        finally:
            clock._clock.wall_ms = real_wall_ms  # type: ignore[method-assign]


async def test_tokens_survive_a_restart_and_are_stored_hashed(broker: MosquittoBroker, tmp_path: Path) -> None:
    state = tmp_path / "state"
    suffix = uuid.uuid4().hex[:8]
    async with running_site(broker.url, tmp_path, devices={}, state_dir=state, suffix=suffix) as site:
        pair = await site.obtain()
        used = await site.call("GET", f"/v1.0/token/{pair['refresh_token']}")
        current = used["result"]
    async with running_site(broker.url, tmp_path, devices={}, state_dir=state, suffix=suffix) as site:
        assert (await site.discover(current["token"]))["success"] is True
        failed(await site.call("GET", f"/v1.0/token/{pair['refresh_token']}"), 1011)
    with sqlite3.connect(state / "deviceagentd.db") as db:
        dump = "\n".join(db.iterdump())
    for token in (pair["token"], pair["refresh_token"], current["token"], current["refresh_token"]):
        assert token not in dump


async def test_bearer_tokens_of_the_api_do_not_apply_to_speakers(broker: MosquittoBroker, tmp_path: Path) -> None:
    async with running_site(broker.url, tmp_path, devices={}, http_tokens=["api-secret-0123456789"]) as site:
        token = await site.token()
        assert (await site.discover(token))["success"] is True
        status, _ = await site.gw.request("GET", "/api/devices/x")
        assert status == 401
        bearer = {"Authorization": "Bearer api-secret-0123456789"}
        status, metrics = await site.gw.request("GET", "/metrics", headers=bearer)
        assert status == 200
        assert 'deviceagentd_voiceplatform_requests_total{api="discovery",code="0"} 1' in metrics
        assert 'deviceagentd_voiceplatform_requests_total{api="token",code="0"} 1' in metrics


async def test_signed_requests(broker: MosquittoBroker, tmp_path: Path) -> None:
    async with running_site(broker.url, tmp_path, devices={"light": "light"}, signing=True) as site:
        token = await site.token()  # signed by Site.call
        answer = await site.control(token, site.id("light"), "TurnOn")
        assert answer["success"] is True, answer

        path = f"/v1.0/voice/devices/{site.speaker}/token"
        query = {"code": BRAND, "industry_type": "hotel"}
        good = site.sign_headers("GET", path, query, b"")
        bad_sign = {**good, "sign": "0" * 64}
        failed(await site.call("GET", path, query, headers=bad_sign), 1004)
        stale = site.sign_headers("GET", path, query, b"", t_ms=int(good["t"]) - 600_000)
        failed(await site.call("GET", path, query, headers=stale), 1013)
        no_sign = {k: v for k, v in good.items() if k != "sign"}
        failed(await site.call("GET", path, query, headers=no_sign, signed=False), 1105)
        # The body is part of the signature: a body changed after signing fails.
        body = json.dumps({"message_id": "m1", "version": "1.0",
                           "command": {"interface": DISCOVERY, "intent": "Discover"}}).encode()
        headers = site.sign_headers("POST", "/v1.0/voice/execute", {}, body, access_token=token)
        tampered = body.replace(b"m1", b"m2")
        nonce_headers = site.sign_headers("POST", "/v1.0/voice/execute", {}, body, access_token=token, nonce="n-1")
        failed(await site.call("POST", "/v1.0/voice/execute", raw=tampered, headers=headers, signed=False), 1004)
        ok = await site.call("POST", "/v1.0/voice/execute", raw=body, headers=headers, signed=False)
        assert ok["success"] is True, ok
        # The same nonce again is a replay.
        first = await site.call("POST", "/v1.0/voice/execute", raw=body, headers=nonce_headers, signed=False)
        assert first["success"] is True, first
        failed(await site.call("POST", "/v1.0/voice/execute", raw=body, headers=nonce_headers, signed=False), 1013)


# ----------------------------------------------------------------------------- bad input


async def test_bad_token_requests(broker: MosquittoBroker, tmp_path: Path) -> None:
    async with running_site(broker.url, tmp_path, devices={}) as site:
        path = f"/v1.0/voice/devices/{site.speaker}/token"
        # An unknown voice_id and a wrong code get the same answer: a guesser learns nothing.
        unknown = await site.call("GET", "/v1.0/voice/devices/nobody/token", {"code": BRAND, "industry_type": "hotel"})
        wrong_code = await site.call("GET", path, {"code": "other", "industry_type": "hotel"})
        assert failed(unknown, 1106) == failed(wrong_code, 1106)
        assert "nobody" not in unknown["msg"] and "other" not in wrong_code["msg"]
        assert "code" in failed(await site.call("GET", path, {"industry_type": "hotel"}), 1100)
        assert "industry_type" in failed(await site.call("GET", path, {"code": BRAND}), 1100)
        assert "industry_type" in failed(await site.call("GET", path, {"code": BRAND, "industry_type": "home"}),
                                         1109)
        failed(await site.call("GET", "/v1.0/token/not-a-token"), 1011)
        # Five failures for one speaker within a minute: the other speaker's calls show the rest.
        other_path = f"/v1.0/voice/devices/{site.other_speaker}/token"
        query = {"code": BRAND, "industry_type": "hotel"}
        failed(await site.call("DELETE", other_path, query), 1002)
        failed(await site.call("DELETE", other_path, query, access_token="f" * 32), 1011)


async def test_bad_execute_envelopes(broker: MosquittoBroker, tmp_path: Path) -> None:
    async with running_site(broker.url, tmp_path, devices={"light": "light"}) as site:
        token = await site.token()
        light = site.id("light")
        discover = {"interface": DISCOVERY, "intent": "Discover"}

        async def send(body: Any, access_token: str = token) -> dict[str, Any]:
            return await site.call("POST", "/v1.0/voice/execute", body=body, access_token=access_token)

        failed(await send({"message_id": "m", "version": "1.0", "command": discover}, access_token=""), 1002)
        failed(await send({"message_id": "m", "version": "1.0", "command": discover}, access_token="0" * 32), 1011)
        assert "message_id" in failed(await send({"version": "1.0", "command": discover}), 1100)
        assert "message_id" in failed(await send({"message_id": 7, "version": "1.0", "command": discover}), 1104)
        assert "version" in failed(await send({"message_id": "m", "command": discover}), 1100)
        assert "command" in failed(await send({"message_id": "m", "version": "1.0"}), 1100)
        answer = await send({"message_id": "m2", "version": "1.0", "command": {"interface": CONTROL},
                             "endpoint": {"instance_id": light}})
        assert "intent" in failed(answer, 1100)
        # The failure still echoes what the request carried.
        assert answer["message_id"] == "m2" and answer["endpoint"] == {"instance_id": light}
        failed(await send({"message_id": "m", "version": "1.0", "command": {"interface": "Tuya.Nope",
                                                                             "intent": "Discover"}}), 1109)
        failed(await send({"message_id": "m3", "version": "1.0",
                           "command": {"interface": DISCOVERY, "intent": "TurnOn"}}), 2008)
        both = {"device_id": light, "instance_id": light}
        assert "got both" in failed(await send({"message_id": "m4", "version": "1.0",
                                                "command": {"interface": CONTROL, "intent": "TurnOn"},
                                                "endpoint": both}), 1109)
        assert "got neither" in failed(await send({"message_id": "m5", "version": "1.0",
                                                   "command": {"interface": CONTROL, "intent": "TurnOn"},
                                                   "endpoint": {}}), 1109)
        failed(await send({"message_id": "m6", "version": "1.0",
                           "command": {"interface": QUERY, "intent": "Query"}}), 1100)
        failed(await site.call("POST", "/v1.0/voice/execute", raw=b"{not json", access_token=token), 1109)
        failed(await site.call("POST", "/v1.0/voice/execute", raw=b"[1, 2]", access_token=token), 1109)
        failed(await site.call("POST", "/v1.0/voice/execute", raw=b"x" * (70 * 1024), access_token=token), 1109)
        assert "128" in failed(await send({"message_id": "m" * 129, "version": "1.0", "command": discover}), 1109)
        assert "command" in failed(await send({"message_id": "m7", "version": "1.0", "command": "Discover"}), 1104)
        turn_on = {"interface": CONTROL, "intent": "TurnOn"}
        assert "endpoint" in failed(await send({"message_id": "m8", "version": "1.0", "command": turn_on,
                                                "endpoint": light}), 1104)
        assert "endpoint.device_id" in failed(await send({"message_id": "m9", "version": "1.0", "command": turn_on,
                                                          "endpoint": {"device_id": 7}}), 1104)
        assert "Query" in failed(await send({"message_id": "m10", "version": "1.0",
                                             "command": {"interface": QUERY, "intent": "Discover"},
                                             "endpoint": {"device_id": light}}), 2008)
        assert "scenes" in failed(await site.query(token, f"SCENE#sleep-{site.suffix}"), 2003)
        assert site.devices["light"].commands_received == []


async def test_bodies_arriving_in_pieces_are_read_whole(broker: MosquittoBroker, tmp_path: Path) -> None:
    async with running_site(broker.url, tmp_path, devices={}) as site:
        token = await site.token()

        async def send_in_pieces(pieces: list[bytes]) -> dict[str, Any]:
            async def chunks() -> AsyncIterator[bytes]:
                for piece in pieces:
                    yield piece
                    await asyncio.sleep(0.05)  # lets each piece reach the gateway on its own

            headers = {"access_token": token, "Content-Type": "application/json"}
            async with site.gw.session.post(site.gw.base_url + "/v1.0/voice/execute", data=chunks(),
                                            headers=headers) as resp:
                assert resp.status == 200
                answer: dict[str, Any] = await resp.json()
                return answer

        body = json.dumps({"message_id": "m1", "version": "1.0",
                           "command": {"interface": DISCOVERY, "intent": "Discover"}}).encode()
        answer = await send_in_pieces([body[:20], body[20:50], body[50:]])
        assert answer["success"] is True, answer
        assert answer["message_id"] == "m1"
        # Chunked, so no Content-Length to refuse up front: the limit holds while reading.
        msg = failed(await send_in_pieces([b"x" * (40 * 1024), b"x" * (40 * 1024)]), 1109)
        assert "65536" in msg


async def test_bad_targets_intents_and_values(broker: MosquittoBroker, tmp_path: Path) -> None:
    async with running_site(broker.url, tmp_path, devices={"light": "light", "ac": "air_conditioner",
                                                           "light202": "light"}) as site:
        token = await site.token()
        light, ac = site.id("light"), site.id("ac")
        assert "not in this speaker's room" in failed(await site.control(token, site.id("light202"), "TurnOn"), 1106)
        failed(await site.query(token, site.id("light202")), 1106)
        failed(await site.control(token, f"SCENE#sleep202-{site.suffix}", "TurnOn"), 1106)
        failed(await site.control(token, "no-such-device", "TurnOn"), 2010)
        failed(await site.control(token, "SCENE#no-such-scene", "TurnOn"), 2010)
        failed(await site.control(token, site.id("ghost"), "TurnOn"), 2001)
        failed(await site.query(token, site.id("ghost")), 2001)
        failed(await site.control(token, light, "Open"), 2003)
        failed(await site.control(token, light, "Fly"), 2008)
        failed(await site.control(token, ac, "SetMode", "turbo"), 2008)
        failed(await site.control(token, light, "SetBrightness", "bright"), 1104)
        assert "1..100" in failed(await site.control(token, light, "SetBrightness", 250), 1101)
        failed(await site.control(token, light, "SetBrightness"), 1100)
        assert site.devices["light"].commands_received == []


async def test_device_errors_offline_and_silence(broker: MosquittoBroker, tmp_path: Path) -> None:
    async with running_site(broker.url, tmp_path, devices={"light": "light"},
                            voiceplatform_command_timeout_ms=300) as site:
        token = await site.token()
        light = site.devices["light"]
        light.model.execute = lambda command: {  # type: ignore[method-assign]
            "code": 7, "msg": "lamp failure", "requestId": command.request_id}
        msg = failed(await site.control(token, light.device_id, "TurnOn"), 1103)
        assert "code 7" in msg and "lamp failure" in msg

        silent = await start_device(site, broker.url, "curtain", "curtain", answer=False)
        msg = failed(await site.control(token, silent.device_id, "Open"), 500)
        assert "300 ms" in msg

        await light.stop()
        registry = site.gw.daemon.registry
        await wait_until(lambda: not registry.get(light.device_id).online)  # type: ignore[union-attr]
        assert "offline" in failed(await site.control(token, light.device_id, "TurnOn"), 2001)
        failed(await site.query(token, light.device_id), 2001)


async def test_the_api_is_off_without_a_rooms_file(broker: MosquittoBroker, tmp_path: Path) -> None:
    from daemon_harness import start_daemon

    gw = await start_daemon(broker.url, tmp_path / "state")
    try:
        assert gw.daemon.voice_platform is None
        status, body = await gw.request("POST", "/v1.0/voice/execute", json_body={})
        assert status == 404, body
    finally:
        await gw.stop()
