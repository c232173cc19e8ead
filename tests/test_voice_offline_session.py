"""The offline recogniser inside voice sessions: the default without a cloud key, the stand-in
for a cloud recogniser that cannot be reached (said once), "I didn't catch that" for speech
outside the site's grammar, Chinese explained in Chinese, an apology in the local voice when a
turn fails, and a recogniser that fails to load."""

from __future__ import annotations

import functools
import shutil
import subprocess
import tempfile
import wave
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import voice_samples as vs
from local_corpus import SITE
from mosquitto_broker import free_port
from test_local_engine import RecordingTools, make_registry
from test_voice_session import Rig, VoiceConn, start_rig
from test_voice_session import said as said_default

from deviceagentd.agent.local import LocalProvider
from deviceagentd.agent.types import TurnContext, TurnEvent
from deviceagentd.voice.audio import Resampler
from deviceagentd.voice.fallback import FALLBACK_NOTE
from deviceagentd.voice.recognizer import decoder as decoder_module
from deviceagentd.voice.recognizer.decoder import ModelFiles
from deviceagentd.voice.recognizer.site import registry_site
from deviceagentd.voice.turn import APOLOGY, NOT_SUPPORTED, NOT_UNDERSTOOD

THERMOSTAT = "thermostat-001"


@functools.cache
def said(text: str) -> bytes:
    """`text` in espeak-ng's American English voice (the recogniser's acoustic model is American
    English), 0.3 s of silence before and 1.2 s after."""
    path = shutil.which("espeak-ng")
    if path is None:
        vs.require_espeak()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "said.wav"
        voice = "cmn" if any("\u4e00" <= c <= "\u9fff" for c in text) else "en-us"
        subprocess.run([str(path), "-v", voice, "-w", str(out), text], check=True, capture_output=True, timeout=30)
        with wave.open(str(out), "rb") as wav:
            rate, raw = wav.getframerate(), wav.readframes(wav.getnframes())
    resampler = Resampler(rate, 16000)
    speech = np.frombuffer(resampler.push(raw) + resampler.flush(), dtype="<i2").astype(np.float64)
    return vs.pcm(np.concatenate([vs.silence(0.3), speech, vs.silence(1.2)]))
TEMPERATURE = next(d.state["temperature"] for d in SITE if d.device_id == THERMOSTAT)


async def offline_rig(**kwargs: Any) -> tuple[Rig, RecordingTools]:
    """A rig whose agent is the real offline engine over the test site, and whose recogniser
    grammar is built from the same site."""
    registry = make_registry()
    kwargs.setdefault("aliyun", False)
    kwargs.setdefault("openai", False)
    rig = await start_rig(site=registry_site(registry), **kwargs)
    provider = LocalProvider(registry)
    tools = RecordingTools(registry)
    rig.agent.provider = provider
    rig.agent.fallback = provider
    rig.agent.tools = tools
    return rig, tools


@pytest.fixture
async def offline() -> AsyncIterator[tuple[Rig, RecordingTools]]:
    rig, tools = await offline_rig()
    try:
        yield rig, tools
    finally:
        await rig.close()


def texts(conn: VoiceConn, after: int, kind: str = "tts", **match: Any) -> list[str]:
    return [m.get("text", "") for m in conn.messages(kind, after) if all(m.get(k) == v for k, v in match.items())]


async def test_without_a_cloud_key_the_offline_recogniser_answers(offline: tuple[Rig, RecordingTools]) -> None:
    vs.require_espeak()
    rig, tools = offline
    conn = await rig.connect()
    hello = await conn.hello(deviceId=THERMOSTAT, productId="thermostat")
    assert hello["provider"] == "offline"
    await rig.service.prepare_offline()  # hello started loading it; a speaker takes a moment to talk
    # At three times real time, as a speaker streams it: the recogniser hears it as it comes.
    mark = len(conn.events)
    await conn.send({"type": "listen", "state": "start", "mode": "auto"})
    await conn.send_audio(said("what is the current temperature"), pace_s=0.02)
    end, _ = await conn.wait("tts_complete", after=mark)
    asr = conn.messages("asr", mark)
    assert asr[-1] == {"type": "asr", "text": "what is the current temperature", "definite": True}
    assert any(m["definite"] is False for m in asr[:-1]), f"partial results go out as definite: false: {asr}"
    assert [(c.name, c.arguments) for c in tools.calls] == [("get_device_state", {"device_id": THERMOSTAT})]
    reply = conn.messages("agent_reply", mark)[-1]["text"]
    assert str(TEMPERATURE).rstrip("0").rstrip(".") in reply
    assert conn.audio(mark, end), "the reply is spoken (espeak-ng)"


async def test_speech_outside_the_grammar_is_not_forced_onto_a_command(offline: tuple[Rig, RecordingTools]) -> None:
    vs.require_espeak()
    rig, tools = offline
    conn = await rig.connect()
    await conn.hello()
    mark, end = await conn.turn(said("play some jazz music"))
    assert conn.messages("asr", mark)[-1] == {"type": "asr", "text": "", "definite": True}
    assert conn.messages("agent_reply", mark)[-1]["text"] == NOT_UNDERSTOOD[0]
    assert texts(conn, mark, state="sentence_start") == [NOT_UNDERSTOOD[0]] and conn.audio(mark, end)
    assert tools.calls == [] and conn.messages("error", mark) == []


async def test_chinese_without_a_cloud_recogniser_is_explained_in_chinese() -> None:
    vs.require_espeak()
    rig, tools = await offline_rig()
    try:
        # An EMQX-style client: an error, and the explanation spoken in Mandarin.
        conn = await rig.connect()
        await conn.hello(language="zh-CN")
        mark = await conn.say(said("打开客厅的灯"))
        await conn.wait("tts", after=mark, state="stop")
        errors = conn.messages("error", mark)
        assert [e["code"] for e in errors] == ["language_unsupported"] and errors[0]["message"] == NOT_SUPPORTED[1]
        assert texts(conn, mark, state="sentence_start") == [NOT_SUPPORTED[1]] and conn.audio(mark)
        assert conn.messages("asr", mark) == [] and tools.calls == []
        # A XiaoZhi speaker (a hello with features): the alert on its screen as well.
        xiaozhi = await rig.connect()
        await xiaozhi.hello(language="zh", features={"mcp": False}, transport="websocket")
        mark = await xiaozhi.say(said("打开客厅的灯"))
        await xiaozhi.wait("tts", after=mark, state="stop")
        alerts = xiaozhi.messages("alert", mark)
        assert alerts and alerts[0]["message"] == NOT_SUPPORTED[1]
    finally:
        await rig.close()


@pytest.mark.parametrize("how", ["connect refused", "HTTP 500"])
async def test_a_cloud_recogniser_that_cannot_be_reached_falls_back_offline_and_says_so_once(how: str) -> None:
    vs.require_espeak()
    if how == "connect refused":
        rig, tools = await offline_rig(aliyun=True)
        rig.service.config.aliyun.url = f"ws://127.0.0.1:{free_port()}/ws"  # nothing listens there
        provider = "aliyun"
    else:
        rig, tools = await offline_rig(openai=True, default_provider="openai")
        rig.oa.transcription.status = 500
        provider = "openai"
    try:
        conn = await rig.connect()
        hello = await conn.hello(deviceId=THERMOSTAT)
        assert hello["provider"] == provider
        mark, _ = await conn.turn(said("what is the current temperature"))
        assert conn.messages("asr", mark)[-1]["text"] == "what is the current temperature"
        reply = conn.messages("agent_reply", mark)[-1]["text"]
        assert reply.startswith(FALLBACK_NOTE) and str(TEMPERATURE).rstrip("0").rstrip(".") in reply
        # The cloud's TTS cannot be reached either: the local voice speaks the reply.
        assert texts(conn, mark, state="sentence_start")[0] == FALLBACK_NOTE
        assert conn.messages("error", mark) == []
        # Said once per outage: the next turn just answers.
        mark, _ = await conn.turn(said("close the curtains"))
        assert conn.messages("asr", mark)[-1]["text"].startswith("close the curtain")
        assert not conn.messages("agent_reply", mark)[-1]["text"].startswith(FALLBACK_NOTE)
        assert ("send_command", {"device_id": "curtain-1", "command": "close", "params": {}}) in [
            (c.name, c.arguments) for c in tools.calls]
        # The command log will say the speaker's voice turn sent it.
        assert tools.inner.commands.origins[-1] == {  # type: ignore[attr-defined]
            "channel": "agent", "sessionId": hello["session_id"], "speaker": THERMOSTAT}
    finally:
        await rig.close()


async def test_a_recogniser_that_fails_to_load_is_an_error_and_an_apology(monkeypatch: pytest.MonkeyPatch,
                                                                          tmp_path: Any) -> None:
    vs.require_espeak()
    (tmp_path / "feat.params").write_text("-feat 1s_c_d_dd\n")
    monkeypatch.setattr(decoder_module.ModelFiles, "packaged",
                        classmethod(lambda cls: ModelFiles(tmp_path, tmp_path / "missing.dict")))
    rig, tools = await offline_rig()
    try:
        conn = await rig.connect()
        await conn.hello()
        for _ in range(2):  # the session stays usable, and says the same each time
            mark = await conn.say(said("close the curtains"))
            await conn.wait("tts", after=mark, state="stop")
            assert [e["code"] for e in conn.messages("error", mark)] == ["provider_unavailable"]
            assert texts(conn, mark, state="sentence_start") == [APOLOGY[0]]
        assert tools.calls == []
    finally:
        await rig.close()
    # With a cloud recogniser configured, it simply answers: the broken fallback is not needed.
    rig, tools = await offline_rig(aliyun=True)
    try:
        conn = await rig.connect()
        assert (await conn.hello())["provider"] == "aliyun"
        mark, _ = await conn.turn(said_default())
        assert conn.messages("error", mark) == []
    finally:
        await rig.close()


async def test_an_agent_failure_is_an_error_and_an_apology_in_the_local_voice() -> None:
    vs.require_espeak()
    rig, _ = await offline_rig()

    async def broken(context: TurnContext, tools: Any) -> AsyncIterator[TurnEvent]:
        raise RuntimeError("the planner fell over")
        yield  # pragma: no cover

    try:
        rig.agent.provider.run = broken  # type: ignore[method-assign]
        rig.agent.fallback = rig.agent.provider
        conn = await rig.connect()
        await conn.hello(deviceId=THERMOSTAT)
        mark, end = await conn.turn(said("what is the current temperature"))
        assert [e["code"] for e in conn.messages("error", mark)]
        assert texts(conn, mark, state="sentence_start")[-1] == APOLOGY[0] and conn.audio(mark, end)
    finally:
        await rig.close()
