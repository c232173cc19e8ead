"""Decoding a server-sent event stream (the WHATWG `text/event-stream` format), incrementally.

Bytes arrive in arbitrary pieces: a line, a CRLF pair or a UTF-8 character may be split
between two reads. Lines end with LF, CRLF or CR; `:` starts a comment; several `data:`
lines of one event are joined with LF; a blank line ends an event. A line that is not one of
the four SSE fields is ignored, as the WHATWG rules and the official `openai` SDK do (proxies
and compatible servers add their own fields); a stream of garbage then carries no events
(`events_seen`), which the provider reports as a bad answer.
"""

from __future__ import annotations

from dataclasses import dataclass, field

SSE_FIELDS = frozenset({"data", "event", "id", "retry"})
DEFAULT_MAX_EVENT_BYTES = 1 << 20


class SSEDecodeError(Exception):
    """The bytes are not an event stream (or an event is absurdly large)."""


@dataclass(frozen=True)
class SSEEvent:
    data: str
    event: str = "message"


@dataclass
class SSEDecoder:
    max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES
    _buffer: bytearray = field(default_factory=bytearray)
    _data: list[str] = field(default_factory=list)
    _data_bytes: int = 0
    _event: str = ""
    # The previous piece ended with CR: an LF at the start of the next one belongs to it.
    _after_cr: bool = False
    events_seen: int = 0
    """Events decoded so far: none at the end of a stream of bytes means it was no event stream."""

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        """The events completed by `chunk`, in order."""
        if self._after_cr and chunk.startswith(b"\n"):
            chunk = chunk[1:]
        self._after_cr = False
        self._buffer += chunk
        events: list[SSEEvent] = []
        start = 0
        buffer = self._buffer
        while True:
            lf = buffer.find(b"\n", start)
            cr = buffer.find(b"\r", start, lf if lf >= 0 else len(buffer))
            if cr >= 0:
                end, next_start = cr, cr + 1
                if next_start < len(buffer) and buffer[next_start] == 0x0A:
                    next_start += 1
                elif next_start == len(buffer):
                    self._after_cr = True
            elif lf >= 0:
                end, next_start = lf, lf + 1
            else:
                break
            event = self._line(bytes(buffer[start:end]))
            if event is not None:
                events.append(event)
            start = next_start
        del buffer[:start]
        if len(buffer) > self.max_event_bytes:
            raise SSEDecodeError(f"a line of the event stream is longer than {self.max_event_bytes} bytes")
        return events

    def close(self) -> list[SSEEvent]:
        """End of the stream: an unterminated last line or event still counts (servers that
        omit the final blank line are common)."""
        events: list[SSEEvent] = []
        if self._buffer:
            line = bytes(self._buffer)
            self._buffer.clear()
            event = self._line(line)
            if event is not None:
                events.append(event)
        event = self._dispatch()
        if event is not None:
            events.append(event)
        return events

    def _line(self, raw: bytes) -> SSEEvent | None:
        line = raw.decode("utf-8", errors="replace")
        if not line:
            return self._dispatch()
        if line.startswith(":"):
            return None
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if name not in SSE_FIELDS:
            return None
        if name == "data":
            self._data_bytes += len(raw)
            if self._data_bytes > self.max_event_bytes:
                raise SSEDecodeError(f"an event of the stream is longer than {self.max_event_bytes} bytes")
            self._data.append(value)
        elif name == "event":
            self._event = value
        return None

    def _dispatch(self) -> SSEEvent | None:
        if not self._data:
            self._event = ""
            return None
        event = SSEEvent("\n".join(self._data), self._event or "message")
        self.events_seen += 1
        self._data = []
        self._data_bytes = 0
        self._event = ""
        return event
