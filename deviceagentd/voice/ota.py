"""`/xiaozhi/ota/` on the voice port: the handshake stock XiaoZhi firmware starts with.

The firmware (78/xiaozhi-esp32 `main/ota.cc` CheckVersion) POSTs its system information (GET
when it has none) to its OTA URL and reads, as xiaozhi-esp32-server's OTA handler
(`core/api/ota_handler.py`) answers:
- `websocket {url, token}`: its presence selects the WebSocket protocol (without it the firmware
  falls back to MQTT+UDP, `application.cc` InitializeProtocol), the URL and the token the
  firmware then presents as `Authorization: Bearer <token>` on /ws/voice;
- `server_time {timestamp, timezone_offset}`: epoch milliseconds and the site's UTC offset in
  minutes, from which it sets its clock;
- `firmware {version, url}`: the version it runs and an empty URL, which says "no update".

The URL is `voice.xiaozhi.websocket_url` when set (the address speakers reach the gateway by may
differ from the one it sees: a proxy, TLS), else `ws://<the Host the speaker asked>/ws/voice`.
Tokens are checked as on /ws/voice: when `http.tokens` is set the request must present one (a
speaker's OTA URL can carry it as `?authorization=<token>`), and that token is handed on.
Any body is accepted (the firmware's is its system information, read only for its version).
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, tzinfo
from typing import TYPE_CHECKING, Any, Final

from aiohttp import web

from deviceagentd import strictjson
from deviceagentd.http.errors import ApiError, error_response, read_body
from deviceagentd.http.responses import json_response
from deviceagentd.voice.auth import authorized, presented_token

if TYPE_CHECKING:
    from deviceagentd.voice.service import VoiceService

log = logging.getLogger("deviceagentd.voice")

PATH: Final = "/xiaozhi/ota/"
WS_PATH: Final = "/ws/voice"
MAX_BODY_BYTES: Final = 65536
MAX_VERSION_CHARS: Final = 64


def add_routes(router: web.UrlDispatcher, service: VoiceService) -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        return await ota(request, service)

    router.add_route("POST", PATH, handler)
    router.add_route("GET", PATH, handler)


async def ota(request: web.Request, service: VoiceService) -> web.StreamResponse:
    if not authorized(request, service.tokens):
        return error_response(401, "unauthorized", "send Authorization: Bearer <token> (or ?authorization=<token>)",
                              headers={"WWW-Authenticate": 'Bearer realm="deviceagentd"'})
    body = await _body(request)
    version = _firmware_version(request, body)
    url = service.config.xiaozhi.websocket_url or f"ws://{request.host}{WS_PATH}"
    answer = {
        "server_time": server_time(service.clock.wall_ms(), service.zone),
        "firmware": {"version": version, "url": ""},
        "websocket": {"url": url, "token": presented_token(request) if service.tokens else ""},
    }
    log.info("xiaozhi ota: device %s (client %s, firmware %s) from %s pointed at %s",
             request.headers.get("Device-Id", "-")[:64], request.headers.get("Client-Id", "-")[:64], version or "-",
             request.remote or "-", url)
    return json_response(answer)


def server_time(now_ms: int, zone: tzinfo) -> dict[str, int]:
    offset = datetime.fromtimestamp(now_ms / 1000, UTC).astimezone(zone).utcoffset()
    minutes = int(offset.total_seconds() // 60) if offset is not None else 0
    return {"timestamp": now_ms, "timezone_offset": minutes}


async def _body(request: web.Request) -> dict[str, Any]:
    if not request.can_read_body or (request.content_length or 0) > MAX_BODY_BYTES:
        return {}
    try:
        data = await read_body(request, MAX_BODY_BYTES)
        parsed = strictjson.loads(data) if data else {}
    except (ApiError, strictjson.JsonInputError):
        # Only the firmware version is read from it: a body we cannot use is no body.
        return {}
    return parsed if isinstance(parsed, dict) else {}


def _firmware_version(request: web.Request, body: dict[str, Any]) -> str:
    """The version the device runs: the `application.version` of its system information (the
    firmware's GetSystemInfoJson), else a version header; "" when unknown."""
    application = body.get("application")
    version = application.get("version") if isinstance(application, dict) else None
    if not isinstance(version, str):
        version = request.headers.get("Device-Version") or request.headers.get("Firmware-Version") or ""
    return version[:MAX_VERSION_CHARS]
