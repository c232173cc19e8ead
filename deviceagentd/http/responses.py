"""JSON answers: every route's body goes through `json_response`, so they all end with a newline
(a shell prompt after `curl` starts on its own line) and carry text as UTF-8, not `\\u` escapes
(a Chinese device name reads as itself in curl and in logs)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from aiohttp import web


def encode_json(value: Any) -> bytes:
    """`value` as UTF-8 JSON plus a newline."""
    text = json.dumps(value, ensure_ascii=False)
    try:
        return (text + "\n").encode("utf-8")
    except UnicodeEncodeError:
        # A lone surrogate (legal in a JSON string a device sent) has no UTF-8 form; the
        # \u escape keeps it losslessly.
        return (json.dumps(value, ensure_ascii=True) + "\n").encode("ascii")


def json_response(value: Any, *, status: int = 200, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.Response(body=encode_json(value), status=status, headers=headers,
                        content_type="application/json", charset="utf-8")
