"""JSON answers: every route's body goes through `json_response`, so they all end with a newline
(a shell prompt after `curl` starts on its own line), carry text as UTF-8, not `\\u` escapes (a
Chinese device name reads as itself in curl and in logs), and are strict JSON (`strictjson.dumps`:
never `NaN`/`Infinity`, never a lone surrogate; tests/test_strict_json.py checks that no module
answers with aiohttp's `web.json_response`, whose `json.dumps` writes `Infinity`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aiohttp import web

from deviceagentd import strictjson


def encode_json(value: Any) -> bytes:
    """`value` as strict UTF-8 JSON plus a newline. A lone surrogate cannot come in any more
    (strictjson refuses it at the door); one from an older database row becomes U+FFFD."""
    return (strictjson.dumps(value, compact=False) + "\n").encode("utf-8")


def json_response(value: Any, *, status: int = 200, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.Response(body=encode_json(value), status=status, headers=headers,
                        content_type="application/json", charset="utf-8")
