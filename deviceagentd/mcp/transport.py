"""The Streamable HTTP transport of MCP at /mcp, on aiohttp.

Checks, in order: Origin (a browser page from elsewhere gets 403, against DNS rebinding), the
bearer token (401; `Authorization: Bearer`, or `?authorization=` in the URL), the method (POST;
DELETE ends a legacy session; GET has no stream here: 405), content type (415), body size (413),
Accept (406), one JSON-RPC message (400). Then the
era: `initialize` or an `Mcp-Session-Id` header is the 2025 protocol; a request whose `_meta`
carries a protocol version is the 2026 protocol, whose headers must match its body (400
HeaderMismatch) and whose version must be one we speak (400 UnsupportedProtocolVersion).

Answers are JSON; a tool call still running after `SSE_AFTER_S` (a device slow to answer) turns
into an SSE stream — progress if the client asked for it, keep-alive comments, then the result —
when the client accepts `text/event-stream`. On the 2026 protocol, closing that stream cancels
the call; on the 2025 one a disconnect does not (the client sends notifications/cancelled).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ipaddress
import logging
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web

from deviceagentd.mcp import jsonrpc
from deviceagentd.mcp.context import McpContext
from deviceagentd.mcp.jsonrpc import (
    HEADER_MISMATCH,
    INVALID_PARAMS,
    INVALID_REQUEST,
    REQUEST_CANCELLED,
    UNSUPPORTED_PROTOCOL_VERSION,
    Message,
    RpcError,
)
from deviceagentd.mcp.server import (
    CLIENT_CAPABILITIES_META,
    LEGACY_VERSIONS,
    MODERN_VERSIONS,
    PROTOCOL_VERSION_META,
    SUPPORTED_VERSIONS,
    McpServer,
    Request,
)
from deviceagentd.mcp.sessions import Session, SessionsFull
from deviceagentd.mcp.tools import Caller
from deviceagentd.voice.auth import presented_token

log = logging.getLogger("deviceagentd.mcp")

SESSION_HEADER = "Mcp-Session-Id"
VERSION_HEADER = "MCP-Protocol-Version"
METHOD_HEADER = "Mcp-Method"
NAME_HEADER = "Mcp-Name"
# A tool call still running after this long is answered as an SSE stream.
SSE_AFTER_S = 0.5
KEEPALIVE_S = 15.0
# Spec: a legacy request without MCP-Protocol-Version is taken as this version.
DEFAULT_LEGACY_VERSION = "2025-03-26"
NAME_BEARING = {"tools/call": "name", "resources/read": "uri", "prompts/get": "name"}
CORS_HEADERS = "Authorization, Content-Type, Accept, Mcp-Session-Id, MCP-Protocol-Version, Mcp-Method, Mcp-Name"


class McpEndpoint:
    def __init__(self, context: McpContext, max_body_bytes: int) -> None:
        self.server = McpServer(context)
        self._max_body = max_body_bytes
        self._allowed_origins = {o.rstrip("/").lower() for o in context.config.allowed_origins}
        # Open subscriptions/listen streams, ended cleanly at shutdown.
        self._listeners: set[asyncio.Future[None]] = set()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        origin = request.headers.get("Origin")
        if origin is not None and not self._origin_allowed(origin, request):
            return _error(RpcError(INVALID_REQUEST, f"Origin {origin} may not call this MCP server "
                                                    "(mcp.allowed_origins)", status=403))
        cors = self._cors(origin)
        if request.method == "OPTIONS":
            return web.Response(status=204, headers={**cors, "Access-Control-Max-Age": "600"})
        caller = self.server.caller(_bearer(request))
        if caller is None:
            return _error(RpcError(INVALID_REQUEST, "send Authorization: Bearer <token>", status=401),
                          {**cors, "WWW-Authenticate": 'Bearer realm="deviceagentd"'})
        if request.method == "POST":
            response = await self._post(request, caller, cors)
        elif request.method == "DELETE":
            response = self._delete(request, caller, cors)
        else:
            response = _error(RpcError(INVALID_REQUEST, f"{request.method} is not served here: POST JSON-RPC "
                                                        "messages (there is no GET stream)", status=405),
                              {**cors, "Allow": "POST, DELETE, OPTIONS"})
        return response

    def shutdown(self) -> None:
        for listener in list(self._listeners):
            if not listener.done():
                listener.set_result(None)

    # ------------------------------------------------------------------ HTTP checks

    def _origin_allowed(self, origin: str, request: web.Request) -> bool:
        """mcp.allowed_origins, pages served from this machine's loopback, and pages of the gateway's
        own address (the IP this connection came in on). Not "the same host as the Host header":
        a DNS-rebinding page sends its own name in both."""
        normal = origin.rstrip("/").lower()
        if normal in self._allowed_origins:
            return True
        host = urlsplit(normal).hostname or ""
        if host == "localhost" or _is_loopback(host):
            return True
        sockname = request.transport.get_extra_info("sockname") if request.transport is not None else None
        return isinstance(sockname, tuple) and bool(sockname) and host == str(sockname[0]).lower()

    def _cors(self, origin: str | None) -> dict[str, str]:
        if origin is None:
            return {}
        return {"Access-Control-Allow-Origin": origin, "Vary": "Origin",
                "Access-Control-Allow-Methods": "POST, DELETE, OPTIONS",
                "Access-Control-Allow-Headers": CORS_HEADERS, "Access-Control-Expose-Headers": SESSION_HEADER}

    async def _body(self, request: web.Request) -> bytes:
        if request.content_type != "application/json":
            raise RpcError(INVALID_REQUEST, "send the JSON-RPC message as application/json (got "
                                            f"{request.content_type or 'no content type'})", status=415)
        if request.content_length is not None and request.content_length > self._max_body:
            raise RpcError(INVALID_REQUEST, f"the body is larger than {self._max_body} bytes", status=413)
        raw = await request.content.read(self._max_body + 1)
        if len(raw) > self._max_body:
            raise RpcError(INVALID_REQUEST, f"the body is larger than {self._max_body} bytes", status=413)
        return raw

    # ------------------------------------------------------------------ POST

    async def _post(self, request: web.Request, caller: Caller, cors: dict[str, str]) -> web.StreamResponse:
        message: Message | None = None
        try:
            accepts_json, accepts_sse = _accepts(request.headers.get("Accept"))
            if not (accepts_json or accepts_sse):
                raise RpcError(INVALID_REQUEST, "Accept must list application/json and text/event-stream",
                               status=406)
            message = jsonrpc.parse(await self._body(request))
            if message.method == "initialize":
                return self._initialize(message, caller, cors)
            session_id = request.headers.get(SESSION_HEADER)
            if session_id is not None:
                return await self._legacy(request, message, caller, session_id, cors, accepts_json, accepts_sse)
            return await self._modern(request, message, caller, cors, accepts_json, accepts_sse)
        except RpcError as exc:
            return _error(exc, cors, message.request_id if message is not None else None)

    def _initialize(self, message: Message, caller: Caller, cors: dict[str, str]) -> web.Response:
        if message.request_id is None:
            raise RpcError(INVALID_REQUEST, "initialize must be a request (with an id)", status=400)
        try:
            result, session = self.server.initialize(message.params, caller)
        except SessionsFull as exc:
            raise RpcError(INVALID_REQUEST, str(exc), status=503) from None
        return _json(jsonrpc.result_body(message.request_id, result), {**cors, SESSION_HEADER: session.session_id})

    async def _legacy(self, request: web.Request, message: Message, caller: Caller, session_id: str,
                      cors: dict[str, str], accepts_json: bool, accepts_sse: bool) -> web.StreamResponse:
        session = self.server.sessions.get(session_id, caller.name)
        if session is None:
            raise RpcError(INVALID_REQUEST, f"no session {session_id} (it ended or never existed): initialize "
                                            "again", status=404)
        version = request.headers.get(VERSION_HEADER)
        if version is not None and version != session.protocol_version:
            raise RpcError(INVALID_REQUEST, f"MCP-Protocol-Version {version} is not this session's "
                                            f"({session.protocol_version})", status=400)
        headers = {**cors, SESSION_HEADER: session.session_id}
        if message.is_response:
            return web.Response(status=202, headers=headers)
        if message.is_notification:
            self._legacy_notification(message, session)
            return web.Response(status=202, headers=headers)
        call = Request(message, caller, modern=False, session=session)
        return await self._answer(request, call, headers, accepts_json, accepts_sse)

    def _legacy_notification(self, message: Message, session: Session) -> None:
        if message.method == "notifications/initialized":
            session.initialized = True
        elif message.method == "notifications/cancelled":
            request_id = message.params.get("requestId")
            task = session.inflight.get(request_id) if isinstance(request_id, str | int) else None
            if task is not None:
                log.info("mcp: %s cancelled request %s", session.client, request_id)
                task.cancel()

    async def _modern(self, request: web.Request, message: Message, caller: Caller, cors: dict[str, str],
                      accepts_json: bool, accepts_sse: bool) -> web.StreamResponse:
        if message.is_notification:
            # The 2026 protocol defines no client notifications over HTTP; accepted and dropped.
            return web.Response(status=202, headers=cors)
        if message.is_response:
            raise RpcError(INVALID_REQUEST, "Invalid Request: a client sends no responses on this protocol",
                           status=400)
        meta = message.meta
        header_version = request.headers.get(VERSION_HEADER)
        if meta is None or PROTOCOL_VERSION_META not in meta:
            if header_version in LEGACY_VERSIONS or header_version is None:
                # A 2025 client that lost (or never had) its session.
                raise RpcError(INVALID_REQUEST, f"no {SESSION_HEADER}: send initialize first (or use protocol "
                                                f"{MODERN_VERSIONS[0]} with params._meta)", status=400)
            raise RpcError(INVALID_PARAMS, f"params._meta must carry {PROTOCOL_VERSION_META} and "
                                           f"{CLIENT_CAPABILITIES_META}", status=400)
        if CLIENT_CAPABILITIES_META not in meta:
            raise RpcError(INVALID_PARAMS, f"params._meta must carry {CLIENT_CAPABILITIES_META}", status=400)
        version = meta[PROTOCOL_VERSION_META]
        _check_headers(request, message, version)
        if not isinstance(version, str):
            raise RpcError(INVALID_PARAMS, f"{PROTOCOL_VERSION_META} must be a string", status=400)
        if version not in MODERN_VERSIONS:
            raise RpcError(UNSUPPORTED_PROTOCOL_VERSION, "Unsupported protocol version",
                           {"supported": list(SUPPORTED_VERSIONS), "requested": version}, status=400)
        call = Request(message, caller, modern=True)
        if message.method == "subscriptions/listen":
            return await self._listen(request, message, cors)
        return await self._answer(request, call, cors, accepts_json, accepts_sse)

    # ------------------------------------------------------------------ answering

    async def _answer(self, request: web.Request, call: Request, headers: dict[str, str], accepts_json: bool,
                      accepts_sse: bool) -> web.StreamResponse:
        message = call.message
        assert message.request_id is not None
        if message.method != "tools/call":
            result = await self.server.request(call)
            return _json(jsonrpc.result_body(message.request_id, result), headers)
        task = asyncio.create_task(self.server.request(call))
        session = call.session
        if session is not None:
            request_id = message.request_id
            session.inflight[request_id] = task

            def forget(_task: asyncio.Task[dict[str, Any]]) -> None:
                session.inflight.pop(request_id, None)

            task.add_done_callback(forget)
        try:
            if accepts_json:
                done, _ = await asyncio.wait({task}, timeout=SSE_AFTER_S if accepts_sse else None)
                if done:
                    return self._finished(task, message, headers)
            return await self._stream(request, task, message, headers)
        finally:
            if call.modern and not task.done():
                # 2026: the client closing the stream cancels the request. 2025: it does not.
                task.cancel()

    def _finished(self, task: asyncio.Task[dict[str, Any]], message: Message,
                  headers: dict[str, str]) -> web.Response:
        assert message.request_id is not None
        try:
            return _json(jsonrpc.result_body(message.request_id, task.result()), headers)
        except asyncio.CancelledError:
            raise RpcError(REQUEST_CANCELLED, "the request was cancelled", status=200) from None

    async def _stream(self, request: web.Request, task: asyncio.Task[dict[str, Any]], message: Message,
                      headers: dict[str, str]) -> web.StreamResponse:
        response = await _open_stream(request, headers)
        token = (message.meta or {}).get("progressToken")
        if isinstance(token, str | int) and not isinstance(token, bool):
            await _event(response, jsonrpc.notification_body("notifications/progress", {
                "progressToken": token, "progress": 0, "message": "waiting for the device to answer"}))
        while True:
            done, _ = await asyncio.wait({task}, timeout=KEEPALIVE_S)
            if done:
                break
            await response.write(b": keep-alive\n\n")
        try:
            body = jsonrpc.result_body(message.request_id or 0, task.result())
        except asyncio.CancelledError:
            body = RpcError(REQUEST_CANCELLED, "the request was cancelled").body(message.request_id)
        except RpcError as exc:
            body = exc.body(message.request_id)
        await _event(response, body)
        await response.write_eof()
        return response

    async def _listen(self, request: web.Request, message: Message, headers: dict[str, str]) -> web.StreamResponse:
        """subscriptions/listen: we send no change notifications (tools change only at restart), so
        the stream acknowledges an empty filter, keeps alive, and ends cleanly at shutdown."""
        response = await _open_stream(request, headers)
        meta = {"io.modelcontextprotocol/subscriptionId": message.request_id}
        await _event(response, jsonrpc.notification_body("notifications/subscriptions/acknowledged",
                                                         {"_meta": meta, "notifications": {}}))
        ended: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._listeners.add(ended)
        try:
            while not ended.done():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(ended), KEEPALIVE_S)
                if not ended.done():
                    await response.write(b": keep-alive\n\n")
            await _event(response, jsonrpc.result_body(message.request_id or 0, {
                "resultType": "complete", "_meta": {**meta, **self.server.result_meta()}}))
            await response.write_eof()
        finally:
            self._listeners.discard(ended)
        return response

    # ------------------------------------------------------------------ DELETE

    def _delete(self, request: web.Request, caller: Caller, cors: dict[str, str]) -> web.Response:
        session_id = request.headers.get(SESSION_HEADER)
        if session_id is None:
            return _error(RpcError(INVALID_REQUEST, f"DELETE ends a session: send its {SESSION_HEADER}", status=400),
                          cors)
        if not self.server.sessions.close(session_id, caller.name):
            return _error(RpcError(INVALID_REQUEST, f"no session {session_id}", status=404), cors)
        log.info("mcp: %s ended session %s…", caller.name, session_id[:8])
        return web.Response(status=200, headers=cors)


# ----------------------------------------------------------------------------- helpers


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _bearer(request: web.Request) -> str | None:
    """The token of `Authorization: Bearer`, else of `?authorization=` (clients that can set no
    header, such as Home Assistant's MCP client, put it in the URL, as speakers do on /ws/voice)."""
    return presented_token(request) or None


def _accepts(header: str | None) -> tuple[bool, bool]:
    if header is None:
        return True, True
    kinds = {part.split(";")[0].strip().lower() for part in header.split(",")}
    anything = "*/*" in kinds
    return (anything or "application/json" in kinds or "application/*" in kinds,
            anything or "text/event-stream" in kinds or "text/*" in kinds)


def _check_headers(request: web.Request, message: Message, version: Any) -> None:
    """2026: the routing headers must be present and say what the body says."""
    header_version = request.headers.get(VERSION_HEADER)
    if header_version is None:
        raise RpcError(HEADER_MISMATCH, f"Header mismatch: {VERSION_HEADER} is required", status=400)
    if header_version != version:
        raise RpcError(HEADER_MISMATCH, f"Header mismatch: {VERSION_HEADER} {header_version!r} does not match "
                                        f"the body's {version!r}", status=400)
    method = request.headers.get(METHOD_HEADER)
    if method != message.method:
        raise RpcError(HEADER_MISMATCH, f"Header mismatch: {METHOD_HEADER} {method!r} does not match method "
                                        f"{message.method!r}", status=400)
    field = NAME_BEARING.get(message.method or "")
    if field is not None:
        header = request.headers.get(NAME_HEADER)
        body_value = message.params.get(field)
        if header is None or _decode_header(header) != body_value:
            raise RpcError(HEADER_MISMATCH, f"Header mismatch: {NAME_HEADER} {header!r} does not match "
                                            f"params.{field} {body_value!r}", status=400)


def _decode_header(value: str) -> str:
    if value.startswith("=?base64?") and value.endswith("?="):
        try:
            return base64.b64decode(value[9:-2], validate=True).decode("utf-8")
        except (ValueError, UnicodeDecodeError):
            raise RpcError(HEADER_MISMATCH, "Header mismatch: a base64 header value does not decode",
                           status=400) from None
    return value


def _json(body: dict[str, Any], headers: dict[str, str], status: int = 200) -> web.Response:
    return web.Response(text=jsonrpc.dumps(body), status=status, content_type="application/json",
                        headers=headers)


def _error(error: RpcError, headers: dict[str, str] | None = None,
           request_id: jsonrpc.RequestId | None = None) -> web.Response:
    return _json(error.body(request_id), headers or {}, error.status)


async def _open_stream(request: web.Request, headers: dict[str, str]) -> web.StreamResponse:
    response = web.StreamResponse(headers={**headers, "Content-Type": "text/event-stream",
                                           "Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
    await response.prepare(request)
    return response


async def _event(response: web.StreamResponse, message: dict[str, Any]) -> None:
    await response.write(f"event: message\ndata: {jsonrpc.dumps(message)}\n\n".encode())
