"""The HTTP error envelope (SPEC §3) and the helpers that read request input strictly."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from deviceagentd import strictjson
from deviceagentd.core import command_request
from deviceagentd.core.errors import CoreError, InvalidInput
from deviceagentd.http.responses import json_response

# How long a client has to send a request body once its headers are in.
BODY_TIMEOUT_S = 15.0


class ApiError(Exception):
    """An error answered as `{"error": {code, message, details?}}` with an HTTP status."""

    def __init__(self, status: int, code: str, message: str, details: Any = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details


def error_response(status: int, code: str, message: str, details: Any = None,
                   headers: dict[str, str] | None = None) -> web.Response:
    error: dict[str, Any] = {"code": code, "message": message}
    if details is not None:
        error["details"] = details
    return json_response({"error": error}, status=status, headers=headers)


def from_core(exc: CoreError) -> ApiError:
    return ApiError(exc.status, exc.code, exc.message, exc.details)


def bad_field(field: str, reason: str) -> ApiError:
    return ApiError(400, "invalid_request", f"{field} {reason}", [{"field": field, "reason": reason}])


async def read_body(request: web.Request, limit: int, timeout_s: float | None = None) -> bytes:
    """The whole body, or ApiError 413 (over `limit`, declared or sent) or 408 (not all there
    within `timeout_s`: a client trickling its body must not hold a connection for ever).

    One StreamReader.read(n) returns only what has arrived so far, so it reads until the end."""
    timeout_s = BODY_TIMEOUT_S if timeout_s is None else timeout_s
    too_large = ApiError(413, "payload_too_large", f"the request body is larger than the limit of {limit} bytes")
    if request.content_length is not None and request.content_length > limit:
        raise too_large
    body = bytearray()
    try:
        async with asyncio.timeout(timeout_s):
            while len(body) <= limit:
                chunk = await request.content.read(limit + 1 - len(body))
                if not chunk:
                    break
                body += chunk
    except TimeoutError:
        raise ApiError(408, "request_timeout", f"the request body did not arrive within {timeout_s:g} s") from None
    if len(body) > limit:
        raise too_large
    return bytes(body)


async def read_json_object(request: web.Request, limit: int) -> dict[str, Any]:
    """The request body as a JSON object, or ApiError 415/413/400.

    `limit` is the route's own body limit (the application-wide one is the largest route's).
    """
    content_type = request.content_type
    if content_type != "application/json":
        raise ApiError(415, "unsupported_media_type",
                       f"send the body as application/json (got {content_type or 'no content type'})")
    raw = await read_body(request, limit)
    try:
        return strictjson.loads_object(raw, "body")
    except strictjson.JsonInputError as exc:
        raise ApiError(400, "invalid_json", exc.detail) from exc


def reject_unknown_fields(body: dict[str, Any], allowed: set[str] | frozenset[str]) -> None:
    try:
        command_request.reject_unknown_fields(body, allowed)
    except InvalidInput as exc:
        raise from_core(exc) from None


def int_query(request: web.Request, name: str, default: int | None, low: int, high: int) -> int | None:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    # Plain ASCII digits only: int() would also take "1_0", " 5" and non-Latin digits.
    if not (raw.isascii() and raw.isdigit()):
        raise bad_field(name, "must be an integer")
    value = int(raw)
    if not low <= value <= high:
        raise bad_field(name, f"must be between {low} and {high}")
    return value
