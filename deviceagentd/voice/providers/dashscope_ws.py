"""The DashScope WebSocket task protocol, shared by realtime ASR and CosyVoice TTS.

One connection runs one task: the client sends `run-task` (text frame), waits for
`task-started`, streams (binary audio for ASR, `continue-task` text for TTS), sends
`finish-task`, and the server ends with `task-finished` or `task-failed`
(`header.error_code`/`error_message`). A bad key is refused at the upgrade with HTTP 401.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import aiohttp

from deviceagentd.voice.providers.base import (
    PROVIDER_AUTH,
    PROVIDER_RATE_LIMITED,
    PROVIDER_TIMEOUT,
    VoiceProviderError,
)
from deviceagentd.voice.providers.httpclient import client_error, redact
from deviceagentd.voice.providers.tasks import end_queue, stop_tasks

log = logging.getLogger(__name__)

DEFAULT_URL = "wss://dashscope.aliyuncs.com/api-ws/v1/inference"
# task-failed error codes that mean the key (or its workspace) is not allowed.
AUTH_ERROR_CODES = frozenset({"InvalidApiKey", "AccessDenied", "Unauthorized", "Forbidden", "NoPermission"})
RATE_ERROR_CODES = frozenset({"Throttling", "Throttling.RateQuota", "Throttling.AllocationQuota", "RateLimitExceeded"})
# A polite close must not hold up an abort.
CLOSE_TIMEOUT_S = 1.0
CLOSED_TYPES = frozenset({aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.CLOSED})

Item = TypeVar("Item")


@dataclass(frozen=True)
class Endpoint:
    url: str
    api_key: str
    # Optional X-DashScope-WorkSpace header (sub-workspace keys).
    workspace: str
    connect_timeout_s: float
    start_timeout_s: float


@dataclass(frozen=True)
class TaskEvent:
    event: str
    task_id: str
    error_code: str
    error_message: str
    payload: dict[str, Any]


def command(action: str, task_id: str, payload: dict[str, Any]) -> str:
    header = {"action": action, "task_id": task_id, "streaming": "duplex"}
    return json.dumps({"header": header, "payload": payload}, ensure_ascii=False)


def parse_event(text: str) -> TaskEvent:
    """A server text frame; ValueError when it is not a task event."""
    data = json.loads(text)
    if not isinstance(data, dict) or not isinstance(data.get("header"), dict):
        raise ValueError("event without a header")
    header = data["header"]
    payload = data.get("payload")
    return TaskEvent(
        event=str(header.get("event", "")),
        task_id=str(header.get("task_id", "")),
        error_code=str(header.get("error_code") or ""),
        error_message=str(header.get("error_message") or ""),
        payload=payload if isinstance(payload, dict) else {},
    )


def task_failed_error(event: TaskEvent, failure_code: str, secret: str) -> VoiceProviderError:
    code = failure_code
    if event.error_code in AUTH_ERROR_CODES:
        code = PROVIDER_AUTH
    elif event.error_code in RATE_ERROR_CODES:
        code = PROVIDER_RATE_LIMITED
    detail = redact(f"{event.error_code or 'task-failed'}: {event.error_message}".strip(": "), secret)
    return VoiceProviderError(code, detail)


class ReplyTimeout:
    """Bounds each wait for the server's next frame once armed; another task may arm it while
    the reader is already waiting (asyncio.Timeout can be rescheduled). Only the wait is timed,
    never the reader's own hand-off of what it received."""

    def __init__(self) -> None:
        self._seconds: float | None = None
        self._active: asyncio.Timeout | None = None

    @property
    def seconds(self) -> float | None:
        return self._seconds

    def arm(self, seconds: float) -> None:
        self._seconds = seconds
        active = self._active
        if active is not None and not active.expired():
            active.reschedule(asyncio.get_running_loop().time() + seconds)

    async def receive(self, ws: aiohttp.ClientWebSocketResponse) -> aiohttp.WSMessage:
        when = None if self._seconds is None else asyncio.get_running_loop().time() + self._seconds
        async with asyncio.timeout_at(when) as timeout:
            self._active = timeout
            try:
                return await ws.receive()
            finally:
                self._active = None


async def open_task(
    session: aiohttp.ClientSession,
    endpoint: Endpoint,
    run_payload: dict[str, Any],
    failure_code: str,
) -> tuple[aiohttp.ClientWebSocketResponse, str]:
    """Connect, send run-task, wait for task-started. Returns the socket and the task id; on any
    failure the socket is closed and a VoiceProviderError raised."""
    task_id = uuid.uuid4().hex
    headers = {"Authorization": f"Bearer {endpoint.api_key}"}
    if endpoint.workspace:
        headers["X-DashScope-WorkSpace"] = endpoint.workspace
    log.debug("dashscope: connecting to %s for %s (task %s)", endpoint.url, run_payload.get("model"), task_id)
    try:
        async with asyncio.timeout(endpoint.connect_timeout_s):
            ws = await session.ws_connect(
                endpoint.url,
                headers=headers,
                timeout=aiohttp.ClientWSTimeout(ws_close=CLOSE_TIMEOUT_S),
            )
    except Exception as exc:
        raise client_error(exc, failure_code, endpoint.api_key, f"connecting to {endpoint.url}") from None
    try:
        await ws.send_str(command("run-task", task_id, run_payload))
        async with asyncio.timeout(endpoint.start_timeout_s):
            while True:
                msg = await ws.receive()
                if msg.type in CLOSED_TYPES or msg.type is aiohttp.WSMsgType.ERROR:
                    raise VoiceProviderError(failure_code, "the provider closed the connection before task-started")
                if msg.type is not aiohttp.WSMsgType.TEXT:
                    continue
                event = parse_event(msg.data)
                if event.event == "task-started":
                    return ws, task_id
                if event.event == "task-failed":
                    raise task_failed_error(event, failure_code, endpoint.api_key)
    except BaseException as exc:
        await close_quietly(ws)
        if isinstance(exc, TimeoutError):
            raise VoiceProviderError(
                PROVIDER_TIMEOUT, f"no task-started within {endpoint.start_timeout_s:g} s"
            ) from None
        if isinstance(exc, ValueError):
            raise VoiceProviderError(failure_code, "the provider sent an unreadable event") from None
        if isinstance(exc, Exception):
            raise client_error(exc, failure_code, endpoint.api_key, "starting the task") from None
        raise


async def close_quietly(ws: aiohttp.ClientWebSocketResponse) -> None:
    """Close the socket; never raises (but lets cancellation through)."""
    if ws.closed:
        return
    try:
        await ws.close()
    except Exception as exc:
        log.debug("dashscope: closing the socket failed: %s", exc)


async def send_finish(ws: aiohttp.ClientWebSocketResponse, task_id: str) -> None:
    await ws.send_str(command("finish-task", task_id, {"input": {}}))


class TaskStream(Generic[Item]):
    """A started task: a reader task turning the server's frames into items on a queue, the
    first error it met, finish-task with a deadline for the rest, and close.

    Subclasses read the frames (`_read_frames`, putting items with `_put` and failures with
    `_fail`) and say what the failure code and the timeout mean for them.
    """

    failure_code: str
    log_name: str
    receiving: str  # what the reader was doing, for error details: "receiving audio"

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, task_id: str, api_key: str, finish_timeout_s: float,
                 queue: asyncio.Queue[Item | VoiceProviderError | None]) -> None:
        self._ws = ws
        self._task_id = task_id
        self._api_key = api_key
        self._finish_timeout_s = finish_timeout_s
        self._queue = queue
        self._reply_timeout = ReplyTimeout()
        self._error: VoiceProviderError | None = None
        self._finishing = False
        self._closed = False
        self._reader = asyncio.create_task(self._read(), name=f"{self.log_name}-{task_id}")

    async def finish(self) -> None:
        """Send finish-task; from now on each wait for the server is bounded by the finish
        timeout. A failure to send is reported by the reader, which sees the same socket."""
        if self._finishing or self._closed:
            return
        self._finishing = True
        self._reply_timeout.arm(self._finish_timeout_s)
        try:
            await send_finish(self._ws, self._task_id)
        except (aiohttp.ClientError, ConnectionError) as exc:
            log.debug("%s: finish-task not sent: %s", self.log_name, exc)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        await stop_tasks([self._reader])
        await close_quietly(self._ws)
        end_queue(self._queue)

    async def _items(self) -> AsyncIterator[Item]:
        """The queue's items until its end; raises the reader's error where it came."""
        while True:
            item = await self._queue.get()
            if item is None:
                return
            if isinstance(item, VoiceProviderError):
                raise item
            yield item

    def _send_error(self, exc: Exception, doing: str) -> VoiceProviderError:
        # The reader sees the same broken socket and reports why; this is the short version.
        return self._error or client_error(exc, self.failure_code, self._api_key, doing)

    async def _read(self) -> None:
        try:
            await self._read_frames()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            await self._fail(self._reader_error(exc))
        finally:
            await close_quietly(self._ws)

    async def _receive(self) -> aiohttp.WSMessage:
        return await self._reply_timeout.receive(self._ws)

    async def _put(self, item: Item | None) -> None:
        await self._queue.put(item)

    async def _fail(self, error: VoiceProviderError) -> None:
        log.warning("%s: %s", self.log_name, error)
        self._error = error
        await self._queue.put(error)

    async def _fail_task(self, event: TaskEvent) -> None:
        await self._fail(task_failed_error(event, self.failure_code, self._api_key))

    def _reader_error(self, exc: Exception) -> VoiceProviderError:
        if isinstance(exc, TimeoutError):
            return VoiceProviderError(PROVIDER_TIMEOUT, self._timeout_detail())
        if isinstance(exc, ValueError):
            return VoiceProviderError(self.failure_code, "the provider sent an unreadable event")
        return client_error(exc, self.failure_code, self._api_key, self.receiving)

    def _timeout_detail(self) -> str:
        raise NotImplementedError

    async def _read_frames(self) -> None:
        raise NotImplementedError
