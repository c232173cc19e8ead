"""`/ws/voice`: the WebSocket handshake, and `add_routes`.

Before the upgrade: the bearer token when tokens are configured (`Authorization` header, or the
`authorization` query parameter for browsers, which cannot set headers: HTTP 401 otherwise).
After it: a bad `Protocol-Version` (1002) or a full gateway (`voice.max_sessions` sessions that
said hello, 1013) gets an `error` message and the close. A connection takes a voice slot only
with its hello; of the connections still waiting for theirs (at most twice `max_sessions`, and
16), the oldest is evicted (1013) when another arrives. Headers `Device-Id` and `Client-Id` (defaulting to Device-Id)
may also come as the query parameters `device-id` and `client-id`; Device-Id names the speaker
(announcements find its session by it) and both name the connection in logs. Query parameters
`sessionId`, `productId`, `deviceId` and `provider` are defaults for the same hello fields.

The session module (numpy, webrtcvad) is imported by the first connection, not before: the
daemon's idle memory is measured without them.
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING

from aiohttp import WSCloseCode, web

from deviceagentd.http.errors import error_response
from deviceagentd.voice import ota
from deviceagentd.voice.auth import authorized
from deviceagentd.voice.connection import Connection

if TYPE_CHECKING:
    from deviceagentd.voice.service import VoiceService

log = logging.getLogger("deviceagentd.voice")

PATH = "/ws/voice"
# Hello fields that may come from the query string (browsers) when hello lacks them.
QUERY_DEFAULTS = ("sessionId", "productId", "deviceId", "provider")
# The WebSocket closing handshake: how long we wait for the client's close frame.
CLOSE_TIMEOUT_S = 2.0
SHUTDOWN_WAIT_S = 3.0


def add_routes(router: web.UrlDispatcher, service: VoiceService) -> None:
    """/ws/voice, and the XiaoZhi OTA handshake that points speakers at it."""

    async def handler(request: web.Request) -> web.StreamResponse:
        return await voice_socket(request, service)

    router.add_get(PATH, handler)
    ota.add_routes(router, service)


async def voice_socket(request: web.Request, service: VoiceService) -> web.StreamResponse:
    if not authorized(request, service.tokens):
        return error_response(401, "unauthorized", "send Authorization: Bearer <token> (or ?authorization=<token>)",
                              headers={"WWW-Authenticate": 'Bearer realm="deviceagentd"'})
    settings = service.settings
    ws = web.WebSocketResponse(max_msg_size=settings.max_message_bytes, timeout=CLOSE_TIMEOUT_S, autoping=True)
    await ws.prepare(request)
    # The first voice session loads the audio modules (numpy, webrtcvad) and the protocol here.
    from deviceagentd.voice.protocol import ProtocolError, parse_version
    from deviceagentd.voice.session import VoiceSession

    device_id = request.headers.get("Device-Id") or request.query.get("device-id", "")
    client_id = request.headers.get("Client-Id") or request.query.get("client-id", "") or device_id
    header = request.headers.get("Protocol-Version")
    try:
        version = None if header is None else parse_version(header)  # None: hello's version decides
    except ProtocolError as exc:
        await _refuse(ws, "unsupported_protocol_version", str(exc), WSCloseCode.PROTOCOL_ERROR)
        return ws
    if service.sessions.full:
        await _refuse(ws, "too_many_sessions",
                      f"the gateway already has {service.sessions.max_sessions} voice sessions; try again later",
                      WSCloseCode.TRY_AGAIN_LATER)
        return ws
    connection = Connection(
        version=version,
        device_id=device_id[:128],
        client_id=client_id[:128],
        remote=request.remote or "",
        query={name: request.query[name] for name in QUERY_DEFAULTS if name in request.query},
    )
    session = VoiceSession(ws, service, connection)
    # Too many connections waiting for their hello evict the oldest (not a speaker, which says
    # hello at once), so idle connections cannot lock speakers out.
    service.sessions.add(session)
    service.stats.sessions += 1
    try:
        await session.run()
    finally:
        service.sessions.discard(session)
    return ws


async def _refuse(ws: web.WebSocketResponse, code: str, message: str, close_code: int) -> None:
    try:
        await ws.send_str(json.dumps({"type": "error", "code": code, "message": message}))
        await ws.close(code=close_code, message=code.encode())
    except ConnectionError:
        pass
