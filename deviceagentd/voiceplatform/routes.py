"""HTTP routes of the voice platform API (SPEC §6), on the main HTTP port.

Tuya's clients expect HTTP 200 with the outcome in the envelope, so every failure here
(including a bad body) is answered that way; only routing errors (404/405) are plain HTTP.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from aiohttp import web

from deviceagentd.http.errors import ApiError, read_body
from deviceagentd.http.responses import json_response
from deviceagentd.voiceplatform import errors as codes
from deviceagentd.voiceplatform.errors import VoicePlatformError
from deviceagentd.voiceplatform.service import Envelope, SignedRequest, VoicePlatform

# Speakers send a few hundred bytes; anything near this is not a speaker.
MAX_BODY_BYTES = 64 * 1024
PLATFORM = web.AppKey("voiceplatform", VoicePlatform)


async def _signed(request: web.Request) -> SignedRequest | Envelope:
    """The request as the signature covers it (raw body bytes), or a failure envelope."""
    try:
        body = await read_body(request, MAX_BODY_BYTES)
    except ApiError as exc:
        # Over the limit (declared, or sent chunked) or trickled in too slowly.
        error = VoicePlatformError(codes.PARAM_ILLEGAL, exc.message)
        return request.app[PLATFORM].failure(error)
    query = {key: value for key, value in request.query.items()}
    return SignedRequest(request.method, request.path, query, request.headers, body, request.remote or "")


Work = Callable[[VoicePlatform, SignedRequest], Awaitable[Envelope]]


async def _answer(request: web.Request, work: Work) -> web.Response:
    platform = request.app[PLATFORM]
    signed = await _signed(request)
    if isinstance(signed, dict):
        return json_response(signed)
    # A speaker that gives up and retries must find the first call finished (and its answer
    # cached), not cancelled half way with the command already on its way to the device.
    task = asyncio.ensure_future(work(platform, signed))
    return json_response(await asyncio.shield(task))


async def obtain_token(request: web.Request) -> web.Response:
    voice_id = request.match_info["voice_id"]
    return await _answer(request, lambda platform, signed: platform.obtain_token(voice_id, signed))


async def invalidate_token(request: web.Request) -> web.Response:
    voice_id = request.match_info["voice_id"]
    return await _answer(request, lambda platform, signed: platform.invalidate_token(voice_id, signed))


async def refresh_token(request: web.Request) -> web.Response:
    token = request.match_info["refresh_token"]
    return await _answer(request, lambda platform, signed: platform.refresh_token(token, signed))


async def execute(request: web.Request) -> web.Response:
    return await _answer(request, lambda platform, signed: platform.execute(signed))


def add_routes(app: web.Application, platform: VoicePlatform) -> None:
    app[PLATFORM] = platform
    # Tuya made obtaining and refreshing a token GET calls, though both change state: no HEAD
    # (aiohttp would answer it by running the GET handler, revoking and burning tokens).
    app.router.add_get("/v1.0/voice/devices/{voice_id}/token", obtain_token, allow_head=False)
    app.router.add_delete("/v1.0/voice/devices/{voice_id}/token", invalidate_token)
    app.router.add_get("/v1.0/token/{refresh_token}", refresh_token, allow_head=False)
    # Tuya's current Python connector refreshes with POST, the documentation says GET.
    app.router.add_post("/v1.0/token/{refresh_token}", refresh_token)
    app.router.add_post("/v1.0/voice/execute", execute)
