"""The gateway as MCP client of a XiaoZhi speaker, over its voice WebSocket, and the speaker's
tools as tools of that session's agent turns.

When hello says `features.mcp`, the device is an MCP server (JSON-RPC 2.0 inside
`{"type": "mcp", "payload": ...}`, 78/xiaozhi-esp32 `docs/mcp-protocol.md`, `main/mcp_server.cc`):
we send `initialize`, then `tools/list` page by page (`cursor` = the `nextCursor` of the page
before, `withUserTools: false`), and `tools/call` when a turn uses a tool. Ids are integers (the
firmware reads `valueint`); each request waits on a future kept by id and removed when it ends.

What the device sends is checked, never trusted:
- a reply that is not a JSON-RPC 2.0 response for a request of ours fails that request at once
  (when its id is ours) or is logged and counted (`deviceagentd_voice_mcp_bad_messages_total`);
- a reply that never comes fails the request after its timeout (`voice.xiaozhi.tool_timeout_s`
  for calls, 10 s for initialize and each page);
- a tool list is capped: at most 16 pages and `voice.xiaozhi.max_tools` tools (the firmware lists
  its common tools first), a tool with a bad name or a schema over 4 KiB is skipped, descriptions
  are cut at 1,024 characters — all logged;
- tools marked for the user only (`annotations.audience` without "assistant", the firmware's
  AddUserOnlyTool) are never offered to a model;
- the device disconnecting fails every pending request at once.

`DeviceToolset` offers the tools to the agent (`TurnRequest.tools`): names made safe for models
(`self.audio_speaker.set_volume` → `self_audio_speaker_set_volume`), arguments checked against the
tool's schema with the same value checks as DeviceSpec commands (core/values.py), every call
logged like a command: who (agent session, speaker), what (tool, arguments), outcome, latency.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Final

from deviceagentd import strictjson
from deviceagentd.agent.types import ToolCall, ToolResult, ToolSpec, TurnContext
from deviceagentd.core.spec import CommandSpec, FieldSpec
from deviceagentd.core.values import check_params

log = logging.getLogger("deviceagentd.voice")

PROTOCOL_VERSION: Final = "2024-11-05"
MAX_PAGES: Final = 16
MAX_DESCRIPTION_CHARS: Final = 1024
MAX_SCHEMA_BYTES: Final = 4096
MAX_NAME_CHARS: Final = 128
MAX_RESULT_CHARS: Final = 4000
SPEAKER_NOTE: Final = " (A tool of the speaker the person is talking to.)"
_UNSAFE: Final = re.compile(r"[^A-Za-z0-9_-]")
# JSON Schema types → DeviceSpec field types, for the value checks.
_FIELD_TYPES: Final = {"integer": "int", "number": "float", "boolean": "bool", "string": "string",
                       "object": "object", "array": "array"}


class McpFailure(Exception):
    """A request that got no usable answer; the message is for a person."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class DeviceTool:
    name: str  # the device's own name
    model_name: str  # as offered to models
    description: str
    schema: dict[str, Any]  # inputSchema: {"type": "object", "properties": {...}, "required": [...]}
    command: CommandSpec  # the value checks of its arguments


@dataclass
class McpStats:
    bad_messages: int = 0
    tool_calls: int = 0
    tool_failures: int = 0


Send = Callable[[dict[str, Any]], Awaitable[None]]


@dataclass
class DeviceMcp:
    """One speaker's MCP session. `start()` runs as a task of the voice session; `receive()`
    takes every `mcp` message; `close()` when the connection ends."""

    send: Send
    label: str  # the voice session, for logs
    stats: McpStats
    list_timeout_s: float = 10.0
    call_timeout_s: float = 10.0
    max_tools: int = 32
    tools: list[DeviceTool] = field(default_factory=list)
    ready: asyncio.Event = field(default_factory=asyncio.Event)  # set once the tools are listed (or not)
    _next_id: int = 1
    _pending: dict[int, asyncio.Future[Any]] = field(default_factory=dict)
    _closed: bool = False

    async def start(self) -> None:
        try:
            info = await self.request("initialize", {
                "protocolVersion": PROTOCOL_VERSION,
                "capabilities": {},
                "clientInfo": {"name": "deviceagentd", "version": "1"},
            }, self.list_timeout_s)
            server = info.get("serverInfo") if isinstance(info, dict) else None
            log.info("voice session %s: MCP server %s", self.label,
                     json.dumps(server, ensure_ascii=False)[:200] if server else "(no serverInfo)")
            self.tools = await self._list_tools()
            log.info("voice session %s: %d device tools: %s", self.label, len(self.tools),
                     ", ".join(t.name for t in self.tools) or "none")
        except McpFailure as exc:
            log.warning("voice session %s: no device tools: %s", self.label, exc.message)
        finally:
            self.ready.set()

    async def _list_tools(self) -> list[DeviceTool]:
        tools: dict[str, DeviceTool] = {}
        cursor = ""
        seen: set[str] = set()
        listed = 0
        for _ in range(MAX_PAGES):
            result = await self.request("tools/list", {"cursor": cursor, "withUserTools": False}, self.list_timeout_s)
            if not isinstance(result, dict) or not isinstance(result.get("tools"), list):
                raise McpFailure("tools/list did not answer {tools: [...]}")
            for raw in result["tools"]:
                listed += 1
                tool = self._tool(raw, tools)
                if tool is not None and len(tools) < self.max_tools:
                    tools[tool.model_name] = tool
            cursor = result.get("nextCursor") or ""
            if not isinstance(cursor, str) or not cursor or cursor in seen:
                break
            seen.add(cursor)
        else:
            log.warning("voice session %s: the device's tool list goes on beyond %d pages; the rest is ignored",
                        self.label, MAX_PAGES)
        if listed > len(tools):
            log.warning("voice session %s: offering %d of the %d tools the device listed (voice.xiaozhi.max_tools "
                        "= %d; user-only and malformed tools are never offered)", self.label, len(tools), listed,
                        self.max_tools)
        return list(tools.values())

    def _tool(self, raw: Any, taken: dict[str, DeviceTool]) -> DeviceTool | None:
        name = raw.get("name") if isinstance(raw, dict) else None
        if not isinstance(name, str) or not name or len(name) > MAX_NAME_CHARS:
            log.info("voice session %s: device tool without a usable name skipped", self.label)
            return None
        annotations = raw.get("annotations")
        audience = annotations.get("audience") if isinstance(annotations, dict) else None
        if isinstance(audience, list) and "assistant" not in audience:
            return None  # for the user only (the firmware's AddUserOnlyTool)
        schema = raw.get("inputSchema", {"type": "object", "properties": {}})
        properties = schema.get("properties", {}) if isinstance(schema, dict) else None
        if not isinstance(properties, dict) or len(json.dumps(schema)) > MAX_SCHEMA_BYTES:
            log.info("voice session %s: device tool %s skipped: its inputSchema is not a small object",
                     self.label, name[:64])
            return None
        required = schema.get("required", [])
        required_names = {r for r in required if isinstance(r, str)} if isinstance(required, list) else set()
        params = {key: _field(key, value, key in required_names) for key, value in properties.items()}
        description = raw.get("description")
        description = description[:MAX_DESCRIPTION_CHARS] if isinstance(description, str) else ""
        model_name = _model_name(name, taken)
        clean_schema = {"type": "object", "properties": properties, "required": sorted(required_names)}
        return DeviceTool(name, model_name, description, clean_schema, CommandSpec(name, description, params))

    # ------------------------------------------------------------------ requests

    async def request(self, method: str, params: dict[str, Any], timeout_s: float) -> Any:
        """Send one request and wait for its result; McpFailure when none comes."""
        if self._closed:
            raise McpFailure("the speaker has disconnected")
        request_id = self._next_id
        self._next_id += 1
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        try:
            try:
                await self.send({"type": "mcp", "payload": {"jsonrpc": "2.0", "id": request_id, "method": method,
                                                              "params": params}})
            except Exception:  # the transport failed: the connection is going away
                raise McpFailure("the speaker disconnected") from None
            async with asyncio.timeout(timeout_s):
                return await future
        except TimeoutError:
            raise McpFailure(f"the speaker did not answer {method} within {timeout_s:g} s") from None
        finally:
            self._pending.pop(request_id, None)

    def receive(self, payload: Any) -> None:
        """A `mcp` message from the device."""
        if not isinstance(payload, dict):
            self._bad(f"an mcp payload that is not a JSON-RPC object: {str(payload)[:80]!r}")
            return
        if "method" in payload and "id" not in payload:
            log.debug("voice session %s: MCP notification %s", self.label, str(payload.get("method"))[:64])
            return
        request_id = payload.get("id")
        future = self._pending.get(request_id) if isinstance(request_id, int) else None
        if future is None or future.done():
            self._bad(f"an mcp reply to no request of ours (id {str(request_id)[:32]})")
            return
        if payload.get("jsonrpc") != "2.0" or ("result" in payload) == ("error" in payload):
            self._bad(f"mcp reply {request_id} is not a JSON-RPC 2.0 response")
            future.set_exception(McpFailure("the speaker's answer was not a JSON-RPC 2.0 response"))
        elif "error" in payload:
            error = payload["error"]
            message = error.get("message") if isinstance(error, dict) else None
            future.set_exception(McpFailure(f"the speaker refused: {str(message or error)[:300]}"))
        else:
            future.set_result(payload["result"])

    def close(self) -> None:
        """The connection ended: every waiting request fails now."""
        self._closed = True
        for future in self._pending.values():
            if not future.done():
                future.set_exception(McpFailure("the speaker disconnected"))
        self.ready.set()

    def _bad(self, what: str) -> None:
        self.stats.bad_messages += 1
        log.info("voice session %s: dropped %s", self.label, what)


def _field(name: str, schema: Any, required: bool) -> FieldSpec:
    schema = schema if isinstance(schema, dict) else {}
    kind = _FIELD_TYPES.get(str(schema.get("type")), "object")
    enum = schema.get("enum")
    minimum, maximum = schema.get("minimum"), schema.get("maximum")
    return FieldSpec(
        name=name,
        type=kind,
        required=required,
        enum=tuple(enum) if isinstance(enum, list) and enum else None,
        min=float(minimum) if _number(minimum) else None,
        max=float(maximum) if _number(maximum) else None,
    )


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _model_name(name: str, taken: dict[str, DeviceTool]) -> str:
    base = _UNSAFE.sub("_", name)[:60] or "tool"
    candidate, suffix = base, 2
    while candidate in taken:
        candidate, suffix = f"{base}_{suffix}", suffix + 1
    return candidate


# ---------------------------------------------------------------------------------- the agent


@dataclass
class DeviceToolset:
    """A speaker's tools as agent Tools (empty until listed)."""

    mcp: DeviceMcp
    speaker: str  # the speaker's id, for the call log

    def specs(self) -> list[ToolSpec]:
        return [ToolSpec(t.model_name, (t.description + SPEAKER_NOTE).strip(), t.schema) for t in self.mcp.tools]

    async def call(self, call: ToolCall, context: TurnContext) -> ToolResult:
        tool = next((t for t in self.mcp.tools if t.model_name == call.name), None)
        if tool is None:
            return ToolResult(call.id, call.name, False, error=f"the speaker has no tool {call.name!r}")
        arguments = call.arguments if isinstance(call.arguments, dict) else None
        problems = check_params(tool.command, arguments)
        if problems:
            words = "; ".join(f"{p.field.removeprefix('params.')} {p.reason}" for p in problems)
            self._log(context, tool, arguments, f"refused ({words})", 0.0)
            return ToolResult(call.id, call.name, False, error=f"the speaker cannot do that: {words}")
        stats = self.mcp.stats
        stats.tool_calls += 1
        started = time.monotonic()
        try:
            result = await self.mcp.request("tools/call", {"name": tool.name, "arguments": arguments},
                                            self.mcp.call_timeout_s)
        except McpFailure as exc:
            stats.tool_failures += 1
            self._log(context, tool, arguments, f"failed: {exc.message}", started)
            return ToolResult(call.id, call.name, False, error=exc.message)
        ok, content = _content(result)
        if not ok:
            stats.tool_failures += 1
        self._log(context, tool, arguments, "ok" if ok else f"error: {content}", started)
        if ok:
            return ToolResult(call.id, call.name, True, result=content)
        return ToolResult(call.id, call.name, False, error=f"the speaker reported an error: {content}")

    def _log(self, context: TurnContext, tool: DeviceTool, arguments: Any, outcome: str, started: float) -> None:
        latency_ms = (time.monotonic() - started) * 1000 if started else 0.0
        log.info("device tool %s %s on speaker %s for session %s: %s in %.0f ms", tool.name,
                 json.dumps(arguments, ensure_ascii=False)[:200], self.speaker or "-", context.session_id, outcome,
                 latency_ms)


def _content(result: Any) -> tuple[bool, Any]:
    """A tools/call result: (ok, what it says). Text content that is JSON is returned parsed."""
    if not isinstance(result, dict):
        return True, result
    ok = result.get("isError") is not True
    content = result.get("content")
    if not isinstance(content, list):
        return ok, result
    texts: list[str] = []
    for item in content:
        if isinstance(item, dict) and isinstance(item.get("text"), str):
            texts.append(item["text"])
    text = "\n".join(texts)[:MAX_RESULT_CHARS]
    try:
        return ok, strictjson.loads(text)
    except strictjson.JsonInputError:
        return ok, text
