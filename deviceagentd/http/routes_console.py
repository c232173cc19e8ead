"""The console's own routes: its files at `/` and `/console/{file}`, what it needs to know of
the gateway (`/api/gateway`), the voice platform page (`/api/voice-platform`, scene button)
and the AsyncAPI document of the device and voice contracts (`/api/asyncapi.json`).

The files are plain HTML/CSS/JS in the package (no build step); they are read once, kept with
a gzip copy and an ETag, and served to anyone: they hold no data. Everything the page shows
comes from the same API as curl, with the user's token.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from aiohttp import web

from deviceagentd import __version__
from deviceagentd.http.context import context_of
from deviceagentd.http.errors import ApiError
from deviceagentd.http.responses import json_response

CONSOLE_DIR = Path(__file__).resolve().parent.parent / "console"
ASYNCAPI_PATH = Path(__file__).with_name("asyncapi.json")
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}
# Nothing but the gateway itself: no CDN, no inline script. WebSockets may go to the voice port.
SECURITY_HEADERS = {
    "Content-Security-Policy": ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                                "connect-src 'self' ws: wss:; media-src 'self' blob:; object-src 'none'; "
                                "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}


@dataclass(frozen=True)
class ConsoleFile:
    content_type: str
    body: bytes
    gzipped: bytes
    etag: str


@cache
def _console_names() -> frozenset[str]:
    """The files of the console, read from the package once."""
    return frozenset(p.name for p in CONSOLE_DIR.iterdir() if p.is_file() and p.suffix in CONTENT_TYPES)


def console_file(name: str) -> ConsoleFile | None:
    """A file of the console by name, or None (only the package's files are ever looked up,
    so asking for other names costs nothing and fills no cache)."""
    return _load(name) if name in _console_names() else None


@cache
def _load(name: str) -> ConsoleFile:
    # Imported at the first page view: a gateway nobody looks at does not carry them.
    import gzip
    import hashlib

    body = (CONSOLE_DIR / name).read_bytes()
    etag = '"' + hashlib.sha256(body).hexdigest()[:20] + '"'
    return ConsoleFile(CONTENT_TYPES[Path(name).suffix], body, gzip.compress(body, 9, mtime=0), etag)


def _serve(request: web.Request, file: ConsoleFile) -> web.Response:
    headers = {"ETag": file.etag, "Cache-Control": "no-cache", "Vary": "Accept-Encoding", **SECURITY_HEADERS}
    if file.etag in request.headers.get("If-None-Match", ""):
        return web.Response(status=304, headers=headers)
    if "gzip" in request.headers.get("Accept-Encoding", "") and len(file.gzipped) < len(file.body):
        headers["Content-Encoding"] = "gzip"
        body = file.gzipped
    else:
        body = file.body
    headers["Content-Type"] = file.content_type
    return web.Response(body=body, headers=headers)


async def console_index(request: web.Request) -> web.Response:
    file = console_file("index.html")
    if file is None:  # pragma: no cover - the package always carries it
        raise ApiError(404, "not_found", "the console is not installed")
    return _serve(request, file)


async def console_asset(request: web.Request) -> web.Response:
    name = request.match_info["file"]
    file = console_file(name)
    if file is None:
        raise ApiError(404, "not_found", f"the console has no file {name!r}")
    return _serve(request, file)


async def gateway(request: web.Request) -> web.Response:
    ctx = context_of(request)
    body: dict[str, Any] = {
        "version": __version__,
        "uptimeS": round(time.monotonic() - ctx.started_monotonic, 1),
        **ctx.gateway_detail(),
        "voicePlatform": {"enabled": ctx.voice_platform is not None},
    }
    return json_response(body)


async def voice_platform(request: web.Request) -> web.Response:
    view = context_of(request).voice_platform
    if view is None:
        return json_response({"enabled": False, "speakers": [], "rooms": []})
    return json_response(view.overview())


async def run_scene(request: web.Request) -> web.Response:
    view = context_of(request).voice_platform
    scene_id = request.match_info["sceneId"]
    if view is None:
        raise ApiError(404, "scene_not_found", "the voice platform is off (voiceplatform.rooms_file is not set)",
                       {"sceneId": scene_id})
    scene = view.scene(scene_id)
    if scene is None:
        raise ApiError(404, "scene_not_found", f"no scene {scene_id!r} in the rooms file", {"sceneId": scene_id})
    return json_response(await view.run_scene(scene))


@cache
def load_asyncapi() -> dict[str, Any]:
    document: dict[str, Any] = json.loads(ASYNCAPI_PATH.read_text(encoding="utf-8"))
    return document


async def asyncapi_document(request: web.Request) -> web.Response:
    return json_response(load_asyncapi())


def add_routes(router: web.UrlDispatcher) -> None:
    router.add_get("/", console_index)
    router.add_get("/console/{file}", console_asset)
    router.add_get("/api/gateway", gateway)
    router.add_get("/api/voice-platform", voice_platform)
    router.add_post("/api/voice-platform/scenes/{sceneId}/run", run_scene)
    router.add_get("/api/asyncapi.json", asyncapi_document)
