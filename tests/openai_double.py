"""A loopback OpenAI chat-completions server for tests: `POST /v1/chat/completions` with
`stream: true`, answering in the real wire format from a script of replies.

    async with OpenAIDouble() as double:
        double.script(tool_call_reply(ScriptedCall("get_device_state", '{"device_id": "t-1"}')),
                      text_reply("It is ", "21 °C."))
        settings = OpenAISettings(base_url=double.base_url, api_key="sk-test", model="gpt-test")
        ...
        double.requests[1].body["messages"]   # what the client sent, in order

Each request takes the next scripted reply (`repeat` answers once the script is used up;
with neither, a 500 says the script ran out). A reply is a `StreamReply` (a list of steps:
chunk dicts sent as `data: {json}`, raw text, pauses, a hang, an abrupt close), an
`ErrorReply` (status, body, headers such as Retry-After) or a `JSONReply` (a non-streamed
completion). Requests are checked the way OpenAI checks them (tool messages must answer the
assistant's tool calls, content parts well-formed, ...): a bad one gets a 400 and is listed in
`problems`. Every request is recorded with its headers and when the client went away.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from aiohttp import web

MODEL = "gpt-double"
CREATED = 1_700_000_000


# ---------------------------------------------------------------------- script


@dataclass(frozen=True)
class Raw:
    """Bytes written as they are (malformed lines, comments, odd line endings)."""

    text: str


@dataclass(frozen=True)
class Pause:
    seconds: float


@dataclass(frozen=True)
class Hang:
    """Send nothing more until the client goes away (or the double stops)."""


@dataclass(frozen=True)
class Abort:
    """Close the connection abruptly, mid-response."""


Step = dict[str, Any] | Raw | Pause | Hang | Abort
DONE = Raw("data: [DONE]\n\n")


@dataclass
class StreamReply:
    steps: list[Step]
    # Wait this long before sending the status line and headers (Hang() never sends them).
    headers_delay_s: float = 0.0
    hang_before_headers: bool = False
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class ErrorReply:
    status: int
    body: dict[str, Any] | str | None = None
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class JSONReply:
    body: dict[str, Any]


Reply = StreamReply | ErrorReply | JSONReply


@dataclass(frozen=True)
class ScriptedCall:
    name: str
    arguments: str
    id: str = ""
    # How many chunks the arguments are split into.
    pieces: int = 3


def chunk(delta: dict[str, Any], finish_reason: str | None = None, *, chunk_id: str = "chatcmpl-double",
          model: str = MODEL) -> dict[str, Any]:
    """One `chat.completion.chunk`, as OpenAI sends it."""
    return {
        "id": chunk_id,
        "object": "chat.completion.chunk",
        "created": CREATED,
        "model": model,
        "system_fingerprint": "fp_double",
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
    }


def usage_chunk(prompt_tokens: int = 10, completion_tokens: int = 5) -> dict[str, Any]:
    """The last chunk with `stream_options.include_usage`: no choices."""
    return {"id": "chatcmpl-double", "object": "chat.completion.chunk", "created": CREATED, "model": MODEL,
            "choices": [], "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                                     "total_tokens": prompt_tokens + completion_tokens}}


def split(text: str, pieces: int) -> list[str]:
    """`text` cut into `pieces` consecutive parts (fewer when it is shorter)."""
    if pieces <= 1 or len(text) <= 1:
        return [text]
    size = max(1, -(-len(text) // pieces))
    return [text[i:i + size] for i in range(0, len(text), size)]


def text_steps(*pieces: str, finish_reason: str = "stop") -> list[Step]:
    return [chunk({"role": "assistant", "content": ""}),
            *(chunk({"content": piece}) for piece in pieces),
            chunk({}, finish_reason)]


def text_reply(*pieces: str, finish_reason: str = "stop", usage: bool = False) -> StreamReply:
    """Reply text in the given pieces, then finish_reason, then [DONE]."""
    steps = text_steps(*pieces, finish_reason=finish_reason)
    if usage:
        steps.append(usage_chunk())
    return StreamReply([*steps, DONE])


def tool_call_steps(*calls: ScriptedCall, text: str = "") -> list[Step]:
    """Calls one after the other, as OpenAI streams parallel calls: the first piece of each
    has its id, type and name with empty arguments, then the arguments in pieces."""
    steps: list[Step] = [chunk({"role": "assistant", "content": text or None})]
    for index, call in enumerate(calls):
        call_id = call.id or f"call_{index}_{call.name}"
        steps.append(chunk({"tool_calls": [{"index": index, "id": call_id, "type": "function",
                                            "function": {"name": call.name, "arguments": ""}}]}))
        for piece in split(call.arguments, call.pieces):
            steps.append(chunk({"tool_calls": [{"index": index, "function": {"arguments": piece}}]}))
    steps.append(chunk({}, "tool_calls"))
    return steps


def tool_call_reply(*calls: ScriptedCall, text: str = "") -> StreamReply:
    return StreamReply([*tool_call_steps(*calls, text=text), DONE])


def error_body(message: str, type_: str = "invalid_request_error", code: str | None = None,
               param: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def completion(content: str | None, tool_calls: list[dict[str, Any]] | None = None,
               finish_reason: str = "stop") -> dict[str, Any]:
    """A whole non-streamed `chat.completion`."""
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if tool_calls:
        message["tool_calls"] = tool_calls
    return {"id": "chatcmpl-double", "object": "chat.completion", "created": CREATED, "model": MODEL,
            "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish_reason}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}}


# ---------------------------------------------------------------------- request checks


def request_problems(body: Any) -> list[str]:
    """What OpenAI would reject in a chat-completions request body (the parts this gateway uses)."""
    if not isinstance(body, dict):
        return ["the body is not a JSON object"]
    problems: list[str] = []
    if not isinstance(body.get("model"), str) or not body["model"]:
        problems.append("model is required")
    if body.get("stream") is not True:
        problems.append("stream must be true (this double only streams)")
    tools = body.get("tools")
    if tools is not None:
        if not isinstance(tools, list) or not tools:
            problems.append("tools must be a non-empty list")
        else:
            for i, tool in enumerate(tools):
                function = tool.get("function") if isinstance(tool, dict) else None
                if not isinstance(tool, dict) or tool.get("type") != "function" or not isinstance(function, dict) \
                        or not isinstance(function.get("name"), str) \
                        or not isinstance(function.get("parameters", {}), dict):
                    problems.append(f"tools[{i}] is not a function tool")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return [*problems, "messages must be a non-empty list"]
    unanswered: list[str] = []
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            problems.append(f"{where} is not an object")
            continue
        role = message.get("role")
        if role != "tool" and unanswered:
            problems.append(f"{where}: tool calls {unanswered} have no tool message before it")
            unanswered = []
        content = message.get("content")
        if role in ("system", "user"):
            if isinstance(content, list) and role == "user":
                problems.extend(_content_part_problems(where, content))
            elif not isinstance(content, str):
                problems.append(f"{where}: content must be text")
        elif role == "assistant":
            calls = message.get("tool_calls")
            if content is not None and not isinstance(content, str):
                problems.append(f"{where}: content must be text or null")
            if calls is None:
                if content is None:
                    problems.append(f"{where}: content is required without tool_calls")
                continue
            if not isinstance(calls, list) or not calls:
                problems.append(f"{where}: tool_calls must be a non-empty list")
                continue
            for j, call in enumerate(calls):
                function = call.get("function") if isinstance(call, dict) else None
                if not isinstance(call, dict) or not isinstance(call.get("id"), str) or call.get("type") != "function" \
                        or not isinstance(function, dict) or not isinstance(function.get("name"), str) \
                        or not isinstance(function.get("arguments"), str):
                    problems.append(f"{where}.tool_calls[{j}] is malformed")
                else:
                    unanswered.append(call["id"])
        elif role == "tool":
            call_id = message.get("tool_call_id")
            if call_id not in unanswered:
                problems.append(f"{where}: tool_call_id {call_id!r} does not answer a preceding tool call")
            else:
                unanswered.remove(call_id)
            if not isinstance(content, str):
                problems.append(f"{where}: content must be text")
        else:
            problems.append(f"{where}: unknown role {role!r}")
    if unanswered:
        problems.append(f"tool calls {unanswered} have no tool message")
    return problems


def _content_part_problems(where: str, parts: list[Any]) -> list[str]:
    problems = []
    for k, part in enumerate(parts):
        if not isinstance(part, dict):
            problems.append(f"{where}.content[{k}] is not an object")
        elif part.get("type") == "text":
            if not isinstance(part.get("text"), str):
                problems.append(f"{where}.content[{k}].text must be text")
        elif part.get("type") == "image_url":
            image = part.get("image_url")
            url = image.get("url") if isinstance(image, dict) else None
            if not isinstance(url, str) or not url.startswith(("data:image/", "http://", "https://")):
                problems.append(f"{where}.content[{k}].image_url.url must be a data: or http(s) URL")
        else:
            problems.append(f"{where}.content[{k}] has unknown type {part.get('type')!r}")
    return problems


# ---------------------------------------------------------------------- the server


@dataclass
class RecordedRequest:
    body: Any
    headers: dict[str, str]
    received_at: float
    # time.monotonic() when the handler saw the client go away mid-reply (None: it did not).
    disconnected_at: float | None = None
    # The scripted reply was sent to its end.
    completed: bool = False

    @property
    def messages(self) -> list[dict[str, Any]]:
        messages: list[dict[str, Any]] = self.body["messages"]
        return messages


class OpenAIDouble:
    def __init__(self, *, expected_api_key: str | None = None) -> None:
        # When set, a request without `Authorization: Bearer <it>` gets OpenAI's 401.
        self.expected_api_key = expected_api_key
        self.requests: list[RecordedRequest] = []
        self.problems: list[str] = []
        self.repeat: Reply | None = None
        self._script: list[Reply] = []
        self._runner: web.AppRunner | None = None
        self._port = 0
        self._stopping = asyncio.Event()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._port}/v1"

    def script(self, *replies: Reply) -> None:
        self._script.extend(replies)

    async def start(self) -> None:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/chat/completions", self._handle)
        # handler_cancellation: a client going away cancels the handler, which records it.
        self._runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=1.0, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self._port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        self._stopping.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> OpenAIDouble:
        await self.start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.stop()

    async def wait_disconnected(self, index: int, timeout_s: float = 5.0) -> float:
        """When request `index`'s client went away (monotonic); fails after `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            at = self.requests[index].disconnected_at
            if at is not None:
                return at
            await asyncio.sleep(0.005)
        raise AssertionError(f"request {index}: the client did not close the connection within {timeout_s} s")

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        try:
            body = json.loads(raw)
        except json.JSONDecodeError:
            body = None
        record = RecordedRequest(body, dict(request.headers), time.monotonic())
        self.requests.append(record)
        if self.expected_api_key is not None \
                and request.headers.get("Authorization") != f"Bearer {self.expected_api_key}":
            return _error(401, error_body("Incorrect API key provided. You can find your API key at "
                                          "https://platform.openai.com/account/api-keys.", code="invalid_api_key"))
        if body is None:
            return _error(400, error_body("We could not parse the JSON body of your request."))
        problems = request_problems(body)
        if problems:
            self.problems.extend(problems)
            return _error(400, error_body("; ".join(problems)))
        if self._script:
            reply = self._script.pop(0)
        elif self.repeat is not None:
            reply = self.repeat
        else:
            self.problems.append(f"request {len(self.requests) - 1} came after the script ran out")
            return _error(500, error_body("the test script has no reply left", type_="server_error"))
        try:
            response = await self._reply(request, reply)
        except (asyncio.CancelledError, ConnectionResetError):
            record.disconnected_at = time.monotonic()
            raise
        record.completed = True
        return response

    async def _reply(self, request: web.Request, reply: Reply) -> web.StreamResponse:
        if isinstance(reply, ErrorReply):
            if isinstance(reply.body, dict):
                return web.json_response(reply.body, status=reply.status, headers=reply.headers)
            return web.Response(status=reply.status, text=reply.body or "", headers=reply.headers)
        if isinstance(reply, JSONReply):
            return web.json_response(reply.body)
        if reply.hang_before_headers:
            await self._stopping.wait()
            return web.Response(status=503, text="the double stopped")
        if reply.headers_delay_s:
            await asyncio.sleep(reply.headers_delay_s)
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream; charset=utf-8",
                                               "Cache-Control": "no-cache", **reply.headers})
        await response.prepare(request)
        for step in reply.steps:
            if isinstance(step, dict):
                await response.write(f"data: {json.dumps(step, ensure_ascii=False)}\n\n".encode())
            elif isinstance(step, Raw):
                await response.write(step.text.encode())
            elif isinstance(step, Pause):
                await asyncio.sleep(step.seconds)
            elif isinstance(step, Hang):
                await self._stopping.wait()
                return response
            else:
                transport = request.transport
                if transport is not None:
                    transport.abort()
                return response
        await response.write_eof()
        return response


def _error(status: int, body: dict[str, Any]) -> web.Response:
    return web.json_response(body, status=status)
