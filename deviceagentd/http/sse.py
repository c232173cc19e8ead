"""Server-Sent Events for /api/chat (SPEC §3): `event: <name>` + one JSON object per `data:` line.

Clients that read only `data:` lines and take `textChunk`/`text` (the EMQX SDKs) work too:
deltas carry `textChunk`, the final `done` carries the full `text`.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from deviceagentd import strictjson

KEEPALIVE_S = 15.0


def encode_event(name: str, data: dict[str, Any]) -> bytes:
    payload = strictjson.dumps(data)
    return f"event: {name}\ndata: {payload}\n\n".encode()


@dataclass
class SseStream:
    """One open event stream; a comment line every 15 s keeps proxies and disconnect
    detection honest while a slow tool call runs."""

    response: web.StreamResponse
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    _keepalive: asyncio.Task[None] | None = None

    @classmethod
    async def open(cls, request: web.Request) -> SseStream:
        response = web.StreamResponse(
            status=200,
            headers={
                "Content-Type": "text/event-stream; charset=utf-8",
                "Cache-Control": "no-cache",
                "X-Accel-Buffering": "no",
            },
        )
        await response.prepare(request)
        stream = cls(response)
        stream._keepalive = asyncio.create_task(stream._ping())
        return stream

    async def send(self, name: str, data: dict[str, Any]) -> None:
        async with self._lock:
            await self.response.write(encode_event(name, data))

    async def _ping(self) -> None:
        while True:
            await asyncio.sleep(KEEPALIVE_S)
            async with self._lock:
                await self.response.write(b": keep-alive\n\n")

    async def close(self) -> None:
        if self._keepalive is not None:
            self._keepalive.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionError):
                await self._keepalive
        with contextlib.suppress(ConnectionError):
            await self.response.write_eof()
