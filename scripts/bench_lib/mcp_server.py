"""Section `mcp`: the MCP server at /mcp (docs/benchmarks.md §12).

On the shared daemon, with one simulated thermostat:

1. What loading the server costs: VmRSS before the first /mcp request and after a session of
   every read tool (the server is imported with its first request).
2. tools/call send_command round trip on the 2026-07-28 protocol (one POST, JSON answer, keep-alive)
   against POST /api/devices/:id/commands to the same device with the same command, alternating so
   both see the same conditions: the overhead p50(MCP) − p50(HTTP command) has a target of ≤ 2 ms.
   The same on a 2025-11-25 session, as information.
3. tools/list: time and size of the answer, against the HTTP floor (GET /api/health).
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from bench_lib import procs
from bench_lib.procs import DaemonClient
from bench_lib.report import Row
from bench_lib.scenarios import Bench
from bench_lib.stats import percentile
from deviceagentd.simulator import SimulatedDevice, SimulatorOptions

DEVICE = "bench-mcp-thermostat"
MODERN = "2026-07-28"
LEGACY = "2025-11-25"
KIB, MB = 1024, 1e6
JSON_AND_SSE = "application/json, text/event-stream"


class McpCaller:
    """A plain HTTP MCP client: one JSON-RPC POST per call, on the bench's keep-alive session."""

    def __init__(self, daemon: DaemonClient, session_id: str | None = None) -> None:
        self.daemon = daemon
        self.session_id = session_id
        self._next_id = 0

    async def call(self, method: str, params: dict[str, Any] | None = None) -> tuple[float, dict[str, Any], int]:
        self._next_id += 1
        params = dict(params or {})
        headers = {"Content-Type": "application/json", "Accept": JSON_AND_SSE}
        if self.session_id is None:
            params["_meta"] = {"io.modelcontextprotocol/protocolVersion": MODERN,
                               "io.modelcontextprotocol/clientCapabilities": {}}
            headers.update({"MCP-Protocol-Version": MODERN, "Mcp-Method": method})
            if method == "tools/call":
                headers["Mcp-Name"] = params["name"]
        else:
            headers.update({"Mcp-Session-Id": self.session_id, "MCP-Protocol-Version": LEGACY})
        data = json.dumps({"jsonrpc": "2.0", "id": self._next_id, "method": method, "params": params})
        started = time.perf_counter()
        async with self.daemon.session.post(self.daemon.base_url + "/mcp", data=data, headers=headers) as resp:
            raw = await resp.read()
        elapsed = (time.perf_counter() - started) * 1000
        answer = json.loads(raw)
        if "result" not in answer or answer["result"].get("isError"):
            raise RuntimeError(f"MCP {method} failed: {answer}")
        return elapsed, answer["result"], len(raw)

    @classmethod
    async def legacy(cls, daemon: DaemonClient) -> McpCaller:
        body = {"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
            "protocolVersion": LEGACY, "capabilities": {}, "clientInfo": {"name": "bench", "version": "1"}}}
        async with daemon.session.post(daemon.base_url + "/mcp", json=body, headers={"Accept": JSON_AND_SSE}) as resp:
            session_id = resp.headers["Mcp-Session-Id"]
            await resp.read()
        caller = cls(daemon, session_id)
        async with daemon.session.post(daemon.base_url + "/mcp", json={
                "jsonrpc": "2.0", "method": "notifications/initialized"},
                headers={"Mcp-Session-Id": session_id, "Accept": JSON_AND_SSE}) as resp:
            await resp.read()
        return caller


async def mcp(b: Bench) -> None:
    runs = 200 if b.sizes.commands < 1_000 else 1_000
    daemon = await b.daemon()
    device = SimulatedDevice(b.catalog.products["thermostat"], DEVICE,
                             SimulatorOptions(url=b.broker.url, heartbeat_s=0, seed=5))
    await device.start()
    try:
        await daemon.wait_online(DEVICE)
        await asyncio.sleep(1.0)
        before_kib = procs.proc_status_kib(daemon.pid, "VmRSS")
        caller = McpCaller(daemon)
        for tool, arguments in (("list_devices", {}), ("get_state", {"deviceId": DEVICE}), ("get_events", {}),
                                ("list_schedules", {})):
            await caller.call("tools/call", {"name": tool, "arguments": arguments})
        await asyncio.sleep(1.0)
        after_kib = procs.proc_status_kib(daemon.pid, "VmRSS")
        b.report.add(Row("RSS growth when the MCP server loads", (after_kib - before_kib) * KIB / MB, "MB",
                         before_kib * KIB / MB, after_kib / before_kib,
                         note="VmRSS after a first 2026-07-28 call of every read tool minus before any /mcp request "
                         "(the server is imported with its first request); baseline: the daemon's RSS before"))
        await _overhead(b, daemon, caller, runs, "2026-07-28 (stateless)", target=True)
        await _overhead(b, daemon, await McpCaller.legacy(daemon), runs, "2025-11-25 (session)", target=False)
        await _tools_list(b, daemon, caller, runs)
    finally:
        await device.stop()



async def _overhead(b: Bench, daemon: DaemonClient, caller: McpCaller, runs: int, era: str, target: bool) -> None:
    via_mcp: list[float] = []
    via_http: list[float] = []
    url = f"{daemon.base_url}/api/devices/{DEVICE}/commands"
    for i in range(runs + 20):
        level = 15 + i % 15
        elapsed, _, _ = await caller.call("tools/call", {"name": "send_command", "arguments": {
            "deviceId": DEVICE, "command": "set_target_temperature", "params": {"target_temperature": level},
            "timeoutMs": 5000}})
        started = time.perf_counter()
        async with daemon.session.post(url, json={"command": "set_target_temperature",
                                                  "params": {"target_temperature": level + 0.5},
                                                  "timeoutMs": 5000}) as resp:
            answer = await resp.json()
            if resp.status != 200 or not answer.get("ok"):
                raise RuntimeError(f"HTTP command failed: {resp.status} {answer}")
        http_ms = (time.perf_counter() - started) * 1000
        if i >= 20:
            via_mcp.append(elapsed)
            via_http.append(http_ms)
    p50, base = percentile(via_mcp, 50), percentile(via_http, 50)
    b.report.add(Row(f"MCP send_command round trip p50, {era} ({runs:,}, alternating)", p50, "ms", base, p50 / base,
                     note=f"tools/call → daemon → MQTT → simulated thermostat → daemon → JSON answer; p99 "
                     f"{percentile(via_mcp, 99):.2f} ms; baseline: POST /api/devices/:id/commands with the same "
                     f"command to the same device (p99 {percentile(via_http, 99):.2f} ms)"))
    overhead = p50 - base
    if target:
        b.report.add(Row("MCP tool call overhead p50(MCP) − p50(HTTP command)", overhead, "ms", target="≤ 2 ms",
                         ok=overhead <= 2, note="JSON-RPC parsing, header checks, the token, the tool's argument "
                         "checks, the call log row and the result's text and structured copies"))
    else:
        b.report.add(Row(f"  overhead on {era}", overhead, "ms", note="session lookup instead of the _meta envelope"))


async def _tools_list(b: Bench, daemon: DaemonClient, caller: McpCaller, runs: int) -> None:
    listed: list[float] = []
    floor: list[float] = []
    size = 0
    for i in range(runs + 20):
        started = time.perf_counter()
        async with daemon.session.get(f"{daemon.base_url}/api/health") as resp:
            await resp.read()
        health = (time.perf_counter() - started) * 1000
        elapsed, result, size = await caller.call("tools/list")
        if i >= 20:
            listed.append(elapsed)
            floor.append(health)
    p50, base = percentile(listed, 50), percentile(floor, 50)
    b.report.add(Row(f"tools/list p50 ({len(result['tools'])} tools, {runs:,} sequential)", p50, "ms", base,
                     p50 / base, note=f"answer {size / 1024:.1f} KiB for the five example products; baseline: "
                     "GET /api/health on the same session"))
