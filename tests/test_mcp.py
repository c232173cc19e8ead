"""The MCP server at /mcp: the official MCP Python SDK client on both protocol eras (2025-11-25 with
sessions, 2026-07-28 stateless), and every bad input on the wire (malformed JSON-RPC, unknown
methods and tools, wrong argument types, a tool beyond a token's allow-list, sessions that do not
exist, headers that disagree with the body, foreign origins), on a real gateway with simulated
devices. Nothing a refused call names reaches a device, and every call is in the call log.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import httpx2
import pytest
from daemon_harness import RunningDaemon, start_daemon, wait_until
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from mosquitto_broker import MosquittoBroker
from simulated import start_device

from deviceagentd.simulator import SimulatedDevice

WAIT_S = 15.0
API_TOKEN = "api-token-0123456789abcdef"
CLAUDE_TOKEN = "claude-token-0123456789abcdef"
HA_TOKEN = "ha-token-0123456789abcdef"
MODERN = "2026-07-28"
LEGACY = "2025-11-25"
ALL_TOOLS = ["list_devices", "get_state", "get_events", "list_schedules", "send_command", "run_scene",
             "create_schedule", "delete_schedule"]
READ_TOOLS = ["list_devices", "get_state", "get_events", "list_schedules"]


@dataclass
class Site:
    gw: RunningDaemon
    suffix: str
    thermostat: SimulatedDevice
    mute: SimulatedDevice

    @property
    def url(self) -> str:
        return self.gw.base_url + "/mcp"

    def id(self, name: str) -> str:
        return f"{name}-{self.suffix}"

    def client(self, mode: str, token: str = API_TOKEN) -> Client:
        http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=20)
        return Client(streamable_http_client(self.url, http_client=http), mode=mode)

    async def post(self, body: Any, headers: dict[str, str] | None = None, token: str | None = API_TOKEN,
                   raw: bytes | None = None) -> tuple[int, dict[str, str], Any]:
        sent = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}
        if token is not None:
            sent["Authorization"] = f"Bearer {token}"
        sent.update(headers or {})
        data = raw if raw is not None else json.dumps(body).encode()
        async with self.gw.session.post(self.url, data=data, headers=sent) as resp:
            text = await resp.text()
            decoded = json.loads(text) if text and resp.content_type == "application/json" else text
            return resp.status, dict(resp.headers), decoded

    async def modern(self, method: str, params: dict[str, Any] | None = None, request_id: Any = 1,
                     headers: dict[str, str] | None = None, token: str | None = API_TOKEN,
                     version: str = MODERN) -> tuple[int, dict[str, str], Any]:
        body_params = {**(params or {}), "_meta": {"io.modelcontextprotocol/protocolVersion": version,
                                                   "io.modelcontextprotocol/clientCapabilities": {}}}
        sent = {"MCP-Protocol-Version": version, "Mcp-Method": method}
        if method == "tools/call":
            sent["Mcp-Name"] = str(body_params.get("name"))
        sent.update(headers or {})
        return await self.post({"jsonrpc": "2.0", "id": request_id, "method": method, "params": body_params},
                               sent, token)

    async def session(self, token: str = API_TOKEN, version: str = LEGACY) -> str:
        status, headers, answer = await self.post(
            {"jsonrpc": "2.0", "id": 0, "method": "initialize",
             "params": {"protocolVersion": version, "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}},
            token=token)
        assert status == 200, answer
        session_id = headers["Mcp-Session-Id"]
        status, _, _ = await self.post({"jsonrpc": "2.0", "method": "notifications/initialized"},
                                       {"Mcp-Session-Id": session_id}, token)
        assert status == 202
        return session_id

    async def legacy(self, session_id: str, method: str, params: dict[str, Any] | None = None,
                     token: str = API_TOKEN, request_id: Any = 1) -> tuple[int, dict[str, str], Any]:
        return await self.post({"jsonrpc": "2.0", "id": request_id, "method": method, "params": params or {}},
                               {"Mcp-Session-Id": session_id, "MCP-Protocol-Version": LEGACY}, token)


def rooms_file(path: Path, suffix: str) -> Path:
    path.write_text(f"""
[[rooms]]
id = "101"
  [[rooms.devices]]
  device_id = "thermostat-{suffix}"
  product = "thermostat"
  name = "thermostat"
  [[rooms.scenes]]
  id = "eco-{suffix}"
  name = "Eco"
  steps = [{{ device_id = "thermostat-{suffix}", command = "set_mode", params = {{ mode = "eco" }} }}]
""")
    return path



@pytest.fixture
async def site(broker: MosquittoBroker, tmp_path: Path) -> AsyncIterator[Site]:
    suffix = uuid.uuid4().hex[:6]
    gw = await start_daemon(
        broker.url, tmp_path / "state", http_tokens=[API_TOKEN],
        mcp_clients=[f"claude:{CLAUDE_TOKEN}:read", f"home-assistant:{HA_TOKEN}:list_devices,send_command"],
        mcp_allowed_origins=["http://console.example:8080"],
        voiceplatform_rooms_file=str(rooms_file(tmp_path / "rooms.toml", suffix)))
    thermostat = await start_device(broker, "thermostat", f"thermostat-{suffix}")
    mute = await start_device(broker, "thermostat", f"mute-{suffix}", answer=False)
    try:
        await wait_until(lambda: gw.daemon.registry.online_count == 2, WAIT_S)
        yield Site(gw, suffix, thermostat, mute)
    finally:
        await thermostat.stop()
        await mute.stop()
        await gw.stop()


def commands_of(sim: SimulatedDevice) -> list[tuple[Any, Any]]:
    return [(c.cmd, c.params) for c in sim.commands_received]


# ----------------------------------------------------------------------------- the official SDK client


@pytest.mark.parametrize("mode", ["legacy", "auto"])
async def test_the_official_sdk_client_uses_every_tool(site: Site, mode: str) -> None:
    thermostat = site.id("thermostat")
    async with site.client(mode) as client:
        assert client.protocol_version == (LEGACY if mode == "legacy" else MODERN)
        assert client.server_info is not None and client.server_info.name == "deviceagentd"
        tools = {tool.name: tool for tool in (await client.list_tools()).tools}
        assert list(tools) == ALL_TOOLS
        assert all(len(name) <= 64 for name in tools)
        # Schemas generated from the DeviceSpecs: the thermostat's commands and parameters.
        send = tools["send_command"].input_schema
        assert {"set_target_temperature", "set_mode"} <= set(send["properties"]["command"]["enum"])
        # The thermostat and the air conditioner both take target_temperature, with other ranges.
        target = send["properties"]["params"]["properties"]["target_temperature"]["anyOf"]
        ranges = [(t["type"], t["minimum"], t["maximum"]) for t in target]
        assert ranges == [("integer", 16, 30), ("number", 5, 35)]
        assert tools["get_state"].annotations is not None and tools["get_state"].annotations.read_only_hint

        listed = await client.call_tool("list_devices", {"product": "thermostat", "limit": 1})
        assert not listed.is_error and listed.structured_content is not None
        page = listed.structured_content
        assert page["total"] == 2 and len(page["devices"]) == 1 and "state" not in page["devices"][0]
        rest = await client.call_tool("list_devices", {"product": "thermostat", "cursor": page["nextCursor"]})
        assert rest.structured_content is not None and "nextCursor" not in rest.structured_content

        done = await client.call_tool("send_command", {"deviceId": thermostat, "command": "set_target_temperature",
                                                       "params": {"target_temperature": 23}})
        assert not done.is_error and done.structured_content is not None and done.structured_content["ok"] is True
        assert ("set_target_temperature", {"target_temperature": 23}) in commands_of(site.thermostat)
        record = await site.gw.daemon.store.get_command(done.structured_content["requestId"])
        assert record is not None and record.extra == {"origin": {"channel": "mcp", "client": "api"}}

        await wait_until(lambda: site.gw.daemon.registry.get(thermostat).state.get("target_temperature") == 23,  # type: ignore[union-attr]
                         WAIT_S)
        state = await client.call_tool("get_state", {"deviceId": thermostat, "fields": ["target_temperature"]})
        assert state.structured_content is not None
        assert state.structured_content["state"] == {"target_temperature": 23}

        events = await client.call_tool("get_events", {"deviceId": thermostat, "since": "2020-01-01T00:00:00Z",
                                                       "limit": 1})
        assert events.structured_content is not None and events.structured_content["events"][0]["event"] == "online"

        scene = await client.call_tool("run_scene", {"sceneId": f"SCENE#eco-{site.suffix}"})
        assert not scene.is_error and ("set_mode", {"mode": "eco"}) in commands_of(site.thermostat)
        [step] = await site.gw.daemon.store.device_commands(thermostat, limit=1)
        assert (step.command, step.extra) == ("set_mode", {"origin": {
            "channel": "mcp", "client": "api", "sceneId": f"SCENE#eco-{site.suffix}"}})

        made = await client.call_tool("create_schedule", {"cron": "0 23 * * *", "action": {
            "type": "command", "deviceId": thermostat, "command": "set_mode", "params": {"mode": "eco"}}})
        assert not made.is_error and made.structured_content is not None
        assert made.structured_content["createdBy"] == {"channel": "mcp", "client": "api"}
        listing = await client.call_tool("list_schedules", {})
        assert listing.structured_content is not None and listing.structured_content["total"] == 1
        gone = await client.call_tool("delete_schedule", {"scheduleId": made.structured_content["id"]})
        assert gone.structured_content == {"deleted": True, "id": made.structured_content["id"]}

        # A tool that cannot do it says so to the model (isError), it is not a protocol error.
        missing = await client.call_tool("get_state", {"deviceId": "nobody"})
        assert missing.is_error and "no device 'nobody'" in missing.content[0].text  # type: ignore[union-attr]
        wrong = await client.call_tool("list_devices", {"limit": "ten"})
        assert wrong.is_error and "limit must be an integer" in wrong.content[0].text  # type: ignore[union-attr]
        with pytest.raises(MCPError, match="Unknown tool: explode"):
            await client.call_tool("explode", {})
    calls = await calls_logged(site)
    assert {(c.client, c.tool, c.outcome) for c in calls} >= {
        ("api", "send_command", "ok"), ("api", "get_state", "error"), ("api", "explode", "refused")}


async def calls_logged(site: Site) -> list[Any]:
    await site.gw.daemon.store.flush()
    return await site.gw.daemon.store.recent_mcp_calls(limit=100)


async def test_a_client_limited_to_reading_cannot_act(site: Site) -> None:
    async with site.client("auto", CLAUDE_TOKEN) as client:
        assert [tool.name for tool in (await client.list_tools()).tools] == READ_TOOLS
        with pytest.raises(MCPError, match="not allowed for client 'claude'"):
            await client.call_tool("send_command", {"deviceId": site.id("thermostat"), "command": "set_mode",
                                                    "params": {"mode": "heat"}})
    async with site.client("legacy", HA_TOKEN) as client:
        assert [tool.name for tool in (await client.list_tools()).tools] == ["list_devices", "send_command"]
        with pytest.raises(MCPError, match="not allowed for client 'home-assistant'"):
            await client.call_tool("create_schedule", {"inSeconds": 5, "action": {
                "type": "command", "deviceId": site.id("thermostat"), "command": "set_mode",
                "params": {"mode": "heat"}}})
    assert ("set_mode", {"mode": "heat"}) not in commands_of(site.thermostat)
    assert site.gw.daemon.schedules.count == 0
    refused = [(c.client, c.tool) for c in await calls_logged(site) if c.outcome == "refused"]
    assert ("claude", "send_command") in refused and ("home-assistant", "create_schedule") in refused
    # A client's token opens /mcp only, not the rest of the API.
    status, _ = await site.gw.request("GET", "/api/products", headers={"Authorization": f"Bearer {CLAUDE_TOKEN}"})
    assert status == 401


async def test_read_only_mode_offers_no_tool_that_changes_anything(broker: MosquittoBroker, tmp_path: Path) -> None:
    gw = await start_daemon(broker.url, tmp_path / "state", mcp_read_only="true")
    try:
        site = Site(gw, "", None, None)  # type: ignore[arg-type]
        status, _, answer = await site.modern("tools/list", token=None)
        assert status == 200 and [t["name"] for t in answer["result"]["tools"]] == READ_TOOLS
        status, _, answer = await site.modern("tools/call", {"name": "send_command", "arguments": {
            "deviceId": "x", "command": "y"}}, token=None)
        assert answer["error"]["code"] == -32602 and "Unknown tool: send_command" in answer["error"]["message"]
    finally:
        await gw.stop()


# ----------------------------------------------------------------------------- the wire, era by era


async def test_modern_requests_discover_and_results_carry_their_type(site: Site) -> None:
    status, headers, answer = await site.modern("server/discover")
    assert status == 200 and "Mcp-Session-Id" not in headers
    result = answer["result"]
    assert result["supportedVersions"] == [MODERN, "2025-11-25", "2025-06-18", "2025-03-26"]
    assert result["resultType"] == "complete" and result["capabilities"] == {"tools": {"listChanged": False}}
    assert result["_meta"]["io.modelcontextprotocol/serverInfo"]["name"] == "deviceagentd"
    status, _, answer = await site.modern("tools/list")
    assert (answer["result"]["ttlMs"], answer["result"]["cacheScope"]) == (300_000, "private")


async def test_protocol_versions_are_negotiated(site: Site) -> None:
    for asked, given in (("2025-06-18", "2025-06-18"), ("2025-03-26", "2025-03-26"), ("2024-11-05", LEGACY),
                         ("2099-01-01", LEGACY)):
        status, headers, answer = await site.post({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": asked, "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}})
        assert status == 200 and answer["result"]["protocolVersion"] == given, answer
        assert headers["Mcp-Session-Id"].isascii() and len(headers["Mcp-Session-Id"]) >= 32
    status, _, answer = await site.modern("tools/list", version="1900-01-01")
    assert status == 400 and answer["error"]["code"] == -32022
    assert answer["error"]["data"] == {"supported": [MODERN, "2025-11-25", "2025-06-18", "2025-03-26"],
                                       "requested": "1900-01-01"}
    # A session speaks the version it negotiated.
    session = await site.session(version="2025-06-18")
    status, _, answer = await site.legacy(session, "tools/list")
    assert status == 400 and "not this session's" in answer["error"]["message"]


@pytest.mark.parametrize(("raw", "code"), [
    (b"{not json", -32700),
    (b"[]", -32600),
    (b'[{"jsonrpc": "2.0", "id": 1, "method": "tools/list"}]', -32600),
    (b'"tools/list"', -32600),
    (b'{"id": 1, "method": "tools/list"}', -32600),
    (b'{"jsonrpc": "1.0", "id": 1, "method": "tools/list"}', -32600),
    (b'{"jsonrpc": "2.0", "id": null, "method": "tools/list"}', -32600),
    (b'{"jsonrpc": "2.0", "id": true, "method": "tools/list"}', -32600),
    (b'{"jsonrpc": "2.0", "id": 1, "method": 7}', -32600),
    (b'{"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": [1]}', -32600),
    (b'{"jsonrpc": "2.0", "id": 1}', -32600),
    (b'{"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {"x": NaN}}', -32700),
])
async def test_malformed_json_rpc_is_400_with_a_json_rpc_error(site: Site, raw: bytes, code: int) -> None:
    status, _, answer = await site.post(None, raw=raw)
    assert status == 400, answer
    assert answer["jsonrpc"] == "2.0" and answer["error"]["code"] == code and answer["error"]["message"]


async def test_unknown_methods_and_tools(site: Site) -> None:
    status, _, answer = await site.modern("prompts/list")
    assert (status, answer["error"]["code"]) == (404, -32601)
    status, _, answer = await site.modern("ping")  # gone in 2026
    assert (status, answer["error"]["code"]) == (404, -32601)
    session = await site.session()
    status, _, answer = await site.legacy(session, "resources/list")
    assert (status, answer["error"]["code"], answer["id"]) == (200, -32601, 1)
    status, _, answer = await site.legacy(session, "ping", request_id="p-1")
    assert (status, answer) == (200, {"jsonrpc": "2.0", "id": "p-1", "result": {}})
    for params in ({"name": "turn_everything_off", "arguments": {}}, {"arguments": {}},
                   {"name": "list_devices", "arguments": [1, 2]}):
        status, _, answer = await site.legacy(session, "tools/call", params)
        assert answer["error"]["code"] == -32602, (params, answer)
    status, _, answer = await site.legacy(session, "tools/list", {"cursor": "page-2"})
    assert answer["error"]["code"] == -32602


@pytest.mark.parametrize(("tool", "arguments", "words"), [
    ("list_devices", {"limit": 0}, "limit must be an integer from 1 to 200"),
    ("list_devices", {"status": "sleeping"}, "status must be online or offline"),
    ("list_devices", {"product": "fridge"}, "no product 'fridge'"),
    ("list_devices", {"includeState": "yes"}, "includeState must be true or false"),
    ("list_devices", {"colour": "red"}, "unknown argument(s) colour"),
    ("get_state", {}, "deviceId is required"),
    ("get_state", {"deviceId": 42}, "deviceId is required"),
    ("get_state", {"deviceId": "thermostat", "fields": "target_temperature"}, "fields must be a list"),
    ("get_state", {"deviceId": "thermostat", "fields": ["colour"]}, "has no field colour"),
    ("get_events", {"since": "yesterday"}, "since must be an ISO 8601 date-time"),
    ("get_events", {"levels": ["panic"]}, "levels must be a list"),
    ("get_events", {"cursor": "abc"}, "cursor must be the nextCursor"),
    ("send_command", {"deviceId": "thermostat", "command": "set_target_temperature",
                      "params": {"target_temperature": "warm"}}, "must be a number"),
    ("send_command", {"deviceId": "thermostat", "command": "set_target_temperature",
                      "params": {"target_temperature": 99}}, "must be at most 35"),
    ("send_command", {"deviceId": "thermostat", "command": "fly"}, "not a command of thermostat"),
    ("send_command", {"deviceId": "thermostat", "command": "set_mode", "params": {"mode": "eco"},
                      "timeoutMs": 5}, "timeoutMs must be an integer"),
    ("send_command", {"deviceId": "thermostat", "command": "set_mode", "params": ["eco"]}, "params must be an object"),
    ("run_scene", {"sceneId": "SCENE#nope"}, "no scene"),
    ("create_schedule", {"at": "2020-01-01T00:00", "action": {"type": "alarm", "speaker": "x"}}, "in the past"),
    ("create_schedule", {"inSeconds": 5, "action": {"type": "say", "text": "hi"}}, "say which speaker"),
    ("delete_schedule", {"scheduleId": "sch-nobody"}, "no schedule 'sch-nobody'"),
])
async def test_wrong_arguments_are_tool_errors_a_model_can_correct(site: Site, tool: str, arguments: dict[str, Any],
                                                                   words: str) -> None:
    arguments = {k: (site.id(v) if k == "deviceId" and v == "thermostat" else v) for k, v in arguments.items()}
    before = len(site.thermostat.commands_received)
    status, _, answer = await site.modern("tools/call", {"name": tool, "arguments": arguments})
    assert status == 200, answer
    result = answer["result"]
    assert result["isError"] is True and result["resultType"] == "complete"
    assert words in result["content"][0]["text"], result
    assert len(site.thermostat.commands_received) == before


async def test_sessions_that_do_not_exist_or_belong_to_another_client(site: Site) -> None:
    status, _, answer = await site.legacy("no-such-session", "tools/list")
    assert status == 404 and "initialize again" in answer["error"]["message"]
    mine = await site.session(HA_TOKEN)
    status, _, _ = await site.legacy(mine, "tools/list", token=CLAUDE_TOKEN)
    assert status == 404
    status, _, answer = await site.post({"jsonrpc": "2.0", "id": 1, "method": "tools/list"})
    assert status == 400 and "initialize" in answer["error"]["message"]
    async with site.gw.session.delete(site.url, headers={"Authorization": f"Bearer {HA_TOKEN}",
                                                         "Mcp-Session-Id": mine}) as resp:
        assert resp.status == 200
    status, _, _ = await site.legacy(mine, "tools/list", token=HA_TOKEN)
    assert status == 404
    async with site.gw.session.delete(site.url, headers={"Authorization": f"Bearer {HA_TOKEN}"}) as resp:
        assert resp.status == 400


@pytest.mark.parametrize(("headers", "words"), [
    ({"MCP-Protocol-Version": "2025-11-25"}, "MCP-Protocol-Version"),
    ({"Mcp-Method": "tools/list"}, "Mcp-Method"),
    ({"Mcp-Name": "get_state"}, "Mcp-Name"),
    ({"Mcp-Name": "=?base64?!!!?="}, "base64"),
])
async def test_headers_that_disagree_with_the_body_are_refused(site: Site, headers: dict[str, str],
                                                               words: str) -> None:
    status, _, answer = await site.modern("tools/call", {"name": "list_devices", "arguments": {}}, headers=headers)
    assert (status, answer["error"]["code"]) == (400, -32020) and words in answer["error"]["message"], answer


async def test_a_base64_tool_name_header_is_decoded(site: Site) -> None:
    status, _, answer = await site.modern("tools/call", {"name": "list_devices", "arguments": {}},
                                          headers={"Mcp-Name": "=?base64?bGlzdF9kZXZpY2Vz?="})
    assert status == 200 and answer["result"]["isError"] is False


async def test_origin_tokens_and_http_rules(site: Site) -> None:
    status, _, answer = await site.modern("tools/list", headers={"Origin": "http://evil.example"})
    assert status == 403 and "Origin" in answer["error"]["message"]
    # DNS rebinding: the attacker's name resolves to the gateway, so the browser sends that name as
    # Host and as Origin; it is still refused.
    port = site.url.split(":")[2].split("/")[0]
    status, _, _ = await site.modern("tools/list", headers={"Origin": f"http://evil.example:{port}",
                                                             "Host": f"evil.example:{port}"})
    assert status == 403
    status, headers, _ = await site.modern("tools/list", headers={"Origin": "http://console.example:8080"})
    assert status == 200 and headers["Access-Control-Allow-Origin"] == "http://console.example:8080"
    own = site.gw.base_url  # the gateway's own pages
    status, _, _ = await site.modern("tools/list", headers={"Origin": own})
    assert status == 200
    status, headers, answer = await site.modern("tools/list", token=None)
    assert status == 401 and headers["WWW-Authenticate"].startswith("Bearer")
    status, _, _ = await site.modern("tools/list", token="wrong-token-wrong-token")
    assert status == 401
    # A client that can set no header (Home Assistant's) puts the token in the URL.
    async with site.gw.session.post(f"{site.url}?authorization={CLAUDE_TOKEN}", json={
            "jsonrpc": "2.0", "id": 1, "method": "initialize",
            "params": {"protocolVersion": LEGACY, "capabilities": {}, "clientInfo": {"name": "ha", "version": "1"}}},
            headers={"Accept": "application/json, text/event-stream"}) as resp:
        assert resp.status == 200 and "Mcp-Session-Id" in resp.headers
    status, _, answer = await site.modern("tools/list", headers={"Accept": "text/html"})
    assert status == 406
    status, _, answer = await site.post(None, raw=b"{}", headers={"Content-Type": "text/plain"})
    assert status == 415
    status, _, answer = await site.post(None, raw=b'{"x": "' + b"a" * 2_000_000 + b'"}')
    assert status == 413
    async with site.gw.session.get(site.url, headers={"Authorization": f"Bearer {API_TOKEN}"}) as resp:
        assert resp.status == 405 and "POST" in resp.headers["Allow"]
    async with site.gw.session.options(site.url, headers={"Origin": "http://console.example:8080"}) as resp:
        assert resp.status == 204 and "Mcp-Session-Id" in resp.headers["Access-Control-Allow-Headers"]
    # Notifications are accepted with 202 and no body, on both eras.
    status, _, answer = await site.post({"jsonrpc": "2.0", "method": "notifications/whatever", "params": {
        "_meta": {"io.modelcontextprotocol/protocolVersion": MODERN}}})
    assert (status, answer) == (202, "")


async def test_a_slow_device_turns_the_answer_into_an_sse_stream(site: Site) -> None:
    body = {"jsonrpc": "2.0", "id": 9, "method": "tools/call", "params": {
        "name": "send_command", "arguments": {"deviceId": site.id("mute"), "command": "set_mode",
                                              "params": {"mode": "eco"}, "timeoutMs": 1200},
        "_meta": {"io.modelcontextprotocol/protocolVersion": MODERN,
                  "io.modelcontextprotocol/clientCapabilities": {}, "progressToken": "p9"}}}
    headers = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream",
               "Authorization": f"Bearer {API_TOKEN}", "MCP-Protocol-Version": MODERN, "Mcp-Method": "tools/call",
               "Mcp-Name": "send_command"}
    async with site.gw.session.post(site.url, data=json.dumps(body), headers=headers) as resp:
        assert resp.status == 200 and resp.content_type == "text/event-stream"
        assert resp.headers["X-Accel-Buffering"] == "no"
        text = await resp.text()
    messages = [json.loads(line[5:]) for line in text.splitlines() if line.startswith("data:")]
    assert messages[0]["method"] == "notifications/progress" and messages[0]["params"]["progressToken"] == "p9"
    final = messages[-1]
    assert final["id"] == 9 and final["result"]["isError"] is True
    assert "did not answer within 1200 ms" in final["result"]["content"][0]["text"]


async def test_a_legacy_client_cancels_a_call_in_flight(site: Site) -> None:
    session = await site.session()
    call = asyncio.create_task(site.legacy(session, "tools/call", {"name": "send_command", "arguments": {
        "deviceId": site.id("mute"), "command": "set_mode", "params": {"mode": "eco"}, "timeoutMs": 20000}},
        request_id="slow-1"))
    await wait_until(lambda: site.gw.daemon.commands.pending_count == 1, WAIT_S)
    status, _, _ = await site.post({"jsonrpc": "2.0", "method": "notifications/cancelled",
                                    "params": {"requestId": "slow-1", "reason": "user stopped it"}},
                                   {"Mcp-Session-Id": session})
    assert status == 202
    status, _, answer = await asyncio.wait_for(call, 10)
    # JSON if it ended within half a second, else the end of an SSE stream.
    final = answer if isinstance(answer, dict) else json.loads(answer.strip().splitlines()[-1][5:])
    assert status == 200 and final["error"] == {"code": -32800, "message": "the request was cancelled"}
    await wait_until(lambda: site.gw.daemon.commands.pending_count == 0, WAIT_S)


async def test_the_server_loads_with_its_first_request_and_can_be_turned_off(
        broker: MosquittoBroker, tmp_path: Path, site: Site) -> None:
    probe = ("import sys, deviceagentd.daemon; "
             "print(sorted(m for m in sys.modules if m.startswith('deviceagentd.mcp')))")
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert "deviceagentd.mcp.transport" not in loaded and "deviceagentd.mcp.server" not in loaded
    off = await start_daemon(broker.url, tmp_path / "off", mcp_enabled="false")
    try:
        async with off.session.post(off.base_url + "/mcp", json={"jsonrpc": "2.0", "id": 1,
                                                                 "method": "tools/list"}) as resp:
            assert resp.status == 404
    finally:
        await off.stop()


async def test_sessions_are_bounded(broker: MosquittoBroker, tmp_path: Path) -> None:
    gw = await start_daemon(broker.url, tmp_path / "state", mcp_max_sessions=2)
    try:
        site = Site(gw, "", None, None)  # type: ignore[arg-type]
        first = await site.session(token=None)  # type: ignore[arg-type]
        second = await site.session(token=None)  # type: ignore[arg-type]
        await site.session(token=None)  # type: ignore[arg-type]
        async with aiohttp.ClientSession() as http:
            for session_id, expected in ((first, 404), (second, 200)):
                async with http.post(site.url, json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
                                     headers={"Mcp-Session-Id": session_id}) as resp:
                    assert resp.status == expected
    finally:
        await gw.stop()


async def test_a_modern_request_needs_its_whole_envelope(site: Site) -> None:
    headers = {"MCP-Protocol-Version": MODERN, "Mcp-Method": "tools/list"}
    for meta, code in (({"io.modelcontextprotocol/protocolVersion": MODERN}, -32602),
                       ({"io.modelcontextprotocol/protocolVersion": 20260728,
                         "io.modelcontextprotocol/clientCapabilities": {}}, -32020),
                       ({"io.modelcontextprotocol/clientCapabilities": {}}, -32602)):
        status, _, answer = await site.post({"jsonrpc": "2.0", "id": 3, "method": "tools/list",
                                             "params": {"_meta": meta}}, headers)
        assert (status, answer["error"]["code"], answer["id"]) == (400, code, 3), (meta, answer)


async def test_subscriptions_listen_is_acknowledged_and_ends_cleanly_at_shutdown(
        broker: MosquittoBroker, tmp_path: Path) -> None:
    gw = await start_daemon(broker.url, tmp_path / "state")
    site = Site(gw, "", None, None)  # type: ignore[arg-type]
    body = {"jsonrpc": "2.0", "id": 42, "method": "subscriptions/listen", "params": {
        "notifications": {"toolsListChanged": True},
        "_meta": {"io.modelcontextprotocol/protocolVersion": MODERN, "io.modelcontextprotocol/clientCapabilities": {}}}}
    headers = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream",
               "MCP-Protocol-Version": MODERN, "Mcp-Method": "subscriptions/listen"}
    try:
        async with aiohttp.ClientSession() as http, http.post(site.url, json=body, headers=headers) as resp:
            assert resp.status == 200 and resp.content_type == "text/event-stream"
            first = json.loads((await resp.content.readuntil(b"\n\n")).decode().split("data:", 1)[1])
            assert first == {"jsonrpc": "2.0", "method": "notifications/subscriptions/acknowledged", "params": {
                "_meta": {"io.modelcontextprotocol/subscriptionId": 42}, "notifications": {}}}
            stopping = asyncio.create_task(gw.stop())
            rest = (await asyncio.wait_for(resp.content.read(), 10)).decode()
            final = json.loads(rest.strip().split("data:", 1)[1])
            assert final["id"] == 42 and final["result"]["resultType"] == "complete"
            assert final["result"]["_meta"]["io.modelcontextprotocol/subscriptionId"] == 42
            await stopping
    finally:
        if gw.daemon.ready.is_set() and gw.daemon._runners:
            await gw.stop()
