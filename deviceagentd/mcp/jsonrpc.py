"""JSON-RPC 2.0 as MCP uses it: one message per HTTP POST, checked strictly, errors with codes.

Kept in this package (not shared with the speaker-side MCP client of the voice channel): the two
speak to different peers and change for different reasons.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from deviceagentd import strictjson

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603
# A request the client cancelled (notifications/cancelled) still needs an HTTP answer; LSP's code,
# outside the ranges JSON-RPC and MCP reserve.
REQUEST_CANCELLED = -32800
# Reserved for the MCP specification (2026-07-28).
HEADER_MISMATCH = -32020
MISSING_CLIENT_CAPABILITY = -32021
UNSUPPORTED_PROTOCOL_VERSION = -32022

RequestId = str | int


class RpcError(Exception):
    """Answered as a JSON-RPC error (with `status` as the HTTP status of the answer)."""

    def __init__(self, code: int, message: str, data: Any = None, status: int = 200) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.data = data
        self.status = status

    def body(self, request_id: RequestId | None) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.data is not None:
            error["data"] = self.data
        return {"jsonrpc": "2.0", "id": request_id, "error": error}


@dataclass(frozen=True)
class Message:
    """One message from the client: a request (`request_id` set), a notification, or a response."""

    method: str | None
    params: dict[str, Any]
    request_id: RequestId | None
    is_response: bool = False

    @property
    def is_request(self) -> bool:
        return self.method is not None and self.request_id is not None

    @property
    def is_notification(self) -> bool:
        return self.method is not None and self.request_id is None

    @property
    def meta(self) -> dict[str, Any] | None:
        meta = self.params.get("_meta")
        return meta if isinstance(meta, dict) else None


def parse(raw: bytes) -> Message:
    """The message in `raw`; RpcError (HTTP 400) for anything that is not one JSON-RPC message."""
    try:
        body = strictjson.loads(raw)
    except strictjson.JsonInputError as exc:
        raise RpcError(PARSE_ERROR, f"Parse error: the body is not valid JSON ({exc.detail})", status=400) from None
    if isinstance(body, list):
        raise RpcError(INVALID_REQUEST, "Invalid Request: send one JSON-RPC message per POST (batches are not "
                                        "supported)", status=400)
    if not isinstance(body, dict):
        raise RpcError(INVALID_REQUEST, "Invalid Request: the body must be a JSON-RPC object", status=400)
    if body.get("jsonrpc") != "2.0":
        raise RpcError(INVALID_REQUEST, "Invalid Request: jsonrpc must be \"2.0\"", status=400)
    request_id = body.get("id")
    if "id" in body and (isinstance(request_id, bool) or not isinstance(request_id, str | int)):
        raise RpcError(INVALID_REQUEST, "Invalid Request: id must be a string or an integer (not null)",
                       status=400)
    if "method" not in body:
        if "result" in body or "error" in body:
            if request_id is None:
                raise RpcError(INVALID_REQUEST, "Invalid Request: a response needs an id", status=400)
            return Message(None, {}, request_id, is_response=True)
        raise RpcError(INVALID_REQUEST, "Invalid Request: no method", status=400)
    method = body["method"]
    if not isinstance(method, str) or not method:
        raise RpcError(INVALID_REQUEST, "Invalid Request: method must be a non-empty string", status=400)
    params = body.get("params", {})
    if params is None:
        params = {}
    if not isinstance(params, dict):
        raise RpcError(INVALID_REQUEST, "Invalid Request: params must be an object", status=400,)
    return Message(method, params, request_id)


def result_body(request_id: RequestId, result: dict[str, Any]) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": request_id, "result": result}


def notification_body(method: str, params: dict[str, Any]) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "method": method, "params": params}


def dumps(message: dict[str, Any]) -> str:
    """Strict JSON (never NaN/Infinity or a lone surrogate), like every other answer."""
    return strictjson.dumps(message)
