"""/ws/voice against clients that are not speakers (issue 13): garbage and deeply nested JSON
in text frames, and idle connections that never say hello."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator

import aiohttp
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_voice_session import Rig, start_rig

from deviceagentd.voice.connection import waiting_limit


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    the_rig = await start_rig(max_sessions=2)
    try:
        yield the_rig
    finally:
        await the_rig.close()


async def test_json_nested_1000_deep_is_a_bad_json_error_and_the_session_goes_on(rig: Rig) -> None:
    conn = await rig.connect()
    await conn.ws.send_str("[" * 1000 + "]" * 1000)
    _, error = await conn.wait("error")
    assert error["code"] == "bad_json" and "nest" in error["message"]
    await conn.ws.send_str('{"type": "hello", "x": ' + "{\"a\":" * 5000 + "1" + "}" * 5000 + "}")
    _, error = await conn.wait("error", after=1)
    assert error["code"] == "bad_json"
    assert (await conn.hello())["type"] == "hello"


async def test_garbage_frames_never_end_a_session(rig: Rig) -> None:
    conn = await rig.connect()
    await conn.hello()
    garbage = [
        "", "null", "[]", "1e400", '{"type": 5}', '{"type": "hello"}', '{"type": "listen", "mode": []}',
        '{"type": "\\ud800"}', "\x00\x01", '{"type": "listen", "state": "start", "mode": "auto", "extra": NaN}',
        '{"type": "stop", "visionRefs": [' + "[" * 50 + "]" * 50 + "]}",
    ]
    for text in garbage:
        await conn.ws.send_str(text)
    for data in (b"", b"\x00", os.urandom(3), os.urandom(600), b"\xff" * 4096):
        await conn.ws.send_bytes(data)
    await conn.send({"type": "abort"})
    await asyncio.sleep(0.5)
    assert not conn.closed.is_set(), conn.messages()
    assert {m["code"] for m in conn.messages("error")} >= {"bad_json", "bad_message"}
    # Still a working session.
    mark = len(conn.events)
    await conn.send({"type": "listen", "state": "start", "mode": "manual"})
    await conn.send({"type": "listen", "state": "stop"})
    await asyncio.sleep(0.2)
    assert not conn.closed.is_set() and len(conn.events) >= mark


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(max_size=300) | st.binary(max_size=300).map(lambda b: b.decode("latin-1")))
async def test_any_text_frame_gets_an_answer_or_nothing_never_a_closed_session(rig: Rig, text: str) -> None:
    conn = await rig.connect()
    try:
        await conn.ws.send_str(text)
        await conn.send({"type": "abort"})
        await asyncio.sleep(0.05)
        assert not conn.closed.is_set(), (text, conn.messages())
        for message in conn.messages():
            json.dumps(message)
    finally:
        await conn.close()


async def test_idle_connections_cannot_hold_the_voice_slots(rig: Rig) -> None:
    limit = waiting_limit(rig.service.sessions.max_sessions)
    idle = [await rig.connect() for _ in range(limit + 5)]
    # The oldest five were evicted to make room; none of them holds a voice slot.
    for conn in idle[:5]:
        _, error = await conn.wait("error")
        assert error["code"] == "too_many_connections"
        assert await conn.wait_closed() == aiohttp.WSCloseCode.TRY_AGAIN_LATER
    assert rig.service.open_sessions == 0 and rig.service.sessions.waiting == limit
    # Speakers that connect now get both slots at once, however many idle connections there are.
    speakers = [await rig.connect(), await rig.connect()]
    for speaker in speakers:
        assert (await speaker.hello())["type"] == "hello"
    assert rig.service.open_sessions == 2
    # With both slots taken, a third is refused at the door, as before.
    third = await rig.connect()
    _, error = await third.wait("error")
    assert error["code"] == "too_many_sessions"


async def test_a_hello_when_the_slots_filled_meanwhile_is_refused() -> None:
    rig = await start_rig(max_sessions=1)
    try:
        early, late = await rig.connect(), await rig.connect()  # both wait for hello
        await early.hello()
        await late.send({"type": "hello", "version": 3,
                         "audio_params": {"format": "pcm", "sample_rate": 16000, "channels": 1, "frame_duration": 60}})
        _, error = await late.wait("error")
        assert error["code"] == "too_many_sessions"
        assert await late.wait_closed() == aiohttp.WSCloseCode.TRY_AGAIN_LATER
    finally:
        await rig.close()


async def test_a_connection_without_hello_lives_5_s_by_default() -> None:
    rig = await start_rig(settings={"hello_timeout_s": 0.3})
    try:
        silent = await rig.connect()
        _, error = await silent.wait("error")
        assert error["code"] == "hello_timeout"
        assert await silent.wait_closed(5.0) == aiohttp.WSCloseCode.POLICY_VIOLATION
        assert rig.service.sessions.waiting == 0
    finally:
        await rig.close()
    from deviceagentd.voice.settings import SessionSettings

    assert SessionSettings().hello_timeout_s == 5.0
