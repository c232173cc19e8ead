"""Speech providers against loopback services that speak the real protocols (voice_doubles.py)
and the real espeak-ng: results in order, errors mapped to codes, every socket, process and
task gone after close(), credentials never in logs or messages."""

from __future__ import annotations

import asyncio
import logging
import math
import os
import shutil
import struct
import time
from collections.abc import AsyncIterator, Awaitable
from pathlib import Path
from typing import Any, TypeVar

import pytest
import uvloop
from mosquitto_broker import free_port
from voice_doubles import AsrScript, DashScopeDouble, OpenAiAudioDouble, SpeechScript, TranscriptionScript, TtsScript

from deviceagentd.voice.providers import (
    AsrResult,
    AsrStream,
    DashScopeAsr,
    DashScopeAsrSettings,
    DashScopeTts,
    DashScopeTtsSettings,
    EspeakSettings,
    EspeakTts,
    OpenAiAsr,
    OpenAiAsrSettings,
    OpenAiTts,
    OpenAiTtsSettings,
    TtsStream,
    VoiceProviderError,
)
from deviceagentd.voice.providers.base import AsrProvider, TtsProvider
from deviceagentd.voice.providers.dashscope_asr import join_text
from deviceagentd.voice.providers.dashscope_tts import text_pieces
from deviceagentd.voice.providers.pcm import WholeSamples, wav_bytes

WAIT_S = 10.0  # generous: only a broken client takes this long
FRAME = 1920  # 60 ms at 16 kHz s16le, what the session sends
PROVIDERS_DIR = str(Path(__file__).resolve().parent.parent / "deviceagentd" / "voice" / "providers")
needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="apt-get install -y espeak-ng")
T = TypeVar("T")


async def within(awaitable: Awaitable[T], seconds: float = WAIT_S) -> T:
    return await asyncio.wait_for(awaitable, seconds)


def speech(seconds: float) -> bytes:
    """16 kHz s16le: a tone standing in for speech."""
    n = int(seconds * 16000)
    return b"".join(struct.pack("<h", int(6000 * math.sin(2 * math.pi * 300 * i / 16000))) for i in range(n))


def provider_tasks() -> list[asyncio.Task[Any]]:
    """Tasks still running code from deviceagentd/voice/providers."""
    alive = []
    for task in asyncio.all_tasks():
        code = getattr(task.get_coro(), "cr_code", None)
        if not task.done() and code is not None and code.co_filename.startswith(PROVIDERS_DIR):
            alive.append(task)
    return alive


async def assert_no_provider_tasks() -> None:
    await asyncio.sleep(0)  # let cancelled tasks run their last step
    assert provider_tasks() == []


async def collect_results(stream: AsrStream) -> list[AsrResult]:
    return [r async for r in stream.results()]


async def collect_audio(stream: TtsStream) -> list[bytes]:
    return [chunk async for chunk in stream.audio()]


async def send_frames(stream: AsrStream, pcm: bytes, pace_s: float = 0.0) -> None:
    for i in range(0, len(pcm), FRAME):
        await stream.send_audio(pcm[i : i + FRAME])
        if pace_s:
            await asyncio.sleep(pace_s)


def rms(pcm: bytes) -> float:
    samples = struct.unpack(f"<{len(pcm) // 2}h", pcm[: len(pcm) // 2 * 2])
    return math.sqrt(sum(s * s for s in samples) / max(1, len(samples)))


async def expect_error(awaitable: Awaitable[Any], code: str) -> VoiceProviderError:
    with pytest.raises(VoiceProviderError) as info:
        await within(awaitable)
    assert info.value.code == code, info.value
    return info.value


@pytest.fixture
async def dashscope() -> AsyncIterator[DashScopeDouble]:
    async with DashScopeDouble() as double:
        yield double
        assert double.problems == []


@pytest.fixture
async def openai_audio() -> AsyncIterator[OpenAiAudioDouble]:
    async with OpenAiAudioDouble() as double:
        yield double
        assert double.problems == []


def ds_asr(double: DashScopeDouble, **overrides: Any) -> DashScopeAsr:
    return DashScopeAsr(DashScopeAsrSettings(api_key=double.api_key, url=double.url, **overrides))


def ds_tts(double: DashScopeDouble, **overrides: Any) -> DashScopeTts:
    return DashScopeTts(DashScopeTtsSettings(api_key=double.api_key, url=double.url, **overrides))


def oa_asr(double: OpenAiAudioDouble, **overrides: Any) -> OpenAiAsr:
    settings = OpenAiAsrSettings(base_url=double.base_url, api_key=double.api_key or "", **overrides)
    return OpenAiAsr(settings)


def oa_tts(double: OpenAiAudioDouble, **overrides: Any) -> OpenAiTts:
    settings = OpenAiTtsSettings(base_url=double.base_url, api_key=double.api_key or "", **overrides)
    return OpenAiTts(settings)


def test_classes_satisfy_the_protocols() -> None:
    asr: list[AsrProvider] = [DashScopeAsr(DashScopeAsrSettings()), OpenAiAsr(OpenAiAsrSettings())]
    tts: list[TtsProvider] = [DashScopeTts(DashScopeTtsSettings()), OpenAiTts(OpenAiTtsSettings()), EspeakTts()]
    assert [p.name for p in asr] == ["aliyun", "openai"]
    assert [p.name for p in tts] == ["aliyun", "openai", "espeak"]


# ================================================================= DashScope realtime ASR


async def test_dashscope_asr_partials_then_one_final(dashscope: DashScopeDouble) -> None:
    dashscope.asr = AsrScript(sentences=["turn on the living room light"], bytes_per_sentence=64000)
    provider = ds_asr(dashscope, max_sentence_silence_ms=800)
    try:
        stream = await within(provider.start(language="en-US"))
        reader = asyncio.create_task(collect_results(stream))
        audio = speech(1.5)
        await send_frames(stream, audio, pace_s=0.002)
        finish_at = time.monotonic()
        await stream.finish()
        results = await within(reader)
        final_latency = time.monotonic() - finish_at
        await dashscope.tasks[0].wait_closed()  # the client closes once the task is finished
        await stream.close()
    finally:
        await provider.close()

    assert results[-1] == AsrResult("turn on the living room light", final=True)
    partials = results[:-1]
    assert len(partials) >= 3 and all(not r.final for r in partials)
    # Each partial is the utterance so far: it grows towards the final text.
    assert all("turn on the living room light".startswith(r.text) for r in partials)
    assert [len(r.text) for r in partials] == sorted(len(r.text) for r in partials)
    assert final_latency < 1.0

    task = dashscope.tasks[0]
    assert task.kind == "asr"
    assert task.headers["Authorization"] == f"Bearer {dashscope.api_key}"
    assert task.run_task["payload"]["model"] == "paraformer-realtime-v2"
    assert task.parameters["language_hints"] == ["en"]
    assert task.parameters["max_sentence_silence"] == 800
    assert bytes(task.audio) == audio
    assert task.finish_received and task.client_closed
    await assert_no_provider_tasks()


async def test_dashscope_asr_joins_the_sentences_of_one_utterance(dashscope: DashScopeDouble) -> None:
    dashscope.asr = AsrScript(sentences=["今天天气很好。", "把空调打开。"], bytes_per_sentence=16000)
    provider = ds_asr(dashscope)
    try:
        stream = await within(provider.start())
        reader = asyncio.create_task(collect_results(stream))
        await send_frames(stream, speech(1.6))  # the first sentence ends after 0.5 s
        await stream.finish()
        results = await within(reader)
        await stream.close()
    finally:
        await provider.close()
    assert results[-1] == AsrResult("今天天气很好。把空调打开。", final=True)
    # The closed first sentence stays in every later partial.
    later = [r.text for r in results if r.text.startswith("今天天气很好。")]
    assert later[0] == "今天天气很好。"
    assert "language_hints" not in dashscope.tasks[0].parameters
    assert "max_sentence_silence" not in dashscope.tasks[0].parameters


def test_join_text_spaces_latin_sentences_only() -> None:
    assert join_text("Hello there.", "How are you?") == "Hello there. How are you?"
    assert join_text("你好。", "打开灯。") == "你好。打开灯。"
    assert join_text("", "x") == "x"
    assert join_text("x", "") == "x"


async def test_dashscope_asr_task_failed_on_run_task(dashscope: DashScopeDouble) -> None:
    dashscope.asr = AsrScript(fail=("ModelNotFound", "Model not found (paraformer-x)!"))
    provider = ds_asr(dashscope, model="paraformer-x")
    try:
        error = await expect_error(provider.start(), "asr_failed")
        await dashscope.tasks[0].wait_closed()
    finally:
        await provider.close()
    assert "ModelNotFound" in error.message and "Model not found (paraformer-x)!" in error.message


async def test_dashscope_asr_task_failed_mid_utterance(dashscope: DashScopeDouble) -> None:
    dashscope.asr = AsrScript(fail=("InternalError", "decoder crashed"), fail_after_bytes=8000)
    provider = ds_asr(dashscope)
    try:
        stream = await within(provider.start())
        reader = asyncio.create_task(collect_results(stream))
        with pytest.raises(VoiceProviderError):
            await send_frames(stream, speech(2.0), pace_s=0.005)  # the socket is gone after the failure
        error = await expect_error(reader, "asr_failed")
        assert "decoder crashed" in error.message
        await dashscope.tasks[0].wait_closed()
        await stream.close()
    finally:
        await provider.close()
    await assert_no_provider_tasks()


async def test_dashscope_auth_failure_at_the_upgrade(dashscope: DashScopeDouble) -> None:
    provider = DashScopeAsr(DashScopeAsrSettings(api_key="sk-wrong-key-987654321", url=dashscope.url))
    try:
        error = await expect_error(provider.start(), "provider_auth")
    finally:
        await provider.close()
    assert "sk-wrong-key-987654321" not in str(error)
    assert dashscope.rejected_upgrades == 1


async def test_dashscope_auth_failure_reported_as_task_failed(dashscope: DashScopeDouble) -> None:
    dashscope.asr = AsrScript(fail=("InvalidApiKey", "Invalid API-key provided."))
    provider = ds_asr(dashscope)
    try:
        await expect_error(provider.start(), "provider_auth")
    finally:
        await provider.close()


async def test_dashscope_asr_times_out_waiting_for_task_started(dashscope: DashScopeDouble) -> None:
    dashscope.asr = AsrScript(hang_before_start=True)
    provider = ds_asr(dashscope, start_timeout_s=0.3)
    try:
        started = time.monotonic()
        await expect_error(provider.start(), "provider_timeout")
        assert time.monotonic() - started < 3.0
        await dashscope.tasks[0].wait_closed()
        assert dashscope.tasks[0].client_closed
    finally:
        await provider.close()


async def test_dashscope_asr_times_out_waiting_for_the_final(dashscope: DashScopeDouble) -> None:
    dashscope.asr = AsrScript(hang_after_finish=True)
    provider = ds_asr(dashscope, final_timeout_s=0.3)
    try:
        stream = await within(provider.start())
        reader = asyncio.create_task(collect_results(stream))
        await send_frames(stream, speech(0.5))
        await stream.finish()
        await expect_error(reader, "provider_timeout")
        await dashscope.tasks[0].wait_closed()  # the reader gave up and closed
        assert dashscope.tasks[0].client_closed
        await stream.close()
    finally:
        await provider.close()
    await assert_no_provider_tasks()


async def test_dashscope_asr_close_mid_utterance_closes_the_socket(dashscope: DashScopeDouble) -> None:
    provider = ds_asr(dashscope)
    try:
        stream = await within(provider.start())
        results = stream.results()
        await send_frames(stream, speech(0.5))
        first = await within(anext(results))
        assert not first.final
        await within(stream.close())
        await within(stream.close())  # idempotent
        assert [r async for r in results] == []  # the iterator ends, no final
        # Observed before provider.close(), which would close every socket anyway.
        task = dashscope.tasks[0]
        await task.wait_closed()
        assert task.client_closed and not task.finish_received
    finally:
        await provider.close()
    await assert_no_provider_tasks()


async def test_dashscope_asr_cancelled_consumer_then_close(dashscope: DashScopeDouble) -> None:
    provider = ds_asr(dashscope)
    try:
        stream = await within(provider.start())
        reader = asyncio.create_task(collect_results(stream))
        await send_frames(stream, speech(0.3))
        await asyncio.sleep(0.05)
        reader.cancel()
        with pytest.raises(asyncio.CancelledError):
            await reader
        await within(stream.close())
        await dashscope.tasks[0].wait_closed()
    finally:
        await provider.close()
    await assert_no_provider_tasks()


async def test_dashscope_asr_connection_dropped(dashscope: DashScopeDouble) -> None:
    dashscope.asr = AsrScript(drop_after_bytes=6000)
    provider = ds_asr(dashscope)
    try:
        stream = await within(provider.start())
        reader = asyncio.create_task(collect_results(stream))
        with pytest.raises(VoiceProviderError):
            await send_frames(stream, speech(2.0), pace_s=0.005)
        error = await expect_error(reader, "asr_failed")
        assert "closed" in error.message
        await stream.close()
    finally:
        await provider.close()


async def test_dashscope_unreachable() -> None:
    provider = DashScopeAsr(DashScopeAsrSettings(api_key="k", url=f"ws://127.0.0.1:{free_port()}/api-ws/v1/inference"))
    try:
        await expect_error(provider.start(), "provider_unreachable")
    finally:
        await provider.close()


async def test_dashscope_connect_timeout() -> None:
    # A listener that accepts the connection and never answers the upgrade.
    writers: list[asyncio.StreamWriter] = []

    async def silent(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    provider = DashScopeAsr(DashScopeAsrSettings(api_key="k", url=f"ws://127.0.0.1:{port}/x", connect_timeout_s=0.3))
    try:
        await expect_error(provider.start(), "provider_timeout")
    finally:
        await provider.close()
        for writer in writers:
            writer.close()
        server.close()
        await server.wait_closed()


# ================================================================= DashScope CosyVoice TTS


async def test_dashscope_tts_streams_audio_per_clause(dashscope: DashScopeDouble) -> None:
    provider = ds_tts(dashscope, sample_rate=16000, voice="longanyang", model="cosyvoice-v3-flash")
    clauses = ["Sure, ", "the light is on now.", "今天二十四度。"]
    try:
        stream = await within(provider.start())
        assert stream.sample_rate == 16000
        audio = stream.audio()
        await stream.send_text(clauses[0])
        # Audio arrives before the reply is finished: nothing is held back.
        first = await within(anext(audio))
        await stream.send_text("   ")  # ignored
        for clause in clauses[1:]:
            await stream.send_text(clause)
        await stream.finish()
        rest = [chunk async for chunk in audio]
        await dashscope.tasks[0].wait_closed()
        await stream.close()
    finally:
        await provider.close()
    expected = b"".join(dashscope.tts_pcm(c, 16000) for c in clauses)
    assert first + b"".join(rest) == expected
    assert all(len(c) % 2 == 0 for c in [first, *rest])
    task = dashscope.tasks[0]
    assert task.kind == "tts" and task.texts == clauses and task.finish_received
    assert task.run_task["payload"]["model"] == "cosyvoice-v3-flash"
    assert task.parameters["voice"] == "longanyang"
    assert task.parameters["sample_rate"] == 16000
    await assert_no_provider_tasks()


async def test_dashscope_tts_voice_override(dashscope: DashScopeDouble) -> None:
    provider = ds_tts(dashscope)
    try:
        stream = await within(provider.start(voice="longxiaochun_v2"))
        await stream.send_text("Hi.")
        await stream.finish()
        assert b"".join(await within(collect_audio(stream))) == dashscope.tts_pcm("Hi.", 24000)
        await stream.close()
    finally:
        await provider.close()
    assert dashscope.tasks[0].parameters["voice"] == "longxiaochun_v2"


def test_dashscope_tts_rejects_unsupported_rates() -> None:
    with pytest.raises(ValueError):
        DashScopeTts(DashScopeTtsSettings(sample_rate=11025))


def test_text_pieces_respect_the_continue_task_limit() -> None:
    assert text_pieces("abc") == ["abc"]
    assert text_pieces("abcdef", limit=4) == ["abcd", "ef"]
    assert text_pieces("你好世界", limit=4) == ["你好", "世界"]  # CJK counts twice
    assert "".join(text_pieces("a你b好" * 100, limit=7)) == "a你b好" * 100


async def test_dashscope_tts_task_failed(dashscope: DashScopeDouble) -> None:
    dashscope.tts = TtsScript(fail=("InvalidParameter", "[tts:]Engine return error code: 418"), fail_after_texts=1)
    provider = ds_tts(dashscope)
    try:
        stream = await within(provider.start())
        await stream.send_text("Hello.")
        error = await expect_error(collect_audio(stream), "tts_failed")
        assert "418" in error.message
        with pytest.raises(VoiceProviderError):
            await stream.send_text("More.")
        await stream.close()
    finally:
        await provider.close()
    await assert_no_provider_tasks()


async def test_dashscope_tts_times_out_after_finish(dashscope: DashScopeDouble) -> None:
    dashscope.tts = TtsScript(hang_after_finish=True)
    provider = ds_tts(dashscope, idle_timeout_s=0.3)
    try:
        stream = await within(provider.start())
        await stream.send_text("Hello.")
        await stream.finish()
        await expect_error(collect_audio(stream), "provider_timeout")
        await dashscope.tasks[0].wait_closed()
        await stream.close()
    finally:
        await provider.close()


async def test_dashscope_tts_close_mid_reply_closes_the_socket(dashscope: DashScopeDouble) -> None:
    dashscope.tts = TtsScript(chunk_delay_s=0.05, chunk_bytes=1600)
    provider = ds_tts(dashscope)
    try:
        stream = await within(provider.start())
        audio = stream.audio()
        await stream.send_text("A long sentence that takes a while to synthesise, chunk by chunk.")
        await within(anext(audio))
        closed_at = time.monotonic()
        await within(stream.close())
        assert [c async for c in audio] == []
        task = dashscope.tasks[0]
        await task.wait_closed()
        assert task.client_closed
        assert task.closed_at is not None and task.closed_at - closed_at < 2.0
    finally:
        await provider.close()
    await assert_no_provider_tasks()


async def test_dashscope_tts_auth_failure(dashscope: DashScopeDouble) -> None:
    provider = DashScopeTts(DashScopeTtsSettings(api_key="sk-nope-000000", url=dashscope.url))
    try:
        await expect_error(provider.start(), "provider_auth")
    finally:
        await provider.close()


# ================================================================= OpenAI transcriptions


async def test_openai_asr_uploads_a_wav_and_returns_one_final(openai_audio: OpenAiAudioDouble) -> None:
    openai_audio.transcription = TranscriptionScript(text="  Set the temperature to 24.  ")
    provider = oa_asr(openai_audio, model="gpt-4o-mini-transcribe")
    audio = speech(1.0)
    try:
        stream = await within(provider.start(language="en-GB"))
        reader = asyncio.create_task(collect_results(stream))
        await send_frames(stream, audio)
        await stream.finish()
        results = await within(reader)
        await stream.close()
    finally:
        await provider.close()
    assert results == [AsrResult("Set the temperature to 24.", final=True)]
    request = openai_audio.transcriptions[0]
    assert (request.channels, request.sample_width, request.sample_rate) == (1, 2, 16000)
    assert request.pcm == audio
    assert request.fields["model"] == "gpt-4o-mini-transcribe"
    assert request.fields["language"] == "en"
    assert request.content_type == "audio/wav"
    assert request.headers["Authorization"] == f"Bearer {openai_audio.api_key}"


async def test_openai_asr_bounds_the_utterance(openai_audio: OpenAiAudioDouble) -> None:
    provider = oa_asr(openai_audio, max_utterance_s=0.5)
    try:
        stream = await within(provider.start())
        await send_frames(stream, speech(2.0))
        await stream.finish()
        await within(collect_results(stream))
        await stream.close()
    finally:
        await provider.close()
    assert len(openai_audio.transcriptions[0].pcm) == 16000
    assert "language" not in openai_audio.transcriptions[0].fields


async def test_openai_asr_empty_utterance_needs_no_request(openai_audio: OpenAiAudioDouble) -> None:
    provider = oa_asr(openai_audio)
    try:
        stream = await within(provider.start())
        await stream.finish()
        assert await within(collect_results(stream)) == [AsrResult("", final=True)]
        await stream.close()
    finally:
        await provider.close()
    assert openai_audio.transcriptions == []


@pytest.mark.parametrize(
    ("status", "code"), [(401, "provider_auth"), (429, "provider_rate_limited"), (400, "asr_failed"),
                         (500, "provider_unreachable"), (503, "provider_unreachable")]
)  # fmt: skip
async def test_openai_asr_http_errors(openai_audio: OpenAiAudioDouble, status: int, code: str) -> None:
    openai_audio.transcription = TranscriptionScript(status=status, error_message="model overloaded")
    provider = oa_asr(openai_audio)
    try:
        stream = await within(provider.start())
        await send_frames(stream, speech(0.2))
        await stream.finish()
        error = await expect_error(collect_results(stream), code)
        await stream.close()
    finally:
        await provider.close()
    if status != 401:
        assert "model overloaded" in error.message


async def test_openai_asr_wrong_key_is_not_echoed(openai_audio: OpenAiAudioDouble) -> None:
    settings = OpenAiAsrSettings(base_url=openai_audio.base_url, api_key="sk-wrong-abcdefgh-5678")
    provider = OpenAiAsr(settings)
    try:
        stream = await within(provider.start())
        await send_frames(stream, speech(0.2))
        await stream.finish()
        error = await expect_error(collect_results(stream), "provider_auth")
        await stream.close()
    finally:
        await provider.close()
    assert "5678" not in str(error)


async def test_openai_asr_times_out(openai_audio: OpenAiAudioDouble) -> None:
    openai_audio.transcription = TranscriptionScript(delay_s=5.0)
    provider = oa_asr(openai_audio, request_timeout_s=0.3)
    try:
        stream = await within(provider.start())
        await send_frames(stream, speech(0.2))
        await stream.finish()
        await expect_error(collect_results(stream), "provider_timeout")
        await stream.close()
    finally:
        await provider.close()


async def test_openai_asr_close_during_the_upload(openai_audio: OpenAiAudioDouble) -> None:
    openai_audio.transcription = TranscriptionScript(delay_s=5.0)
    provider = oa_asr(openai_audio)
    try:
        stream = await within(provider.start())
        results = stream.results()
        await send_frames(stream, speech(0.2))
        await stream.finish()
        await asyncio.sleep(0.2)
        await within(stream.close())
        assert [r async for r in results] == []
    finally:
        await provider.close()
    await assert_no_provider_tasks()


# ================================================================= OpenAI speech


async def test_openai_tts_one_request_per_clause_in_order(openai_audio: OpenAiAudioDouble) -> None:
    # Odd chunk sizes split samples; a slow first clause checks that order is kept anyway.
    openai_audio.speech = SpeechScript(chunk_bytes=4801, chunk_delay_s=0.01)
    provider = oa_tts(openai_audio, model="gpt-4o-mini-tts", voice="coral", instructions="Speak calmly.")
    clauses = ["Okay, the air conditioner is on, ", "and the target is twenty four degrees."]
    try:
        stream = await within(provider.start())
        assert stream.sample_rate == 24000
        audio = stream.audio()
        await stream.send_text(clauses[0])
        first = await within(anext(audio))  # streamed before the reply is finished
        await stream.send_text(clauses[1])
        await stream.finish()
        rest = [c async for c in audio]
        await stream.close()
    finally:
        await provider.close()
    chunks = [first, *rest]
    assert b"".join(chunks) == b"".join(openai_audio.speech_pcm(c) for c in clauses)
    assert all(len(c) % 2 == 0 for c in chunks)
    bodies = [r.body for r in openai_audio.speeches]
    assert [b["input"] for b in bodies] == clauses
    assert all(b["response_format"] == "pcm" and b["voice"] == "coral" for b in bodies)
    assert bodies[0]["model"] == "gpt-4o-mini-tts" and bodies[0]["instructions"] == "Speak calmly."
    await assert_no_provider_tasks()


async def test_openai_tts_fetches_the_next_clause_while_one_plays(openai_audio: OpenAiAudioDouble) -> None:
    openai_audio.speech = SpeechScript(chunk_bytes=4800, chunk_delay_s=0.02)
    provider = oa_tts(openai_audio)
    clauses = ["First sentence here.", "Second one.", "Third."]
    try:
        stream = await within(provider.start(voice="nova"))
        for clause in clauses:
            await stream.send_text(clause)
        await stream.finish()
        audio = b"".join(await within(collect_audio(stream)))
        await stream.close()
    finally:
        await provider.close()
    assert audio == b"".join(openai_audio.speech_pcm(c) for c in clauses)
    first, second, _third = openai_audio.speeches
    assert first.finished_at is not None and second.started_at < first.finished_at
    assert first.body["voice"] == "nova"


@pytest.mark.parametrize(
    ("status", "code"), [(401, "provider_auth"), (429, "provider_rate_limited"), (400, "tts_failed")]
)
async def test_openai_tts_http_errors(openai_audio: OpenAiAudioDouble, status: int, code: str) -> None:
    openai_audio.speech = SpeechScript(status=status)
    provider = oa_tts(openai_audio)
    try:
        stream = await within(provider.start())
        await stream.send_text("Hello.")
        await stream.finish()
        await expect_error(collect_audio(stream), code)
        await stream.close()
    finally:
        await provider.close()


async def test_openai_tts_times_out_before_the_first_audio(openai_audio: OpenAiAudioDouble) -> None:
    openai_audio.speech = SpeechScript(delay_before_headers_s=5.0)
    provider = oa_tts(openai_audio, read_timeout_s=0.3)
    try:
        stream = await within(provider.start())
        await stream.send_text("Hello.")
        await stream.finish()
        await expect_error(collect_audio(stream), "provider_timeout")
        await stream.close()
    finally:
        await provider.close()


async def test_openai_tts_close_mid_stream_drops_the_connection(openai_audio: OpenAiAudioDouble) -> None:
    openai_audio.speech = SpeechScript(chunk_bytes=2400, chunk_delay_s=0.05)
    provider = oa_tts(openai_audio)
    try:
        stream = await within(provider.start())
        audio = stream.audio()
        await stream.send_text("A reply long enough to still be streaming when the user barges in.")
        await within(anext(audio))
        await within(stream.close())
        await within(stream.close())
        assert [c async for c in audio] == []
        await openai_audio.wait_speech_disconnected(0)
        with pytest.raises(VoiceProviderError):
            await stream.send_text("too late")
    finally:
        await provider.close()
    assert openai_audio.speeches[0].finished_at is None
    await assert_no_provider_tasks()


async def test_openai_tts_without_a_key_for_lan_servers() -> None:
    async with OpenAiAudioDouble(api_key=None) as double:
        provider = OpenAiTts(OpenAiTtsSettings(base_url=double.base_url))
        try:
            stream = await within(provider.start())
            await stream.send_text("Hi.")
            await stream.finish()
            assert b"".join(await within(collect_audio(stream))) == double.speech_pcm("Hi.")
            await stream.close()
        finally:
            await provider.close()
        assert "Authorization" not in double.speeches[0].headers


# ================================================================= espeak-ng


@needs_espeak
async def test_espeak_speaks_english() -> None:
    provider = EspeakTts()
    assert provider.available()
    stream = await within(provider.start())
    try:
        await stream.send_text("hello")
        await stream.finish()
        chunks = await within(collect_audio(stream))
    finally:
        await stream.close()
    pcm = b"".join(chunks)
    assert stream.sample_rate == 22050
    assert all(len(c) % 2 == 0 for c in chunks)
    assert 0.2 < len(pcm) / 2 / 22050 < 3.0  # about half a second of speech
    assert rms(pcm) > 500  # not silence
    await assert_no_provider_tasks()


@needs_espeak
async def test_espeak_speaks_chinese() -> None:
    provider = EspeakTts(EspeakSettings(voice="en"))
    stream = await within(provider.start(voice="zh-CN"))  # mapped onto espeak-ng's cmn
    try:
        await stream.send_text("你好，")
        await stream.send_text("今天天气很好。")
        await stream.finish()
        pcm = b"".join(await within(collect_audio(stream)))
    finally:
        await stream.close()
    assert len(pcm) / 2 / 22050 > 1.0
    assert rms(pcm) > 500


def espeak_children() -> list[int]:
    """Live (not zombie) espeak-ng processes whose parent is this test process."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        comm_end = stat.rindex(")")
        comm = stat[stat.index("(") + 1 : comm_end]
        state, ppid = stat[comm_end + 2 :].split()[:2]
        if comm.startswith("espeak") and int(ppid) == os.getpid() and state != "Z":
            found.append(int(entry))
    return found


@needs_espeak
async def test_espeak_close_kills_the_process() -> None:
    provider = EspeakTts()
    stream = await within(provider.start())
    audio = stream.audio()
    await stream.send_text("This is a long announcement that keeps going. " * 200)
    await within(anext(audio))
    # The consumer stops reading: backpressure keeps espeak-ng alive, blocked on its pipe.
    await asyncio.sleep(0.3)
    assert espeak_children() != []
    started = time.monotonic()
    await within(stream.close())
    assert time.monotonic() - started < 2.0
    assert espeak_children() == []
    assert [c async for c in audio] == []
    await assert_no_provider_tasks()


@needs_espeak
async def test_espeak_unknown_voice() -> None:
    stream = await within(EspeakTts().start(voice="nosuchvoice"))
    try:
        await stream.send_text("hello")
        await stream.finish()
        error = await expect_error(collect_audio(stream), "tts_failed")
    finally:
        await stream.close()
    assert "voice" in error.message


@needs_espeak
async def test_espeak_wrong_sample_rate_is_explained() -> None:
    stream = await within(EspeakTts(EspeakSettings(sample_rate=16000)).start())
    try:
        await stream.send_text("hello")
        await stream.finish()
        error = await expect_error(collect_audio(stream), "tts_failed")
    finally:
        await stream.close()
    assert "22050" in error.message


async def test_espeak_not_installed() -> None:
    provider = EspeakTts(EspeakSettings(binary="espeak-ng-not-installed"))
    assert not provider.available()
    await expect_error(provider.start(), "provider_unavailable")


@needs_espeak
def test_espeak_under_uvloop() -> None:
    async def speak() -> bytes:
        stream = await EspeakTts().start()
        try:
            await stream.send_text("hello")
            await stream.finish()
            return b"".join(await within(collect_audio(stream)))
        finally:
            await stream.close()

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        assert rms(runner.run(speak())) > 500


def test_dashscope_asr_under_uvloop() -> None:
    async def recognise() -> list[AsrResult]:
        async with DashScopeDouble() as double:
            double.asr = AsrScript(sentences=["打开灯"], bytes_per_sentence=10**9)
            provider = ds_asr(double)
            try:
                stream = await within(provider.start())
                reader = asyncio.create_task(collect_results(stream))
                await send_frames(stream, speech(0.5))
                await stream.finish()
                results = await within(reader)
                await stream.close()
            finally:
                await provider.close()
            assert double.problems == []
            return results

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        assert runner.run(recognise())[-1] == AsrResult("打开灯", final=True)


# ================================================================= credentials and helpers


async def test_credentials_never_reach_logs_or_messages(
    caplog: pytest.LogCaptureFixture, dashscope: DashScopeDouble, openai_audio: OpenAiAudioDouble
) -> None:
    caplog.set_level(logging.DEBUG)
    errors: list[str] = []
    # A task failure that quotes the key, as a careless gateway might.
    dashscope.asr = AsrScript(fail=("InvalidParameter", f"bad request for {dashscope.api_key}"))
    asr = ds_asr(dashscope)
    try:
        errors.append(str(await expect_error(asr.start(), "asr_failed")))
    finally:
        await asr.close()

    dashscope.tts = TtsScript()
    tts = ds_tts(dashscope)
    try:
        stream = await within(tts.start())
        await stream.send_text("Hello.")
        await stream.finish()
        await within(collect_audio(stream))
        await stream.close()
    finally:
        await tts.close()

    openai_audio.speech = SpeechScript(status=400, error_message=f"upstream rejected {openai_audio.api_key}")
    speech_provider = oa_tts(openai_audio)
    try:
        clauses = await within(speech_provider.start())
        await clauses.send_text("Hello.")
        await clauses.finish()
        errors.append(str(await expect_error(collect_audio(clauses), "tts_failed")))
        await clauses.close()
    finally:
        await speech_provider.close()

    secrets = [dashscope.api_key, openai_audio.api_key or ""]
    reprs = [
        repr(DashScopeAsrSettings(api_key=secrets[0])),
        repr(DashScopeTtsSettings(api_key=secrets[0])),
        repr(OpenAiAsrSettings(api_key=secrets[1])),
        repr(OpenAiTtsSettings(api_key=secrets[1])),
    ]
    assert caplog.records  # the failures were logged
    for secret in secrets:
        assert secret not in caplog.text
        assert all(secret not in e for e in errors)
        assert all(secret not in r for r in reprs)


def test_wav_header_and_whole_samples() -> None:
    wav = wav_bytes(b"\x01\x00\x02\x00", 16000)
    assert wav[:4] == b"RIFF" and wav[8:16] == b"WAVEfmt " and len(wav) == 48
    assert struct.unpack("<I", wav[24:28])[0] == 16000
    aligner = WholeSamples()
    assert aligner.feed(b"\x01\x02\x03") == b"\x01\x02"
    assert aligner.feed(b"\x04") == b"\x03\x04"
    assert aligner.feed(b"") == b""
