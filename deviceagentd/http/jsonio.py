"""JSON responses of every route: strict JSON (no NaN/Infinity, no lone surrogates), UTF-8.

Routes answer with `json_response` instead of aiohttp's `web.json_response`, whose
`json.dumps` writes `Infinity` for a non-finite float (tests/test_strict_json.py checks that
no module uses it).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aiohttp import web

from deviceagentd import strictjson


def json_response(data: Any, *, status: int = 200, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.Response(body=strictjson.dumps_bytes(data), status=status, headers=headers,
                        content_type="application/json", charset="utf-8")
