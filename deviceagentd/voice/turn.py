"""One turn: an utterance (or a typed text) → ASR → the agent → TTS, as one task.

The turn knows neither the wire nor the codec: it reports through `TurnSink` with the neutral
events of events.py and plays PCM frames; the session's dialect says them in the client's words.

Pipeline of an utterance (`Turn.run`):
- the utterance's audio (16 kHz PCM, fed by the session as it arrives) is streamed to the ASR
  stream opened at its start; partial results go out as Transcript(final=False), the final one
  as Transcript(final=True) — also when empty (the client learns that the utterance is over),
  and then no agent turn starts;
- the final text goes to the agent in the session named by hello (the same session store as
  /api/chat); deltas go out as ReplyText and into the ClauseSplitter; each complete clause is
  spoken at once (speech.Speaker); when the agent is done and the audio has played:
  TurnOver(answered=True) — also when the agent or the speech failed.
- A failing step becomes TurnError; the session stays usable. The speaker also hears a short
  apology (from `apology`, the local espeak-ng voice, so it is heard also when the reply's own
  TTS is what failed) instead of silence.
- A final the recogniser refused (the offline recogniser heard something outside the site's
  grammar) is announced as an empty Transcript, and the speaker hears "Sorry, I didn't catch
  that." — the agent is not asked to guess.
- A recogniser that does not know the session's language (the offline one knows English) gets
  TurnError(language_unsupported) and a spoken explanation in that language.
- A final that carries a note (the offline recogniser stood in for an unreachable cloud) has the
  note said at the start of the reply.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any, Final, Protocol, TypeVar

from deviceagentd.agent.runner import Agent, TurnDone, TurnFailed, TurnRequest
from deviceagentd.agent.types import Delta, ToolCallStarted, Tools
from deviceagentd.core.errors import Conflict, CoreError
from deviceagentd.core.language import written_in_chinese
from deviceagentd.voice.clauses import ClauseSplitter
from deviceagentd.voice.events import ReplyText, Transcript, TurnError, TurnEvent, TurnOver
from deviceagentd.voice.providers.base import (
    ASR_FAILED,
    LANGUAGE_UNSUPPORTED,
    PROVIDER_TIMEOUT,
    AsrProvider,
    AsrResult,
    AsrStream,
    VoiceProviderError,
)
from deviceagentd.voice.providers.tasks import stop_tasks
from deviceagentd.voice.settings import SessionSettings
from deviceagentd.voice.speech import Speaker, SpeechSink, Voice

log = logging.getLogger("deviceagentd.voice")

T = TypeVar("T")

BYTES_PER_S: Final = 32000  # 16 kHz s16le: what the ASR gets

# What the speaker hears when the turn cannot give a real answer (English, Chinese).
NOT_UNDERSTOOD: Final = ("Sorry, I didn't catch that.", "抱歉，我没听清。")
APOLOGY: Final = ("Sorry, something went wrong. Please try again.", "抱歉，出了点问题，请再试一次。")
NOT_SUPPORTED: Final = ("The offline recogniser understands only English. Please speak English, or set up a "
                        "cloud recogniser.", "离线语音识别只懂英语。请说英语，或配置云端语音识别。")
# Errors that are no failure of the gateway's (nothing to apologise for).
NO_APOLOGY: Final = frozenset({LANGUAGE_UNSUPPORTED, "session_busy"})


class ClientGone(Exception):
    """The client went away: a send failed. Ends the turn quietly."""


class TurnSink(SpeechSink, Protocol):
    """The session, as a turn sees it."""

    async def drain(self) -> None:
        """Wait until the client has played everything sent."""
        ...

    def turn_started(self) -> None:
        """The agent was asked (metrics)."""
        ...


@dataclass(frozen=True)
class TurnSetup:
    """What every turn of a session shares (settled by hello)."""

    settings: SessionSettings
    agent: Agent
    asr: AsrProvider
    voice: Voice | None  # None: replies are text only
    session_id: str
    product_id: str | None
    device_id: str | None
    language: str | None
    name: str  # the session, for logs
    tools: Tools | None = None  # the turn's tools besides the site's (a speaker's own, mcp.py)
    # The local voice (espeak-ng) for apologies and explanations; None: none installed.
    apology: Voice | None = None
    speaker_id: str | None = None  # the speaker's Device-Id: "wake me up at 7" rings on it


@dataclass
class Utterance:
    """One utterance from its start to the end of its reply."""

    mode: str
    task_id: str | None
    audio: asyncio.Queue[bytes | None] = field(default_factory=asyncio.Queue)
    frame_ids: tuple[str, ...] = ()
    seconds: float = 0.0  # of 16 kHz audio fed
    ended: bool = False  # end of speech: no more audio
    answering: bool = False  # the agent turn has begun
    finished: bool = False  # the reply is over (about to send tts stop / tts_complete)
    task: asyncio.Task[None] | None = None

    def feed(self, pcm: bytes) -> None:
        if not self.ended:
            self.audio.put_nowait(pcm)
            self.seconds += len(pcm) / BYTES_PER_S

    def end(self) -> None:
        if not self.ended:
            self.ended = True
            self.audio.put_nowait(None)


class Turn:
    def __init__(self, setup: TurnSetup, sink: TurnSink) -> None:
        self._setup = setup
        self._sink = sink
        self._errors: list[str] = []  # codes of the TurnErrors this turn emitted

    # The session as the Speaker sees it: errors are noted on the way (for the apology).

    async def emit(self, event: TurnEvent) -> None:
        if isinstance(event, TurnError):
            self._errors.append(event.code)
        await self._sink.emit(event)

    async def play(self, frame: bytes) -> None:
        await self._sink.play(frame)

    def spawn(self, coro: Coroutine[Any, Any, T], name: str) -> asyncio.Task[T]:
        return self._sink.spawn(coro, name)

    async def run(self, utt: Utterance) -> None:
        """The whole turn of an utterance; never raises but for cancellation."""
        await self._guarded(self._utterance(utt))

    async def run_text(self, utt: Utterance, text: str) -> None:
        """A turn of typed text (no ASR): announced as the final transcript, then answered."""
        await self._guarded(self._text(utt, text))

    async def _guarded(self, work: Any) -> None:
        try:
            await work
        except ClientGone:
            pass
        except Exception:
            log.exception("voice session %s: the pipeline failed", self._setup.name)
            with contextlib.suppress(ClientGone):
                await self.emit(TurnError("internal_error", "the voice pipeline failed; see the gateway log"))
                await self._apologise(None)
                await self._sink.emit(TurnOver(answered=False))

    async def _utterance(self, utt: Utterance) -> None:
        result = await self._recognise(utt)
        if result is None:
            # The recogniser failed (reported): the speaker hears why, or an apology.
            if self._errors:
                await self._apologise(None)
                await self._sink.emit(TurnOver(answered=False))
            return
        text = result.text.strip()
        await self.emit(Transcript(text, final=True, task_id=utt.task_id))
        if result.refused:
            await self._say_instead(utt, self._phrase(NOT_UNDERSTOOD, None))
        elif text:
            await self._answer(utt, text, result.note)

    async def _text(self, utt: Utterance, text: str) -> None:
        utt.end()
        await self.emit(Transcript(text, final=True, task_id=utt.task_id))
        await self._answer(utt, text)

    # ------------------------------------------------------------------ ASR

    async def _recognise(self, utt: Utterance) -> AsrResult | None:
        """Stream the utterance to the ASR; the final result, or None after an error."""
        setup = self._setup
        s = setup.settings
        stream: AsrStream | None = None
        tasks: list[asyncio.Task[Any]] = []
        try:
            try:
                async with asyncio.timeout(s.asr_start_timeout_s):
                    stream = await setup.asr.start(setup.language)
            except TimeoutError:
                raise VoiceProviderError(
                    PROVIDER_TIMEOUT, f"the speech recogniser did not start within {s.asr_start_timeout_s:g} s"
                ) from None
            reader = self._sink.spawn(self._asr_results(stream, utt), "voice-asr-results")
            sender = self._sink.spawn(self._asr_audio(stream, utt), "voice-asr-audio")
            tasks = [reader, sender]
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            if not reader.done() and sender.exception() is not None:
                # A failed send: the reader usually has the provider's own account of why.
                await asyncio.wait([reader], timeout=0.5)
                if not reader.done():
                    sender.result()
            if not reader.done():
                try:
                    async with asyncio.timeout(s.asr_final_timeout_s):
                        await asyncio.wait([reader])
                except TimeoutError:
                    raise VoiceProviderError(
                        PROVIDER_TIMEOUT, f"no final transcript within {s.asr_final_timeout_s:g} s of the end of speech"
                    ) from None
            return reader.result()
        except VoiceProviderError as exc:
            if exc.code == LANGUAGE_UNSUPPORTED:
                await self.emit(TurnError(exc.code, self._phrase(NOT_SUPPORTED, None)))
            else:
                await self.emit(TurnError(exc.code, exc.message))
            return None
        finally:
            await stop_tasks(tasks)
            if stream is not None:
                await stream.close()

    async def _asr_audio(self, stream: AsrStream, utt: Utterance) -> None:
        while (pcm := await utt.audio.get()) is not None:
            await stream.send_audio(pcm)
        await stream.finish()

    async def _asr_results(self, stream: AsrStream, utt: Utterance) -> AsrResult:
        async for result in stream.results():
            if result.final:
                return result
            if result.text:
                await self.emit(Transcript(result.text, final=False, task_id=utt.task_id))
        raise VoiceProviderError(ASR_FAILED, "the speech recogniser ended without a final transcript")

    # ------------------------------------------------------------------ the agent and speech

    async def _answer(self, utt: Utterance, text: str, note: str = "") -> None:
        """The agent turn for a transcript and the speech of its reply; ends with TurnOver."""
        setup = self._setup
        # Someone is standing at the speaker: its turn never waits behind a flood of chat.
        request = TurnRequest(message=text, session_id=setup.session_id, product_id=setup.product_id,
                              device_id=setup.device_id, frame_ids=utt.frame_ids, paced=False, tools=setup.tools,
                              speaker_id=setup.speaker_id)
        speaker = None
        if setup.voice is not None:
            local = setup.apology if setup.apology is not None and setup.apology.name != setup.voice.name else None
            speaker = Speaker(self, setup.voice, setup.settings, fallback=local)
        try:
            if note:
                await self.emit(ReplyText(note + " ", final=False))
                if speaker is not None:
                    speaker.say(note)
            await self._converse(utt, request, speaker, note)
            if speaker is not None:
                await speaker.finish()
                if speaker.played:
                    await self._sink.drain()
        finally:
            if speaker is not None:
                await speaker.close()
        await self._apologise(speaker)
        utt.finished = True  # from here on a listen start is no barge-in
        await self._sink.emit(TurnOver(answered=True))

    async def _say_instead(self, utt: Utterance, text: str) -> None:
        """A reply of the gateway's own instead of the agent's ("I didn't catch that")."""
        setup = self._setup
        await self.emit(ReplyText(text, final=True))
        await self._speak(setup.voice or setup.apology, text)
        utt.finished = True
        await self._sink.emit(TurnOver(answered=True))

    async def _apologise(self, speaker: Speaker | None) -> None:
        """After a failed step: the local voice says why (a language it does not understand) or
        says sorry. Not when the failing speech was the local voice itself."""
        if not self._errors or all(code in NO_APOLOGY - {LANGUAGE_UNSUPPORTED} for code in self._errors):
            # Nothing failed, or only something that is not ours (another channel busy).
            return
        apology = self._setup.apology
        if apology is None or (speaker is not None and speaker.failed and self._setup.voice is not None
                               and self._setup.voice.name == apology.name):
            return
        if LANGUAGE_UNSUPPORTED in self._errors:
            await self._speak(apology, self._phrase(NOT_SUPPORTED, None))
        else:
            await self._speak(apology, self._phrase(APOLOGY, None))

    async def _speak(self, voice: Voice | None, text: str) -> None:
        if voice is None:
            return
        speaker = Speaker(self, voice, self._setup.settings)
        try:
            speaker.say(text)
            await speaker.finish()
            if speaker.played:
                await self._sink.drain()
        finally:
            await speaker.close()

    def _phrase(self, phrases: tuple[str, str], heard: str | None) -> str:
        language = (self._setup.language or "").lower()
        chinese = language.startswith("zh") or (heard is not None and written_in_chinese(heard))
        return phrases[1] if chinese else phrases[0]

    async def _converse(self, utt: Utterance, request: TurnRequest, speaker: Speaker | None, note: str = "") -> None:
        agent = self._setup.agent
        splitter = ClauseSplitter()
        emit = self.emit

        def say(clauses: list[str]) -> None:
            if speaker is not None:
                for clause in clauses:
                    speaker.say(clause)

        try:
            session_id, images = await agent.prepare(request)
            utt.answering = True
            self._sink.turn_started()
            events = agent.turn(request, session_id, images)
            try:
                async for event in events:
                    if isinstance(event, Delta):
                        await emit(ReplyText(event.text, final=False))
                        say(splitter.push(event.text))
                    elif isinstance(event, ToolCallStarted):
                        say(splitter.flush())  # "Let me check" is spoken while the tool runs
                    elif isinstance(event, TurnDone):
                        if not event.interrupted:
                            say(splitter.flush())
                        await emit(ReplyText(f"{note} {event.text}" if note else event.text, final=True))
                    elif isinstance(event, TurnFailed):
                        await emit(TurnError(event.code, event.message))
            finally:
                await events.aclose()
        except Conflict as exc:
            await emit(TurnError("session_busy", exc.message))
        except CoreError as exc:
            await emit(TurnError(exc.code, exc.message))
        except (ClientGone, asyncio.CancelledError):
            raise
        except Exception:
            log.exception("voice session %s: the agent failed", self._setup.name)
            await emit(TurnError("agent_failed", "the assistant failed to answer; see the gateway log"))
