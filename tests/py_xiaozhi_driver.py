"""Drives py-xiaozhi's own client classes (tests/py_xiaozhi, unchanged) against a gateway, in a
process of its own (its config manager and loggers are process-wide).

    python py_xiaozhi_driver.py <ws url> <scenario> <pcm file> <out json>

Scenarios:
- `speech`: WebsocketProtocol.connect (hello, server hello), send_start_listening(AUTO_STOP),
  the 16 kHz PCM of <pcm file> encoded by OpusCodec in 20 ms frames (AudioConfig) and sent with
  send_audio, then silence, until `tts stop`;
- `typed`: typed text sent as py-xiaozhi's UI does (send_wake_word_detected), with McpServer
  answering the gateway's MCP requests, holding one tool registered like py-xiaozhi's volume tool
  (`src/mcp/tools/volume/register.py`: name, description, PropertyList) whose callback records.

Every text message py-xiaozhi sends is kept in the result's `sent`, every one it receives but
hello in `json`. Incoming audio is decoded the way py-xiaozhi's AudioCodec.write_audio does: the frame size from
the packet's TOC byte (parse_opus_toc) at AudioConfig.OUTPUT_SAMPLE_RATE (24 kHz).
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent / "py_xiaozhi"))

import numpy as np
from src.audio_codecs.opus_codec import OpusCodec, parse_opus_toc
from src.constants.constants import AudioConfig, ListeningMode
from src.mcp.mcp_server import McpServer
from src.mcp.tooling import McpTool, Property, PropertyList, PropertyType
from src.protocols.websocket_protocol import WebsocketProtocol
from src.utils.config_manager import initialize_config

TEXT = "set the speaker volume to 40"


class RecordingProtocol(WebsocketProtocol):
    """py-xiaozhi's WebsocketProtocol unchanged, each text message it sends also kept (the test
    checks them against the AsyncAPI document)."""

    def __init__(self, sent: list[Any]) -> None:
        super().__init__()
        self.sent = sent

    async def send_text(self, message: str) -> None:
        self.sent.append(json.loads(message))
        await super().send_text(message)


async def main(url: str, scenario: str, pcm_file: str, out_file: str) -> None:
    config = initialize_config()
    config.update_config("SYSTEM_OPTIONS.NETWORK.WEBSOCKET_URL", url)
    config.update_config("SYSTEM_OPTIONS.NETWORK.WEBSOCKET_ACCESS_TOKEN", "py-token")
    config.update_config("SYSTEM_OPTIONS.DEVICE_ID", "02:00:00:aa:bb:cc")
    config.update_config("SYSTEM_OPTIONS.CLIENT_ID", "py-client-0001")

    codec = OpusCodec(AudioConfig.INPUT_SAMPLE_RATE, AudioConfig.OUTPUT_SAMPLE_RATE)
    codec.initialize()
    result: dict[str, Any] = {"json": [], "packets": 0, "decoded": [], "decode_errors": 0, "volume": [],
                              "mcp_sent": [], "sent": []}
    protocol = RecordingProtocol(result["sent"])
    stopped = asyncio.Event()

    def on_json(data: dict[str, Any]) -> None:
        result["json"].append(data)
        if data.get("type") == "mcp":
            asyncio.get_running_loop().create_task(server.parse_message(data["payload"]))
        if data.get("type") == "tts" and data.get("state") == "stop":
            stopped.set()

    def on_audio(data: bytes) -> None:
        result["packets"] += 1
        try:
            toc = parse_opus_toc(data)
            frame_size = int(AudioConfig.OUTPUT_SAMPLE_RATE * toc["duration_ms"] / 1000)
            result["decoded"].append(len(codec.decode(data, frame_size)))
        except Exception:
            result["decode_errors"] += 1

    async def set_volume(args: dict[str, Any]) -> bool:
        result["volume"].append(args["volume"])
        return True

    server = McpServer()
    server.add_tool(McpTool(
        "self.audio_speaker.set_volume",
        "Set the system speaker volume to an absolute value (0-100).\n"
        "Parameter:\n- volume: Integer (0-100) representing the target volume level. Set to 0 for mute.",
        PropertyList([Property("volume", PropertyType.INTEGER, min_value=0, max_value=100)]),
        set_volume,
    ))

    async def send_mcp(payload: str) -> None:
        result["mcp_sent"].append(json.loads(payload))
        await protocol.send_mcp_message(payload)

    server.set_send_callback(send_mcp)
    protocol.on_incoming_json(on_json)
    protocol.on_incoming_audio(on_audio)
    result["connected"] = await protocol.connect()
    if result["connected"]:
        if scenario == "speech":
            await protocol.send_start_listening(ListeningMode.AUTO_STOP)
            pcm = np.frombuffer(Path(pcm_file).read_bytes(), dtype="<i2").astype(np.float32) / 32768.0
            frame = AudioConfig.INPUT_FRAME_SIZE
            pcm = np.concatenate([pcm, np.zeros(-len(pcm) % frame, dtype=np.float32)])
            for i in range(0, len(pcm), frame):
                await protocol.send_audio(codec.encode(pcm[i:i + frame], frame))
                if i % (frame * 25) == 0:
                    await asyncio.sleep(0)
        else:
            for _ in range(200):  # the MCP handshake (tools/list answered) before the request
                if any(isinstance(m.get("result"), dict) and "tools" in m["result"] for m in result["mcp_sent"]):
                    break
                await asyncio.sleep(0.02)
            await protocol.send_wake_word_detected(TEXT)
        try:
            await asyncio.wait_for(stopped.wait(), 20)
        except TimeoutError:
            result["timeout"] = True
        await asyncio.sleep(0.2)
    await protocol.close_audio_channel()
    codec.close()
    Path(out_file).write_text(json.dumps(result, ensure_ascii=False))


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:5]))
