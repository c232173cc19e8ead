"""`espeak` TTS: the local espeak-ng synthesiser, offline.

One espeak-ng process per clause: the text goes in on stdin (so nothing in it is read as an
option), the WAV comes out on stdout (`--stdout`) and its PCM is streamed as the pipe delivers
it. espeak-ng cannot seek back into a pipe, so the WAV sizes are placeholders and the data runs
until EOF. Standard voices are 22050 Hz; mbrola voices are 16000 Hz (set `sample_rate`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
from dataclasses import dataclass

from deviceagentd.voice.providers.base import PROVIDER_TIMEOUT, PROVIDER_UNAVAILABLE, TTS_FAILED, VoiceProviderError
from deviceagentd.voice.providers.pcm import WavError, parse_chunk_header, parse_fmt, parse_riff_header
from deviceagentd.voice.providers.pipeline import ClauseStream, Emit

log = logging.getLogger(__name__)

READ_SIZE = 8192
# Language tags the session may pass, mapped onto espeak-ng voice names ("zh" alone would pick
# the mbrola voice, which is usually not installed).
VOICE_ALIASES = {
    "zh": "cmn",
    "zh-cn": "cmn",
    "zh-hans": "cmn",
    "zh-tw": "cmn",
    "zh-hant": "cmn",
    "zh-hk": "yue",
    "en-us": "en-us",
    "en-gb": "en-gb",
}
MAX_FMT_BYTES = 1024
MAX_SKIPPED_BYTES = 65536


@dataclass(frozen=True)
class EspeakSettings:
    binary: str = "espeak-ng"
    # espeak-ng voice or language: "en", "en-us", "cmn" (Mandarin), "yue"; zh-* tags are mapped.
    voice: str = "en"
    words_per_minute: int = 175
    pitch: int = 50
    sample_rate: int = 22050
    # From start of the process to its WAV header.
    start_timeout_s: float = 5.0


def espeak_voice(voice: str) -> str:
    key = voice.strip().replace("_", "-").lower()
    return VOICE_ALIASES.get(key, key)


class EspeakTts:
    """TtsProvider `espeak`."""

    name: str = "espeak"

    def __init__(self, settings: EspeakSettings | None = None) -> None:
        self.settings = settings or EspeakSettings()

    def available(self) -> bool:
        """Whether the espeak-ng binary is installed."""
        return shutil.which(self.settings.binary) is not None

    async def start(self, voice: str | None = None) -> ClauseStream:
        binary = shutil.which(self.settings.binary)
        if binary is None:
            raise VoiceProviderError(
                PROVIDER_UNAVAILABLE, f"{self.settings.binary} is not installed (apt-get install espeak-ng)"
            )
        process = _EspeakProcess(binary, self.settings, espeak_voice(voice or self.settings.voice))
        # espeak-ng is far faster than real time, so one clause at a time keeps up.
        return ClauseStream(
            process.synthesize, sample_rate=self.settings.sample_rate, parallel=1, failure_code=TTS_FAILED
        )

    async def close(self) -> None:
        return None


@dataclass(frozen=True)
class _EspeakProcess:
    binary: str
    settings: EspeakSettings
    voice: str

    async def synthesize(self, text: str, emit: Emit) -> None:
        s = self.settings
        proc = await asyncio.create_subprocess_exec(
            self.binary, "--stdout", "--stdin", "-b", "1",
            "-v", self.voice, "-s", str(s.words_per_minute), "-p", str(s.pitch),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
        try:
            proc.stdin.write(text.encode("utf-8"))
            # espeak-ng reads all of stdin (--stdin) before it speaks, so this cannot deadlock.
            await proc.stdin.drain()
            proc.stdin.close()
            try:
                async with asyncio.timeout(s.start_timeout_s):
                    await self._read_header(proc.stdout)
            except (asyncio.IncompleteReadError, WavError) as exc:
                raise await self._failure(proc, exc) from None
            except TimeoutError:
                raise VoiceProviderError(
                    PROVIDER_TIMEOUT, f"espeak-ng produced no audio within {s.start_timeout_s:g} s"
                ) from None
            while chunk := await proc.stdout.read(READ_SIZE):
                await emit(chunk)
            code = await proc.wait()
            if code != 0:
                raise await self._failure(proc, None)
        except (BrokenPipeError, ConnectionResetError) as exc:
            raise await self._failure(proc, exc) from None
        finally:
            if proc.returncode is None:
                # close() or a failure: stop it now, and reap it so no zombie is left.
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                # Not wait(): it also waits for the pipes to close, and a stdout we stopped reading
                # (backpressure) never sees its EOF. communicate() drains what is left (at most a
                # pipe buffer) and then reaps the process.
                await proc.communicate()

    async def _read_header(self, stdout: asyncio.StreamReader) -> None:
        """Consume the RIFF header up to the start of the PCM; check the format."""
        parse_riff_header(await stdout.readexactly(12))
        skipped = 0
        while True:
            chunk_id, size = parse_chunk_header(await stdout.readexactly(8))
            if chunk_id == b"data":
                return
            if chunk_id == b"fmt ":
                if size > MAX_FMT_BYTES:
                    raise WavError("fmt chunk too large")
                fmt = parse_fmt(await stdout.readexactly(size + size % 2))
                if (fmt.audio_format, fmt.channels, fmt.bits_per_sample) != (1, 1, 16):
                    raise WavError(f"unexpected format {fmt}")
                if fmt.sample_rate != self.settings.sample_rate:
                    raise VoiceProviderError(
                        TTS_FAILED,
                        f"espeak-ng speaks at {fmt.sample_rate} Hz for voice {self.voice!r}; "
                        f"set sample_rate = {fmt.sample_rate}",
                    )
                continue
            skipped += size + size % 2
            if skipped > MAX_SKIPPED_BYTES:
                raise WavError("no data chunk")
            await stdout.readexactly(size + size % 2)

    async def _failure(self, proc: asyncio.subprocess.Process, exc: BaseException | None) -> VoiceProviderError:
        """espeak-ng explains itself on stderr (e.g. an unknown voice)."""
        assert proc.stderr is not None
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(1.0):
                await proc.wait()
        stderr = b""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(0.5):
                stderr = await proc.stderr.read(1000)
        reason = stderr.decode("utf-8", "replace").strip() or (str(exc) if exc else "") or "no output"
        return VoiceProviderError(TTS_FAILED, f"espeak-ng failed (exit {proc.returncode}): {reason}")
