"""VoiceService.announce: speaking on a speaker's open /ws/voice session outside any turn, over
real WebSocket connections (the rig of test_voice_session), with the DashScope double as TTS."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import voice_samples as vs
from test_voice_session import WAIT_S, Rig, ScriptedProvider, VoiceConn, all_closed, expected_audio, said, start_rig
from voice_doubles import TtsScript

from deviceagentd.agent.types import Delta, TurnContext, TurnEvent

NOTICE = "Checkout is at noon tomorrow."
SPEAKER = "a0:b1:c2:d3:e4:f5"


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    the_rig = await start_rig()
    try:
        yield the_rig
    finally:
        await the_rig.close()
    assert the_rig.ds.problems == [] and the_rig.oa.problems == []


async def speaker(rig: Rig, **hello: str) -> VoiceConn:
    conn = await rig.connect(headers={"Device-Id": SPEAKER})
    await conn.hello(**hello)
    return conn


async def test_an_announcement_is_spoken_on_the_speakers_session(rig: Rig) -> None:
    conn = await speaker(rig)
    other = await rig.connect(headers={"Device-Id": "another-speaker"})
    await other.hello()
    mark = len(conn.events)
    assert await rig.service.announce(SPEAKER, NOTICE) is True
    start, _ = await conn.wait("tts", after=mark, state="start")
    sentence, message = await conn.wait("tts", after=mark, state="sentence_start")
    assert message["text"] == NOTICE and start < sentence
    stop, _ = await conn.wait("tts", after=mark, state="stop")
    # The audio of the text, at the session's rate, in 60 ms frames, between start and stop.
    assert conn.audio(sentence, stop) == expected_audio(rig.ds.tts_pcm(NOTICE, 24000), 24000, 16000, 60)
    assert conn.messages("tts_complete", mark) == []  # no turn: nothing owed but tts stop
    assert conn.messages("error", mark) == []
    assert [m["type"] for m in other.messages()] == ["hello"]  # the other speaker heard nothing
    await all_closed(rig.ds.tasks)


async def test_the_hello_device_id_also_names_the_speaker(rig: Rig) -> None:
    conn = await rig.connect()
    await conn.hello(deviceId="room-1204-speaker")
    mark = len(conn.events)
    assert await rig.service.announce("room-1204-speaker", NOTICE) is True
    await conn.wait("tts", after=mark, state="stop")


async def test_no_open_session_means_false(rig: Rig) -> None:
    assert await rig.service.announce(SPEAKER, NOTICE) is False
    # Connected but no hello yet: it cannot speak.
    conn = await rig.connect(headers={"Device-Id": SPEAKER})
    assert await rig.service.announce(SPEAKER, NOTICE) is False
    await conn.hello()
    await conn.close()
    for _ in range(100):
        if rig.service.open_sessions == 0:
            break
        await asyncio.sleep(0.02)
    assert await rig.service.announce(SPEAKER, NOTICE) is False
    assert await rig.service.announce("", NOTICE) is False


async def test_bad_text_is_refused(rig: Rig) -> None:
    await speaker(rig)
    with pytest.raises(ValueError, match="needs text"):
        await rig.service.announce(SPEAKER, "  ")
    with pytest.raises(ValueError, match="limited to 1000"):
        await rig.service.announce(SPEAKER, "x" * 1001)


async def test_an_announcement_waits_for_the_reply_being_spoken(rig: Rig) -> None:
    vs.require_espeak()
    conn = await speaker(rig)
    mark = await conn.say(said())
    await conn.wait("tts", after=mark, state="start")
    spoken = await rig.service.announce(SPEAKER, NOTICE)
    assert spoken is True
    complete, _ = await conn.wait("tts_complete", after=mark)
    notice, _ = await conn.wait("tts", after=mark, state="sentence_start", text=NOTICE)
    assert complete < notice  # the reply ended first, the announcement followed


async def test_abort_stops_an_announcement(rig: Rig) -> None:
    rig.ds.tts = TtsScript(ms_per_char=300, chunk_bytes=1600)  # about 9 s of speech
    conn = await speaker(rig)
    mark = len(conn.events)
    announcing = asyncio.create_task(rig.service.announce(SPEAKER, NOTICE))
    await conn.wait("tts", after=mark, state="start")
    abort_at = len(conn.events)
    await conn.send({"type": "abort"})
    stop, _ = await conn.wait("tts", after=abort_at, state="stop")
    assert await asyncio.wait_for(announcing, WAIT_S) is False
    await asyncio.sleep(0.3)
    assert conn.audio(stop) == b""
    await all_closed(rig.ds.tasks)


async def test_listen_start_does_not_cut_an_announcement(rig: Rig) -> None:
    """XiaoZhi firmware answers every `tts stop` with `listen start`; one arriving just after an
    announcement began (it followed a reply) must not stop it."""
    rig.ds.tts = TtsScript(ms_per_char=40)
    conn = await speaker(rig)
    mark = len(conn.events)
    announcing = asyncio.create_task(rig.service.announce(SPEAKER, NOTICE))
    await conn.wait("tts", after=mark, state="start")
    await conn.send({"type": "listen", "state": "start", "mode": "auto"})
    assert await asyncio.wait_for(announcing, WAIT_S) is True
    stop, _ = await conn.wait("tts", after=mark, state="stop")
    assert conn.audio(mark, stop) == expected_audio(rig.ds.tts_pcm(NOTICE, 24000), 24000, 16000, 60)


async def test_a_failing_tts_is_false_and_reported(rig: Rig) -> None:
    rig.ds.tts = TtsScript(fail=("InvalidParameter", "voice not found"))
    conn = await speaker(rig)
    mark = len(conn.events)
    assert await rig.service.announce(SPEAKER, NOTICE) is False
    _, error = await conn.wait("error", after=mark)
    assert error["code"] == "tts_failed"


async def test_the_speaker_leaving_mid_announcement_is_false(rig: Rig) -> None:
    rig.ds.tts = TtsScript(ms_per_char=300, chunk_bytes=1600)
    conn = await speaker(rig)
    mark = len(conn.events)
    announcing = asyncio.create_task(rig.service.announce(SPEAKER, NOTICE))
    await conn.wait("tts", after=mark, state="start")
    await conn.close()
    assert await asyncio.wait_for(announcing, WAIT_S) is False
    await all_closed(rig.ds.tasks)


async def test_the_microphone_is_muted_while_an_announcement_plays(rig: Rig) -> None:
    """Speech arriving while the announcement plays is our own echo: no utterance starts."""
    vs.require_espeak()
    rig.ds.tts = TtsScript(ms_per_char=100)  # 3 s of speech

    async def never(provider: ScriptedProvider, context: TurnContext) -> AsyncIterator[TurnEvent]:
        raise AssertionError("no turn may start")
        yield Delta("")

    rig.provider.script = never
    conn = await speaker(rig)
    await conn.send({"type": "listen", "state": "start", "mode": "auto"})
    await asyncio.sleep(0.2)
    mark = len(conn.events)
    announcing = asyncio.create_task(rig.service.announce(SPEAKER, NOTICE))
    await conn.wait("tts", after=mark, state="start")
    await conn.send_audio(said(lead_s=0.1, tail_s=0.2), pace_s=0.06)  # real time, during the speech
    assert await asyncio.wait_for(announcing, WAIT_S) is True
    await asyncio.sleep(0.5)
    assert conn.messages("asr", mark) == [] and rig.provider.contexts == []
