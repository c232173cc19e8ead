"""Routes for the agent (SPEC §3): /api/chat (SSE), sessions, /api/vision/frames.

Registered on the HTTP port and on the voice port by the same `add_routes`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from aiohttp import web

from deviceagentd.agent.runner import TurnDone, TurnFailed, TurnRequest, TurnStarted
from deviceagentd.agent.types import ChatMessage, Delta, ToolCallFinished, ToolCallStarted
from deviceagentd.agent.vision import FrameError
from deviceagentd.core.clock import iso_ms
from deviceagentd.http.context import AgentContext, context_of
from deviceagentd.http.errors import ApiError, bad_field, int_query, read_json_object, reject_unknown_fields
from deviceagentd.http.responses import json_response
from deviceagentd.http.sse import SseStream

log = logging.getLogger("deviceagentd.http")

CHAT_FIELDS = {"message", "stream", "sessionId", "metadata", "visionRefs", "namespace"}
FRAME_FIELDS = {"sessionId", "deviceId", "mimeType", "imageBase64", "source", "namespace"}
MAX_VISION_REFS = 8
INTERRUPT_WAIT_S = 1.0


def _agent(request: web.Request) -> AgentContext:
    agent = context_of(request).agent
    if agent is None:
        raise ApiError(503, "agent_unavailable", "the agent is not running on this gateway")
    return agent


def _optional_text(body: dict[str, Any], name: str, max_len: int = 128, prefix: str = "") -> str | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or not value or len(value) > max_len:
        raise bad_field(prefix + name, f"must be a non-empty string of at most {max_len} characters")
    return value


def _check_namespace(body: dict[str, Any]) -> None:
    """`namespace` is accepted for EMQX SDK compatibility and ignored, but only as text."""
    if "namespace" in body and not isinstance(body["namespace"], str):
        raise bad_field("namespace", "must be a string (it is accepted and ignored)")


def _frame_ids(body: dict[str, Any]) -> tuple[str, ...]:
    refs = body.get("visionRefs")
    if refs is None:
        return ()
    if not isinstance(refs, list) or len(refs) > MAX_VISION_REFS:
        raise bad_field("visionRefs", f"must be a list of at most {MAX_VISION_REFS} frame references")
    ids = []
    for index, ref in enumerate(refs):
        frame_id = ref.get("frameId") if isinstance(ref, dict) else None
        if not isinstance(frame_id, str) or not frame_id:
            raise bad_field(f"visionRefs[{index}].frameId", "is required (the frameId from /api/vision/frames)")
        ids.append(frame_id)
    return tuple(ids)


async def chat(request: web.Request) -> web.StreamResponse:
    ctx = _agent(request)
    body = await read_json_object(request, context_of(request).max_body_bytes)
    reject_unknown_fields(body, CHAT_FIELDS)
    _check_namespace(body)
    if body.get("stream") is not True:
        raise bad_field("stream", "must be true: /api/chat always streams Server-Sent Events")
    ctx.agent.check_message(body.get("message"))
    metadata = body.get("metadata")
    if metadata is not None and not isinstance(metadata, dict):
        raise bad_field("metadata", "must be an object")
    metadata = metadata or {}
    turn = TurnRequest(
        message=body["message"],
        session_id=_optional_text(body, "sessionId"),
        product_id=_optional_text(metadata, "productId", prefix="metadata."),
        device_id=_optional_text(metadata, "deviceId", prefix="metadata."),
        frame_ids=_frame_ids(body),
    )
    # Everything that can be refused (400/404/409) is refused before the stream starts.
    session_id, images = await ctx.agent.prepare(turn)
    stream = await SseStream.open(request)
    events = ctx.agent.turn(turn, session_id, images)
    try:
        async for event in events:
            if isinstance(event, TurnStarted):
                await stream.send("session", {"sessionId": event.session_id})
            elif isinstance(event, Delta):
                await stream.send("delta", {"textChunk": event.text})
            elif isinstance(event, ToolCallStarted):
                await stream.send("tool_call", event.call.to_json())
            elif isinstance(event, ToolCallFinished):
                await stream.send("tool_result", event.result.to_json())
            elif isinstance(event, TurnDone):
                done: dict[str, Any] = {"sessionId": event.session_id, "text": event.text}
                if event.interrupted:
                    done["interrupted"] = True
                await stream.send("done", done)
            elif isinstance(event, TurnFailed):
                await stream.send("error", {"code": event.code, "message": event.message})
    except ConnectionError:
        # The client went away: closing the turn below cancels the provider's work.
        pass
    except Exception as exc:
        # A bug must still end the stream the way clients expect: with an error event.
        log.exception("chat stream of session %s failed", session_id)
        with contextlib.suppress(ConnectionError):
            await stream.send("error", {"code": "internal_error", "message": f"the turn failed: {type(exc).__name__}"})
    finally:
        await events.aclose()
        await stream.close()
    return stream.response


def _message_json(message: ChatMessage) -> dict[str, Any]:
    out: dict[str, Any] = {"role": message.role, "text": message.text, "ts": iso_ms(message.ts_ms)}
    if message.tool_calls:
        out["toolCalls"] = [call.to_json() for call in message.tool_calls]
    if message.tool_results:
        out["toolResults"] = [result.to_json() for result in message.tool_results]
    if message.interrupted:
        out["interrupted"] = True
    return out


async def _known_session(ctx: AgentContext, request: web.Request) -> str:
    session_id = request.match_info["sessionId"]
    if not (ctx.agent.busy(session_id) or await ctx.sessions.exists(session_id)):
        raise ApiError(404, "session_not_found", f"session {session_id!r} does not exist", {"sessionId": session_id})
    return session_id


async def session_history(request: web.Request) -> web.Response:
    ctx = _agent(request)
    limit = int_query(request, "limit", 50, 1, 1000)
    assert limit is not None
    session_id = await _known_session(ctx, request)
    messages = await ctx.sessions.history(session_id, limit)
    return json_response({"sessionId": session_id, "messages": [_message_json(m) for m in messages]})


async def session_interrupt(request: web.Request) -> web.Response:
    ctx = _agent(request)
    session_id = await _known_session(ctx, request)
    return json_response({"interrupted": ctx.agent.interrupt(session_id)})


async def session_delete(request: web.Request) -> web.Response:
    ctx = _agent(request)
    session_id = await _known_session(ctx, request)
    if ctx.agent.interrupt(session_id):
        # Let the interrupted turn record its partial reply first, so nothing re-creates the
        # history after it is deleted.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(INTERRUPT_WAIT_S):
                while ctx.agent.busy(session_id):
                    await asyncio.sleep(0.01)
    return json_response({"deleted": await ctx.sessions.delete(session_id)})


async def upload_frame(request: web.Request) -> web.Response:
    ctx = _agent(request)
    body = await read_json_object(request, ctx.vision_body_bytes)
    reject_unknown_fields(body, FRAME_FIELDS)
    _check_namespace(body)
    session_id = _optional_text(body, "sessionId")
    if session_id is None:
        raise bad_field("sessionId", "is required")
    mime_type = body.get("mimeType")
    if not isinstance(mime_type, str):
        raise bad_field("mimeType", "is required: image/jpeg, image/png or image/webp")
    image = body.get("imageBase64")
    if not isinstance(image, str) or not image:
        raise bad_field("imageBase64", "is required: the image as base64")
    source = _optional_text(body, "source")
    try:
        frame = await ctx.frames.add(session_id, _optional_text(body, "deviceId"), mime_type, image, source)
    except FrameError as exc:
        if exc.code == "frame_too_large":
            raise ApiError(413, "frame_too_large", exc.message, exc.details) from None
        raise ApiError(400, exc.code, exc.message, exc.details) from None
    ref = {"frameId": frame.frame_id, "capturedAt": iso_ms(frame.captured_at_ms), "source": frame.source}
    return json_response({**ref, "mimeType": frame.mime_type, "visionRefs": [ref]})


def add_routes(router: web.UrlDispatcher) -> None:
    router.add_post("/api/chat", chat)
    router.add_post("/api/vision/frames", upload_frame)


def add_session_routes(router: web.UrlDispatcher) -> None:
    router.add_get("/api/sessions/{sessionId}/history", session_history)
    router.add_post("/api/sessions/{sessionId}/interrupt", session_interrupt)
    router.add_delete("/api/sessions/{sessionId}", session_delete)
