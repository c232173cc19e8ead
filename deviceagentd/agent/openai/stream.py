"""One chat-completion response, assembled from its streamed chunks.

A chunk is `{"choices": [{"index": 0, "delta": {...}, "finish_reason": null | "stop" |
"tool_calls" | "length" | ...}]}`. `delta.content` carries reply text; `delta.tool_calls`
carries tool calls in pieces keyed by `index`: the first piece has the call's `id` and
`function.name`, later pieces append to `function.arguments` (a JSON text split anywhere).
`data: [DONE]` ends the stream. Compatible servers differ in small ways (the name repeated in
every piece, no `index`, arguments sent as an object, a final chunk without `delta`, a
usage chunk with `choices: []`); those are accepted. Anything else unexpected raises
ProviderError("bad_provider_response").
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from deviceagentd.agent.types import ProviderError, ToolCall, ToolResult

DONE = "[DONE]"
MAX_ARGUMENTS_CHARS = 256 * 1024
BAD_RESPONSE = "bad_provider_response"


class StreamErrorBody(Exception):
    """The server reported an error inside a 200 stream (`{"error": {...}}`)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def bad_response(what: str) -> ProviderError:
    return ProviderError(BAD_RESPONSE, f"the cloud model sent an unusable answer: {what}")


@dataclass
class PendingToolCall:
    index: int
    id: str = ""
    name: str = ""
    arguments: list[str] = field(default_factory=list)
    arguments_chars: int = 0

    @property
    def arguments_text(self) -> str:
        return "".join(self.arguments)

    def parse(self) -> tuple[ToolCall, ToolResult | None]:
        """The call with its arguments decoded, and, when they cannot be, the error result to
        feed back to the model instead of running the tool."""
        text = self.arguments_text
        call_id = self.id or f"call_{self.index}"
        if not text.strip():
            return ToolCall(call_id, self.name, {}), None
        try:
            arguments = json.loads(text)
        except json.JSONDecodeError as exc:
            shown = text if len(text) <= 200 else text[:200] + "…"
            return ToolCall(call_id, self.name, {}), ToolResult(
                call_id, self.name, False, error=f"the arguments were not valid JSON: {exc.msg} at position "
                f"{exc.pos} of {shown!r}; send the arguments as one JSON object")
        if not isinstance(arguments, dict):
            return ToolCall(call_id, self.name, {}), ToolResult(
                call_id, self.name, False, error="the arguments must be a JSON object")
        return ToolCall(call_id, self.name, arguments), None


@dataclass
class ChatStream:
    """What one response has said so far."""

    text: list[str] = field(default_factory=list)
    calls: dict[int, PendingToolCall] = field(default_factory=dict)
    finish_reason: str | None = None
    done: bool = False

    @property
    def tool_calls(self) -> list[PendingToolCall]:
        return [self.calls[index] for index in sorted(self.calls)]

    def apply_data(self, data: str, event: str = "message") -> list[str]:
        """One SSE event's data: the reply text pieces it carries. A data field holding
        several JSON documents on separate lines (servers that forget the blank line between
        events) is taken as that many chunks."""
        if data.startswith(DONE):  # as the openai SDK reads it
            self.done = True
            return []
        try:
            documents = [json.loads(data)]
        except json.JSONDecodeError:
            lines = [line for line in data.split("\n") if line.strip()]
            if len(lines) < 2:
                raise bad_response(f"a stream event is not JSON: {_shown(data)}") from None
            documents = []
            for line in lines:
                if line.strip() == DONE:
                    documents.append(DONE)
                    continue
                try:
                    documents.append(json.loads(line))
                except json.JSONDecodeError:
                    raise bad_response(f"a stream event is not JSON: {_shown(line)}") from None
        pieces: list[str] = []
        for document in documents:
            if document == DONE:
                self.done = True
                break
            if event == "error" and isinstance(document, dict) and "error" not in document:
                document = {"error": document}
            pieces.extend(self.apply_chunk(document))
        return pieces

    def apply_chunk(self, chunk: Any) -> list[str]:
        if not isinstance(chunk, dict):
            raise bad_response(f"a stream chunk is not an object: {_shown(json.dumps(chunk))}")
        if chunk.get("error") is not None:
            raise StreamErrorBody(error_message(chunk) or "the stream reported an error")
        choices = chunk.get("choices")
        if not isinstance(choices, list):
            raise bad_response(f"a stream chunk has no choices: {_shown(json.dumps(chunk))}")
        pieces: list[str] = []
        for choice in choices:
            if not isinstance(choice, dict):
                raise bad_response("a choice is not an object")
            if choice.get("index", 0) != 0:
                continue  # only one choice is asked for
            delta = choice.get("delta")
            if delta is None:
                delta = choice.get("message") or {}
            if not isinstance(delta, dict):
                raise bad_response("a choice's delta is not an object")
            content = delta.get("content")
            if content is not None and not isinstance(content, str):
                raise bad_response("delta.content is not text")
            # A model that declines streams its reason in delta.refusal (content stays null):
            # it is the reply the user must hear, not an empty one.
            refusal = delta.get("refusal")
            if isinstance(refusal, str) and refusal and not content:
                content = refusal
            if content:
                self.text.append(content)
                pieces.append(content)
            tool_calls = delta.get("tool_calls")
            if tool_calls is not None:
                if not isinstance(tool_calls, list):
                    raise bad_response("delta.tool_calls is not a list")
                for position, piece in enumerate(tool_calls):
                    self._apply_tool_call(position, piece)
            finish_reason = choice.get("finish_reason")
            if finish_reason is not None:
                if not isinstance(finish_reason, str):
                    raise bad_response("finish_reason is not text")
                self.finish_reason = finish_reason
        return pieces

    def apply_completion(self, body: Any) -> list[str]:
        """A whole (non-streamed) `chat.completion`, from servers that ignore `stream`."""
        if not isinstance(body, dict):
            raise bad_response("the answer is not a JSON object")
        if body.get("error") is not None:
            raise StreamErrorBody(error_message(body) or "the server reported an error")
        choices = body.get("choices")
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
            raise bad_response("the answer has no choices")
        message = choices[0].get("message")
        if not isinstance(message, dict):
            raise bad_response("the answer has no message")
        calls = message.get("tool_calls")
        delta = dict(message)
        if isinstance(calls, list):
            delta["tool_calls"] = [
                {"index": i, **call} if isinstance(call, dict) and "index" not in call else call
                for i, call in enumerate(calls)
            ]
        pieces = self.apply_chunk({"choices": [{"index": 0, "delta": delta,
                                                "finish_reason": choices[0].get("finish_reason") or "stop"}]})
        self.done = True
        return pieces

    def _apply_tool_call(self, position: int, piece: Any) -> None:
        if not isinstance(piece, dict):
            raise bad_response("a tool call is not an object")
        call_id = piece.get("id")
        if call_id is not None and not isinstance(call_id, str):
            raise bad_response("a tool call id is not text")
        index = piece.get("index")
        if index is None:
            index = self._index_without_one(position, call_id)
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < 128:
            raise bad_response(f"a tool call has a bad index: {index!r}")
        function = piece.get("function") or {}
        if not isinstance(function, dict):
            raise bad_response("a tool call's function is not an object")
        name = function.get("name")
        arguments = function.get("arguments")
        if name is not None and not isinstance(name, str):
            raise bad_response("a tool call's name is not text")
        if isinstance(arguments, dict):
            arguments = json.dumps(arguments, ensure_ascii=False)
        if arguments is not None and not isinstance(arguments, str):
            raise bad_response("a tool call's arguments are not text")
        pending = self.calls.setdefault(index, PendingToolCall(index))
        if call_id and not pending.id:
            pending.id = call_id
        # The name comes once (OpenAI) or again in every piece (some compatible servers).
        if name and name != pending.name:
            pending.name += name
        if arguments:
            pending.arguments_chars += len(arguments)
            if pending.arguments_chars > MAX_ARGUMENTS_CHARS:
                raise bad_response(f"a tool call's arguments are longer than {MAX_ARGUMENTS_CHARS} characters")
            pending.arguments.append(arguments)

    def _index_without_one(self, position: int, call_id: str | None) -> int:
        """Servers that send no `index`: a new id starts a new call, a piece without an id
        continues the last one."""
        if call_id:
            for pending in self.calls.values():
                if pending.id == call_id:
                    return pending.index
            return len(self.calls)
        if self.calls:
            return max(self.calls)
        return position


def error_message(body: Any) -> str:
    """The message of an error body: `{"error": {"message": ...}}` (OpenAI),
    `{"error": "..."}` or `{"message": ...}` (some compatible servers)."""
    if not isinstance(body, dict):
        return ""
    error = body.get("error")
    if isinstance(error, dict):
        message = error.get("message")
        if isinstance(message, str):
            return message
        return json.dumps(error, ensure_ascii=False)
    if isinstance(error, str):
        return error
    message = body.get("message") or body.get("detail")
    return message if isinstance(message, str) else ""


def error_code(body: Any) -> str:
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        code = body["error"].get("code") or body["error"].get("type")
        return code if isinstance(code, str) else ""
    return ""


def _shown(text: str) -> str:
    return repr(text if len(text) <= 80 else text[:80] + "…")
