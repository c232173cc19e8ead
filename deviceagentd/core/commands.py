"""Commands to devices: validate against the DeviceSpec, publish, wait for the matching
response, and keep every command and its outcome in the command log (late answers too).

HTTP, the agent and the voice platform all send commands through `CommandService.send`, so
there is one validated path to a device.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Protocol

from deviceagentd.core.clock import Clock, iso_ms
from deviceagentd.core.errors import (
    BrokerUnavailable,
    CommandTimeout,
    Conflict,
    DeviceOffline,
    InvalidInput,
    NotFound,
)
from deviceagentd.core.feed import ChangeKind, SiteChange
from deviceagentd.core.metrics import Metrics
from deviceagentd.core.registry import Device, DeviceRegistry, Rejected
from deviceagentd.core.values import FieldError, check_params
from deviceagentd.store.records import CommandRecord

log = logging.getLogger("deviceagentd.commands")

MIN_TIMEOUT_MS = 100
MAX_TIMEOUT_MS = 120_000
MAX_REQUEST_ID_LEN = 128
# How many finished request ids we remember to tell late and duplicate answers from unknown ones
# (and to refuse a requestId that is reused meanwhile). An hour of a busy site's commands.
REMEMBERED_REQUESTS = 4_000
# Finished commands a device may still answer: it got the command (or may have) and answered
# after the caller stopped waiting. "failed" covers a broker connection lost after the publish.
LATE_ANSWERABLE = ("timeout", "cancelled", "failed")


@dataclass(frozen=True, slots=True)
class _Answered:
    """A command the device answered in time: all a later answer to it needs is its device."""

    device_id: str


class CommandPublisher(Protocol):
    @property
    def is_connected(self) -> bool: ...

    async def publish_command(self, product_id: str, device_id: str, body: dict[str, Any], encoding: str) -> None:
        """Publish (QoS 1) or raise BrokerUnavailable."""


class CommandLog(Protocol):
    def add_command(self, record: CommandRecord) -> None: ...
    def update_command(self, record: CommandRecord) -> None: ...


@dataclass
class CommandOutcome:
    request_id: str
    code: int
    msg: str
    data: Any
    latency_ms: float

    @property
    def ok(self) -> bool:
        return self.code == 0

    def to_json(self) -> dict[str, Any]:
        return {
            "requestId": self.request_id,
            "code": self.code,
            "msg": self.msg,
            "data": self.data,
            "ok": self.ok,
            "latencyMs": round(self.latency_ms, 3),
        }


@dataclass
class _Pending:
    record: CommandRecord
    future: asyncio.Future[CommandOutcome]
    started: float


class CommandService:
    def __init__(
        self,
        registry: DeviceRegistry,
        log_store: CommandLog,
        publisher: CommandPublisher,
        metrics: Metrics,
        clock: Clock | None = None,
        default_timeout_ms: int = 30_000,
    ) -> None:
        self._registry = registry
        self._log = log_store
        self._publisher = publisher
        self._metrics = metrics
        self._clock = clock or Clock()
        self.default_timeout_ms = default_timeout_ms
        self._pending: dict[str, _Pending] = {}
        self._sequence = 0
        # request id -> commands that finished: the whole record of those that got no answer (a
        # late answer still completes it in the log), only the device of those that did, so the
        # daemon does not carry the params and results of thousands of commands (~1.7 KB each).
        self._finished: OrderedDict[str, CommandRecord | _Answered] = OrderedDict()

    def _new_request_id(self) -> str:
        """Milliseconds, a counter, 24 random bits: ids we generate sort by when they were sent, so
        each new row of the command log lands on the last page of its key's index instead of a
        random one (a page less to write per commit on an SD card)."""
        self._sequence = (self._sequence + 1) % 0x10000
        return f"req-{self._clock.wall_ms():011x}{self._sequence:04x}{uuid.uuid4().hex[:6]}"

    @property
    def pending_count(self) -> int:
        return len(self._pending)

    def is_pending(self, request_id: str) -> bool:
        return request_id in self._pending

    def check(self, device_id: str, command: str, params: dict[str, Any] | None = None) -> Device:
        """The device, if `command` with `params` is one it accepts (what `send` checks first).

        Raises NotFound (unknown device, or its product no longer configured) or InvalidInput
        (details name the field). Schedules check a command when it is made, not only when it runs.
        """
        device, errors = self._problems(device_id, command, params)
        if errors:
            raise InvalidInput(_summary(errors), [e.to_json() for e in errors])
        return device

    def _problems(self, device_id: str, command: str, params: dict[str, Any] | None) -> tuple[Device, list[FieldError]]:
        device = self._registry.get(device_id)
        if device is None:
            raise NotFound(f"device {device_id!r} is not registered", {"deviceId": device_id})
        spec = self._registry.catalog.get(device.product_id)
        if spec is None:
            raise NotFound(f"product {device.product_id!r} of device {device_id!r} is not configured")
        errors: list[FieldError] = []
        command_spec = spec.commands.get(command)
        if command_spec is None:
            known = ", ".join(spec.commands) or "none"
            errors.append(FieldError("command", f"{command!r} is not a command of {spec.product_id} (known: {known})"))
        else:
            errors.extend(check_params(command_spec, params))
        return device, errors

    async def send(
        self,
        device_id: str,
        command: str,
        params: dict[str, Any] | None = None,
        timeout_ms: int | None = None,
        request_id: str | None = None,
        origin: dict[str, Any] | None = None,
    ) -> CommandOutcome:
        """Send one command and wait for the device's answer.

        `origin` says who sent it when that is not a single HTTP API call (`{"channel": "mcp",
        "client": ...}`, the agent, a schedule, a scene's step): it is kept with the command in
        the command log.
        Raises NotFound, InvalidInput (details name the field), DeviceOffline,
        BrokerUnavailable, Conflict (request id in use) or CommandTimeout.
        """
        device, errors = self._problems(device_id, command, params)
        timeout = self.default_timeout_ms if timeout_ms is None else timeout_ms
        if not MIN_TIMEOUT_MS <= timeout <= MAX_TIMEOUT_MS:
            errors.append(FieldError("timeoutMs", f"must be between {MIN_TIMEOUT_MS} and {MAX_TIMEOUT_MS}"))
        if request_id is not None and not (0 < len(request_id) <= MAX_REQUEST_ID_LEN):
            errors.append(FieldError("requestId", f"must be 1 to {MAX_REQUEST_ID_LEN} characters"))
        if errors:
            raise InvalidInput(_summary(errors), [e.to_json() for e in errors])
        if not device.online:
            raise DeviceOffline(f"device {device_id!r} is offline", {"deviceId": device_id})
        if not self._publisher.is_connected:
            raise BrokerUnavailable("the MQTT broker is not connected; try again when health says ok")
        request_id = request_id or self._new_request_id()
        if request_id in self._pending or request_id in self._finished:
            raise Conflict(f"requestId {request_id!r} was already used", {"requestId": request_id})

        params = params or {}
        now_ms = self._clock.wall_ms()
        record = CommandRecord(
            request_id=request_id,
            device_id=device_id,
            product_id=device.product_id,
            command=command,
            params=params,
            sent_at_ms=now_ms,
            timeout_ms=timeout,
            extra={"origin": origin} if origin else {},
        )
        body = {"cmd": command, "params": params, "requestId": request_id, "ts": now_ms}
        future: asyncio.Future[CommandOutcome] = asyncio.get_running_loop().create_future()
        pending = _Pending(record, future, self._clock.monotonic())
        self._pending[request_id] = pending
        try:
            self._log.add_command(record)
            await self._publisher.publish_command(device.product_id, device_id, body, device.encoding)
        except BaseException as exc:
            # Whatever went wrong (broker gone, store closed, a bug), the command must not stay
            # pending: its id would be refused with 409 and commands_pending never fall.
            reason = "broker connection lost" if isinstance(exc, BrokerUnavailable) else f"{type(exc).__name__}"
            if request_id in self._pending:
                self._finish(pending, "failed", msg=f"not published: {reason}")
                self._metrics.commands.inc({"outcome": "failed"})
            raise
        try:
            return await asyncio.wait_for(asyncio.shield(future), timeout / 1000)
        except BrokerUnavailable:
            self._metrics.commands.inc({"outcome": "failed"})
            raise
        except TimeoutError:
            self._finish(pending, "timeout")
            self._metrics.commands.inc({"outcome": "timeout"})
            log.info("command %s to %s timed out after %d ms (requestId %s)", command, device_id, timeout, request_id)
            raise CommandTimeout(
                f"device {device_id!r} did not answer {command} within {timeout} ms", request_id
            ) from None
        finally:
            if not future.done():
                # The caller went away (client disconnected): the command stays in the log as
                # pending until its answer or timeout would have come; a late answer still lands.
                future.cancel()
                if request_id in self._pending:
                    self._finish(pending, "cancelled")

    def handle_response(self, product_id: str, device_id: str, body: dict[str, Any]) -> None:
        """Match a device's answer to its command. Raises Rejected for answers we cannot use."""
        request_id = body.get("requestId")
        if not isinstance(request_id, str) or not request_id:
            raise Rejected("response_without_request_id", "a command response needs a string requestId")
        code = body.get("code")
        if isinstance(code, bool) or not isinstance(code, int):
            raise Rejected("bad_response", f"response {request_id} needs an integer code (0 = success)")
        msg = body.get("msg")
        msg_text = msg if isinstance(msg, str) else ("ok" if code == 0 else "")
        data = body.get("data")
        pending = self._pending.get(request_id)
        if pending is not None:
            if pending.record.device_id != device_id:
                raise Rejected(
                    "response_device_mismatch",
                    f"response {request_id} came from {device_id!r}, the command went to {pending.record.device_id!r}",
                )
            latency_ms = (self._clock.monotonic() - pending.started) * 1000
            outcome = CommandOutcome(request_id, code, msg_text, data, latency_ms)
            self._finish(pending, "ok" if code == 0 else "error", code=code, msg=msg_text, data=data)
            self._metrics.commands.inc({"outcome": "ok" if code == 0 else "error"})
            self._metrics.command_latency.observe(latency_ms / 1000)
            pending.future.set_result(outcome)
            return
        finished = self._finished.get(request_id)
        if finished is None:
            raise Rejected("unknown_request_id", f"no command with requestId {request_id!r} is waiting")
        if finished.device_id != device_id:
            raise Rejected("response_device_mismatch", f"response {request_id} came from the wrong device")
        if isinstance(finished, _Answered) or finished.status not in LATE_ANSWERABLE:
            raise Rejected("duplicate_response", f"command {request_id} was already answered")
        # A late answer: the caller got 504 (or left), but the log keeps what the device did.
        finished.status = "ok" if code == 0 else "error"
        finished.late = True
        finished.code = code
        finished.msg = msg_text
        finished.data = data
        finished.answered_at_ms = self._clock.wall_ms()
        self._log.update_command(finished)
        self._publish(finished)
        self._metrics.commands.inc({"outcome": "late"})
        log.info("late answer to %s from %s (requestId %s, code %d) recorded", finished.command, device_id,
                 request_id, code)

    def _finish(self, pending: _Pending, status: str, code: int | None = None, msg: str | None = None,
                data: Any = None) -> None:
        record = pending.record
        self._pending.pop(record.request_id, None)
        record.status = status
        record.code = code
        record.msg = msg
        record.data = data
        if status in ("ok", "error"):
            record.answered_at_ms = self._clock.wall_ms()
        self._log.update_command(record)
        self._publish(record)
        self._finished[record.request_id] = _Answered(record.device_id) if status in ("ok", "error") else record
        while len(self._finished) > REMEMBERED_REQUESTS:
            self._finished.popitem(last=False)

    def _publish(self, record: CommandRecord) -> None:
        feed = self._registry.feed
        if feed.listening:
            feed.publish(SiteChange(ChangeKind.COMMAND, record.device_id, record.product_id, self._clock.wall_ms(),
                                    command_to_json(record)))

    def fail_all(self, reason: str) -> None:
        """End every command waiting for its answer: the caller gets BrokerUnavailable (503) at
        once, the log says "failed" with `reason`, and an answer that still comes is recorded
        as late. Used when the broker connection drops (the command or its answer may be lost
        with it) and at shutdown."""
        for pending in list(self._pending.values()):
            if pending.future.done():
                continue
            self._finish(pending, "failed", msg=reason)
            pending.future.set_exception(BrokerUnavailable(reason))


def command_to_json(record: CommandRecord) -> dict[str, Any]:
    """A command of the command log as the API serves it."""
    out = {
        "requestId": record.request_id,
        "deviceId": record.device_id,
        "productId": record.product_id,
        "command": record.command,
        "params": record.params,
        "status": record.status,
        "code": record.code,
        "msg": record.msg,
        "data": record.data,
        "late": record.late,
        "timeoutMs": record.timeout_ms,
        "sentAt": iso_ms(record.sent_at_ms),
        "answeredAt": iso_ms(record.answered_at_ms) if record.answered_at_ms is not None else None,
    }
    origin = record.extra.get("origin")
    if origin:
        out["origin"] = origin
    return out


def _summary(errors: list[FieldError]) -> str:
    first = errors[0]
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{first.field} {first.reason}{more}"
