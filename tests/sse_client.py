"""Reading a Server-Sent Events stream as a browser's EventSource does (the WHATWG parsing rules:
`id`, `event`, `data` lines, `retry`, comments, an `id` that sticks until replaced), from an
aiohttp response, one event at a time."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

import aiohttp


@dataclass(frozen=True)
class SseEvent:
    name: str
    data: Any
    last_event_id: str
    """The stream's last event id after this event (what a reconnect would send)."""
    has_id: bool
    """This event carried its own `id:` line."""


class SseReader:
    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self.response = response
        self.last_event_id = ""
        self.retry_ms: int | None = None
        self.comments = 0
        self._buffer = b""

    async def next(self, timeout: float = 10.0) -> SseEvent:
        return await asyncio.wait_for(self._next(), timeout)

    async def until(self, name: str, timeout: float = 10.0) -> tuple[SseEvent, list[SseEvent]]:
        """The first event called `name`, and every event before it."""
        skipped: list[SseEvent] = []
        async with asyncio.timeout(timeout):
            while True:
                event = await self._next()
                if event.name == name:
                    return event, skipped
                skipped.append(event)

    async def _line(self) -> bytes | None:
        while True:
            for sep in (b"\r\n", b"\n", b"\r"):
                index = self._buffer.find(sep)
                if index >= 0 and not (sep == b"\r" and index == len(self._buffer) - 1):
                    line, self._buffer = self._buffer[:index], self._buffer[index + len(sep):]
                    return line
            chunk = await self.response.content.readany()
            if not chunk:
                return None
            self._buffer += chunk

    async def _next(self) -> SseEvent:
        name, data, has_id = "", [], False
        while True:
            raw = await self._line()
            if raw is None:
                raise EOFError("the stream ended")
            line = raw.decode("utf-8")
            if line == "":
                if data:
                    return SseEvent(name or "message", json.loads("\n".join(data)), self.last_event_id, has_id)
                name, has_id = "", False
                continue
            if line.startswith(":"):
                self.comments += 1
                continue
            field, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if field == "event":
                name = value
            elif field == "data":
                data.append(value)
            elif field == "id" and "\0" not in value:
                self.last_event_id, has_id = value, True
            elif field == "retry" and value.isdigit():
                self.retry_ms = int(value)
