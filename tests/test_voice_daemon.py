"""The voice WebSocket inside the real daemon: tokens, a whole turn into session history, the
sessions gauge, shutdown closing open sessions, and no numpy/webrtcvad until a voice session."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest
import voice_samples as vs
from daemon_harness import start_daemon
from mosquitto_broker import MosquittoBroker
from test_voice_session import CLAUSE_1, CLAUSE_2, TRANSCRIPT, ScriptedProvider, VoiceConn, said
from voice_doubles import AsrScript, DashScopeDouble, TtsScript

from deviceagentd.voice.protocol import BinaryCodec

TOKEN = "gateway-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
IMPORT_CHECK = (
    "import sys, deviceagentd.daemon, deviceagentd.http.app; "
    "print('numpy' in sys.modules, 'webrtcvad' in sys.modules, 'deviceagentd.voice.session' in sys.modules, "
    "'opuslib_next' in sys.modules, 'deviceagentd.voice.turn' in sys.modules)"
)


def test_daemon_does_not_import_numpy() -> None:
    out = subprocess.run([sys.executable, "-c", IMPORT_CHECK], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False False False False False", out


async def test_voice_through_the_daemon(broker: MosquittoBroker, tmp_path: Path) -> None:
    vs.require_espeak()
    async with DashScopeDouble() as ds:
        ds.asr = AsrScript(sentences=[TRANSCRIPT], bytes_per_sentence=32000)
        ds.tts = TtsScript(ms_per_char=10)
        d = await start_daemon(broker.url, tmp_path / "state", provider=ScriptedProvider(), http_tokens=[TOKEN],
                               voice_aliyun_api_key=ds.api_key, voice_aliyun_url=ds.url)
        try:
            async with aiohttp.ClientSession() as http:
                with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                    await http.ws_connect(d.voice_url + "/ws/voice")
                assert refused.value.status == 401
                # The XiaoZhi OTA handshake on the voice port: its own token check (the query
                # string a speaker's OTA URL can carry) gets past the bearer middleware.
                async with http.post(d.voice_url + "/xiaozhi/ota/", data="{}") as resp:
                    assert resp.status == 401
                async with http.post(d.voice_url + f"/xiaozhi/ota/?authorization={TOKEN}", data="{}") as resp:
                    assert resp.status == 200
                    answer = await resp.json()
                assert answer["websocket"]["url"].endswith("/ws/voice") and answer["websocket"]["token"] == TOKEN
                ws = await http.ws_connect(d.voice_url + f"/ws/voice?authorization={TOKEN}")
                conn = VoiceConn(ws, BinaryCodec(3))
                await conn.hello(sessionId="daemon-voice")
                await conn.turn(said())
                assert conn.messages("agent_reply")[-1]["text"] == f"{CLAUSE_1} {CLAUSE_2}"
                _, metrics = await d.request("GET", "/metrics", headers=AUTH)
                assert "deviceagentd_voice_sessions 1" in metrics, metrics
                status, hist = await d.request("GET", "/api/sessions/daemon-voice/history", headers=AUTH)
                assert status == 200
                assert [m["text"] for m in hist["messages"]] == [TRANSCRIPT, f"{CLAUSE_1} {CLAUSE_2}"]
                # A session still open when the daemon stops is closed with 1001 (going away).
                other = VoiceConn(await http.ws_connect(d.voice_url + "/ws/voice", headers=AUTH), BinaryCodec(3))
                await other.hello()
                await d.stop()
                assert await other.wait_closed() == 1001
                await conn.close()
        finally:
            if d.daemon.voice.open_sessions:
                await d.stop()
    assert ds.problems == []
