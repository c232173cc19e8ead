"""Running conversation turns: one at a time per session, interruptible, recorded in history.

Every channel (HTTP chat, MQTT text requests, voice) goes through `Agent.turn`. The provider
runs in its own task feeding a queue, so an interrupt (or a client that went away) cancels
the provider's work at once while the stream still ends cleanly with `done` and
`interrupted: true`, and the partial reply is kept in history.

Turns share the one event loop with device traffic, and the offline provider's planning is
CPU work on that loop. `TurnPacer` bounds how many turns start per second while several are
under way, so a flood of chat makes turns wait for a slot instead of starving telemetry. A turn
that starts while no other is running, and a turn a person is waiting for at a speaker
(`TurnRequest.paced = False`), never waits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from deviceagentd.agent.extra_tools import CombinedTools, extra_specs
from deviceagentd.agent.types import (
    ChatMessage,
    Delta,
    ImageInput,
    Provider,
    ProviderError,
    ProviderUnavailable,
    ToolCall,
    ToolCallFinished,
    ToolCallStarted,
    ToolResult,
    Tools,
    TurnContext,
    TurnEvent,
    valid_session_id,
)
from deviceagentd.core.clock import Clock
from deviceagentd.core.errors import Conflict, InvalidInput, NotFound
from deviceagentd.core.language import written_in_chinese

log = logging.getLogger("deviceagentd.agent")

FALLBACK_NOTE = "(The cloud model could not be reached, so this answer comes from the offline assistant.) "
FALLBACK_NOTE_ZH = "（无法连接云端模型，以下由离线助手回答。）"


class SessionHistory(Protocol):
    async def history(self, session_id: str, limit: int) -> list[ChatMessage]: ...
    def append(self, session_id: str, message: ChatMessage) -> None: ...
    def remember_device(self, session_id: str, product_id: str | None, device_id: str | None) -> None: ...
    async def default_device(self, session_id: str) -> tuple[str | None, str | None]: ...


class FrameLoader(Protocol):
    async def load_image(self, frame_id: str) -> ImageInput:
        """The frame as a provider input; raises NotFound naming the frame id."""
        ...


@dataclass(frozen=True)
class TurnRequest:
    message: str
    session_id: str | None = None
    product_id: str | None = None
    device_id: str | None = None
    frame_ids: tuple[str, ...] = ()
    # True: wait for a busy session's turn to end (MQTT); False: Conflict at once (HTTP).
    wait_if_busy: bool = False
    # False: start at once even while turns are being paced (voice: a person is waiting at a
    # speaker, and speakers are few).
    paced: bool = True
    # The Device-Id of the speaker a voice turn came from: "wake me up at 7" rings there.
    speaker_id: str | None = None
    # Tools of this turn besides the site's (a speaker's own, from its MCP server).
    tools: Tools | None = None


@dataclass(frozen=True)
class TurnStarted:
    session_id: str


@dataclass(frozen=True)
class TurnDone:
    session_id: str
    text: str
    interrupted: bool = False


@dataclass(frozen=True)
class TurnFailed:
    code: str
    message: str


AgentEvent = TurnStarted | TurnEvent | TurnDone | TurnFailed


# Paced turns that may start at once after a quiet spell: a few people or systems asking
# together are not slowed down; a flood is spread out. Five turns of the offline engine keep the
# loop for about 20 ms.
PACE_BURST = 5


@dataclass
class TurnPacer:
    """At most `rate` paced turns start per second on average (0 = no limit); up to
    PACE_BURST start at once after a quiet spell. A token bucket: waiting turns start in arrival
    order as tokens come in, and a turn that gave up waiting (interrupted, client gone) leaves
    no gap."""

    rate: float
    clock: Clock = field(default_factory=Clock)
    _tokens: float = field(default=float(PACE_BURST), init=False)
    _refilled_at: float | None = field(default=None, init=False)
    _waiters: deque[asyncio.Future[None]] = field(default_factory=deque, init=False)
    _timer: asyncio.TimerHandle | None = field(default=None, init=False)

    @property
    def waiting(self) -> int:
        return sum(1 for waiter in self._waiters if not waiter.done())

    async def wait(self, paced: bool = True) -> None:
        """Return when the turn may start."""
        if self.rate <= 0 or not paced:
            return
        self._refill()
        self._drop_gone()
        if not self._waiters and self._tokens >= 1:
            self._tokens -= 1
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        self._schedule()
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                # Granted, then cancelled before it could start: the token goes to the next one.
                self._tokens = min(PACE_BURST, self._tokens + 1)
                self._grant()
            raise

    def _refill(self) -> None:
        now = self.clock.monotonic()
        if self._refilled_at is not None:
            self._tokens = min(PACE_BURST, self._tokens + (now - self._refilled_at) * self.rate)
        self._refilled_at = now

    def _drop_gone(self) -> None:
        while self._waiters and self._waiters[0].done():
            self._waiters.popleft()

    def _on_timer(self) -> None:
        self._timer = None
        self._grant()

    def _grant(self) -> None:
        self._refill()
        while self._waiters and self._tokens >= 1:
            waiter = self._waiters.popleft()
            if not waiter.done():  # one that gave up takes no token
                waiter.set_result(None)
                self._tokens -= 1
        self._drop_gone()
        if self._waiters:
            self._schedule()

    def _schedule(self) -> None:
        if self._timer is None:
            delay = max(0.001, (1 - self._tokens) / self.rate)
            self._timer = asyncio.get_running_loop().call_later(delay, self._on_timer)


@dataclass
class _Running:
    task: asyncio.Task[None] | None = None
    interrupted: bool = False


@dataclass
class Agent:
    provider: Provider
    # The offline provider: used when `provider` cannot be reached (and is `provider` itself
    # when the configured provider is local).
    fallback: Provider
    tools: Tools
    sessions: SessionHistory
    frames: FrameLoader
    clock: Clock = field(default_factory=Clock)
    history_limit: int = 50
    turn_timeout_s: float = 120.0
    max_message_chars: int = 4000
    # Turns started per second at most (0 = no limit); see TurnPacer.
    max_turns_per_s: float = 0.0
    _pacer: TurnPacer = field(init=False)
    _running: dict[str, _Running] = field(default_factory=dict)
    # One lock per session with a count of turns holding or waiting for it, so locks of
    # finished sessions are dropped instead of piling up.
    _locks: dict[str, tuple[asyncio.Lock, int]] = field(default_factory=dict)
    _closing: bool = False

    def __post_init__(self) -> None:
        self._pacer = TurnPacer(self.max_turns_per_s, self.clock)

    def busy(self, session_id: str) -> bool:
        return session_id in self._running

    @property
    def running_turns(self) -> int:
        return len(self._running)

    @property
    def waiting_turns(self) -> int:
        """Turns waiting for a slot (see TurnPacer); they count as running too."""
        return self._pacer.waiting

    def interrupt(self, session_id: str) -> bool:
        """Stop the session's running turn; True if there was one."""
        running = self._running.get(session_id)
        if running is None:
            return False
        running.interrupted = True
        if running.task is not None:
            running.task.cancel()
        return True

    def shutdown(self) -> None:
        """Stop every running turn (daemon stopping): streams end instead of hanging."""
        self._closing = True
        for running in self._running.values():
            if running.task is not None:
                running.task.cancel()

    def check_message(self, message: Any) -> str:
        # Blank is white space in Python's sense and the JSON Schema's (U+FEFF): the OpenAPI
        # document's pattern says the same.
        if not isinstance(message, str) or not message.replace("\ufeff", "").strip():
            raise InvalidInput("message is required and must be non-empty text",
                               [{"field": "message", "reason": "is required and must be non-empty text"}])
        if len(message) > self.max_message_chars:
            reason = f"is longer than {self.max_message_chars} characters"
            raise InvalidInput(f"message {reason}", [{"field": "message", "reason": reason}])
        return message

    async def prepare(self, request: TurnRequest) -> tuple[str, list[ImageInput]]:
        """Validate before any output: the session id, the message and the vision frames
        (NotFound naming an unknown or expired frame)."""
        self.check_message(request.message)
        session_id = request.session_id or f"session-{uuid.uuid4().hex[:16]}"
        if not valid_session_id(session_id):
            raise InvalidInput("sessionId must be printable text of at most 128 characters",
                               [{"field": "sessionId", "reason": "must be printable, at most 128 characters"}])
        images = [await self.frames.load_image(frame_id) for frame_id in request.frame_ids]
        if not request.wait_if_busy and self.busy(session_id):
            raise Conflict(f"session {session_id!r} is already answering; interrupt it or wait",
                           {"sessionId": session_id})
        return session_id, images

    async def turn(self, request: TurnRequest, session_id: str,
                   images: list[ImageInput]) -> AsyncGenerator[AgentEvent, None]:
        """Run one turn. Yields TurnStarted, provider events, then TurnDone or TurnFailed.

        Closing the iterator early (client gone) cancels the provider's work.
        """
        lock, users = self._locks.get(session_id, (asyncio.Lock(), 0))
        if lock.locked() and not request.wait_if_busy:
            raise Conflict(f"session {session_id!r} is already answering; interrupt it or wait",
                           {"sessionId": session_id})
        self._locks[session_id] = (lock, users + 1)
        try:
            async with lock:
                running = _Running()
                self._running[session_id] = running
                try:
                    async for event in self._run(request, session_id, images, running):
                        yield event
                finally:
                    self._running.pop(session_id, None)
        finally:
            lock, users = self._locks[session_id]
            if users <= 1:
                del self._locks[session_id]
            else:
                self._locks[session_id] = (lock, users - 1)

    async def _run(self, request: TurnRequest, session_id: str, images: list[ImageInput],
                   running: _Running) -> AsyncIterator[AgentEvent]:
        yield TurnStarted(session_id)
        if request.product_id or request.device_id:
            self.sessions.remember_device(session_id, request.product_id, request.device_id)
            product_id, device_id = request.product_id, request.device_id
        else:
            product_id, device_id = await self.sessions.default_device(session_id)
        history = await self.sessions.history(session_id, self.history_limit)
        context = TurnContext(session_id, request.message, history, product_id, device_id, images,
                              extra_specs(self.tools, request.tools), speaker_id=request.speaker_id)
        tools = self.tools if request.tools is None else CombinedTools(self.tools, request.tools)
        self.sessions.append(session_id, ChatMessage("user", request.message, self.clock.wall_ms()))

        queue: asyncio.Queue[AgentEvent | None] = asyncio.Queue()
        text: list[str] = []
        calls: list[ToolCall] = []
        results: list[ToolResult] = []
        failure: TurnFailed | None = None

        async def produce() -> None:
            try:
                async with asyncio.timeout(self.turn_timeout_s):
                    # A turn alone is not paced: one person, or a client asking one thing at a
                    # time, puts one turn at a time on the loop; a flood is many at once.
                    await self._pacer.wait(request.paced and self.running_turns > 1)
                    await self._provide(context, queue, tools)
            except TimeoutError:
                await queue.put(TurnFailed("turn_timeout", f"no answer within {self.turn_timeout_s:g} s"))
            except Exception as exc:  # a provider bug must still end the stream properly
                log.exception("turn of session %s failed", session_id)
                await queue.put(TurnFailed("internal_error", f"the assistant failed: {type(exc).__name__}"))
            finally:
                await queue.put(None)

        task = asyncio.create_task(produce(), name=f"turn-{session_id}")
        running.task = task
        if running.interrupted or self._closing:
            # Interrupted (or shutting down) before the provider even started.
            task.cancel()
        try:
            while True:
                get = asyncio.ensure_future(queue.get())
                await asyncio.wait({get, task}, return_when=asyncio.FIRST_COMPLETED)
                if not get.done():
                    # The producer ended (cancelled by an interrupt) without its sentinel.
                    get.cancel()
                    break
                event = get.result()
                if event is None:
                    break
                if isinstance(event, Delta):
                    text.append(event.text)
                elif isinstance(event, ToolCallStarted):
                    calls.append(event.call)
                elif isinstance(event, ToolCallFinished):
                    results.append(event.result)
                elif isinstance(event, TurnFailed):
                    failure = event
                    continue
                yield event
        finally:
            if not task.done():
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            interrupted = running.interrupted or (task.cancelled() and failure is None)
            reply = "".join(text)
            if reply or calls or interrupted:
                self.sessions.append(session_id, ChatMessage("assistant", reply, self.clock.wall_ms(), calls,
                                                             results, interrupted))
        if self._closing and not running.interrupted:
            yield TurnFailed("shutting_down", "the gateway is shutting down")
        elif failure is not None and not running.interrupted:
            yield failure
        else:
            yield TurnDone(session_id, "".join(text), interrupted=running.interrupted)

    async def _provide(self, context: TurnContext, queue: asyncio.Queue[AgentEvent | None], tools: Tools) -> None:
        produced = False
        try:
            async for event in self.provider.run(context, tools):
                produced = True
                await queue.put(event)
            return
        except ProviderUnavailable as exc:
            if produced or self.provider is self.fallback:
                await queue.put(TurnFailed("provider_unavailable", str(exc) or "the model could not be reached"))
                return
            log.warning("provider %s: %s; answering with %s", self.provider.name, exc,
                        self.fallback.name)
        except ProviderError as exc:
            await queue.put(TurnFailed(exc.code, exc.message))
            return
        note = FALLBACK_NOTE_ZH if written_in_chinese(context.message) else FALLBACK_NOTE
        await queue.put(Delta(note))
        async for event in self.fallback.run(context, tools):
            await queue.put(event)


@dataclass(frozen=True)
class TurnOutcome:
    """How a turn that was run to its end went, for channels that answer once."""

    session_id: str
    text: str
    failure: TurnFailed | None = None
    interrupted: bool = False


async def run_turn(agent: Agent, request: TurnRequest) -> TurnOutcome:
    """Run a turn to its end (MQTT text requests, cloud chat requests). Raises what
    `Agent.prepare` raises (InvalidInput, NotFound, Conflict) before the turn starts."""
    session_id, images = await agent.prepare(request)
    text = ""
    interrupted = False
    failure: TurnFailed | None = None
    async for event in agent.turn(request, session_id, images):
        if isinstance(event, TurnDone):
            text, interrupted = event.text, event.interrupted
        elif isinstance(event, TurnFailed):
            failure = event
    return TurnOutcome(session_id, text, failure, interrupted)


async def collect_reply(agent: Agent, request: TurnRequest) -> tuple[str, str]:
    """Run a turn to its end and return (session_id, reply text). Failures become a short sentence."""
    outcome = await run_turn(agent, request)
    if outcome.failure is not None:
        return outcome.session_id, apology(request.message, outcome.failure.message)
    return outcome.session_id, outcome.text


def apology(prompt: str, reason: str) -> str:
    """The reply to a turn that failed, in the language the request was written in (the reason
    is the provider's or the gateway's own words, as they came)."""
    if written_in_chinese(prompt):
        return f"抱歉，我无法回答：{reason}"
    return f"Sorry, I could not answer: {reason}"


def not_found_frame(frame_id: str) -> NotFound:
    return NotFound(f"vision frame {frame_id!r} is unknown or has expired", {"frameId": frame_id})
