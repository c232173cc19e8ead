"""`/xiaozhi/ota/` on the voice port, asked the way stock XiaoZhi firmware asks (78/xiaozhi-esp32
`main/ota.cc` SetupHttp + CheckVersion, `main/boards/common/board.cc` GetSystemInfoJson) and read
the way it reads the answer; then the firmware replay connects where the answer points."""

from __future__ import annotations

import json
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp
import pytest
from test_openapi import assert_valid
from test_voice_session import start_rig
from xiaozhi_firmware import FirmwareDevice

from deviceagentd.config import VoiceXiaozhiConfig
from deviceagentd.http.openapi import load_openapi

TOKEN = "speaker-token-0123456789"
MAC = "a0:85:e3:11:22:33"


def system_info(version: str = "2.0.3") -> str:
    """Board::GetSystemInfoJson, abridged to the fields a server reads."""
    return ('{"version":2,"language":"zh-CN","flash_size":16777216,"minimum_free_heap_size":"123456",'
            '"mac_address":"' + MAC + '","uuid":"9c1d8f0e-6a55-4d7e-8d0e-0f5c8a6b1f2a","chip_model_name":"esp32s3",'
            '"chip_info":{"model":9,"cores":2,"revision":2,"features":18},"application":{"name":"xiaozhi",'
            '"version":"' + version + '","compile_time":"Aug  8 2026T08:33:45Z","idf_version":"v5.4.1",'
            '"elf_sha256":"00"},"partition_table":[],"ota":{"label":"ota_0"},"board":{"type":"bread-compact-wifi"}}')


def firmware_headers() -> dict[str, str]:
    """Ota::SetupHttp."""
    return {"Activation-Version": "1", "Device-Id": MAC, "Client-Id": "9c1d8f0e-6a55-4d7e-8d0e-0f5c8a6b1f2a",
            "User-Agent": "bread-compact-wifi/2.0.3", "Accept-Language": "zh-CN", "Content-Type": "application/json"}


def ota_url(ws_url: str) -> str:
    return ws_url.replace("/ws/voice", "/xiaozhi/ota/")


async def check_version(url: str, body: str | None) -> tuple[int, Any]:
    """CheckVersion: POST with the system information (GET when there is none); status 200 and a
    JSON object or the firmware gives up."""
    async with aiohttp.ClientSession() as http:
        method = "POST" if body else "GET"
        async with http.request(method, url, data=body, headers=firmware_headers()) as resp:
            text = await resp.text()
            return resp.status, json.loads(text) if resp.status == 200 else text


def read_like_the_firmware(answer: dict[str, Any]) -> dict[str, Any]:
    """What CheckVersion keeps: websocket settings (strings and numbers), server time, firmware;
    and the answer is the one the OpenAPI document describes."""
    assert_valid(load_openapi(), {"$ref": "#/components/schemas/XiaozhiOtaAnswer"}, answer, "OTA answer")
    websocket = answer["websocket"]
    assert isinstance(websocket, dict)
    assert all(isinstance(v, str | int) for v in websocket.values())
    server_time = answer["server_time"]
    assert isinstance(server_time["timestamp"], int) and isinstance(server_time["timezone_offset"], int)
    firmware = answer["firmware"]
    assert isinstance(firmware["version"], str) and isinstance(firmware["url"], str)
    return websocket


@pytest.mark.parametrize("method", ["POST", "GET"])
async def test_a_speaker_finds_the_gateway_through_ota_and_connects(method: str) -> None:
    rig = await start_rig(tokens=(TOKEN,))
    rig.service.zone = ZoneInfo("Asia/Shanghai")
    try:
        before = rig.service.clock.wall_ms()
        status, answer = await check_version(ota_url(rig.url) + f"?authorization={TOKEN}",
                                             system_info() if method == "POST" else None)
        assert status == 200, answer
        websocket = read_like_the_firmware(answer)
        host = rig.url.split("//", 1)[1].split("/", 1)[0]
        assert websocket == {"url": f"ws://{host}/ws/voice", "token": TOKEN}
        assert answer["server_time"]["timezone_offset"] == 480
        assert before <= answer["server_time"]["timestamp"] <= rig.service.clock.wall_ms()
        assert answer["firmware"] == {"version": "2.0.3" if method == "POST" else "", "url": ""}  # no update
        # OpenAudioChannel with what the OTA answer stored.
        device = FirmwareDevice(websocket["url"], token=websocket["token"], mac=MAC)
        assert await device.open()
        await device.close()
    finally:
        await rig.close()


async def test_tokens_are_checked_as_on_the_voice_socket() -> None:
    rig = await start_rig(tokens=(TOKEN,))
    try:
        status, body = await check_version(ota_url(rig.url), system_info())
        assert status == 401 and "unauthorized" in body
        status, body = await check_version(ota_url(rig.url) + "?authorization=wrong-token", system_info())
        assert status == 401
        async with aiohttp.ClientSession() as http, http.post(ota_url(rig.url), data=system_info(),
                             headers={**firmware_headers(), "Authorization": f"Bearer {TOKEN}"}) as resp:
            assert resp.status == 200
            assert (await resp.json())["websocket"]["token"] == TOKEN
    finally:
        await rig.close()


async def test_the_configured_url_wins_and_without_tokens_the_token_is_empty() -> None:
    rig = await start_rig(xiaozhi=VoiceXiaozhiConfig(websocket_url="wss://gateway.room-1204.example/ws/voice"))
    try:
        status, answer = await check_version(ota_url(rig.url), system_info())
        assert status == 200
        assert answer["websocket"] == {"url": "wss://gateway.room-1204.example/ws/voice", "token": ""}
    finally:
        await rig.close()


@pytest.mark.parametrize("body", ["not json at all", "[1, 2, 3]", '{"application": "x"}',
                                  '{"application":{"version":7}}', "x" * 70000])
async def test_odd_bodies_still_get_an_answer(body: str) -> None:
    rig = await start_rig()
    try:
        status, answer = await check_version(ota_url(rig.url), body)
        assert status == 200
        read_like_the_firmware(answer)
        assert answer["firmware"]["version"] == ""
    finally:
        await rig.close()
