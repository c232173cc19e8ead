"""The MCP methods, for both eras of the protocol.

- **2026-07-28** ("modern"): stateless. Every request carries its protocol version and client
  capabilities in `params._meta`; `server/discover` tells what the server supports; results
  carry `resultType` and the server's identity in `_meta`.
- **2025-11-25, 2025-06-18, 2025-03-26** ("legacy"): `initialize` negotiates the version and opens
  a session (`Mcp-Session-Id`), then `tools/list` and `tools/call` within it.

The transport (transport.py) decides the era of a request and owns HTTP; this module turns one
JSON-RPC request into its result or an RpcError, and logs every tool call like a command.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
from dataclasses import dataclass
from typing import Any

from deviceagentd.mcp.clients import parse_clients
from deviceagentd.mcp.context import McpContext
from deviceagentd.mcp.jsonrpc import (
    INTERNAL_ERROR,
    INVALID_PARAMS,
    METHOD_NOT_FOUND,
    Message,
    RpcError,
)
from deviceagentd.mcp.names import ALL_TOOLS
from deviceagentd.mcp.sessions import Session, Sessions
from deviceagentd.mcp.tools import Caller, McpTools, ToolFailed
from deviceagentd.store.records import McpCallRecord

log = logging.getLogger("deviceagentd.mcp")

SERVER_NAME = "deviceagentd"
MODERN_VERSIONS = ("2026-07-28",)
LEGACY_VERSIONS = ("2025-11-25", "2025-06-18", "2025-03-26")
SUPPORTED_VERSIONS = MODERN_VERSIONS + LEGACY_VERSIONS
PROTOCOL_VERSION_META = "io.modelcontextprotocol/protocolVersion"
CLIENT_CAPABILITIES_META = "io.modelcontextprotocol/clientCapabilities"
CLIENT_INFO_META = "io.modelcontextprotocol/clientInfo"
SERVER_INFO_META = "io.modelcontextprotocol/serverInfo"
# tools/list may be cached this long: tools change only when the gateway restarts.
TOOLS_TTL_MS = 300_000
# Arguments kept in the call log, at most (a schedule's text, a command's params).
MAX_LOGGED_ARGUMENT_CHARS = 4000


@dataclass(frozen=True)
class Request:
    """One request and where it came from: the era, the caller, the legacy session if any."""

    message: Message
    caller: Caller
    modern: bool
    session: Session | None = None


class McpServer:
    def __init__(self, context: McpContext) -> None:
        self.context = context
        self.tools = McpTools(context)
        config = context.config
        self.sessions = Sessions(config.max_sessions, config.session_idle_s)
        self._api_tokens = [t.encode() for t in context.api_tokens]
        self._clients = [(c.token.encode(), Caller(c.name, c.tools)) for c in parse_clients(config.clients)]
        self.instructions = (
            f"The devices of one site, served by its gateway (deviceagentd {context.version}). Find devices with "
            "list_devices, read them with get_state and get_events, act with send_command or run_scene, and do "
            "things later with create_schedule. Times of day are local to the site "
            f"({context.schedules.zone}). Results are small pages: follow nextCursor for more."
        )

    # ------------------------------------------------------------------ who calls

    @property
    def needs_token(self) -> bool:
        return bool(self._api_tokens or self._clients)

    def caller(self, presented: str | None) -> Caller | None:
        """The caller a bearer token names; None when a token is needed and this one is not valid."""
        if not self.needs_token:
            return Caller("anonymous", frozenset(ALL_TOOLS))
        if not presented:
            return None
        given = presented.encode()
        # Every token is compared, so timing does not tell which one nearly matched.
        found: Caller | None = None
        for token in self._api_tokens:
            if hmac.compare_digest(given, token) and found is None:
                found = Caller("api", frozenset(ALL_TOOLS))
        for token, client in self._clients:
            if hmac.compare_digest(given, token) and found is None:
                found = client
        return found

    # ------------------------------------------------------------------ methods

    def server_info(self) -> dict[str, Any]:
        return {"name": SERVER_NAME, "title": "deviceagentd gateway", "version": self.context.version}

    def capabilities(self) -> dict[str, Any]:
        return {"tools": {"listChanged": False}}

    def initialize(self, params: dict[str, Any], caller: Caller) -> tuple[dict[str, Any], Session]:
        requested = params.get("protocolVersion")
        if not isinstance(requested, str) or not requested:
            raise RpcError(INVALID_PARAMS, "initialize needs params.protocolVersion", status=400)
        # Our newest legacy version when the client asks for one we do not speak (the client
        # then decides whether it can use it).
        version = requested if requested in LEGACY_VERSIONS else LEGACY_VERSIONS[0]
        client_info = params.get("clientInfo") if isinstance(params.get("clientInfo"), dict) else {}
        session = self.sessions.open(version, caller.name, client_info or {})
        result = {
            "protocolVersion": version,
            "capabilities": self.capabilities(),
            "serverInfo": self.server_info(),
            "instructions": self.instructions,
        }
        log.info("mcp: %s (%s %s) opened a session on protocol %s", caller.name,
                 (client_info or {}).get("name", "?"), (client_info or {}).get("version", ""), version)
        return result, session

    async def request(self, request: Request) -> dict[str, Any]:
        """The result of a request (initialize excepted: the transport opens sessions)."""
        method = request.message.method
        params = request.message.params
        if method == "tools/list":
            if params.get("cursor") is not None:
                raise RpcError(INVALID_PARAMS, "Invalid params: unknown cursor (the tool list is one page)")
            result: dict[str, Any] = {"tools": self.tools.definitions(request.caller)}
            if request.modern:
                # The list depends on the caller's token: private to it.
                result.update(ttlMs=TOOLS_TTL_MS, cacheScope="private")
            return self._done(result, request.modern)
        if method == "tools/call":
            return self._done(await self.call_tool(request), request.modern)
        if request.modern and method == "server/discover":
            return self._done({"supportedVersions": list(SUPPORTED_VERSIONS), "capabilities": self.capabilities(),
                               "instructions": self.instructions, "ttlMs": TOOLS_TTL_MS, "cacheScope": "public"},
                              True)
        if not request.modern and method == "ping":
            return {}
        raise RpcError(METHOD_NOT_FOUND, f"Method not found: {method}", status=404 if request.modern else 200)

    def result_meta(self) -> dict[str, Any]:
        """What every 2026 result carries in `_meta`: the server's identity."""
        return {SERVER_INFO_META: self.server_info()}

    def _done(self, result: dict[str, Any], modern: bool) -> dict[str, Any]:
        if modern:
            result["resultType"] = "complete"
            result["_meta"] = self.result_meta()
        return result

    # ------------------------------------------------------------------ tools/call

    async def call_tool(self, request: Request) -> dict[str, Any]:
        params = request.message.params
        name = params.get("name")
        arguments = params.get("arguments", {})
        caller = request.caller
        if not isinstance(name, str) or not name:
            raise RpcError(INVALID_PARAMS, "Invalid params: tools/call needs params.name")
        if arguments is None:
            arguments = {}
        if not isinstance(arguments, dict):
            self._log_call(caller, name, {}, "refused", "arguments is not an object", 0.0)
            raise RpcError(INVALID_PARAMS, "Invalid params: arguments must be an object")
        offered = self.tools.offered()
        if name not in offered:
            self._log_call(caller, name, arguments, "refused", "unknown tool", 0.0)
            raise RpcError(INVALID_PARAMS, f"Unknown tool: {name} (tools: {', '.join(offered)})")
        if name not in caller.tools:
            allowed = [t for t in offered if t in caller.tools]
            self._log_call(caller, name, arguments, "refused", "not allowed for this token", 0.0)
            raise RpcError(INVALID_PARAMS, f"Tool {name} is not allowed for client {caller.name!r} "
                                           f"(allowed: {', '.join(allowed) or 'none'})")
        started = time.perf_counter()
        try:
            data = await self.tools.call(name, arguments, caller)
        except ToolFailed as exc:
            elapsed = (time.perf_counter() - started) * 1000
            self._log_call(caller, name, arguments, "error", exc.words, elapsed)
            result: dict[str, Any] = {"content": [{"type": "text", "text": exc.words}], "isError": True}
            if exc.data is not None:
                result["structuredContent"] = {"error": exc.words, **({"detail": exc.data}
                                                                      if not isinstance(exc.data, dict) else exc.data)}
            return result
        except asyncio.CancelledError:
            self._log_call(caller, name, arguments, "cancelled", "the client cancelled or went away",
                           (time.perf_counter() - started) * 1000)
            raise
        except Exception as exc:
            log.exception("mcp: tool %s failed unexpectedly", name)
            self._log_call(caller, name, arguments, "error", f"internal error: {exc!r}",
                           (time.perf_counter() - started) * 1000)
            raise RpcError(INTERNAL_ERROR,
                           "Internal error: the tool failed unexpectedly (see the gateway's log)") from exc
        elapsed = (time.perf_counter() - started) * 1000
        self._log_call(caller, name, arguments, "ok", "", elapsed)
        text = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
        return {"content": [{"type": "text", "text": text}], "structuredContent": data, "isError": False}

    def _log_call(self, caller: Caller, tool: str, arguments: dict[str, Any], outcome: str, detail: str,
                  elapsed_ms: float) -> None:
        self.context.metrics.mcp_calls.inc({"tool": tool if tool in ALL_TOOLS else "unknown", "outcome": outcome})
        self.context.metrics.mcp_latency.observe(elapsed_ms / 1000)
        logged = arguments
        if len(json.dumps(arguments, ensure_ascii=False, default=str)) > MAX_LOGGED_ARGUMENT_CHARS:
            logged = {"_truncated": True}
        try:
            self.context.store.add_mcp_call(McpCallRecord(self.context.clock.wall_ms(), caller.name, tool[:128],
                                                          logged, outcome, detail[:1000], round(elapsed_ms, 3)))
        except (TypeError, ValueError) as exc:  # arguments JSON cannot hold, or text SQLite cannot bind
            log.warning("mcp: call of %s by %s not stored in the call log: %s", tool, caller.name, exc)
        level = logging.INFO if outcome == "ok" else logging.WARNING
        log.log(level, "mcp: %s called %s → %s%s (%.1f ms)", caller.name, tool, outcome,
                f": {detail}" if detail else "", elapsed_ms)
