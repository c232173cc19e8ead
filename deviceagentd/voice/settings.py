"""The settings every voice session shares: taken from `[voice]` plus fixed limits (tests shorten
the timeouts). No audio modules here."""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass, field

from deviceagentd.config import DEFAULT_WAKE_WORDS, VoiceConfig


def wake_key(text: str) -> str:
    """A wake word as compared: NFKC, lowercase, without spaces or punctuation ("Hi, ESP!" →
    "hiesp")."""
    text = unicodedata.normalize("NFKC", text).casefold()
    return "".join(ch for ch in text if ch.isalnum())


@dataclass(frozen=True)
class SessionSettings:
    """Everything a voice session needs to know, taken from `[voice]` plus a few fixed limits
    (tests shorten the timeouts)."""

    # End of speech in auto mode.
    silence_ms: int = 700
    vad_mode: int = 2
    energy_margin_db: float = 9.0
    min_voiced_s: float = 0.3
    max_utterance_s: float = 15.0
    no_speech_timeout_s: float = 8.0
    idle_timeout_s: float = 120.0
    # What we send: PCM s16le mono at this rate, in frames of this duration.
    output_sample_rate: int = 16000
    output_frame_ms: int = 60
    # Clients say hello as soon as they connect (XiaoZhi firmware, py-xiaozhi, browsers); a
    # connection that has not within this long is closed, so idle ones do not pile up.
    hello_timeout_s: float = 5.0
    # Audio is paced in real time after this much has been sent ahead (xiaozhi sends 5 x 60 ms).
    prebuffer_ms: int = 300
    # The microphone is ignored while our TTS plays and this long after (echo, room tail).
    tts_tail_ms: int = 300
    # Session-side bounds on each provider step (the providers have their own, usually shorter).
    asr_start_timeout_s: float = 12.0
    asr_final_timeout_s: float = 12.0
    tts_first_audio_timeout_s: float = 15.0
    tts_chunk_timeout_s: float = 15.0
    # Clauses synthesised at once: the one playing and the next.
    tts_parallel: int = 2
    # A JSON control message larger than this is refused; a WebSocket message larger than
    # max_message_bytes closes the connection (1009).
    max_text_bytes: int = 65536
    max_message_bytes: int = 262144
    # How long an abort (or a disconnect) waits for the pipeline to wind down.
    abort_wait_s: float = 2.0
    # XiaoZhi: wake words (as `wake_key`s) and whether they are greeted.
    wake_words: frozenset[str] = field(default_factory=lambda: frozenset(wake_key(w) for w in DEFAULT_WAKE_WORDS))
    wake_greeting: bool = True
    # Device MCP: a tools/call answer; initialize and each tools/list page; tools offered at most.
    tool_timeout_s: float = 10.0
    mcp_list_timeout_s: float = 10.0
    max_tools: int = 32

    @classmethod
    def from_config(cls, config: VoiceConfig) -> SessionSettings:
        return cls(
            silence_ms=config.silence_ms,
            vad_mode=config.vad_mode,
            energy_margin_db=config.energy_margin_db,
            min_voiced_s=config.min_voiced_s,
            max_utterance_s=config.max_utterance_s,
            no_speech_timeout_s=config.no_speech_timeout_s,
            idle_timeout_s=config.idle_timeout_s,
            output_sample_rate=config.output_sample_rate,
            output_frame_ms=config.output_frame_ms,
            wake_words=frozenset(wake_key(w) for w in config.xiaozhi.wake_words),
            wake_greeting=config.xiaozhi.wake_greeting,
            tool_timeout_s=config.xiaozhi.tool_timeout_s,
            max_tools=config.xiaozhi.max_tools,
        )
