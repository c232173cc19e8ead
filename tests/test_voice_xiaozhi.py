"""Stock XiaoZhi firmware against /ws/voice, replayed from the firmware's own code
(tests/xiaozhi_firmware.py, every field with its source file): Opus both ways on protocols 1, 2
and 3, the wake-word flow, the dialect the firmware acts on, device MCP tools used by the
offline engine, and every bad input of the XiaoZhi features."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest
import voice_samples as vs
from test_local_engine import RecordingTools, make_registry
from test_voice_session import TRANSCRIPT, Rig, ScriptedProvider, assert_no_voice_tasks, said, start_rig
from voice_doubles import AsrScript
from xiaozhi_firmware import FirmwareDevice, McpDevice, Property, Tool

from deviceagentd.agent.local import LocalProvider
from deviceagentd.agent.types import Delta, TurnContext, TurnEvent

FIRMWARE_TYPES = {"tts", "stt", "llm", "mcp", "alert", "system", "custom"}  # application.cc OnIncomingJson


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    the_rig = await start_rig()
    try:
        yield the_rig
    finally:
        await the_rig.close()
    assert the_rig.ds.problems == [] and the_rig.oa.problems == []


def offline_agent(rig: Rig) -> RecordingTools:
    """The real offline engine over a test site, so device tools are matched as in production."""
    registry = make_registry()
    provider = LocalProvider(registry)
    tools = RecordingTools(registry)
    rig.agent.provider = provider
    rig.agent.fallback = provider
    rig.agent.tools = tools
    return tools


async def firmware(rig: Rig, version: int = 1, mcp: McpDevice | None = None) -> FirmwareDevice:
    device = FirmwareDevice(rig.url, version=version, mcp=mcp)
    assert await device.open(), "the firmware gave up waiting for the server hello"
    return device


async def tools_listed(rig: Rig, device: FirmwareDevice, count: int = 4) -> None:
    for _ in range(300):
        if sum(1 for r in device.mcp.requests if r["method"] == "tools/list") and rig.service.open_sessions:
            await asyncio.sleep(0.05)
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"no tools/list: {device.mcp.requests}")


@pytest.mark.parametrize("version", [1, 2, 3])
async def test_the_firmware_completes_a_whole_turn_in_opus(rig: Rig, version: int) -> None:
    vs.require_espeak()
    device = await firmware(rig, version)
    try:
        # ParseServerHello: it decodes at the rate and duration we announce, in Opus.
        assert (device.server_sample_rate, device.server_frame_duration) == (16000, 60)
        assert device.session_id
        await tools_listed(rig, device)
        # ContinueWakeWordInvoke: the wake word's audio, listen detect, then listen start (auto).
        await device.speak(said("ni hao xiao zhi", lead_s=0.1, tail_s=0.1))
        await device.wake_word_detected("你好小智")
        await device.start_listening("auto")
        greeting_over = await device.wait_for("tts", state="stop")
        assert [m["text"] for m in device.messages("tts", 0) if m["state"] == "sentence_start"] == ["我在，请说。"]
        mark = len(device.json)
        await device.start_listening("auto")  # what the firmware sends after tts stop
        await device.speak(said())
        stt = await device.wait_for("stt", after=mark)
        assert device.json[stt]["text"] == TRANSCRIPT
        # tts start comes with the transcript, before the agent has said anything.
        assert device.json[stt + 1] == {"type": "tts", "state": "start"}
        stop = await device.wait_for("tts", after=stt, state="stop")
        states = [m.get("state") for m in device.json[stt:stop + 1] if m["type"] == "tts"]
        assert states == ["start", "sentence_start", "sentence_start", "stop"]
        assert device.messages("llm", stt) == [{"type": "llm", "text": "😶", "emotion": "neutral"}]
        # Every reply packet arrived while Speaking and decoded into exactly one announced frame.
        assert device.dropped_not_speaking == 0 and device.decode_failures == 0
        assert device.played and {len(p) for p in device.played} == {16000 * 60 // 1000 * 2}
        assert greeting_over < stt
        # Nothing the firmware does not know, no error.
        assert device.unknown == [] and device.messages("error") == []
        assert rig.service.stats.bad_audio == 0
    finally:
        await device.close()
    await assert_no_voice_tasks(rig)


async def test_the_reply_audio_is_the_speech_encoded(rig: Rig) -> None:
    """Opus out: what the firmware decodes is the TTS audio (a tone per text from the double),
    close to what a PCM session gets sample by sample."""
    rig.ds.tts.ms_per_char = 60  # 0.7 s of tone
    device = await firmware(rig)
    try:
        mark = len(device.json)
        assert await rig.service.announce(device.mac, "Hello there.") is True
        await device.wait_for("tts", after=mark, state="stop")
        pcm = b"".join(device.played)
        import numpy as np

        got = np.frombuffer(pcm, dtype="<i2").astype(np.float64)
        source = np.frombuffer(rig.ds.tts_pcm("Hello there.", 24000), dtype="<i2").astype(np.float64)
        # 24 kHz → 16 kHz: compare the energy and the dominant frequency of the tone.
        assert abs(np.sqrt(np.mean(got ** 2)) - np.sqrt(np.mean(source ** 2))) < 0.25 * np.sqrt(np.mean(source ** 2))
        steady = got[1600:-1600]
        spectrum = np.abs(np.fft.rfft(steady))
        peak_hz = np.argmax(spectrum) * 16000 / len(steady)
        freq = 200 + sum(b"Hello there.") % 600
        assert abs(peak_hz - freq) < 10, (peak_hz, freq)
    finally:
        await device.close()


async def test_dtx_silence_ends_the_utterance(rig: Rig) -> None:
    """Firmware DTX sends silence as packets of a few bytes; they decode to silence and the
    end of speech is found as with PCM."""
    vs.require_espeak()
    device = await firmware(rig)
    try:
        await device.start_listening("auto")
        packets = await device.speak(said(tail_s=2.0))
        assert min(len(p) for p in packets) <= 3  # DTX packets in the stream
        await device.wait_for("stt")
        await device.wait_for("tts", state="stop")
    finally:
        await device.close()


async def test_abort_is_always_answered_with_tts_stop(rig: Rig) -> None:
    device = await firmware(rig)
    try:
        await device.abort_speaking()
        await device.wait_for("tts", state="stop")  # nothing was playing
        rig.ds.tts.ms_per_char = 300
        mark = len(device.json)
        announcing = asyncio.create_task(rig.service.announce(device.mac, "A long announcement for the room."))
        await device.wait_for("tts", after=mark, state="start")
        abort_at = len(device.json)
        await device.abort_speaking(wake_word=True)
        await device.wait_for("tts", after=abort_at, state="stop")
        assert await announcing is False
        assert device.messages("error") == []
    finally:
        await device.close()


async def test_iot_ping_realtime_and_early_audio_are_accepted_quietly(rig: Rig) -> None:
    vs.require_espeak()
    device = await firmware(rig)
    try:
        await device.speak(said("hello", lead_s=0.1, tail_s=0.1))  # audio before any listen start
        await device.send_text('{"session_id":"' + device.session_id + '","type":"iot","update":true,'
                               '"descriptors":[{"name":"Speaker","methods":{}}]}')
        await device.send_text('{"type":"ping"}')
        await device.send_text('{"session_id":"' + device.session_id + '","type":"listen","state":"start",'
                               '"mode":"realtime"}')
        await device.speak(said())
        await device.wait_for("stt")
        await device.wait_for("tts", state="stop")
        assert device.messages("error") == [] and device.unknown == []
    finally:
        await device.close()


async def test_wake_word_greeting_can_be_off_and_typed_text_is_a_request() -> None:
    rig = await start_rig(settings={"wake_greeting": False})
    try:
        device = await firmware(rig)
        await device.wake_word_detected("Hi ESP")
        await asyncio.sleep(0.5)
        assert device.json == [] or all(m["type"] == "mcp" for m in device.json)
        await device.wake_word_detected("what is the current temperature")
        stt = await device.wait_for("stt", text="what is the current temperature")
        await device.wait_for("tts", after=stt, state="stop")
        assert rig.provider.contexts[-1].message == "what is the current temperature"
        await device.close()
    finally:
        await rig.close()


# ------------------------------------------------------------------------------ device MCP tools


@pytest.mark.parametrize(("said_text", "volume", "reply"), [
    ("set the speaker volume to 40", 40, "Done, the volume is set to 40."),
    ("把音量调到40", 40, "好的，音量已设为40。"),
])
async def test_the_offline_engine_sets_the_speaker_volume(rig: Rig, said_text: str, volume: int, reply: str,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    vs.require_espeak()
    site_tools = offline_agent(rig)
    rig.ds.asr = AsrScript(sentences=[said_text], bytes_per_sentence=32000)
    device = await firmware(rig)
    caplog.set_level(logging.INFO, logger="deviceagentd.voice")
    try:
        await tools_listed(rig, device)
        # initialize, then tools/list without user tools (mcp_server.cc hides them anyway).
        assert [r["method"] for r in device.mcp.requests][:2] == ["initialize", "tools/list"]
        assert device.mcp.requests[1]["params"] == {"cursor": "", "withUserTools": False}
        await device.start_listening("auto")
        await device.speak(said())
        stt = await device.wait_for("stt")
        assert device.json[stt]["text"] == said_text
        await device.wait_for("tts", after=stt, state="stop")
        assert device.mcp.calls == [("self.audio_speaker.set_volume", {"volume": volume})]
        assert device.mcp.volume == volume
        spoken = [m["text"] for m in device.messages("tts", stt) if m["state"] == "sentence_start"]
        assert "".join(spoken).replace(" ", "") == reply.replace(" ", "")
        assert site_tools.calls == []  # the site's devices were not touched
        logged = [r.getMessage() for r in caplog.records if r.getMessage().startswith("device tool")]
        assert len(logged) == 1 and "self.audio_speaker.set_volume" in logged[0] and "ok in" in logged[0]
        assert device.mac in logged[0]
        assert rig.service.mcp_stats.tool_calls == 1
    finally:
        await device.close()


async def test_user_only_tools_are_never_offered_and_names_are_safe_for_models(rig: Rig) -> None:
    seen: list[list[str]] = []

    async def capture(provider: ScriptedProvider, context: TurnContext) -> AsyncIterator[TurnEvent]:
        seen.append([spec.name for spec in context.extra_tools])
        yield Delta("ok.")

    rig.provider.script = capture
    mcp = McpDevice()
    device = await firmware(rig, mcp=mcp)
    try:
        await tools_listed(rig, device)
        await device.wake_word_detected("what can you do")
        await device.wait_for("tts", state="stop")
        assert seen == [["self_get_device_status", "self_audio_speaker_set_volume", "self_screen_set_brightness",
                         "self_screen_set_theme"]]
    finally:
        await device.close()


async def test_a_value_outside_the_tools_range_is_refused_before_the_device(rig: Rig) -> None:
    offline_agent(rig)
    device = await firmware(rig)
    try:
        await tools_listed(rig, device)
        await device.wake_word_detected("set the speaker volume to 140")
        stt = await device.wait_for("stt")
        await device.wait_for("tts", after=stt, state="stop")
        assert device.mcp.calls == []
        spoken = " ".join(m["text"] for m in device.messages("tts", stt) if m["state"] == "sentence_start")
        assert "at most 100" in spoken
    finally:
        await device.close()


@pytest.mark.parametrize(("behaviour", "words"), [
    ("error", "Audio codec is busy"),
    ("not_jsonrpc", "not a JSON-RPC 2.0 response"),
    ("silent", "did not answer tools/call within 1 s"),
])
async def test_a_tool_call_the_device_fails_is_a_spoken_failure(behaviour: str, words: str) -> None:
    rig = await start_rig(settings={"tool_timeout_s": 1.0})
    try:
        offline_agent(rig)
        device = await firmware(rig, mcp=McpDevice(on_call=behaviour))
        await tools_listed(rig, device)
        await device.wake_word_detected("set the speaker volume to 30")
        stt = await device.wait_for("stt")
        await device.wait_for("tts", after=stt, state="stop", timeout=20)
        spoken = " ".join(m["text"] for m in device.messages("tts", stt) if m["state"] == "sentence_start")
        assert words in spoken
        assert rig.service.mcp_stats.tool_failures == 1
        if behaviour == "not_jsonrpc":
            assert rig.service.mcp_stats.bad_messages == 1
        await device.close()
        await assert_no_voice_tasks(rig)
    finally:
        await rig.close()


async def test_a_device_that_disconnects_during_a_tool_call_leaves_nothing_waiting() -> None:
    rig = await start_rig(settings={"tool_timeout_s": 60.0})
    try:
        offline_agent(rig)
        mcp = McpDevice(on_call="silent")
        device = await firmware(rig, mcp=mcp)
        await tools_listed(rig, device)
        await device.wake_word_detected("set the speaker volume to 30")
        await asyncio.wait_for(mcp.call_started.wait(), 15)
        await device.close()
        await assert_no_voice_tasks(rig)  # well before the 60 s timeout
    finally:
        await rig.close()


async def test_a_device_that_never_answers_initialize_has_no_tools_and_the_session_goes_on(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="deviceagentd.voice")
    rig = await start_rig(settings={"mcp_list_timeout_s": 0.5})
    seen: list[int] = []

    async def capture(provider: ScriptedProvider, context: TurnContext) -> AsyncIterator[TurnEvent]:
        seen.append(len(context.extra_tools))
        yield Delta("ok.")

    rig.provider.script = capture
    try:
        device = await firmware(rig, mcp=McpDevice(silent_initialize=True))
        for _ in range(100):
            if any("no device tools" in r.getMessage() for r in caplog.records):
                break
            await asyncio.sleep(0.02)
        assert any("did not answer initialize within 0.5 s" in r.getMessage() for r in caplog.records)
        await device.wake_word_detected("what is the current temperature")
        await device.wait_for("tts", state="stop")
        assert seen == [0] and device.messages("error") == []
        await device.close()
    finally:
        await rig.close()


async def test_thousands_of_tools_are_capped(rig: Rig, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="deviceagentd.voice")
    many = [Tool(f"self.extra.tool_{i:04d}", f"Extra tool number {i}.", [Property("level", "integer", 0, 10)])
            for i in range(5000)]
    mcp = McpDevice(tools=many)
    device = await firmware(rig, mcp=mcp)
    try:
        for _ in range(300):
            if any("offering" in r.getMessage() or "beyond" in r.getMessage() for r in caplog.records):
                break
            await asyncio.sleep(0.02)
        pages = [r for r in mcp.requests if r["method"] == "tools/list"]
        assert len(pages) == 16  # MAX_PAGES, then it stops asking
        assert pages[1]["params"]["cursor"].startswith("self.extra.tool_")
        messages = " ".join(r.getMessage() for r in caplog.records)
        assert "beyond 16 pages" in messages and "offering 32 of the" in messages
    finally:
        await device.close()


async def test_mcp_replies_that_are_not_json_rpc_are_dropped_and_counted(rig: Rig) -> None:
    device = await firmware(rig)
    try:
        await tools_listed(rig, device)
        for payload in ('"just a string"', '{"jsonrpc":"2.0","id":999,"result":{}}', '[1,2,3]',
                        '{"jsonrpc":"2.0","method":"notifications/state_changed","params":{"newState":"idle"}}'):
            await device.send_mcp(payload)
        for _ in range(100):
            if rig.service.mcp_stats.bad_messages >= 3:
                break
            await asyncio.sleep(0.02)
        assert rig.service.mcp_stats.bad_messages == 3  # the notification is not an error
        assert device.messages("error") == []
        # The session goes on.
        await device.wake_word_detected("what is the current temperature")
        await device.wait_for("tts", state="stop")
    finally:
        await device.close()


# ------------------------------------------------------------------------------ bad audio and hellos


async def test_opus_packets_that_do_not_decode_are_counted_and_the_session_goes_on(rig: Rig) -> None:
    vs.require_espeak()
    device = await firmware(rig)
    try:
        await device.start_listening("auto")
        for junk in (b"\xff\xff\xff\xff\xff", b"\x0b" + b"\xff" * 40, b"\x03\xff"):  # libopus: corrupted stream
            await device.send_packet(junk)
        error_at = await device.wait_for("error", code="bad_audio")
        assert device.messages("alert") == []  # a protocol warning, not a failure to show
        await device.speak(said())
        await device.wait_for("stt", after=error_at)
        assert rig.service.stats.bad_audio == 3
    finally:
        await device.close()


@pytest.mark.parametrize(("params", "words"), [
    ({"format": "opus", "sample_rate": 44100, "channels": 1, "frame_duration": 60}, "Opus at 44100 Hz"),
    ({"format": "opus", "sample_rate": 16000, "channels": 1, "frame_duration": 25}, "frame_duration 25 ms"),
    ({"format": "opus", "sample_rate": 16000, "channels": 2, "frame_duration": 60}, "mono"),
])
async def test_an_opus_hello_we_cannot_serve_gets_an_error_and_an_alert(rig: Rig, params: dict[str, Any],
                                                                       words: str) -> None:
    conn = await rig.connect(version=1)
    await conn.send({"type": "hello", "version": 1, "features": {"mcp": True}, "transport": "websocket",
                     "audio_params": params})
    _, error = await conn.wait("error")
    assert error["code"] == "unsupported_audio" and words in error["message"]
    _, alert = await conn.wait("alert")
    assert alert == {"type": "alert", "status": "Error", "message": error["message"], "emotion": "sad"}
    # A corrected hello is accepted on the same connection.
    await conn.send({"type": "hello", "version": 1, "features": {"mcp": True}, "transport": "websocket",
                     "audio_params": {"format": "opus", "sample_rate": 16000, "channels": 1, "frame_duration": 60}})
    _, hello = await conn.wait("hello")
    assert hello["audio_params"] == {"format": "opus", "sample_rate": 16000, "channels": 1, "frame_duration": 60}


async def test_turn_failures_reach_the_device_as_alerts(rig: Rig) -> None:
    async def broken(provider: ScriptedProvider, context: TurnContext) -> AsyncIterator[TurnEvent]:
        raise RuntimeError("boom")
        yield Delta("")

    rig.provider.script = broken
    device = await firmware(rig)
    try:
        await device.wake_word_detected("what is the current temperature")
        stop = await device.wait_for("tts", state="stop")
        error = device.messages("error")[0]
        assert error["code"] == "internal_error"
        assert device.messages("alert") == [{"type": "alert", "status": "Error", "message": error["message"],
                                             "emotion": "sad"}]
        assert {m["type"] for m in device.json[:stop + 1]} <= FIRMWARE_TYPES | {"error"}
    finally:
        await device.close()


async def test_an_emqx_style_client_keeps_its_dialect(rig: Rig) -> None:
    """No features, no transport: asr / agent_reply / tts_complete as before, never stt or alert."""
    vs.require_espeak()
    conn = await rig.connect()
    await conn.hello()
    mark, _ = await conn.turn(said())
    kinds = {m["type"] for m in conn.messages(after=mark)}
    assert {"asr", "agent_reply", "tts_complete"} <= kinds and not kinds & {"stt", "llm", "alert"}
    assert json.dumps(conn.messages(after=mark)).count('"state": "start"') == 1


async def test_an_openai_compatible_model_gets_the_device_tools_as_function_tools(rig: Rig) -> None:
    """The OpenAI-compatible provider (against its loopback double) sees the speaker's tools as
    function tools and its call reaches the firmware's MCP server."""
    from openai_double import OpenAIDouble, ScriptedCall, text_reply, tool_call_reply

    from deviceagentd.agent.openai import OpenAIProvider, OpenAISettings

    async with OpenAIDouble(expected_api_key="sk-test") as double:
        double.script(tool_call_reply(ScriptedCall("self_audio_speaker_set_volume", '{"volume": 25}')),
                      text_reply("The volume is now 25."))
        provider = OpenAIProvider(OpenAISettings(base_url=double.base_url, api_key="sk-test", model="gpt-test"))
        rig.agent.provider = provider
        device = await firmware(rig)
        try:
            await tools_listed(rig, device)
            await device.wake_word_detected("make it quieter")
            stt = await device.wait_for("stt")
            await device.wait_for("tts", after=stt, state="stop")
            assert device.mcp.calls == [("self.audio_speaker.set_volume", {"volume": 25})]
            functions = {t["function"]["name"]: t["function"] for t in double.requests[0].body["tools"]}
            volume = functions["self_audio_speaker_set_volume"]
            assert volume["parameters"]["properties"] == {"volume": {"type": "integer", "minimum": 0, "maximum": 100}}
            # The rig's site has no tools of its own; user-only tools are not there.
            assert set(functions) == {"self_get_device_status", "self_audio_speaker_set_volume",
                                      "self_screen_set_brightness", "self_screen_set_theme"}
            tool_message = double.requests[1].messages[-1]
            assert tool_message["role"] == "tool" and "true" in tool_message["content"]
            assert double.problems == []
        finally:
            await device.close()
            await provider.close()
