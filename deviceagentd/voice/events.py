"""What a turn (and an announcement) tells the session, in no client's words. The session's
dialect (dialect.py) turns each event into the messages its client understands.

    Transcript   ASR result: partials (final=False), then the final one
    ReplyText    reply text as the agent produces it (final=False), then the whole reply
    SentenceStart  a clause is about to be spoken (its first audio follows)
    TurnError    a step failed; the session stays usable
    TurnOver     the reply (or announcement) is over: played, failed or cut short

A turn of an utterance emits Transcript(final) even when the text is empty (the client learns
that the utterance is over); TurnOver(answered=True) follows every turn that reached the agent.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Transcript:
    text: str
    final: bool
    task_id: str | None = None


@dataclass(frozen=True)
class ReplyText:
    text: str
    final: bool  # True: `text` is the whole reply, which is over


@dataclass(frozen=True)
class SentenceStart:
    text: str


@dataclass(frozen=True)
class TurnError:
    code: str
    message: str


@dataclass(frozen=True)
class TurnOver:
    answered: bool  # the agent was asked (an EMQX-style client is owed its tts_complete)


TurnEvent = Transcript | ReplyText | SentenceStart | TurnError | TurnOver
