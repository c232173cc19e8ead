"""The `openai` provider: any OpenAI-compatible `/chat/completions` endpoint (OpenAI, DashScope
compatible mode, Volcengine Ark, DeepSeek, Ollama, llama.cpp), streamed, with tool calls.

One turn is a loop of requests: each streams reply text (yielded as Delta at once) and maybe
tool calls; tool calls are run through `Tools` and their results sent back in the next
request, at most `max_tool_iterations` times. Failures are sorted by what the agent can do
about them:

- nothing has been yielded yet and the endpoint cannot be reached (refused, DNS, timeouts,
  429/5xx after retries): ProviderUnavailable, and the agent answers with `local`;
- after output (a half-streamed reply, tool calls already made), the same failures are a
  ProviderError ("provider_timeout", "provider_disconnected", "provider_unavailable"),
  because answering again from scratch would repeat text or commands;
- the endpoint answered with something unusable: ProviderError ("provider_auth",
  "provider_error", "bad_provider_response", "tool_loop").

Retries (exponential backoff with jitter, `Retry-After` honoured) only ever repeat a request
that has produced no output. The API key is sent only in the Authorization header and is
scrubbed from every log line and error message.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import email.utils
import json
import logging
import math
import random
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from deviceagentd.agent.openai.sse import SSEDecodeError, SSEDecoder
from deviceagentd.agent.openai.stream import ChatStream, StreamErrorBody, bad_response, error_code, error_message
from deviceagentd.agent.types import (
    ChatMessage,
    Delta,
    ImageInput,
    ProviderError,
    ProviderUnavailable,
    ToolCallFinished,
    ToolCallStarted,
    ToolResult,
    Tools,
    TurnContext,
    TurnEvent,
)
from deviceagentd.core.language import written_in_chinese

log = logging.getLogger("deviceagentd.agent.openai")

API_KEY_ENV = "OPENAI_API_KEY"
DEFAULT_SYSTEM_PROMPT = (
    "You are the assistant of an edge gateway that manages the devices of one site (thermostats, "
    "lights, sensors and the like). Answer briefly and plainly. Use the tools to read device "
    "states and events and to send commands; never invent devices, commands, parameters or "
    "values that the tools did not give you, and say so when something cannot be done. Reply in "
    "the language the user writes in."
)
# Parallel tool calls beyond this in one response are answered with an error, not run.
MAX_CALLS_PER_ROUND = 16
# A tool result is sent back to the model at most this long.
MAX_TOOL_RESULT_CHARS = 16_000
MAX_ERROR_BODY_BYTES = 64 * 1024
MAX_COMPLETION_BODY_BYTES = 8 * 1024 * 1024
RETRY_STATUSES = frozenset({408, 409, 429})
LENGTH_NOTE = " …(the answer was cut short: the model reached its length limit)"
LENGTH_NOTE_ZH = "……（回答被截断：模型达到了长度上限）"


def resolve_api_key(configured: str, environ: Mapping[str, str]) -> str:
    """The configured key, else $OPENAI_API_KEY, else "" (LAN servers often need none)."""
    return configured or environ.get(API_KEY_ENV, "")


@dataclass(frozen=True)
class OpenAISettings:
    # `{base_url}/chat/completions` is posted to: https://api.openai.com/v1,
    # http://127.0.0.1:11434/v1 (Ollama), https://dashscope.aliyuncs.com/compatible-mode/v1, ...
    base_url: str
    # Sent as `Authorization: Bearer`; "" sends no Authorization header.
    api_key: str = field(repr=False)
    model: str
    connect_timeout_s: float = 5.0
    # The longest silence allowed while waiting for the response and between stream chunks.
    read_timeout_s: float = 30.0
    # Extra attempts after connect errors, 408/409/429 and 5xx, only for a request that has
    # produced no output.
    max_retries: int = 2
    max_tool_iterations: int = 6
    system_prompt: str = DEFAULT_SYSTEM_PROMPT
    backoff_base_s: float = 0.5
    backoff_max_s: float = 8.0
    # A Retry-After longer than this is not waited for: the turn falls back to local instead.
    retry_after_max_s: float = 20.0

    @property
    def url(self) -> str:
        return self.base_url.rstrip("/") + "/chat/completions"


class _Unreachable(Exception):
    """No usable answer could be started (after the retries)."""


class _StreamBroken(Exception):
    """The response stopped before it was complete."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class OpenAIProvider:
    name = "openai"

    def __init__(self, settings: OpenAISettings,
                 session_factory: Callable[[], aiohttp.ClientSession] | None = None) -> None:
        self.settings = settings
        self._session_factory = session_factory or aiohttp.ClientSession
        self._session: aiohttp.ClientSession | None = None
        self._random = random.Random()

    async def close(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = self._session_factory()
        return self._session

    # ------------------------------------------------------------------ the turn

    async def run(self, context: TurnContext, tools: Tools) -> AsyncIterator[TurnEvent]:
        settings = self.settings
        messages = build_messages(settings.system_prompt, context)
        tool_specs = [spec.to_openai() for spec in tools.specs()]
        yielded = False
        last_char = ""
        for rounds in range(settings.max_tool_iterations + 1):
            stream = ChatStream()
            round_text: list[str] = []
            body = request_body(settings.model, messages, tool_specs)
            try:
                # aclosing: when our caller closes this iteration, the response is closed now,
                # not whenever the inner generator is collected.
                async with contextlib.aclosing(self._stream(body, stream)) as pieces:
                    async for piece in pieces:
                        if last_char and not last_char.isspace() and not round_text and not piece[:1].isspace():
                            piece = "\n" + piece  # an earlier round's text ended without a break
                        round_text.append(piece)
                        last_char = piece[-1]
                        yielded = True
                        yield Delta(piece)
            except _Unreachable as exc:
                if yielded:
                    raise ProviderError("provider_unavailable", str(exc)) from None
                raise ProviderUnavailable(str(exc)) from None
            except _StreamBroken as exc:
                if yielded:
                    raise ProviderError(exc.code, exc.message) from None
                raise ProviderUnavailable(exc.message) from None

            if stream.finish_reason == "length":
                log.warning("model %s stopped at its length limit", settings.model)
                yield Delta(LENGTH_NOTE_ZH if written_in_chinese(context.message) else LENGTH_NOTE)
                return
            pending = stream.tool_calls
            if not pending:
                if stream.finish_reason == "tool_calls":
                    raise bad_response("it finished for tool calls but sent none")
                return
            if rounds >= settings.max_tool_iterations:
                raise ProviderError("tool_loop", f"the cloud model was still calling tools after "
                                                 f"{settings.max_tool_iterations} rounds, so the turn was stopped")

            assistant_calls: list[dict[str, Any]] = []
            tool_messages: list[dict[str, Any]] = []
            for position, pending_call in enumerate(pending):
                call, refusal = pending_call.parse()
                if refusal is None and position >= MAX_CALLS_PER_ROUND:
                    refusal = ToolResult(call.id, call.name, False,
                                         error=f"at most {MAX_CALLS_PER_ROUND} tool calls are run at once")
                yield ToolCallStarted(call)
                yielded = True
                result = refusal if refusal is not None else await tools.call(call, context)
                yield ToolCallFinished(result)
                # The arguments as decoded ({} when they were not a JSON object; the tool
                # result says why): several compatible servers reject a request echoing bad JSON.
                arguments = json.dumps(call.arguments, ensure_ascii=False)
                assistant_calls.append({"id": call.id, "type": "function",
                                        "function": {"name": call.name, "arguments": arguments}})
                tool_messages.append({"role": "tool", "tool_call_id": call.id, "content": tool_result_text(result)})
            messages.append({"role": "assistant", "content": "".join(stream.text) or None,
                             "tool_calls": assistant_calls})
            messages.extend(tool_messages)

    # ------------------------------------------------------------------ one request

    async def _stream(self, body: dict[str, Any], stream: ChatStream) -> AsyncGenerator[str, None]:
        """Reply text pieces of one request as they arrive; `stream` holds the rest."""
        response = await self._open(body)
        finished = False
        try:
            content_type = response.headers.get("Content-Type", "").split(";")[0].strip().lower()
            if content_type == "application/json":
                for piece in await self._read_completion(response, stream):
                    yield piece
                finished = True
                return
            decoder = SSEDecoder()
            while not stream.done:
                try:
                    async with asyncio.timeout(self.settings.read_timeout_s):
                        chunk = await response.content.readany()
                except TimeoutError:
                    raise _StreamBroken("provider_timeout", f"the cloud model stopped sending for "
                                                            f"{self.settings.read_timeout_s:g} s") from None
                except (aiohttp.ClientPayloadError, aiohttp.ClientConnectionError) as exc:
                    raise _StreamBroken("provider_disconnected",
                                        self._redact(f"the connection to the cloud model broke: {exc}")) from None
                try:
                    events = decoder.feed(chunk) if chunk else decoder.close()
                except SSEDecodeError as exc:
                    raise bad_response(str(exc)) from None
                for event in events:
                    try:
                        pieces = stream.apply_data(event.data, event.event)
                    except StreamErrorBody as exc:
                        raise ProviderError("provider_error", self._redact(
                            f"the cloud model reported an error: {exc.message}")) from None
                    for piece in pieces:
                        yield piece
                    if stream.done:
                        break
                if not chunk:
                    break
            if not stream.done and stream.finish_reason is None:
                if decoder.events_seen == 0:
                    raise bad_response("the cloud model's answer is not an event stream")
                raise _StreamBroken("provider_disconnected", "the cloud model's answer was cut off")
            finished = True
        finally:
            # Anything but a complete answer (an error, the caller cancelling or closing the
            # iteration) drops the connection at once, so the server stops generating. A
            # complete one goes back to the pool (aiohttp closes it if unread bytes remain).
            if finished:
                response.release()
            else:
                response.close()

    async def _read_completion(self, response: aiohttp.ClientResponse, stream: ChatStream) -> list[str]:
        try:
            async with asyncio.timeout(self.settings.read_timeout_s):
                raw = await response.content.read(MAX_COMPLETION_BODY_BYTES + 1)
        except TimeoutError:
            raise _StreamBroken("provider_timeout", f"the cloud model stopped sending for "
                                                    f"{self.settings.read_timeout_s:g} s") from None
        except (aiohttp.ClientPayloadError, aiohttp.ClientConnectionError):
            raise _StreamBroken("provider_disconnected", "the connection to the cloud model broke") from None
        if len(raw) > MAX_COMPLETION_BODY_BYTES:
            raise bad_response("the answer is too large")
        try:
            body = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise bad_response("the answer is not JSON") from None
        try:
            return stream.apply_completion(body)
        except StreamErrorBody as exc:
            raise ProviderError("provider_error", self._redact(
                f"the cloud model reported an error: {exc.message}")) from None

    async def _open(self, body: dict[str, Any]) -> aiohttp.ClientResponse:
        """POST the request and return a 200 response, retrying what may succeed later."""
        settings = self.settings
        headers = {"Content-Type": "application/json", "Accept": "text/event-stream"}
        if settings.api_key:
            headers["Authorization"] = f"Bearer {settings.api_key}"
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=settings.connect_timeout_s,
                                        sock_read=settings.read_timeout_s)
        data = json.dumps(body, ensure_ascii=False).encode()
        attempts = settings.max_retries + 1
        reason = ""
        for attempt in range(1, attempts + 1):
            delay = self._backoff(attempt)
            log.debug("POST %s model=%s messages=%d attempt=%d", self._redact(settings.url), settings.model,
                      len(body["messages"]), attempt)
            try:
                response = await self._client().post(settings.url, data=data, headers=headers, timeout=timeout)
            except aiohttp.ConnectionTimeoutError:
                reason = f"could not connect within {settings.connect_timeout_s:g} s"
            except (aiohttp.ServerTimeoutError, TimeoutError):
                # Connected, but no answer within the read timeout: not worth repeating.
                raise _Unreachable(f"the cloud model did not answer within {settings.read_timeout_s:g} s") from None
            except aiohttp.InvalidURL:
                raise _Unreachable(self._redact(f"the cloud model's URL {settings.url!r} is not valid")) from None
            except aiohttp.ClientError as exc:
                reason = self._redact(f"could not connect: {exc}")
            else:
                if response.status == 200:
                    return response
                error_body = await self._error_body(response)
                message = error_message(error_body) if error_body is not None else ""
                status = response.status
                if status in (401, 403):
                    raise ProviderError("provider_auth", "the cloud model rejected the API key")
                if status == 429 and error_code(error_body) == "insufficient_quota":
                    raise _Unreachable(self._redact(f"the cloud model's quota is used up: {message}"))
                if status not in RETRY_STATUSES and status < 500:
                    raise ProviderError("provider_error", self._redact(
                        f"the cloud model refused the request (HTTP {status}): {message or response.reason}"))
                reason = self._redact(f"HTTP {status}" + (f": {_clip(message)}" if message else ""))
                retry_after = _retry_after_s(response.headers)
                if retry_after is not None:
                    if retry_after > settings.retry_after_max_s:
                        raise _Unreachable(f"{reason} (asked to retry after {retry_after:g} s)")
                    delay = retry_after
            if attempt == attempts:
                break
            log.warning("cloud model request failed (%s); retrying in %.2f s (%d/%d)", reason, delay, attempt,
                        settings.max_retries)
            await asyncio.sleep(delay)
        raise _Unreachable(f"the cloud model could not be reached ({reason})")

    async def _error_body(self, response: aiohttp.ClientResponse) -> Any:
        try:
            try:
                async with asyncio.timeout(self.settings.read_timeout_s):
                    raw = await response.content.read(MAX_ERROR_BODY_BYTES)
            except (TimeoutError, aiohttp.ClientError):
                return None
            try:
                return json.loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError):
                text = raw.decode("utf-8", errors="replace").strip()
                return {"message": _clip(text)} if text else None
        finally:
            response.close()

    def _backoff(self, attempt: int) -> float:
        """Exponential with jitter: base·2^(n-1) capped, times 0.5..1."""
        ceiling = min(self.settings.backoff_max_s, self.settings.backoff_base_s * 2.0 ** (attempt - 1))
        return ceiling * self._random.uniform(0.5, 1.0)

    def _redact(self, text: str) -> str:
        key = self.settings.api_key
        return text.replace(key, "***") if key else text


# ---------------------------------------------------------------------- requests


def request_body(model: str, messages: list[dict[str, Any]], tools: list[dict[str, Any]]) -> dict[str, Any]:
    body: dict[str, Any] = {"model": model, "messages": messages, "stream": True}
    if tools:
        body["tools"] = tools
    return body


def build_messages(system_prompt: str, context: TurnContext) -> list[dict[str, Any]]:
    """The system prompt (with the session's device), the history as plain text, and the user
    message with its images. Earlier tool calls are not replayed: the replies that followed
    them say what was done, and the model can read fresh state with the tools."""
    system = system_prompt
    if context.device_id:
        product = f" (product {context.product_id})" if context.product_id else ""
        system += f"\nThe user's current device is {context.device_id}{product}."
    elif context.product_id:
        system += f"\nThe user is talking about devices of product {context.product_id}."
    messages: list[dict[str, Any]] = [{"role": "system", "content": system}]
    messages.extend(history_message(message) for message in context.history if message.text.strip())
    messages.append({"role": "user", "content": user_content(context.message, context.images)})
    return messages


def history_message(message: ChatMessage) -> dict[str, Any]:
    text = message.text
    if message.role == "assistant" and message.interrupted:
        text += " …(interrupted)"
    return {"role": message.role, "content": text}


def user_content(text: str, images: list[ImageInput]) -> str | list[dict[str, Any]]:
    if not images:
        return text
    parts: list[dict[str, Any]] = [{"type": "text", "text": text}]
    for image in images:
        encoded = base64.b64encode(image.data).decode("ascii")
        parts.append({"type": "image_url", "image_url": {"url": f"data:{image.mime_type};base64,{encoded}"}})
    return parts


def tool_result_text(result: ToolResult) -> str:
    body: dict[str, Any] = {"ok": result.ok}
    if result.ok:
        body["result"] = result.result
    else:
        body["error"] = result.error
    text = json.dumps(body, ensure_ascii=False, separators=(",", ":"), default=str)
    if len(text) > MAX_TOOL_RESULT_CHARS:
        text = text[:MAX_TOOL_RESULT_CHARS] + " …(truncated)"
    return text


# ---------------------------------------------------------------------- helpers


def _retry_after_s(headers: Mapping[str, str]) -> float | None:
    """`retry-after-ms` (OpenAI), else `Retry-After` in seconds or as an HTTP date."""
    millis = headers.get("retry-after-ms")
    if millis is not None:
        try:
            value = float(millis) / 1000
        except ValueError:
            value = math.nan
        if math.isfinite(value) and value >= 0:
            return value
    raw = headers.get("Retry-After")
    if raw is None:
        return None
    try:
        value = float(raw)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(raw)
        except (TypeError, ValueError):
            return None
        return max(0.0, when.timestamp() - time.time())
    return value if math.isfinite(value) and value >= 0 else None


def _clip(text: str, limit: int = 300) -> str:
    return text if len(text) <= limit else text[:limit] + "…"
