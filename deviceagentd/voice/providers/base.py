"""What the voice session needs from a speech provider: one ASR stream per utterance, one TTS
stream per reply.

Lifecycle the session follows (every provider behaves the same way):

ASR — `start()` as soon as local VAD hears speech (a streaming provider connects and starts its
task then, so the final can come right after the end of speech); `send_audio()` for every frame;
`finish()` at the end of speech; read `results()` concurrently from another task: partials
(`final=False`), then exactly one final, then the iterator ends. `close()` in a `finally`, always:
it aborts whatever is still running and never raises.

TTS — `start()` when a reply begins; `send_text()` with each clause as the agent produces it;
`finish()` after the last one; read `audio()` concurrently: PCM s16le mono at `sample_rate`,
chunk by chunk as the provider produces it; it ends when everything sent has been spoken.
`close()` in a `finally` (it is also how a barge-in aborts the reply).

Failures surface as `VoiceProviderError` from `start()`, `send_*()`, `finish()` or the iterators.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol

# Stable error codes: the session forwards them to the device as `error {code, message}`.
ASR_FAILED = "asr_failed"
TTS_FAILED = "tts_failed"
PROVIDER_UNREACHABLE = "provider_unreachable"
PROVIDER_AUTH = "provider_auth"
PROVIDER_TIMEOUT = "provider_timeout"
PROVIDER_RATE_LIMITED = "provider_rate_limited"
# A local engine (espeak-ng, the offline recogniser) is not installed or cannot load.
PROVIDER_UNAVAILABLE = "provider_unavailable"
# The recogniser does not understand the session's language (the offline one knows English).
LANGUAGE_UNSUPPORTED = "language_unsupported"
# The provider could not be reached: a turn may be recognised offline instead.
UNREACHABLE_CODES = frozenset({PROVIDER_UNREACHABLE, PROVIDER_TIMEOUT})

ASR_SAMPLE_RATE = 16000


class VoiceProviderError(Exception):
    """A provider failed; `message` is for a person and never contains a credential."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


@dataclass(frozen=True)
class AsrResult:
    # The whole utterance recognised so far (not a delta): a partial replaces the previous one.
    text: str
    final: bool
    # A final from a recogniser that heard speech but nothing it knows (the offline recogniser
    # outside its grammar): text is empty, and the speaker is told it was not understood.
    refused: bool = False
    # A sentence the reply must begin with (the offline recogniser stood in for the cloud).
    note: str = ""


class AsrStream(Protocol):
    """One utterance."""

    async def send_audio(self, pcm16k: bytes) -> None:
        """16 kHz s16le mono, any chunk size."""
        ...

    async def finish(self) -> None:
        """End of speech: ask for the final result."""
        ...

    def results(self) -> AsyncIterator[AsrResult]:
        """Partials, then one final; ends after the final. Read by one consumer."""
        ...

    async def close(self) -> None:
        """Abort: close the connection and stop every task. Idempotent, never raises."""
        ...


class AsrProvider(Protocol):
    @property
    def name(self) -> str: ...

    async def start(self, language: str | None = None) -> AsrStream:
        """`language`: a BCP 47 tag or ISO 639-1 code ("zh", "en-US"); None = the configured default."""
        ...

    async def close(self) -> None:
        """Release what the provider shares between streams (its HTTP client)."""
        ...


class TtsStream(Protocol):
    """One reply."""

    @property
    def sample_rate(self) -> int: ...

    async def send_text(self, text: str) -> None:
        """A clause or sentence, as it arrives; blank text is ignored."""
        ...

    async def finish(self) -> None:
        """No more text: `audio()` ends once everything sent has been spoken."""
        ...

    def audio(self) -> AsyncIterator[bytes]:
        """PCM s16le mono at `sample_rate`, as it arrives (never buffered whole). One consumer."""
        ...

    async def close(self) -> None:
        """Abort: close connections, kill processes, stop every task. Idempotent, never raises."""
        ...


class TtsProvider(Protocol):
    @property
    def name(self) -> str: ...

    async def start(self, voice: str | None = None) -> TtsStream:
        """`voice`: the provider's voice name; None = the configured default."""
        ...

    async def close(self) -> None: ...


def primary_language(language: str | None) -> str | None:
    """Providers take ISO 639-1 codes: "zh-CN" → "zh", "EN" → "en"."""
    if not language:
        return None
    return language.replace("_", "-").split("-", 1)[0].lower() or None
