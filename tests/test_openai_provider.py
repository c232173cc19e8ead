"""The `openai` provider against a loopback server speaking the chat-completions SSE format.

Tools are a fake (recording calls, answering like DeviceTools does), so each test is about the
provider: what it sends, how it reads the stream, and how it fails.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from typing import Any

import pytest
from mosquitto_broker import free_port
from openai_double import (
    DONE,
    Abort,
    ErrorReply,
    Hang,
    JSONReply,
    OpenAIDouble,
    Pause,
    Raw,
    ScriptedCall,
    StreamReply,
    chunk,
    completion,
    error_body,
    text_reply,
    text_steps,
    tool_call_reply,
    tool_call_steps,
)

from deviceagentd.agent.openai import DEFAULT_SYSTEM_PROMPT, OpenAIProvider, OpenAISettings, resolve_api_key
from deviceagentd.agent.openai.sse import SSEDecodeError, SSEDecoder, SSEEvent
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
    ToolSpec,
    TurnContext,
    TurnEvent,
)

API_KEY = "sk-test-0123456789abcdefSECRET"
# 1x1 transparent PNG.
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR4nGNgYGD4DwABBAEAwS2OUAAAAABJRU5ErkJggg=="
)


# ---------------------------------------------------------------------- fakes and helpers


@dataclass
class FakeTools:
    """Two tools, like DeviceTools: unknown names and bad arguments come back as errors."""

    calls: list[ToolCall] = field(default_factory=list)
    contexts: list[TurnContext] = field(default_factory=list)

    def specs(self) -> list[ToolSpec]:
        return [
            ToolSpec("get_device_state", "Read one device's current state.",
                     {"type": "object", "properties": {"device_id": {"type": "string"}},
                      "required": ["device_id"], "additionalProperties": False}),
            ToolSpec("send_command", "Send a command to a device.",
                     {"type": "object", "properties": {"device_id": {"type": "string"},
                                                       "command": {"type": "string"},
                                                       "params": {"type": "object"}},
                      "required": ["device_id", "command"], "additionalProperties": False}),
        ]

    async def call(self, call: ToolCall, context: TurnContext) -> ToolResult:
        self.calls.append(call)
        self.contexts.append(context)
        if call.name == "get_device_state":
            device_id = call.arguments.get("device_id")
            if device_id != "thermostat-001":
                return ToolResult(call.id, call.name, False, error=f"there is no device {device_id!r}")
            return ToolResult(call.id, call.name, True,
                              result={"deviceId": device_id, "online": True, "state": {"temperature": 21.5}})
        if call.name == "send_command":
            return ToolResult(call.id, call.name, True, result={"deviceId": call.arguments.get("device_id"),
                                                                "command": call.arguments.get("command"), "code": 0})
        return ToolResult(call.id, call.name, False,
                          error=f"there is no tool {call.name!r} (tools: get_device_state, send_command)")


def context(message: str = "How warm is it?", **kwargs: Any) -> TurnContext:
    return TurnContext(kwargs.pop("session_id", "s-1"), message, kwargs.pop("history", []), **kwargs)


@pytest.fixture
async def double() -> AsyncIterator[OpenAIDouble]:
    async with OpenAIDouble(expected_api_key=API_KEY) as server:
        yield server


@pytest.fixture
async def providers() -> AsyncIterator[list[OpenAIProvider]]:
    made: list[OpenAIProvider] = []
    yield made
    for provider in made:
        await provider.close()


@pytest.fixture
def make(double: OpenAIDouble, providers: list[OpenAIProvider]) -> Any:
    def factory(**overrides: Any) -> OpenAIProvider:
        settings = OpenAISettings(base_url=double.base_url, api_key=API_KEY, model="gpt-test",
                                  connect_timeout_s=2.0, read_timeout_s=5.0, max_retries=2,
                                  backoff_base_s=0.01, backoff_max_s=0.05)
        provider = OpenAIProvider(replace(settings, **overrides))
        providers.append(provider)
        return provider
    return factory


async def collect(provider: OpenAIProvider, ctx: TurnContext, tools: FakeTools,
                  events: list[TurnEvent] | None = None) -> list[TurnEvent]:
    out = events if events is not None else []
    async for event in provider.run(ctx, tools):
        out.append(event)
    return out


def text_of(events: list[TurnEvent]) -> str:
    return "".join(e.text for e in events if isinstance(e, Delta))


def kinds(events: list[TurnEvent]) -> list[str]:
    return [type(e).__name__ for e in events]


# ---------------------------------------------------------------------- answers


async def test_plain_answer_streams_deltas_in_order_and_sends_an_openai_request(
        double: OpenAIDouble, make: Any) -> None:
    double.script(text_reply("The ", "temperature ", "is 21.5 °C", "."))
    tools = FakeTools()
    events = await collect(make(), context(), tools)

    assert events == [Delta("The "), Delta("temperature "), Delta("is 21.5 °C"), Delta(".")]
    assert tools.calls == []
    assert double.problems == []
    [request] = double.requests
    assert request.headers["Authorization"] == f"Bearer {API_KEY}"
    assert request.body["model"] == "gpt-test"
    assert request.body["stream"] is True
    assert request.body["tools"] == [spec.to_openai() for spec in tools.specs()]
    assert request.messages[0] == {"role": "system", "content": DEFAULT_SYSTEM_PROMPT}
    assert request.messages[-1] == {"role": "user", "content": "How warm is it?"}
    assert request.completed


async def test_history_and_default_device_are_sent(double: OpenAIDouble, make: Any) -> None:
    double.script(text_reply("Done."))
    history = [
        ChatMessage("user", "Set it to 24", 1),
        ChatMessage("assistant", "I set thermostat-001 to 24 °C.", 2,
                    tool_calls=[ToolCall("c1", "send_command", {"device_id": "thermostat-001"})],
                    tool_results=[ToolResult("c1", "send_command", True, result={"code": 0})]),
        ChatMessage("assistant", "", 3),  # nothing to say: skipped
    ]
    await collect(make(), context("And now 25", history=history, product_id="thermostat",
                                  device_id="thermostat-001"), FakeTools())

    messages = double.requests[0].messages
    assert messages[0]["role"] == "system"
    assert messages[0]["content"].endswith("The user's current device is thermostat-001 (product thermostat).")
    assert messages[1:] == [
        {"role": "user", "content": "Set it to 24"},
        {"role": "assistant", "content": "I set thermostat-001 to 24 °C."},
        {"role": "user", "content": "And now 25"},
    ]


async def test_one_tool_round_trip_then_answer(double: OpenAIDouble, make: Any) -> None:
    arguments = '{"device_id": "thermostat-001"}'
    double.script(tool_call_reply(ScriptedCall("get_device_state", arguments, id="call_abc", pieces=5)),
                  text_reply("It is ", "21.5 °C."))
    tools = FakeTools()
    ctx = context(device_id="thermostat-001")
    events = await collect(make(), ctx, tools)

    assert kinds(events) == ["ToolCallStarted", "ToolCallFinished", "Delta", "Delta"]
    started, finished = events[0], events[1]
    assert isinstance(started, ToolCallStarted) and isinstance(finished, ToolCallFinished)
    assert started.call == ToolCall("call_abc", "get_device_state", {"device_id": "thermostat-001"})
    assert finished.result.ok and finished.result.id == "call_abc"
    assert text_of(events) == "It is 21.5 °C."
    assert tools.calls == [started.call]
    assert tools.contexts == [ctx]

    assert double.problems == []
    assert len(double.requests) == 2
    second = double.requests[1].messages
    assert second[-2] == {"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_abc", "type": "function",
         "function": {"name": "get_device_state", "arguments": json.dumps({"device_id": "thermostat-001"})}}]}
    assert second[-1]["role"] == "tool" and second[-1]["tool_call_id"] == "call_abc"
    assert json.loads(second[-1]["content"]) == {
        "ok": True, "result": {"deviceId": "thermostat-001", "online": True, "state": {"temperature": 21.5}}}


async def test_parallel_tool_calls_are_accumulated_by_index_and_answered_in_order(
        double: OpenAIDouble, make: Any) -> None:
    a = '{"device_id": "thermostat-001"}'
    b = '{"device_id": "thermostat-001", "command": "set_target_temperature", "params": {"target": 24}}'
    steps: list[Any] = [
        chunk({"role": "assistant", "content": "Checking. "}),
        chunk({"tool_calls": [{"index": 0, "id": "call_a", "type": "function",
                               "function": {"name": "get_device_state", "arguments": ""}}]}),
        chunk({"tool_calls": [{"index": 1, "id": "call_b", "type": "function",
                               "function": {"name": "send_command", "arguments": b[:20]}}]}),
        # Interleaved pieces of both calls.
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": a[:7]}}]}),
        chunk({"tool_calls": [{"index": 1, "function": {"arguments": b[20:]}}]}),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": a[7:]}}]}),
        chunk({}, "tool_calls"),
        DONE,
    ]
    double.script(StreamReply(steps), text_reply("It is 21.5 °C; the target is now 24 °C."))
    tools = FakeTools()
    events = await collect(make(), context("Check it and set 24"), tools)

    assert kinds(events) == ["Delta", "ToolCallStarted", "ToolCallFinished", "ToolCallStarted",
                             "ToolCallFinished", "Delta"]
    assert [c.id for c in tools.calls] == ["call_a", "call_b"]
    assert tools.calls[0].arguments == {"device_id": "thermostat-001"}
    assert tools.calls[1].arguments == json.loads(b)
    assert text_of(events) == "Checking. It is 21.5 °C; the target is now 24 °C."
    assert double.problems == []
    second = double.requests[1].messages
    assert second[-3]["content"] == "Checking. "
    assert [c["id"] for c in second[-3]["tool_calls"]] == ["call_a", "call_b"]
    assert [(m["role"], m["tool_call_id"]) for m in second[-2:]] == [("tool", "call_a"), ("tool", "call_b")]


async def test_a_round_without_trailing_space_is_followed_by_a_line_break(double: OpenAIDouble, make: Any) -> None:
    double.script(tool_call_reply(ScriptedCall("get_device_state", '{"device_id": "thermostat-001"}'),
                                  text="Let me check."),
                  text_reply("It is 21.5 °C."))
    events = await collect(make(), context(), FakeTools())
    assert text_of(events) == "Let me check.\nIt is 21.5 °C."


async def test_bad_json_arguments_are_fed_back_as_an_error(double: OpenAIDouble, make: Any) -> None:
    double.script(tool_call_reply(ScriptedCall("get_device_state", '{"device_id": "thermostat-001"', id="call_x")),
                  text_reply("Sorry, let me try again later."))
    tools = FakeTools()
    events = await collect(make(), context(), tools)

    assert tools.calls == []  # the tool never ran
    finished = [e for e in events if isinstance(e, ToolCallFinished)]
    assert len(finished) == 1
    assert not finished[0].result.ok
    assert finished[0].result.error is not None
    assert finished[0].result.error.startswith("the arguments were not valid JSON: ")
    assert text_of(events) == "Sorry, let me try again later."
    assert double.problems == []
    second = double.requests[1].messages
    # The echoed call carries valid JSON ({}), the tool message the error.
    assert second[-2]["tool_calls"][0]["function"]["arguments"] == "{}"
    fed_back = json.loads(second[-1]["content"])
    assert fed_back["ok"] is False and fed_back["error"].startswith("the arguments were not valid JSON")


async def test_unknown_tool_goes_through_tools_and_its_error_is_fed_back(double: OpenAIDouble, make: Any) -> None:
    double.script(tool_call_reply(ScriptedCall("reboot_universe", '{}', id="call_u")),
                  text_reply("I cannot do that."))
    tools = FakeTools()
    events = await collect(make(), context("Reboot the universe"), tools)

    assert [c.name for c in tools.calls] == ["reboot_universe"]
    finished = next(e for e in events if isinstance(e, ToolCallFinished))
    assert not finished.result.ok and "there is no tool 'reboot_universe'" in (finished.result.error or "")
    fed_back = json.loads(double.requests[1].messages[-1]["content"])
    assert fed_back == {"ok": False, "error": finished.result.error}
    assert text_of(events) == "I cannot do that."


async def test_endless_tool_loop_ends_with_tool_loop_error(double: OpenAIDouble, make: Any) -> None:
    double.repeat = tool_call_reply(ScriptedCall("get_device_state", '{"device_id": "thermostat-001"}'))
    tools = FakeTools()
    events: list[TurnEvent] = []
    with pytest.raises(ProviderError) as caught:
        await collect(make(max_tool_iterations=3), context(), tools, events)

    assert caught.value.code == "tool_loop"
    assert len(tools.calls) == 3
    assert len(double.requests) == 4
    assert kinds(events) == ["ToolCallStarted", "ToolCallFinished"] * 3
    assert double.problems == []


async def test_finish_reason_length_keeps_the_text_and_says_it_was_cut(double: OpenAIDouble, make: Any) -> None:
    double.script(text_reply("A very long ", "answer", finish_reason="length"))
    events = await collect(make(), context(), FakeTools())
    text = text_of(events)
    assert text.startswith("A very long answer")
    assert "length limit" in text
    assert len(double.requests) == 1


async def test_usage_chunk_comments_crlf_and_unterminated_done_are_accepted(double: OpenAIDouble, make: Any) -> None:
    steps: list[Any] = [
        Raw(": keep-alive\r\n\r\n"),
        Raw("data: " + json.dumps(chunk({"role": "assistant", "content": "Hel"})) + "\r\n\r\n"),
        Raw("event: message\ndata: " + json.dumps(chunk({"content": "lo"})) + "\n\n"),
        chunk({}, "stop"),
        Raw("data: " + json.dumps({"id": "x", "object": "chat.completion.chunk", "choices": [],
                                   "usage": {"total_tokens": 3}}) + "\n\n"),
        Raw("data: [DONE]"),  # no blank line before the end
    ]
    double.script(StreamReply(steps))
    events = await collect(make(), context(), FakeTools())
    assert events == [Delta("Hel"), Delta("lo")]


async def test_a_stream_without_done_after_finish_reason_is_complete(double: OpenAIDouble, make: Any) -> None:
    double.script(StreamReply(text_steps("Hi", "!")))
    events = await collect(make(), context(), FakeTools())
    assert text_of(events) == "Hi!"


async def test_compatible_server_quirks_are_accepted(double: OpenAIDouble, make: Any) -> None:
    # No `index`, the name repeated in every piece, arguments as an object, a final chunk
    # without delta, finish_reason "stop" despite the tool call (some local servers).
    steps: list[Any] = [
        Raw('data: {"choices": [{"delta": {"role": "assistant"}}]}\n\n'),
        Raw('data: {"choices": [{"delta": {"tool_calls": [{"id": "c9", "type": "function", '
            '"function": {"name": "get_device_state", "arguments": "{\\"device_id\\": "}}]}}]}\n\n'),
        Raw('data: {"choices": [{"delta": {"tool_calls": [{"function": {"name": "get_device_state", '
            '"arguments": "\\"thermostat-001\\"}"}}]}}]}\n\n'),
        Raw('data: {"choices": [{"index": 0, "finish_reason": "stop"}]}\n\n'),
        DONE,
    ]
    object_args: list[Any] = [chunk({"tool_calls": [{"index": 0, "id": "c10", "type": "function",
                                          "function": {"name": "get_device_state",
                                                       "arguments": {"device_id": "thermostat-001"}}}]}),
                   chunk({}, "tool_calls"), DONE]
    double.script(StreamReply(steps), StreamReply(object_args), text_reply("21.5 °C."))
    tools = FakeTools()
    events = await collect(make(), context(), tools)
    assert [(c.id, c.name, c.arguments) for c in tools.calls] == [
        ("c9", "get_device_state", {"device_id": "thermostat-001"}),
        ("c10", "get_device_state", {"device_id": "thermostat-001"}),
    ]
    assert text_of(events) == "21.5 °C."
    assert double.problems == []


async def test_a_non_streamed_completion_is_accepted(double: OpenAIDouble, make: Any) -> None:
    call = {"id": "call_j", "type": "function",
            "function": {"name": "get_device_state", "arguments": '{"device_id": "thermostat-001"}'}}
    double.script(JSONReply(completion(None, [call], "tool_calls")), JSONReply(completion("It is 21.5 °C.")))
    tools = FakeTools()
    events = await collect(make(), context(), tools)
    assert kinds(events) == ["ToolCallStarted", "ToolCallFinished", "Delta"]
    assert tools.calls[0].arguments == {"device_id": "thermostat-001"}
    assert text_of(events) == "It is 21.5 °C."


async def test_images_are_sent_as_data_url_image_parts(double: OpenAIDouble, make: Any) -> None:
    double.script(text_reply("A thermostat showing 21.5."))
    images = [ImageInput("frame-1", "image/png", PNG, "2024-05-01T10:00:00.000Z", "camera"),
              ImageInput("frame-2", "image/jpeg", b"\xff\xd8\xff\xe0fake", "2024-05-01T10:00:01.000Z", "camera")]
    await collect(make(), context("What does the display say?", images=images), FakeTools())

    assert double.problems == []
    content = double.requests[0].messages[-1]["content"]
    assert content == [
        {"type": "text", "text": "What does the display say?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64," + base64.b64encode(PNG).decode()}},
        {"type": "image_url",
         "image_url": {"url": "data:image/jpeg;base64," + base64.b64encode(b"\xff\xd8\xff\xe0fake").decode()}},
    ]


async def test_an_empty_api_key_sends_no_authorization(make: Any) -> None:
    async with OpenAIDouble() as lan:
        lan.script(text_reply("ok"))
        await collect(make(base_url=lan.base_url, api_key=""), context(), FakeTools())
        assert "Authorization" not in lan.requests[0].headers


def test_api_key_falls_back_to_the_environment() -> None:
    assert resolve_api_key("sk-config", {"OPENAI_API_KEY": "sk-env"}) == "sk-config"
    assert resolve_api_key("", {"OPENAI_API_KEY": "sk-env"}) == "sk-env"
    assert resolve_api_key("", {}) == ""


# ---------------------------------------------------------------------- HTTP errors and retries


async def test_429_is_retried_after_retry_after(double: OpenAIDouble, make: Any) -> None:
    double.script(ErrorReply(429, error_body("Rate limit reached", "requests", "rate_limit_exceeded"),
                             {"Retry-After": "1"}),
                  text_reply("ok"))
    started = time.monotonic()
    events = await collect(make(), context(), FakeTools())
    elapsed = time.monotonic() - started
    assert text_of(events) == "ok"
    assert len(double.requests) == 2
    assert elapsed >= 0.9  # the backoff alone would be ~10 ms
    assert double.requests[1].received_at - double.requests[0].received_at >= 0.9


async def test_retry_after_ms_is_honoured(double: OpenAIDouble, make: Any) -> None:
    double.script(ErrorReply(503, error_body("overloaded", "server_error"), {"retry-after-ms": "400"}),
                  text_reply("ok"))
    events = await collect(make(), context(), FakeTools())
    assert text_of(events) == "ok"
    assert double.requests[1].received_at - double.requests[0].received_at >= 0.35


async def test_a_retry_after_beyond_the_cap_is_not_waited_for(double: OpenAIDouble, make: Any) -> None:
    double.script(ErrorReply(429, error_body("Rate limit reached", "requests"), {"Retry-After": "3600"}))
    started = time.monotonic()
    with pytest.raises(ProviderUnavailable):
        await collect(make(), context(), FakeTools())
    assert time.monotonic() - started < 5
    assert len(double.requests) == 1


async def test_insufficient_quota_falls_back_at_once(double: OpenAIDouble, make: Any) -> None:
    double.script(ErrorReply(429, error_body("You exceeded your current quota", "insufficient_quota",
                                             "insufficient_quota")))
    with pytest.raises(ProviderUnavailable, match="quota"):
        await collect(make(), context(), FakeTools())
    assert len(double.requests) == 1


async def test_500_three_times_is_unavailable(double: OpenAIDouble, make: Any) -> None:
    double.script(*[ErrorReply(500, error_body("The server had an error", "server_error"))] * 3)
    with pytest.raises(ProviderUnavailable) as caught:
        await collect(make(max_retries=2), context(), FakeTools())
    assert len(double.requests) == 3
    assert "HTTP 500" in str(caught.value)


async def test_503_then_success_is_retried(double: OpenAIDouble, make: Any) -> None:
    double.script(ErrorReply(503, "<html>Service Unavailable</html>"), ErrorReply(502, None), text_reply("ok"))
    events = await collect(make(), context(), FakeTools())
    assert text_of(events) == "ok"
    assert len(double.requests) == 3


async def test_connection_refused_is_unavailable(make: Any) -> None:
    provider = make(base_url=f"http://127.0.0.1:{free_port()}/v1", max_retries=1)
    started = time.monotonic()
    with pytest.raises(ProviderUnavailable, match="could not be reached"):
        await collect(provider, context(), FakeTools())
    assert time.monotonic() - started < 5


async def test_401_is_provider_auth_without_retries(double: OpenAIDouble, make: Any) -> None:
    with pytest.raises(ProviderError) as caught:
        await collect(make(api_key="sk-wrong-key"), context(), FakeTools())
    assert caught.value.code == "provider_auth"
    assert caught.value.message == "the cloud model rejected the API key"
    assert len(double.requests) == 1


async def test_other_4xx_is_provider_error_with_the_servers_message(double: OpenAIDouble, make: Any) -> None:
    double.script(ErrorReply(404, error_body("The model `gpt-test` does not exist or you do not have access to it.",
                                             code="model_not_found")))
    with pytest.raises(ProviderError) as caught:
        await collect(make(), context(), FakeTools())
    assert caught.value.code == "provider_error"
    assert "does not exist" in caught.value.message
    assert len(double.requests) == 1


async def test_an_error_inside_the_stream_is_provider_error(double: OpenAIDouble, make: Any) -> None:
    double.script(StreamReply([Raw("data: " + json.dumps(error_body("context too long", code="context_length"))
                                   + "\n\n")]))
    with pytest.raises(ProviderError) as caught:
        await collect(make(), context(), FakeTools())
    assert caught.value.code == "provider_error"
    assert "context too long" in caught.value.message


async def test_failure_after_tool_calls_is_an_error_not_a_fallback(double: OpenAIDouble, make: Any) -> None:
    # Falling back to local after a command was sent would send it again.
    double.script(tool_call_reply(ScriptedCall("send_command", '{"device_id": "thermostat-001", "command": "on"}')),
                  *[ErrorReply(500, error_body("boom", "server_error"))] * 3)
    with pytest.raises(ProviderError) as caught:
        await collect(make(max_retries=2), context(), FakeTools())
    assert caught.value.code == "provider_unavailable"
    assert len(double.requests) == 4


# ---------------------------------------------------------------------- malformed streams


@pytest.mark.parametrize("steps", [
    pytest.param([chunk({"role": "assistant", "content": ""}), Raw("data: {not json\n\n")], id="non-json-data"),
    pytest.param([Raw('data: {"id": "chatcmpl-1", "object": "chat.completion.chunk"}\n\n')], id="missing-choices"),
    pytest.param([Raw("hello world\n\n")], id="not-sse"),
    pytest.param([Raw("<html>\n<body>Bad gateway</body>\n</html>\n")], id="html"),
    pytest.param([Raw('data: {"choices": [{"index": 0, "delta": {"content": 42}}]}\n\n')], id="content-not-text"),
    pytest.param([Raw('data: {"choices": [{"index": 0, "delta": {"tool_calls": {"index": 0}}}]}\n\n')],
                 id="tool-calls-not-list"),
    pytest.param([chunk({}, "tool_calls"), DONE], id="tool-calls-finish-without-calls"),
])
async def test_malformed_stream_is_bad_provider_response(double: OpenAIDouble, make: Any, steps: list[Any]) -> None:
    double.script(StreamReply(steps))
    with pytest.raises(ProviderError) as caught:
        await collect(make(), context(), FakeTools())
    assert caught.value.code == "bad_provider_response"
    assert len(double.requests) == 1


async def test_malformed_line_after_text_is_still_bad_provider_response(double: OpenAIDouble, make: Any) -> None:
    double.script(StreamReply([*text_steps("Hello")[:2], Raw("data: nope\n\n")]))
    events: list[TurnEvent] = []
    with pytest.raises(ProviderError) as caught:
        await collect(make(), context(), FakeTools(), events)
    assert caught.value.code == "bad_provider_response"
    assert events == [Delta("Hello")]


# ---------------------------------------------------------------------- timeouts and broken streams


async def test_read_timeout_before_headers_is_unavailable_without_retries(double: OpenAIDouble, make: Any) -> None:
    double.script(StreamReply([], hang_before_headers=True))
    started = time.monotonic()
    with pytest.raises(ProviderUnavailable, match="did not answer"):
        await collect(make(read_timeout_s=0.3), context(), FakeTools())
    assert time.monotonic() - started < 3
    assert len(double.requests) == 1


async def test_read_timeout_before_any_text_is_unavailable(double: OpenAIDouble, make: Any) -> None:
    double.script(StreamReply([chunk({"role": "assistant", "content": ""}), Hang()]))
    started = time.monotonic()
    with pytest.raises(ProviderUnavailable):
        await collect(make(read_timeout_s=0.3), context(), FakeTools())
    assert 0.25 <= time.monotonic() - started < 3


async def test_read_timeout_mid_stream_is_provider_timeout(double: OpenAIDouble, make: Any) -> None:
    double.script(StreamReply([*text_steps("Hello", " wor")[:3], Hang()]))
    events: list[TurnEvent] = []
    started = time.monotonic()
    with pytest.raises(ProviderError) as caught:
        await collect(make(read_timeout_s=0.3), context(), FakeTools(), events)
    assert caught.value.code == "provider_timeout"
    assert events == [Delta("Hello"), Delta(" wor")]
    assert time.monotonic() - started < 3
    await double.wait_disconnected(0)


async def test_slow_chunks_within_the_read_timeout_are_fine(double: OpenAIDouble, make: Any) -> None:
    steps = text_steps("a", "b", "c")
    double.script(StreamReply([steps[0], Pause(0.2), steps[1], Pause(0.2), steps[2], Pause(0.2), steps[3],
                               Pause(0.2), steps[4], DONE]))
    events = await collect(make(read_timeout_s=0.5), context(), FakeTools())
    assert text_of(events) == "abc"


async def test_a_truncated_stream_after_text_is_provider_disconnected(double: OpenAIDouble, make: Any) -> None:
    double.script(StreamReply(text_steps("Hello", " wor")[:3]))  # no finish_reason, no [DONE]
    events: list[TurnEvent] = []
    with pytest.raises(ProviderError) as caught:
        await collect(make(), context(), FakeTools(), events)
    assert caught.value.code == "provider_disconnected"
    assert text_of(events) == "Hello wor"


async def test_a_truncated_stream_before_text_is_unavailable(double: OpenAIDouble, make: Any) -> None:
    double.script(StreamReply([chunk({"role": "assistant", "content": ""})]))
    with pytest.raises(ProviderUnavailable):
        await collect(make(), context(), FakeTools())


async def test_a_connection_dropped_mid_stream_is_provider_disconnected(double: OpenAIDouble, make: Any) -> None:
    double.script(StreamReply([*text_steps("Hello")[:2], Pause(0.05), Abort()]))
    events: list[TurnEvent] = []
    with pytest.raises(ProviderError) as caught:
        await collect(make(), context(), FakeTools(), events)
    assert caught.value.code == "provider_disconnected"
    assert events == [Delta("Hello")]


async def test_a_truncated_tool_call_stream_runs_no_tool(double: OpenAIDouble, make: Any) -> None:
    steps = tool_call_steps(ScriptedCall("send_command", '{"device_id": "thermostat-001", "command": "on"}'))
    double.script(StreamReply(steps[:-1]))  # arguments sent, but no finish_reason and no [DONE]
    tools = FakeTools()
    with pytest.raises(ProviderUnavailable):
        await collect(make(), context(), tools)
    assert tools.calls == []


# ---------------------------------------------------------------------- cancellation


async def test_cancelling_the_turn_closes_the_upstream_connection(double: OpenAIDouble, make: Any) -> None:
    double.script(StreamReply([*text_steps("Hel")[:2], Hang()]))
    provider = make()
    first = asyncio.Event()

    async def consume() -> None:
        async for event in provider.run(context(), FakeTools()):
            if isinstance(event, Delta):
                first.set()

    task = asyncio.create_task(consume())
    await asyncio.wait_for(first.wait(), 5)
    cancelled_at = time.monotonic()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    disconnected_at = await double.wait_disconnected(0)
    assert disconnected_at - cancelled_at < 0.1


async def test_closing_the_iteration_closes_the_upstream_connection(double: OpenAIDouble, make: Any) -> None:
    double.script(StreamReply([*text_steps("Hel")[:2], Hang()]))
    iterator = make().run(context(), FakeTools())
    assert await iterator.__anext__() == Delta("Hel")
    closed_at = time.monotonic()
    await iterator.aclose()
    disconnected_at = await double.wait_disconnected(0)
    assert disconnected_at - closed_at < 0.1


async def test_cancelling_while_waiting_for_headers_closes_the_connection(double: OpenAIDouble, make: Any) -> None:
    double.script(StreamReply([], hang_before_headers=True))
    task = asyncio.create_task(collect(make(), context(), FakeTools()))
    while not double.requests:
        await asyncio.sleep(0.01)
    cancelled_at = time.monotonic()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    disconnected_at = await double.wait_disconnected(0)
    assert disconnected_at - cancelled_at < 0.1


async def test_the_provider_keeps_working_after_a_cancelled_turn(double: OpenAIDouble, make: Any) -> None:
    double.script(StreamReply([*text_steps("Hel")[:2], Hang()]), text_reply("second"))
    provider = make()
    iterator = provider.run(context(), FakeTools())
    await iterator.__anext__()
    await iterator.aclose()
    assert text_of(await collect(provider, context(), FakeTools())) == "second"


# ---------------------------------------------------------------------- the API key


async def test_the_api_key_never_appears_in_logs_or_errors(
        double: OpenAIDouble, make: Any, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    provider = make()
    assert API_KEY not in repr(provider.settings)
    messages: list[str] = []

    double.script(ErrorReply(500, error_body(f"upstream rejected key {API_KEY}", "server_error")),
                  text_reply("ok"))
    await collect(provider, context(), FakeTools())

    double.script(ErrorReply(400, error_body(f"Invalid request for key {API_KEY}")))
    with pytest.raises(ProviderError) as caught:
        await collect(provider, context(), FakeTools())
    messages.append(caught.value.message)

    double.script(*[ErrorReply(503, f"overloaded ({API_KEY})")] * 3)
    with pytest.raises(ProviderUnavailable) as unavailable:
        await collect(provider, context(), FakeTools())
    messages.append(str(unavailable.value))

    with pytest.raises(ProviderError) as auth:
        await collect(make(api_key=API_KEY + "-wrong"), context(), FakeTools())
    messages.append(auth.value.message)

    assert caplog.records  # retries and requests were logged
    assert API_KEY not in caplog.text
    for message in messages:
        assert API_KEY not in message
    assert "***" in messages[0]


# ---------------------------------------------------------------------- the session


async def test_the_session_comes_from_the_factory_and_close_closes_it(double: OpenAIDouble) -> None:
    import aiohttp

    made: list[aiohttp.ClientSession] = []

    def factory() -> aiohttp.ClientSession:
        session = aiohttp.ClientSession()
        made.append(session)
        return session

    provider = OpenAIProvider(OpenAISettings(base_url=double.base_url, api_key=API_KEY, model="m"), factory)
    assert made == []  # lazily
    double.script(text_reply("a"), text_reply("b"))
    await collect(provider, context(), FakeTools())
    await collect(provider, context(), FakeTools())
    assert len(made) == 1
    await provider.close()
    assert made[0].closed


# ---------------------------------------------------------------------- the SSE decoder


def test_sse_decoder_handles_any_split_and_line_ending() -> None:
    stream = (": comment\r\n"
              "data: {\"a\": \"温度\"}\r\n\r\n"
              "event: custom\r"
              "data: line one\r"
              "data: line two\r\r"
              "data:no-space\n\n"
              "id: 7\nretry: 100\ndata: [DONE]\n\n").encode()
    expected = [SSEEvent('{"a": "温度"}'), SSEEvent("line one\nline two", "custom"), SSEEvent("no-space"),
                SSEEvent("[DONE]")]
    for size in (1, 2, 3, 5, 7, len(stream)):
        decoder = SSEDecoder()
        events: list[SSEEvent] = []
        for start in range(0, len(stream), size):
            events.extend(decoder.feed(stream[start:start + size]))
        events.extend(decoder.close())
        assert events == expected, size


def test_sse_decoder_flushes_an_unterminated_event_at_the_end() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: x") == []
    assert decoder.close() == [SSEEvent("x")]


def test_sse_decoder_ignores_lines_that_are_no_field_as_the_openai_sdk_does_and_refuses_huge_ones() -> None:
    # openai-python's SSEDecoder.decode: "else: pass  # Field is ignored."
    decoder = SSEDecoder()
    assert decoder.feed(b"<html>\nx-trace-id: abc\nDATA: upper\ndata: kept\n\n") == [SSEEvent("kept")]
    with pytest.raises(SSEDecodeError):
        SSEDecoder(max_event_bytes=100).feed(b"data: " + b"x" * 200)


async def test_a_refusal_is_the_reply_not_an_empty_one(double: OpenAIDouble, make: Any) -> None:
    # How OpenAI streams a refusal: content null, the reason in delta.refusal.
    double.script(StreamReply([
        chunk({"role": "assistant", "content": None, "refusal": ""}),
        chunk({"refusal": "I can't help "}),
        chunk({"refusal": "with that."}),
        chunk({}, "stop"),
        Raw("id: 9\nretry: 1000\nx-extra: ignored\ndata: [DONE]\n\n"),
    ]))
    assert text_of(await collect(make(), context(), FakeTools())) == "I can't help with that."
