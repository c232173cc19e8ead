"""The aiohttp application: middlewares (errors, bearer tokens, metrics) and route table."""

from __future__ import annotations

import hmac
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.typedefs import Middleware

from deviceagentd.core.errors import CoreError
from deviceagentd.core.metrics import Metrics
from deviceagentd.http import (
    routes_agent,
    routes_console,
    routes_devices,
    routes_mcp,
    routes_schedules,
    routes_stream,
)
from deviceagentd.http.context import CONTEXT, HttpContext, context_of
from deviceagentd.http.errors import ApiError, error_response, from_core
from deviceagentd.http.live import LiveHub
from deviceagentd.http.openapi import load_openapi
from deviceagentd.http.responses import json_response
from deviceagentd.voice.server import add_routes as add_voice_routes
from deviceagentd.voice.service import VoiceService

log = logging.getLogger("deviceagentd.http")
# Connections must send their request headers within this long of connecting, and a kept-
# alive connection is closed after this long without a new request: a client sending one byte
# a second cannot hold a connection (and a file descriptor) for ever. Handlers that read a
# body give it BODY_TIMEOUT_S (http.errors.read_body).
IDLE_TIMEOUT_S = 15.0
LINGER_S = 2.0

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
# /ws/voice and /xiaozhi/ota/ check tokens themselves (also from ?authorization=, for speakers and
# browsers). The console's files hold no data (the page asks for a token and sends it with every call).
# /mcp checks them itself because MCP clients may hold tokens of their own (mcp.clients).
PUBLIC_PATHS = frozenset({"/api/health", "/ws/voice", "/xiaozhi/ota/", "/", routes_mcp.MCP_PATH})
PUBLIC_PREFIXES = ("/console/",)
# The voice platform API authenticates speakers with its own tokens and signatures.
OWN_AUTH_PREFIX = "/v1.0/"


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as exc:
        response = error_response(exc.status, exc.code, exc.message, exc.details)
        if exc.status == 408:
            # The rest of a trickled body may still come: the connection cannot be reused.
            response.force_close()
        return response
    except CoreError as exc:
        api = from_core(exc)
        return error_response(api.status, api.code, api.message, api.details)
    except web.HTTPRequestEntityTooLarge as exc:
        # Raised by aiohttp against the application-wide limit (the largest route's).
        return error_response(413, "payload_too_large", exc.text or "the request body is too large")
    except web.HTTPNotFound:
        return error_response(404, "not_found", f"no route {request.path}")
    except web.HTTPMethodNotAllowed as exc:
        allowed = ", ".join(sorted(exc.allowed_methods))
        return error_response(405, "method_not_allowed", f"{request.method} is not allowed here (allowed: {allowed})",
                              headers={"Allow": allowed})
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return error_response(exc.status, exc.reason.lower().replace(" ", "_"), exc.text or exc.reason)


class ServerLog(logging.LoggerAdapter):  # type: ignore[type-arg]
    """aiohttp's server logger: a malformed request (a NUL in a header, an 8 KB request line) is
    the client's fault, so it is one rate-limited INFO line and a count, not an ERROR with a
    traceback. Anything else aiohttp reports is logged as it was."""

    def __init__(self, metrics: Metrics) -> None:
        super().__init__(logging.getLogger("deviceagentd.http.server"), {})
        self._metrics = metrics

    def exception(self, msg: object, *args: object, exc_info: object = True, **kwargs: object) -> None:
        if isinstance(exc_info, HttpProcessingError):
            self._metrics.http_requests.inc({"route": "malformed", "status": str(exc_info.code or 400)})
            peer = args[0] if args else "?"
            self.logger.info("malformed HTTP request from %s: %s", peer, _first_line(exc_info.message))
            return
        self.logger.error(msg, *args, exc_info=exc_info, **kwargs)


def _first_line(text: object) -> str:
    return str(text).strip().splitlines()[0][:200] if str(text).strip() else "(no detail)"


def runner_options(metrics: Metrics) -> dict[str, Any]:
    """What every AppRunner of the daemon gets: slow-client timeouts and the quiet server log."""
    # lingering_time: after answering a request whose body was not read (413, 408), aiohttp
    # keeps reading what the client still sends so it sees the answer; 2 s, not 10.
    return {"keepalive_timeout": IDLE_TIMEOUT_S, "lingering_time": LINGER_S, "logger": ServerLog(metrics)}


def auth_middleware(tokens: list[str]) -> Middleware:
    encoded = [t.encode() for t in tokens]

    @web.middleware
    async def check_token(request: web.Request, handler: Handler) -> web.StreamResponse:
        path = request.path
        if not encoded or path in PUBLIC_PATHS or path.startswith((OWN_AUTH_PREFIX, *PUBLIC_PREFIXES)):
            return await handler(request)
        header = request.headers.get("Authorization", "")
        scheme, _, presented = header.partition(" ")
        if scheme.lower() != "bearer" or not presented:
            return error_response(401, "unauthorized", "send Authorization: Bearer <token>",
                                  headers={"WWW-Authenticate": 'Bearer realm="deviceagentd"'})
        given = presented.strip().encode()
        # Compare against every token so timing does not reveal which one nearly matched.
        matched = False
        for token in encoded:
            matched |= hmac.compare_digest(given, token)
        if not matched:
            return error_response(401, "unauthorized", "the bearer token is not valid",
                                  headers={"WWW-Authenticate": 'Bearer realm="deviceagentd", error="invalid_token"'})
        return await handler(request)

    return check_token


def metrics_middleware(metrics: Metrics) -> Middleware:
    @web.middleware
    async def count(request: web.Request, handler: Handler) -> web.StreamResponse:
        response = await handler(request)
        resource = request.match_info.route.resource
        route = resource.canonical if resource is not None else "unmatched"
        metrics.http_requests.inc({"route": route, "status": str(response.status)})
        return response

    return count


async def openapi_document(request: web.Request) -> web.Response:
    return json_response(load_openapi())


async def metrics_text(request: web.Request) -> web.Response:
    body = context_of(request).metrics.render()
    return web.Response(text=body, content_type="text/plain", charset="utf-8",
                        headers={"X-Content-Type-Options": "nosniff"})


def _base_app(context: HttpContext) -> web.Application:
    # The application-wide body limit is the largest route's; each route checks its own.
    largest = max(context.max_body_bytes, context.agent.vision_body_bytes if context.agent else 0)
    app = web.Application(
        client_max_size=largest,
        middlewares=[metrics_middleware(context.metrics), error_middleware, auth_middleware(context.tokens)],
    )
    app[CONTEXT] = context

    async def stop_turns(_app: web.Application) -> None:
        # Open chat streams end (with an error event) instead of holding the shutdown.
        if context.agent is not None:
            context.agent.agent.shutdown()

    app.on_shutdown.append(stop_turns)
    return app


def create_app(context: HttpContext) -> web.Application:
    """The main HTTP API (http.listen)."""
    app = _base_app(context)
    routes_devices.add_routes(app.router)
    routes_agent.add_routes(app.router)
    routes_agent.add_session_routes(app.router)
    routes_schedules.add_routes(app.router)
    if context.mcp is not None:
        routes_mcp.add_routes(app, context.mcp, context.max_body_bytes)
    routes_console.add_routes(app.router)
    routes_stream.add_routes(app, context.live or LiveHub(context.registry.feed))
    app.router.add_get("/api/openapi.json", openapi_document)
    app.router.add_get("/metrics", metrics_text)
    return app


def create_voice_app(context: HttpContext, voice: VoiceService | None = None) -> web.Application:
    """The voice port (voice.listen): /ws/voice, and /api/chat and /api/vision/frames by the same code."""
    app = _base_app(context)
    routes_agent.add_routes(app.router)
    if voice is not None:
        add_voice_routes(app.router, voice)
    return app
