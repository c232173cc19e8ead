"""/mcp against the MCP Inspector's CLI (npm @modelcontextprotocol/inspector, installed by
scripts/setup into tests/peers/mcp-inspector): an outside client written in TypeScript, on both
protocol eras, with a bearer token, calling tools that reach a simulated device."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from daemon_harness import PRODUCTS_DIR, RunningDaemon, start_daemon, wait_until
from mosquitto_broker import MosquittoBroker

from deviceagentd.core.spec import load_spec_file
from deviceagentd.simulator import SimulatedDevice, SimulatorOptions

PEERS = Path(__file__).resolve().parent / "peers"
INSPECTOR = PEERS / "mcp-inspector" / "node_modules" / "@modelcontextprotocol" / "inspector" / "clients" / \
    "launcher" / "build" / "index.js"
LOCAL_NODE = PEERS / "node" / "node_modules" / ".bin" / "node"
TOKEN = "inspector-token-0123456789"
READER_TOKEN = "reader-token-0123456789"
WAIT_S = 15.0
RUN_S = 90.0


def node_binary() -> str:
    """The machine's Node.js when it is 20 or newer, else the one scripts/setup installed."""
    system = shutil.which("node")
    if system is not None:
        major = subprocess.run([system, "-e", "process.stdout.write(process.versions.node.split('.')[0])"],
                               capture_output=True, text=True, check=False).stdout
        if major.isdigit() and int(major) >= 20:
            return system
    if LOCAL_NODE.exists():
        return str(LOCAL_NODE)
    pytest.fail("no Node.js 20 or newer: run scripts/setup (it installs one for the MCP Inspector)")


@dataclass
class Inspector:
    url: str
    node: str

    async def run(self, *args: str, token: str = TOKEN, era: str = "legacy") -> tuple[int, Any, str]:
        """One CLI call; returns (exit code, the JSON result or None, stderr)."""
        if not INSPECTOR.exists():
            pytest.fail(f"the MCP Inspector is not installed ({INSPECTOR}): run scripts/setup")
        command = [self.node, str(INSPECTOR), "--cli", self.url, "--transport", "http", "--protocol-era", era,
                   "--header", f"Authorization: Bearer {token}", "--format", "json", *args]
        # A private HOME: the Inspector keeps a catalog and secrets under ~/.mcp-inspector.
        home = Path(self.url.split("//")[1].replace(":", "_").replace("/", "_"))
        env = {"PATH": "/usr/bin:/bin", "HOME": str(Path("/tmp") / f"inspector-{home}"), "NO_COLOR": "1"}
        proc = await asyncio.create_subprocess_exec(*command, stdout=asyncio.subprocess.PIPE,
                                                    stderr=asyncio.subprocess.PIPE, env=env)
        out, err = await asyncio.wait_for(proc.communicate(), RUN_S)
        text = out.decode()
        # --format json: one object on stdout, {"result": …} (or the error envelope on stderr).
        result = json.loads(text)["result"] if text.strip() else None
        assert proc.returncode is not None
        return proc.returncode, result, err.decode()


@pytest.fixture
async def gateway(broker: MosquittoBroker, tmp_path: Path) -> AsyncIterator[tuple[RunningDaemon, SimulatedDevice]]:
    suffix = uuid.uuid4().hex[:6]
    gw = await start_daemon(broker.url, tmp_path / "state", http_tokens=[TOKEN],
                            mcp_clients=[f"reader:{READER_TOKEN}:read"])
    sim = SimulatedDevice(load_spec_file(PRODUCTS_DIR / "light.json"), f"light-{suffix}",
                          SimulatorOptions(url=broker.url, client_id=f"sim-{suffix}", heartbeat_s=0))
    await asyncio.wait_for(sim.start(), WAIT_S)
    try:
        await wait_until(lambda: gw.daemon.registry.online_count == 1, WAIT_S)
        yield gw, sim
    finally:
        await sim.stop()
        await gw.stop()


@pytest.mark.parametrize("era", ["legacy", "modern"])
async def test_the_inspector_lists_and_calls_tools(gateway: tuple[RunningDaemon, SimulatedDevice], era: str) -> None:
    gw, sim = gateway
    inspector = Inspector(gw.base_url + "/mcp", node_binary())
    code, listed, err = await inspector.run("--method", "tools/list", "--strict", era=era)
    # --strict: exit 6 and a report on stderr for any tool schema a model provider would reject.
    assert code == 0, err
    names = [tool["name"] for tool in listed["tools"]]
    assert names == ["list_devices", "get_state", "get_events", "list_schedules", "send_command",
                     "create_schedule", "delete_schedule"]

    code, result, err = await inspector.run("--method", "tools/call", "--tool-name", "list_devices",
                                            "--tool-arg", "includeState=true", era=era)
    assert code == 0, err
    assert result["structuredContent"]["devices"][0]["deviceId"] == sim.device_id

    code, result, err = await inspector.run(
        "--method", "tools/call", "--tool-name", "send_command",
        "--tool-args-json", json.dumps({"deviceId": sim.device_id, "command": "set_brightness",
                                        "params": {"brightness": 40}}), era=era)
    assert code == 0, err
    assert result["structuredContent"]["ok"] is True
    assert any(c.cmd == "set_brightness" and c.params == {"brightness": 40} for c in sim.commands_received)

    # A tool that fails: the Inspector's exit code 5 (isError) and the gateway's words.
    code, result, _ = await inspector.run("--method", "tools/call", "--tool-name", "get_state",
                                          "--tool-arg", "deviceId=nobody", era=era)
    assert code == 5 and "no device 'nobody'" in result["content"][0]["text"]


async def test_the_inspector_with_a_read_only_token(gateway: tuple[RunningDaemon, SimulatedDevice]) -> None:
    gw, sim = gateway
    inspector = Inspector(gw.base_url + "/mcp", node_binary())
    code, listed, err = await inspector.run("--method", "tools/list", token=READER_TOKEN, era="modern")
    assert code == 0, err
    assert [t["name"] for t in listed["tools"]] == ["list_devices", "get_state", "get_events", "list_schedules"]
    before = len(sim.commands_received)
    code, _, err = await inspector.run(
        "--method", "tools/call", "--tool-name", "send_command",
        "--tool-args-json", json.dumps({"deviceId": sim.device_id, "command": "turn_off"}), token=READER_TOKEN,
        era="modern")
    # The Inspector checks the tool list first: a tool this token is not given does not exist for it.
    assert code != 0 and "send_command" in err and "not found" in err
    assert len(sim.commands_received) == before
    code, _, err = await inspector.run("--method", "tools/list", token="wrong-token-wrong-token", era="modern")
    assert code != 0
