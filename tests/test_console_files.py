"""The console's files as the daemon serves them: gzip when asked, ETag revalidation, a strict
Content-Security-Policy, open without a token, and nothing but the package's own files."""

from __future__ import annotations

import gzip
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from daemon_harness import RunningDaemon, start_daemon
from mosquitto_broker import MosquittoBroker
from multidict import CIMultiDict

from deviceagentd.http import routes_console

TOKEN = "console-files-token-0123456789"


@pytest.fixture
async def gateway(broker: MosquittoBroker, tmp_path: Path) -> AsyncIterator[RunningDaemon]:
    gw = await start_daemon(broker.url, tmp_path / "state", http_tokens=[TOKEN])
    try:
        yield gw
    finally:
        await gw.stop()


async def fetch(gw: RunningDaemon, path: str, **headers: str) -> tuple[int, CIMultiDict[str], bytes]:
    async with aiohttp.ClientSession(auto_decompress=False) as session, \
            session.get(gw.base_url + path, headers=headers) as resp:
        return resp.status, CIMultiDict(resp.headers), await resp.read()


async def test_the_page_and_its_modules_are_served_to_anyone(gateway: RunningDaemon) -> None:
    status, headers, body = await fetch(gateway, "/", **{"Accept-Encoding": "identity"})
    assert status == 200 and headers["Content-Type"] == "text/html; charset=utf-8"
    assert body == (routes_console.CONSOLE_DIR / "index.html").read_bytes()
    csp = headers["Content-Security-Policy"]
    assert "default-src 'self'" in csp and "script-src 'self'" in csp and "'unsafe-inline'" not in csp
    assert headers["X-Content-Type-Options"] == "nosniff" and headers["Cache-Control"] == "no-cache"
    # Every module and the style sheet the page names is there, and says what it is.
    for name in ("app.js", "api.js", "ui.js", "live.js", "devices.js", "device.js", "overview.js", "chat.js",
                 "voice.js", "voiceplatform.js", "mic-worklet.js", "app.css"):
        status, headers, _ = await fetch(gateway, f"/console/{name}")
        assert status == 200, name
        assert headers["Content-Type"].startswith("text/css" if name.endswith(".css") else "text/javascript")


async def test_gzip_when_asked_and_304_when_unchanged(gateway: RunningDaemon) -> None:
    plain = (routes_console.CONSOLE_DIR / "device.js").read_bytes()
    status, headers, body = await fetch(gateway, "/console/device.js", **{"Accept-Encoding": "gzip, br"})
    assert status == 200 and headers["Content-Encoding"] == "gzip" and gzip.decompress(body) == plain
    assert len(body) < len(plain) / 2
    status, headers, body = await fetch(gateway, "/console/device.js", **{"Accept-Encoding": "identity"})
    assert status == 200 and "Content-Encoding" not in headers and body == plain
    etag = headers["ETag"]
    status, headers, body = await fetch(gateway, "/console/device.js", **{"If-None-Match": etag})
    assert (status, body, headers["ETag"]) == (304, b"", etag)
    status, _, _ = await fetch(gateway, "/console/device.js", **{"If-None-Match": '"stale"'})
    assert status == 200


@pytest.mark.parametrize("path", ["/console/nope.js", "/console/..%2Fhttp%2Fopenapi.json", "/console/.hidden.js",
                                  "/console/app.py", "/console/", "/console/index.html.bak"])
async def test_nothing_else_is_served(gateway: RunningDaemon, path: str) -> None:
    status, headers, _ = await fetch(gateway, path)
    assert status == 404, path
    assert headers["Content-Type"].startswith("application/json")


async def test_unknown_names_fill_no_cache(gateway: RunningDaemon) -> None:
    for i in range(50):
        await fetch(gateway, f"/console/random-{i}.js")
    assert routes_console._load.cache_info().currsize <= len(routes_console._console_names())


async def test_the_api_behind_it_still_needs_the_token(gateway: RunningDaemon) -> None:
    status, _, _ = await fetch(gateway, "/api/gateway")
    assert status == 401
    status, _, body = await fetch(gateway, "/api/gateway", Authorization=f"Bearer {TOKEN}")
    assert status == 200 and b'"voice"' in body
