"""The turn runner with scripted providers: ordering, history, interrupt, busy sessions,
fallback to the offline provider, provider errors, timeouts and shutdown."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import pytest

from deviceagentd.agent.runner import (
    FALLBACK_NOTE,
    Agent,
    AgentEvent,
    TurnDone,
    TurnFailed,
    TurnRequest,
    TurnStarted,
    collect_reply,
)
from deviceagentd.agent.types import (
    ChatMessage,
    Delta,
    ImageInput,
    ProviderError,
    ProviderUnavailable,
    ToolCall,
    ToolCallFinished,
    ToolCallStarted,
    ToolResult,
    Tools,
    ToolSpec,
    TurnContext,
    TurnEvent,
)
from deviceagentd.core.clock import Clock
from deviceagentd.core.errors import Conflict, InvalidInput, NotFound


@dataclass
class MemorySessions:
    messages: dict[str, list[ChatMessage]] = field(default_factory=dict)
    devices: dict[str, tuple[str | None, str | None]] = field(default_factory=dict)

    async def history(self, session_id: str, limit: int) -> list[ChatMessage]:
        return self.messages.get(session_id, [])[-limit:]

    def append(self, session_id: str, message: ChatMessage) -> None:
        self.messages.setdefault(session_id, []).append(message)

    def remember_device(self, session_id: str, product_id: str | None, device_id: str | None) -> None:
        self.devices[session_id] = (product_id, device_id)

    async def default_device(self, session_id: str) -> tuple[str | None, str | None]:
        return self.devices.get(session_id, (None, None))


class NoFrames:
    async def load_image(self, frame_id: str) -> ImageInput:
        raise NotFound(f"vision frame {frame_id!r} is unknown or has expired", {"frameId": frame_id})


class EchoTools:
    def specs(self) -> list[ToolSpec]:
        return []

    async def call(self, call: ToolCall, context: TurnContext) -> ToolResult:
        return ToolResult(call.id, call.name, True, result={"echo": call.arguments})


@dataclass
class ScriptedProvider:
    """Runs `script(context, tools)`; records the contexts it saw."""

    name: str
    script: Callable[[TurnContext, Tools], AsyncIterator[TurnEvent]]
    seen: list[TurnContext] = field(default_factory=list)

    def run(self, context: TurnContext, tools: Tools) -> AsyncIterator[TurnEvent]:
        self.seen.append(context)
        return self.script(context, tools)


async def say(words: list[str]) -> AsyncIterator[TurnEvent]:
    for word in words:
        yield Delta(word)


def provider_saying(*words: str, name: str = "fake") -> ScriptedProvider:
    return ScriptedProvider(name, lambda _c, _t: say(list(words)))


def make_agent(provider: ScriptedProvider, fallback: ScriptedProvider | None = None, **kwargs: object) -> Agent:
    return Agent(provider, fallback or provider, EchoTools(), MemorySessions(), NoFrames(), **kwargs)  # type: ignore[arg-type]


async def run_all(agent: Agent, request: TurnRequest) -> list[AgentEvent]:
    session_id, images = await agent.prepare(request)
    return [event async for event in agent.turn(request, session_id, images)]


async def test_events_in_order_and_history_recorded() -> None:
    async def script(context: TurnContext, tools: Tools) -> AsyncIterator[TurnEvent]:
        call = ToolCall("c1", "get_device_state", {"device_id": "thermostat-001"})
        yield ToolCallStarted(call)
        yield ToolCallFinished(await tools.call(call, context))
        yield Delta("It is ")
        yield Delta("28 °C.")

    agent = make_agent(ScriptedProvider("fake", script))
    events = await run_all(agent, TurnRequest("what is the temperature", session_id="s1",
                                              product_id="thermostat", device_id="thermostat-001"))
    kinds = [type(e).__name__ for e in events]
    assert kinds == ["TurnStarted", "ToolCallStarted", "ToolCallFinished", "Delta", "Delta", "TurnDone"]
    done = events[-1]
    assert isinstance(done, TurnDone) and done.text == "It is 28 °C." and not done.interrupted
    history = agent.sessions.messages["s1"]  # type: ignore[attr-defined]
    assert [(m.role, m.text) for m in history] == [("user", "what is the temperature"), ("assistant", "It is 28 °C.")]
    assert history[1].tool_calls[0].name == "get_device_state" and history[1].tool_results[0].ok


async def test_session_device_is_remembered_and_history_passed_next_time() -> None:
    provider = provider_saying("ok")
    agent = make_agent(provider)
    await run_all(agent, TurnRequest("hello", session_id="s2", product_id="light", device_id="light-1"))
    await run_all(agent, TurnRequest("and now?", session_id="s2"))
    second = provider.seen[1]
    assert (second.product_id, second.device_id) == ("light", "light-1")
    assert [m.text for m in second.history] == ["hello", "ok"]


async def test_new_session_id_when_none_given() -> None:
    events = await run_all(make_agent(provider_saying("hi")), TurnRequest("hello"))
    started = events[0]
    assert isinstance(started, TurnStarted) and started.session_id.startswith("session-")


@pytest.mark.parametrize("message", ["", "   ", None, 42, "x" * 4001])
async def test_bad_messages_are_refused_before_anything_runs(message: object) -> None:
    provider = provider_saying("never")
    agent = make_agent(provider)
    with pytest.raises(InvalidInput) as info:
        await agent.prepare(TurnRequest(message))  # type: ignore[arg-type]
    assert info.value.details[0]["field"] == "message"
    assert provider.seen == []


async def test_unknown_frame_is_not_found_naming_it() -> None:
    with pytest.raises(NotFound) as info:
        await make_agent(provider_saying("x")).prepare(TurnRequest("look", frame_ids=("frame-nope",)))
    assert info.value.details == {"frameId": "frame-nope"}


async def slow_words(context: TurnContext, tools: Tools) -> AsyncIterator[TurnEvent]:
    yield Delta("Let me think")
    await asyncio.sleep(30)
    yield Delta(" — never said")


async def test_interrupt_ends_the_turn_with_partial_reply_marked() -> None:
    agent = make_agent(ScriptedProvider("slow", slow_words))
    request = TurnRequest("think hard", session_id="s3")
    session_id, images = await agent.prepare(request)
    events: list[AgentEvent] = []

    async def consume() -> None:
        async for event in agent.turn(request, session_id, images):
            events.append(event)
            if isinstance(event, Delta):
                assert agent.interrupt("s3") is True

    await asyncio.wait_for(consume(), 2)
    done = events[-1]
    assert isinstance(done, TurnDone) and done.interrupted and done.text == "Let me think"
    last = agent.sessions.messages["s3"][-1]  # type: ignore[attr-defined]
    assert last.role == "assistant" and last.interrupted and last.text == "Let me think"
    assert not agent.busy("s3") and agent.interrupt("s3") is False


async def test_second_request_to_a_busy_session_is_refused_and_waiters_queue() -> None:
    agent = make_agent(ScriptedProvider("slow", slow_words))
    request = TurnRequest("first", session_id="s4")
    session_id, images = await agent.prepare(request)
    first = agent.turn(request, session_id, images)
    assert isinstance(await anext(first), TurnStarted)
    with pytest.raises(Conflict):
        await agent.prepare(TurnRequest("second", session_id="s4"))

    waiting = asyncio.create_task(collect_reply(agent, TurnRequest("queued", session_id="s4", wait_if_busy=True)))
    await asyncio.sleep(0.05)
    assert not waiting.done()
    agent.interrupt("s4")
    async for _ in first:
        pass
    # The queued turn now runs (and is slow too); interrupt it as well.
    while not agent.busy("s4"):
        await asyncio.sleep(0.01)
    agent.interrupt("s4")
    _, text = await asyncio.wait_for(waiting, 2)
    assert text == "Let me think"


async def test_closing_the_stream_early_cancels_the_provider() -> None:
    cancelled = asyncio.Event()

    async def script(context: TurnContext, tools: Tools) -> AsyncIterator[TurnEvent]:
        yield Delta("partial")
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        yield Delta("never")

    agent = make_agent(ScriptedProvider("slow", script))
    request = TurnRequest("go", session_id="s5")
    session_id, images = await agent.prepare(request)
    stream = agent.turn(request, session_id, images)
    async for event in stream:
        if isinstance(event, Delta):
            break
    await stream.aclose()  # what the HTTP route does when the client went away
    await asyncio.wait_for(cancelled.wait(), 2)
    assert not agent.busy("s5")
    assert agent.sessions.messages["s5"][-1].interrupted  # type: ignore[attr-defined]


async def test_unreachable_provider_falls_back_and_says_so() -> None:
    async def unreachable(context: TurnContext, tools: Tools) -> AsyncIterator[TurnEvent]:
        raise ProviderUnavailable("connection refused")
        yield Delta("")  # pragma: no cover - makes this an async generator

    local = provider_saying("The current temperature is 28 °C.", name="local")
    agent = make_agent(ScriptedProvider("openai", unreachable), fallback=local)
    events = await run_all(agent, TurnRequest("what is the temperature"))
    done = events[-1]
    assert isinstance(done, TurnDone)
    assert done.text == FALLBACK_NOTE + "The current temperature is 28 °C."
    assert len(local.seen) == 1


async def test_provider_error_ends_with_error_event_and_keeps_partial_text() -> None:
    async def broken(context: TurnContext, tools: Tools) -> AsyncIterator[TurnEvent]:
        yield Delta("Half an answer")
        raise ProviderError("bad_provider_response", "the model's stream was not valid")

    agent = make_agent(ScriptedProvider("openai", broken))
    events = await run_all(agent, TurnRequest("hi", session_id="s6"))
    failed = events[-1]
    assert isinstance(failed, TurnFailed) and failed.code == "bad_provider_response"
    assert agent.sessions.messages["s6"][-1].text == "Half an answer"  # type: ignore[attr-defined]


async def test_turn_timeout() -> None:
    agent = make_agent(ScriptedProvider("slow", slow_words), turn_timeout_s=0.2)
    events = await asyncio.wait_for(run_all(agent, TurnRequest("hi")), 5)
    failed = events[-1]
    assert isinstance(failed, TurnFailed) and failed.code == "turn_timeout"


async def test_shutdown_ends_running_turns() -> None:
    agent = make_agent(ScriptedProvider("slow", slow_words))
    request = TurnRequest("hi", session_id="s7")
    session_id, images = await agent.prepare(request)
    events: list[AgentEvent] = []

    async def consume() -> None:
        async for event in agent.turn(request, session_id, images):
            events.append(event)
            if isinstance(event, Delta):
                agent.shutdown()

    await asyncio.wait_for(consume(), 2)
    failed = events[-1]
    assert isinstance(failed, TurnFailed) and failed.code == "shutting_down"


async def test_provider_bug_ends_with_internal_error_and_keeps_partial_text() -> None:
    async def buggy(context: TurnContext, tools: Tools) -> AsyncIterator[TurnEvent]:
        yield Delta("Half")
        raise RuntimeError("bug in a provider")

    agent = make_agent(ScriptedProvider("buggy", buggy))
    events = await run_all(agent, TurnRequest("hi", session_id="s8"))
    failed = events[-1]
    assert isinstance(failed, TurnFailed) and failed.code == "internal_error"
    assert agent.sessions.messages["s8"][-1].text == "Half"  # type: ignore[attr-defined]
    assert not agent.busy("s8")


@dataclass
class ManualClock(Clock):
    """Monotonic time that moves only when the test says so: the pacer gets no slot by itself."""

    now: float = 100.0

    def monotonic(self) -> float:
        return self.now


async def wait_until(condition: Callable[[], bool], what: str) -> None:
    async with asyncio.timeout(5):
        while not condition():
            await asyncio.sleep(0.005)
    assert condition(), what


@dataclass
class Flood:
    """Turns held open until `release` is set, so they overlap like a chat flood's."""

    agent: Agent
    release: asyncio.Event
    provider: ScriptedProvider
    tasks: dict[str, asyncio.Task[list[AgentEvent]]] = field(default_factory=dict)

    @property
    def started(self) -> list[str]:
        return [context.message for context in self.provider.seen]

    def ask(self, message: str, paced: bool = True) -> None:
        request = TurnRequest(message, session_id=f"session-{message}", paced=paced)
        self.tasks[message] = asyncio.create_task(run_all(self.agent, request))

    async def finish(self) -> list[list[AgentEvent]]:
        self.release.set()
        return list(await asyncio.gather(*self.tasks.values()))


def flood(max_turns_per_s: float, clock: Clock) -> Flood:
    release = asyncio.Event()

    async def held(context: TurnContext, tools: Tools) -> AsyncIterator[TurnEvent]:
        await release.wait()
        yield Delta("ok")

    provider = ScriptedProvider("held", held)
    return Flood(make_agent(provider, max_turns_per_s=max_turns_per_s, clock=clock), release, provider)


async def test_a_flood_of_turns_gets_a_burst_then_one_slot_at_a_time_in_order() -> None:
    clock = ManualClock()
    turns = flood(16.0, clock)  # a burst of 5 (PACE_BURST), then a slot every 62.5 ms (exact in binary)
    turns.ask("alone")
    # No other turn was under way: it starts at once and takes no slot.
    await wait_until(lambda: turns.started == ["alone"], "a turn alone starts at once")
    for i in range(7):
        turns.ask(f"t{i}")
    await wait_until(lambda: len(turns.started) == 6, "the burst starts at once")
    await asyncio.sleep(0.2)  # the clock does not move: no slot comes in
    assert turns.started == ["alone", "t0", "t1", "t2", "t3", "t4"]
    assert turns.agent.waiting_turns == 2 and turns.agent.running_turns == 8

    clock.now += 0.0625
    await wait_until(lambda: len(turns.started) == 7, "one slot, one more turn")
    await asyncio.sleep(0.1)
    assert turns.started[-1] == "t5" and turns.agent.waiting_turns == 1
    clock.now += 0.0625
    await wait_until(lambda: len(turns.started) == 8, "the last waiting turn starts")
    assert turns.started[-1] == "t6" and turns.agent.waiting_turns == 0

    for events in await turns.finish():
        assert isinstance(events[-1], TurnDone) and events[-1].text == "ok"
    assert turns.agent.running_turns == 0


async def test_an_unpaced_voice_turn_starts_at_once_during_a_flood() -> None:
    clock = ManualClock()
    turns = flood(16.0, clock)
    turns.ask("alone")
    await wait_until(lambda: len(turns.started) == 1, "first turn")
    for i in range(7):
        turns.ask(f"t{i}")
    await wait_until(lambda: len(turns.started) == 6, "the burst")
    turns.ask("speaker", paced=False)
    await wait_until(lambda: "speaker" in turns.started, "the voice turn does not wait")
    assert turns.started[-1] == "speaker" and turns.agent.waiting_turns == 2
    # It took no slot: the next one goes to the first waiting turn.
    clock.now += 0.0625
    await wait_until(lambda: len(turns.started) == 8, "the next slot")
    assert turns.started[-1] == "t5"
    clock.now += 0.0625
    await turns.finish()
    assert turns.started[-1] == "t6"


async def test_a_waiting_turn_that_is_interrupted_leaves_no_gap() -> None:
    clock = ManualClock()
    turns = flood(16.0, clock)
    turns.ask("alone")
    await wait_until(lambda: len(turns.started) == 1, "first turn")
    for i in range(7):
        turns.ask(f"t{i}")
    await wait_until(lambda: turns.agent.waiting_turns == 2, "two turns wait")
    assert turns.agent.interrupt("session-t5") is True
    interrupted = await turns.tasks.pop("t5")
    assert isinstance(interrupted[-1], TurnDone) and interrupted[-1].interrupted
    assert turns.agent.waiting_turns == 1
    # The next slot goes to t6; t5 never reached the provider.
    clock.now += 0.0625
    await wait_until(lambda: len(turns.started) == 7, "the next slot")
    assert turns.started[-1] == "t6" and "t5" not in turns.started
    await turns.finish()


async def test_turns_one_after_another_are_never_paced() -> None:
    # One slot per second and a clock that never moves: a second paced turn would wait forever.
    agent = make_agent(provider_saying("ok"), max_turns_per_s=1.0, clock=ManualClock())
    async with asyncio.timeout(5):
        for i in range(20):
            events = await run_all(agent, TurnRequest(f"question {i}", session_id="one-user"))
            assert isinstance(events[-1], TurnDone) and events[-1].text == "ok"


async def test_no_pacing_when_the_rate_is_zero() -> None:
    turns = flood(0.0, ManualClock())
    for i in range(30):
        turns.ask(f"t{i}")
    await wait_until(lambda: len(turns.started) == 30, "every turn starts at once")
    assert turns.agent.waiting_turns == 0
    await turns.finish()
