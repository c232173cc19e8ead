"""What a client hears: turn events (events.py) in the words of the client's dialect.

`EmqxDialect` — the EMQX Device Agent voice protocol (SPEC §5): `asr {text, definite, taskId?}`
partials and final, `agent_reply {text, streaming}`, `tts {state: start|sentence_start|stop}`
around the audio (`tts start` right before the first audio), `tts_complete` ending every turn that
reached the agent, `error {code, message}`.

A dialect object belongs to one session and remembers whether `tts start` was sent (so a `tts
stop` is owed).
"""

from __future__ import annotations

from typing import Any, Protocol

from deviceagentd.voice.audio import AudioParams
from deviceagentd.voice.events import ReplyText, SentenceStart, Transcript, TurnError, TurnEvent, TurnOver

Message = dict[str, Any]


class Dialect(Protocol):
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


class EmqxDialect:
    def __init__(self) -> None:
        self._tts_started = False

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
