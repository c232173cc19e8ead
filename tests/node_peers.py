"""Running the Node.js test peers in tests/peers/mqttjs (mqtt.js as a device, cbor-x as its encoder).

scripts/setup installs Node.js and the packages; a missing one fails the test with how to fix
it rather than skipping it, so CI cannot silently run without the real clients.
"""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

NODE_DIR = Path(__file__).resolve().parent / "peers" / "mqttjs"


def node_binary() -> str:
    node = shutil.which("node")
    if node is None or not (NODE_DIR / "node_modules" / "mqtt").is_dir():
        pytest.fail("Node.js or tests/peers/mqttjs/node_modules is missing: run scripts/setup")
    return node


async def start_node(script: str, *args: object) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        node_binary(), str(NODE_DIR / script), *(str(a) for a in args),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=NODE_DIR)


async def run_node(script: str, *args: object, timeout: float = 30.0) -> list[dict[str, Any]]:
    """Run a peer to its end; its stdout as JSON lines."""
    process = await start_node(script, *args)
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout)
    assert process.returncode == 0, stderr.decode()
    return [json.loads(line) for line in stdout.decode().splitlines() if line.strip()]


class NodeDevice:
    """device.mjs running in the background: which event numbers the broker acknowledged."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.acked: set[int] = set()
        self.done = asyncio.Event()
        self._reader = asyncio.ensure_future(self._read())

    @classmethod
    async def start(cls, url: str, product: str, device: str, count: int, rate: int, pad: int = 0,
                    run: str = "run") -> NodeDevice:
        return cls(await start_node("device.mjs", url, product, device, count, rate, pad, run))

    async def _read(self) -> None:
        assert self.process.stdout is not None
        while line := await self.process.stdout.readline():
            message = json.loads(line)
            if "acked" in message and "done" not in message:
                self.acked.add(int(message["acked"]))
            if message.get("done"):
                self.done.set()

    async def wait_done(self, timeout: float) -> None:
        await asyncio.wait_for(self.done.wait(), timeout)

    async def stop(self) -> None:
        if self.process.returncode is None:
            self.process.kill()
        await self.process.wait()
        await asyncio.wait_for(self._reader, 5)
