"""What a client hears: turn events (events.py) in the words of the client's dialect.

`EmqxDialect` — the EMQX Device Agent voice protocol (SPEC §5): `asr {text, definite, taskId?}`
partials and final, `agent_reply {text, streaming}`, `tts {state: start|sentence_start|stop}`
around the audio (`tts start` right before the first audio), `tts_complete` ending every turn that
reached the agent, `error {code, message}`.

`XiaozhiDialect` — what stock XiaoZhi firmware (78/xiaozhi-esp32 `main/application.cc`
OnIncomingJson) and py-xiaozhi (`src/bootstrap/session.py`, `src/plugins/ui_presenter.py`) act on,
as xiaozhi-esp32-server sends it (`core/handle/sendAudioHandle.py`):
- the final transcript as `stt {text}`, followed at once by `tts start`: the firmware plays audio
  only in its Speaking state, which it enters asynchronously on `tts start`, so it must come
  before the first audio by more than a moment; an empty transcript says nothing (the device
  goes on listening); partials are not shown;
- `llm {text, emotion}` with the first reply text (neutral: the face the display shows);
- `tts sentence_start {text}` before each clause's audio, `tts stop` when the reply is over and
  for every `abort`, also when nothing was playing;
- failures a person should see as `alert {status, message, emotion}` next to the `error`
  (protocol warnings — a bad frame, audio while not listening — only as `error`, which the
  firmware logs and ignores); no `asr`, `agent_reply` or `tts_complete`, which it would log as
  unknown.

A dialect object belongs to one session and remembers whether `tts start` was sent (so a `tts
stop` is owed).
"""

from __future__ import annotations

from typing import Any, Final, Protocol

from deviceagentd.voice.audio import AudioParams
from deviceagentd.voice.events import ReplyText, SentenceStart, Transcript, TurnError, TurnEvent, TurnOver

Message = dict[str, Any]

# Errors about the protocol itself: no alert on a XiaoZhi device's screen, just the error.
WARNINGS: Final = frozenset({"not_listening", "bad_frame", "frame_too_large", "bad_audio", "hello_required",
                             "duplicate_hello", "unknown_type", "bad_message", "bad_json", "message_too_large",
                             "no_speech", "hello_timeout"})
NEUTRAL: Final = {"type": "llm", "text": "😶", "emotion": "neutral"}


class Dialect(Protocol):
    # Whether audio while not listening earns a `not_listening` error (XiaoZhi firmware sends
    # its wake word's audio before `listen start`: that is normal there).
    reports_idle_audio: bool

    def hello(self, session_id: str, version: int, audio: AudioParams, provider: str) -> Message:
        """The server hello."""
        ...

    def messages(self, event: TurnEvent) -> list[Message]:
        """The messages for one turn event, in order (often one, sometimes none)."""
        ...

    def aborted(self) -> list[Message]:
        """The answer to `abort`, once everything has stopped."""
        ...

    def error(self, code: str, message: str) -> list[Message]:
        """A failure to report (turn errors go through `messages`)."""
        ...


class _TtsState:
    """`tts start` sent once before speech; `tts stop` owed until sent."""

    def __init__(self) -> None:
        self._tts_started = False

    def _start(self) -> list[Message]:
        if self._tts_started:
            return []
        self._tts_started = True
        return [{"type": "tts", "state": "start"}]

    def _stop(self) -> list[Message]:
        if not self._tts_started:
            return []
        self._tts_started = False
        return [{"type": "tts", "state": "stop"}]


class EmqxDialect(_TtsState):
    reports_idle_audio = True

    def hello(self, session_id: str, version: int, audio: AudioParams, provider: str) -> Message:
        return {
            "type": "hello",
            "session_id": session_id,
            "sessionId": session_id,
            "version": version,
            "transport": "websocket",
            "audio_params": audio.to_json(),
            "provider": provider,
        }

    def messages(self, event: TurnEvent) -> list[Message]:
        if isinstance(event, Transcript):
            message: Message = {"type": "asr", "text": event.text, "definite": event.final}
            if event.task_id is not None:
                message["taskId"] = event.task_id
            return [message]
        if isinstance(event, ReplyText):
            return [{"type": "agent_reply", "text": event.text, "streaming": not event.final}]
        if isinstance(event, SentenceStart):
            return [*self._start(), {"type": "tts", "state": "sentence_start", "text": event.text}]
        if isinstance(event, TurnError):
            return self.error(event.code, event.message)
        if isinstance(event, TurnOver):
            return [*self._stop(), *([{"type": "tts_complete"}] if event.answered else [])]
        raise TypeError(f"not a turn event: {event!r}")

    def aborted(self) -> list[Message]:
        return self._stop()

    def error(self, code: str, message: str) -> list[Message]:
        return [{"type": "error", "code": code, "message": message}]



class XiaozhiDialect(_TtsState):
    reports_idle_audio = False

    def __init__(self) -> None:
        super().__init__()
        self._replying = False  # the llm emotion of this reply was sent

    def hello(self, session_id: str, version: int, audio: AudioParams, provider: str) -> Message:
        # The firmware reads transport (must be "websocket"), session_id and audio_params.
        return EmqxDialect().hello(session_id, version, audio, provider)

    def messages(self, event: TurnEvent) -> list[Message]:
        if isinstance(event, Transcript):
            if not event.final or not event.text:
                return []
            self._replying = False
            return [{"type": "stt", "text": event.text}, *self._start()]
        if isinstance(event, ReplyText):
            if event.final or self._replying:
                return []
            self._replying = True
            return [dict(NEUTRAL)]
        if isinstance(event, SentenceStart):
            return [*self._start(), {"type": "tts", "state": "sentence_start", "text": event.text}]
        if isinstance(event, TurnError):
            return self.error(event.code, event.message)
        if isinstance(event, TurnOver):
            self._replying = False
            return self._stop()
        raise TypeError(f"not a turn event: {event!r}")

    def aborted(self) -> list[Message]:
        self._tts_started = False
        return [{"type": "tts", "state": "stop"}]

    def error(self, code: str, message: str) -> list[Message]:
        error: list[Message] = [{"type": "error", "code": code, "message": message}]
        if code in WARNINGS:
            return error
        return [*error, {"type": "alert", "status": "Error", "message": message, "emotion": "sad"}]
