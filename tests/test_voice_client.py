"""scripts/voice-client against the voice app (the same rig as test_voice_session.py): WAV or
text in, the reply WAV out, what it prints, and its exit status on every kind of failure."""

from __future__ import annotations

import asyncio
import wave
from pathlib import Path

import numpy as np
import voice_samples as vs
from mosquitto_broker import free_port
from test_voice_session import CLAUSE_1, CLAUSE_2, TRANSCRIPT, expected_audio, said, start_rig
from voice_doubles import AsrScript

from deviceagentd.voice.audio import Resampler

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "voice-client"
RUN_S = 60.0


async def voice_client(*args: str) -> tuple[int, str, str]:
    """Run scripts/voice-client while the test's loop keeps serving the gateway."""
    proc = await asyncio.create_subprocess_exec(str(SCRIPT), *args, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), RUN_S)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def write_wav(path: Path, pcm: bytes, rate: int, channels: int = 1) -> None:
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(channels)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(pcm)


def read_wav(path: Path) -> tuple[int, int, bytes]:
    with wave.open(str(path), "rb") as wav:
        return wav.getframerate(), wav.getnchannels(), wav.readframes(wav.getnframes())


async def test_wav_in_reply_wav_out(tmp_path: Path) -> None:
    vs.require_espeak()
    rig = await start_rig()
    try:
        # The question as a 44.1 kHz stereo WAV: the client resamples and mixes it down.
        resampler = Resampler(16000, 44100)
        mono = np.frombuffer(resampler.push(said()) + resampler.flush(), dtype="<i2")
        question = tmp_path / "question.wav"
        write_wav(question, np.repeat(mono, 2).astype("<i2").tobytes(), 44100, channels=2)
        reply = tmp_path / "reply.wav"
        code, out, err = await voice_client(
            "--url", rig.url.replace("http://", "ws://"), "--wav", str(question), "--out", str(reply),
            "--session", "demo-session", "--device-id", "thermostat-001", "--product-id", "thermostat",
            "--provider", "aliyun",
        )  # fmt: skip
        assert code == 0, err
        assert "asr (partial): what" in out
        assert f"heard: {TRANSCRIPT}" in out
        assert f"reply: {CLAUSE_1} {CLAUSE_2}" in out
        assert "saved to" in out and err == ""
        rate, channels, pcm = read_wav(reply)
        assert (rate, channels) == (16000, 1)
        source = rig.ds.tts_pcm(CLAUSE_1, 24000) + rig.ds.tts_pcm(CLAUSE_2, 24000)
        assert pcm == expected_audio(source, 24000, 16000, 60)
        context = rig.provider.contexts[0]
        assert (context.session_id, context.product_id, context.device_id, context.message) == (
            "demo-session", "thermostat", "thermostat-001", TRANSCRIPT)
        # Sent in real time: the ASR heard the speech, not a burst of it.
        assert len(rig.ds.tasks[0].audio) > 32000
    finally:
        await rig.close()
    assert rig.ds.problems == []


async def test_say_text_in_manual_mode_over_protocol_1_with_openai(tmp_path: Path) -> None:
    vs.require_espeak()
    rig = await start_rig()
    try:
        reply = tmp_path / "reply.wav"
        code, out, err = await voice_client(
            "--url", rig.url.replace("http://", "ws://"), "--say", TRANSCRIPT, "--lang", "en", "--mode", "manual",
            "--protocol", "1", "--provider", "openai", "--out", str(reply),
        )  # fmt: skip
        assert code == 0, err
        assert f"heard: {TRANSCRIPT}" in out and "provider openai" in out
        assert len(rig.oa.transcriptions) == 1 and rig.oa.transcriptions[0].sample_rate == 16000
        rate, _, pcm = read_wav(reply)
        source = rig.oa.speech_pcm(CLAUSE_1) + rig.oa.speech_pcm(CLAUSE_2)
        assert rate == 16000 and pcm == expected_audio(source, 24000, 16000, 60)
    finally:
        await rig.close()


async def test_exit_status_and_messages_on_failures(tmp_path: Path) -> None:
    vs.require_espeak()
    question = tmp_path / "question.wav"
    write_wav(question, said(tail_s=1.0), 16000)
    token = "voice-token-0123456789"
    rig = await start_rig(tokens=(token,))
    try:
        url = rig.url.replace("http://", "ws://")
        code, _, err = await voice_client("--url", url, "--wav", str(question))
        assert code == 1 and "refused the token" in err
        # The gateway recognises nothing.
        rig.ds.asr = AsrScript(sentences=[""], bytes_per_sentence=10**9)
        code, _, err = await voice_client("--url", url, "--wav", str(question), "--token", token)
        assert code == 1 and "nothing was recognised" in err
        # No audio came back: no empty WAV written and reported as saved.
        reply = tmp_path / "reply.wav"
        code, out, err = await voice_client("--url", url, "--wav", str(question), "--token", token,
                                            "--out", str(reply))
        assert code == 1 and not reply.exists() and "saved" not in out and "nothing saved" in err
        # The recogniser fails: the error is printed, and what the gateway said instead (its
        # apology in the local voice) is what gets saved.
        rig.ds.asr = AsrScript(sentences=["x"], fail=("InternalError", "the model crashed"), fail_after_bytes=9600)
        code, out, err = await voice_client("--url", url, "--wav", str(question), "--token", token,
                                            "--out", str(reply))
        assert code == 1 and "error [asr_failed]" in err and "InternalError" in err
        assert reply.exists() and "saved to" in out
        # The gateway reports an error (an unconfigured provider).
        code, _, err = await voice_client("--url", url, "--wav", str(question), "--token", token,
                                          "--provider", "azure")
        assert code == 1 and "unknown_provider" in err and "aliyun" in err
    finally:
        await rig.close()
    # Nothing listens there.
    code, _, err = await voice_client("--url", f"ws://127.0.0.1:{free_port()}/ws/voice", "--wav", str(question))
    assert code == 1 and "cannot connect" in err
    # Bad input is refused before connecting.
    not_wav = tmp_path / "notes.txt"
    not_wav.write_text("hello")
    code, _, err = await voice_client("--wav", str(not_wav))
    assert code == 2 and "not a PCM WAV" in err
    code, _, err = await voice_client("--wav", str(tmp_path / "missing.wav"))
    assert code == 2 and "no such file" in err
    code, _, err = await voice_client("--say", "hi", "--wav", str(question))
    assert code == 2 and "not allowed with" in err
