"""Cloud model defaults that keep working, and check-config saying when a configured model is
announced to shut down (issue 13, finding 15). The dates are the official `openai` SDK 3.63's
"Announced shutdown date" notes; the defaults must not be among them."""

from __future__ import annotations

from dataclasses import replace
from datetime import date
from pathlib import Path

from test_cli_ops import run_cli, write_config

from deviceagentd.config import Config, OpenAIConfig, VoiceConfig, VoiceOpenAIConfig, load_config
from deviceagentd.retired_models import (
    CHAT_SHUTDOWNS,
    SPEECH_SHUTDOWNS,
    TRANSCRIBE_SHUTDOWNS,
    RetiredModel,
    retired_models,
)

OPENAI = "https://api.openai.com/v1"


def configured(chat: str | None = None, asr: str | None = None, tts: str | None = None,
               voice_url: str = OPENAI, chat_url: str = OPENAI) -> Config:
    base = load_config(None, {})
    openai = replace(base.openai, base_url=chat_url, **({"model": chat} if chat else {}))
    voice_openai = replace(base.voice.openai, base_url=voice_url, **({"asr_model": asr} if asr else {}),
                           **({"tts_model": tts} if tts else {}))
    return replace(base, agent=replace(base.agent, provider="openai"), openai=openai,
                   voice=replace(base.voice, openai=voice_openai))


def test_the_chat_and_transcription_defaults_have_no_announced_shutdown() -> None:
    assert OpenAIConfig().model == "gpt-5.4-mini" and OpenAIConfig().model not in CHAT_SHUTDOWNS
    assert VoiceOpenAIConfig().asr_model == "gpt-transcribe"
    assert VoiceOpenAIConfig().asr_model not in TRANSCRIBE_SHUTDOWNS
    assert VoiceConfig().aliyun.tts_model == "cosyvoice-v3-flash" and VoiceConfig().aliyun.tts_voice == "longanyang"


def test_with_the_defaults_only_the_speech_endpoint_is_flagged() -> None:
    # OpenAI's /audio/speech has no model without an announced shutdown: said plainly.
    [speech] = retired_models(configured())
    assert (speech.key, speech.model, speech.shutdown) == ("voice.openai.tts_model", "gpt-4o-mini-tts",
                                                           date(2027, 1, 6))
    assert "no successor" in speech.message(date(2026, 12, 7))
    assert set(SPEECH_SHUTDOWNS) >= {"tts-1", "tts-1-hd", "gpt-4o-mini-tts"}


def test_old_defaults_are_flagged_with_their_date_and_a_replacement() -> None:
    found = {r.key: r for r in retired_models(configured(chat="gpt-4o-mini", asr="whisper-1", tts="tts-1"))}
    assert found["openai.model"].shutdown == date(2027, 1, 14)
    assert found["voice.openai.asr_model"].shutdown == date(2027, 2, 26)
    assert found["voice.openai.tts_model"].shutdown == date(2027, 1, 6)
    before = found["openai.model"].message(date(2026, 12, 7))
    assert before == ("openai.model 'gpt-4o-mini' is announced to shut down on 2027-01-14 (OpenAI); "
                      "use 'gpt-5.4-mini'")
    after = found["voice.openai.asr_model"].message(date(2027, 3, 1))
    assert "was shut down on 2027-02-26: requests to it fail" in after and "'gpt-transcribe'" in after


def test_servers_other_than_openai_name_their_own_models() -> None:
    lan = "http://192.168.1.20:8000/v1"
    assert retired_models(configured(chat="gpt-4o-mini", asr="whisper-1", tts="tts-1", voice_url=lan,
                                     chat_url=lan)) == []
    # And the local agent does not use openai.model at all.
    local = replace(configured(chat="gpt-4o-mini", voice_url=""), agent=replace(load_config(None, {}).agent,
                                                                                provider="local"))
    assert retired_models(local) == []


def test_check_config_prints_the_warning_and_still_succeeds(tmp_path: Path) -> None:
    config = write_config(tmp_path, tmp_path / "state")
    result = run_cli("check-config", "--config", str(config),
                     env={"DEVICEAGENTD_AGENT_PROVIDER": "openai", "DEVICEAGENTD_OPENAI_MODEL": "gpt-4o-mini"})
    assert result.returncode == 0, result.stderr
    assert "warning: openai.model 'gpt-4o-mini' " in result.stderr
    assert "2027-01-14" in result.stderr
    result = run_cli("check-config", "--config", str(config))
    assert "warning:" not in result.stderr


def test_a_retired_model_reads_like_a_sentence() -> None:
    retired = RetiredModel("openai.model", "o3", date(2026, 12, 11), "gpt-5.4-mini")
    assert retired.message(date(2026, 12, 11)).startswith("openai.model 'o3' was shut down on 2026-12-11")
