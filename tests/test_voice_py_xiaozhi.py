"""py-xiaozhi's own client classes (vendored unchanged in tests/py_xiaozhi) against /ws/voice:
its WebsocketProtocol, OpusCodec and McpServer, driven headless in a subprocess by
tests/py_xiaozhi_driver.py."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import voice_samples as vs
from test_asyncapi import voice_message
from test_voice_session import TRANSCRIPT, Rig, said, start_rig
from test_voice_xiaozhi import offline_agent

from deviceagentd.http.routes_console import load_asyncapi

DRIVER = Path(__file__).resolve().parent / "py_xiaozhi_driver.py"


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    the_rig = await start_rig()
    try:
        yield the_rig
    finally:
        await the_rig.close()
    assert the_rig.ds.problems == [] and the_rig.oa.problems == []


async def drive(rig: Rig, scenario: str, tmp_path: Path, pcm: bytes = b"") -> dict[str, object]:
    (tmp_path / "speech.pcm").write_bytes(pcm)
    out = tmp_path / "result.json"
    env = {**os.environ, "HOME": str(tmp_path), "XDG_DATA_HOME": str(tmp_path / "data"),
           "XDG_CONFIG_HOME": str(tmp_path / "config"), "XDG_CACHE_HOME": str(tmp_path / "cache")}
    process = await asyncio.create_subprocess_exec(
        sys.executable, str(DRIVER), rig.url.replace("http://", "ws://"), scenario, str(tmp_path / "speech.pcm"),
        str(out), env=env, cwd=tmp_path, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    output, _ = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, output.decode(errors="replace")[-3000:]
    result: dict[str, object] = json.loads(out.read_text())
    return result


def documented(result: dict[str, object]) -> tuple[set[str], set[str]]:
    """Every message py-xiaozhi sent and heard is a message of the AsyncAPI document that
    validates: the names of the documented messages (sent, heard)."""
    doc = load_asyncapi()
    sent, heard = result["sent"], result["json"]
    assert isinstance(sent, list) and isinstance(heard, list)
    return {voice_message(doc, "speak", m) for m in sent}, {voice_message(doc, "hear", m) for m in heard}


def types(result: dict[str, object]) -> list[str]:
    messages = result["json"]
    assert isinstance(messages, list)
    return [f"{m['type']}:{m.get('state', '')}" for m in messages if m["type"] != "mcp"]


async def test_py_xiaozhi_speaks_opus_and_hears_the_reply(rig: Rig, tmp_path: Path) -> None:
    vs.require_espeak()
    result = await drive(rig, "speech", tmp_path, said(tail_s=2.0))
    assert result["connected"] is True and "timeout" not in result
    messages = result["json"]
    assert isinstance(messages, list)
    assert {"type": "stt", "text": TRANSCRIPT} in messages
    assert types(result) == ["stt:", "tts:start", "llm:", "tts:sentence_start", "tts:sentence_start", "tts:stop"]
    # Every packet decoded by py-xiaozhi's codec at 24 kHz, in its own frame sizes from the TOC.
    assert result["decode_errors"] == 0 and result["packets"]
    assert set(result["decoded"]) == {24000 * 20 // 1000}  # type: ignore[arg-type]
    hello = rig.ds.tasks[0]
    assert hello.kind == "asr" and len(hello.audio) > 32000  # the decoded speech reached the ASR
    sent, heard = documented(result)
    assert sent == {"voiceHello", "voiceListen", "voiceMcpReply"}
    assert heard == {"voiceStt", "voiceLlm", "voiceTts", "voiceMcpRequest"}


async def test_py_xiaozhi_typed_text_uses_its_mcp_tool(rig: Rig, tmp_path: Path) -> None:
    offline_agent(rig)
    result = await drive(rig, "typed", tmp_path)
    assert result["connected"] is True and "timeout" not in result
    assert result["volume"] == [40]
    messages = result["json"]
    assert isinstance(messages, list)
    assert messages[0]["type"] == "mcp" and messages[0]["payload"]["method"] == "initialize"
    assert {"type": "stt", "text": "set the speaker volume to 40"} in messages
    spoken = [m["text"] for m in messages if m["type"] == "tts" and m.get("state") == "sentence_start"]
    assert spoken == ["Done, the volume is set to 40."]
    sent, heard = documented(result)
    assert sent == {"voiceHello", "voiceListen", "voiceMcpReply"}
    assert heard == {"voiceStt", "voiceLlm", "voiceTts", "voiceMcpRequest"}
