"""Cloud models their provider has announced to shut down, so `check-config` (and the daemon at
start) can say so before requests start failing.

Source: the official `openai` Python SDK 3.63, whose model literals carry "Announced shutdown
date" notes (types/shared/chat_model.py, types/audio/speech_model.py, types/audio_model.py).
Only models used through api.openai.com are checked: an OpenAI-compatible server on the LAN
names its models as it likes. DashScope's defaults (paraformer-realtime-v2, cosyvoice-v3-flash)
have no announced shutdown in the `dashscope` SDK 2.0.2.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from urllib.parse import urlsplit

from deviceagentd.config import Config

OPENAI_HOST = "api.openai.com"
CHAT_REPLACEMENT = "gpt-5.4-mini"
TRANSCRIBE_REPLACEMENT = "gpt-transcribe"
SPEECH_REPLACEMENT = (
    "OpenAI names no successor in its speech API (it points to its Realtime API, which deviceagentd does "
    "not speak): use voice.aliyun or espeak for speech, or an OpenAI-compatible speech server"
)

_CHAT_2026_10_23 = ("gpt-4.1-nano", "gpt-4.1-nano-2025-04-14", "o4-mini", "o4-mini-2025-04-16", "o3-mini",
                    "o3-mini-2025-01-31", "o1", "o1-2024-12-17", "gpt-4o-2024-05-13", "gpt-4-turbo",
                    "gpt-4-turbo-2024-04-09", "gpt-4-1106-preview", "gpt-4", "gpt-4-0613", "gpt-3.5-turbo",
                    "gpt-3.5-turbo-0125")
_CHAT_2026_12_11 = ("gpt-5", "gpt-5-mini", "gpt-5-nano", "gpt-5-2025-08-07", "gpt-5-mini-2025-08-07",
                    "gpt-5-nano-2025-08-07", "o3", "o3-2025-04-16")
_CHAT_2027_01_14 = ("gpt-4.1", "gpt-4.1-mini", "gpt-4.1-2025-04-14", "gpt-4.1-mini-2025-04-14", "gpt-4o",
                    "gpt-4o-2024-11-20", "gpt-4o-2024-08-06", "gpt-4o-mini", "gpt-4o-mini-2024-07-18")
_CHAT_2027_04_01 = ("gpt-5.4-nano", "gpt-5.4-nano-2026-03-17", "gpt-5.1", "gpt-5.1-2025-11-13")
_CHAT_EARLIER = {
    "gpt-5.3-chat-latest": date(2026, 8, 10), "gpt-5.2-chat-latest": date(2026, 8, 10),
    "gpt-5.1-chat-latest": date(2026, 7, 23), "gpt-5-chat-latest": date(2026, 7, 23),
    "chatgpt-4o-latest": date(2026, 2, 17), "gpt-4-turbo-preview": date(2026, 3, 26),
    "gpt-4-0125-preview": date(2026, 3, 26), "gpt-3.5-turbo-1106": date(2026, 9, 28),
    "o1-mini": date(2025, 10, 27), "o1-preview": date(2025, 7, 28), "gpt-4-32k": date(2025, 6, 6),
    "gpt-3.5-turbo-16k": date(2024, 9, 13),
}

CHAT_SHUTDOWNS: dict[str, date] = {
    **dict.fromkeys(_CHAT_2026_10_23, date(2026, 10, 23)),
    **dict.fromkeys(_CHAT_2026_12_11, date(2026, 12, 11)),
    **dict.fromkeys(_CHAT_2027_01_14, date(2027, 1, 14)),
    **dict.fromkeys(_CHAT_2027_04_01, date(2027, 4, 1)),
    **_CHAT_EARLIER,
}
SPEECH_SHUTDOWNS: dict[str, date] = dict.fromkeys(
    ("tts-1", "tts-1-hd", "gpt-4o-mini-tts", "gpt-4o-mini-tts-2025-03-20", "gpt-4o-mini-tts-2025-12-15"),
    date(2027, 1, 6))
TRANSCRIBE_SHUTDOWNS: dict[str, date] = dict.fromkeys(
    ("whisper-1", "gpt-4o-transcribe", "gpt-4o-mini-transcribe", "gpt-4o-mini-transcribe-2025-12-15",
     "gpt-4o-transcribe-diarize"), date(2027, 2, 26))


@dataclass(frozen=True)
class RetiredModel:
    key: str
    model: str
    shutdown: date
    replacement: str

    def message(self, today: date) -> str:
        when = (f"was shut down on {self.shutdown.isoformat()}: requests to it fail" if today >= self.shutdown
                else f"is announced to shut down on {self.shutdown.isoformat()}")
        advice = f"use {self.replacement!r}" if " " not in self.replacement else self.replacement
        return f"{self.key} {self.model!r} {when} (OpenAI); {advice}"


def _is_openai(url: str) -> bool:
    return (urlsplit(url).hostname or "").lower() == OPENAI_HOST


def retired_models(config: Config) -> list[RetiredModel]:
    """The configured models, in use, that OpenAI has announced to shut down."""
    found: list[RetiredModel] = []
    checks: list[tuple[bool, str, str, dict[str, date], str]] = [
        (config.agent.provider == "openai" and _is_openai(config.openai.base_url), "openai.model",
         config.openai.model, CHAT_SHUTDOWNS, CHAT_REPLACEMENT),
        (_is_openai(config.voice.openai.base_url), "voice.openai.asr_model", config.voice.openai.asr_model,
         TRANSCRIBE_SHUTDOWNS, TRANSCRIBE_REPLACEMENT),
        (_is_openai(config.voice.openai.base_url), "voice.openai.tts_model", config.voice.openai.tts_model,
         SPEECH_SHUTDOWNS, SPEECH_REPLACEMENT),
    ]
    for in_use, key, model, table, replacement in checks:
        shutdown = table.get(model)
        if in_use and shutdown is not None:
            found.append(RetiredModel(key, model, shutdown, replacement))
    return found
