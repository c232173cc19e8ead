"""Cloud requests over the uplink: device commands and chat turns, each answered once.

A command for one of this site's devices goes through the same checks and the same
`CommandService.send` as `POST /api/devices/:deviceId/commands`, and its answer is the body that
route answers (the outcome, or `{"error": {code, message, details?}}`) plus `httpStatus` (the
status the route would have used; MQTT has none, and `status` is taken: the command outcomes the
uplink forwards on the same result topic carry the command log's `status`) and `requestId`
(always: MQTT 3.1.1 callers have no correlation data to match answers by). A chat request runs
one agent turn, as `/api/chat` and the LAN's MQTT text requests do.

The answer goes to the caller's MQTT 5 response topic with its correlation data, or to the
site's default result topic. Nothing a request holds escapes `handle` as an exception, and
every request is answered within its command timeout or the agent's turn timeout.

A command request the broker delivers again (DUP set: it never got our PUBACK because the link
dropped while the command ran) is not run again and not answered `conflict`: if this handler
answered it, that answer is already in the outbox and nothing more is sent; if it is still
running, its answer will be; after a restart, the outcome in the command log is sent again.
That needs the caller's `requestId`: without one, a redelivered command cannot be told from a
new one and runs again (QoS 1 promises at least once).
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from deviceagentd import strictjson
from deviceagentd.agent.runner import Agent, TurnOutcome, TurnRequest, run_turn
from deviceagentd.core.command_request import bad_field, parse_command_request, reject_unknown_fields
from deviceagentd.core.commands import MAX_REQUEST_ID_LEN, CommandOutcome, CommandService
from deviceagentd.core.errors import CommandTimeout, CoreError, InvalidInput
from deviceagentd.core.registry import Device
from deviceagentd.mqtt.rejects import RejectReporter
from deviceagentd.store.records import CommandRecord
from deviceagentd.uplink.request_topics import ParsedRequestTopic, RequestKind, RequestTopics
from deviceagentd.uplink.requests_api import CloudReply

log = logging.getLogger("deviceagentd.uplink.requests")

CHAT_FIELDS = frozenset({"text", "sessionId", "requestId"})
JSON = "application/json"
# A turn that failed, as the status an HTTP caller would understand; a provider's own failure
# codes (bad key, refused request) are a bad gateway upstream of us.
TURN_FAILURE_STATUS = {"internal_error": 500, "turn_timeout": 504, "provider_unavailable": 503,
                       "shutting_down": 503}
PROVIDER_FAILURE_STATUS = 502
# Who sent a command, as the command log keeps it (HTTP commands carry none).
ORIGIN = {"channel": "uplink"}
# Command request ids answered by this handler, remembered to recognise a redelivery.
REMEMBERED_ANSWERS = 4096

CommandLookup = Callable[[str], Awaitable[CommandRecord | None]]


class Devices(Protocol):
    def get(self, device_id: str) -> Device | None: ...


@dataclass(frozen=True)
class RequestLimits:
    # Larger payloads are refused with payload_too_large before they are parsed.
    max_payload_bytes: int = 262144
    # Chat turns answered at once, and how many more may wait; beyond that: `busy`.
    chat_concurrency: int = 2
    chat_queue_limit: int = 16
    # Commands waiting for their device at once; beyond that: `busy` (each holds a pending
    # entry and a timer for up to its timeout).
    max_pending_commands: int = 256

    def __post_init__(self) -> None:
        if not 1024 <= self.max_payload_bytes <= 16 * 1024 * 1024:
            raise ValueError("max_payload_bytes must be between 1024 and 16777216")
        if self.chat_concurrency < 1 or self.chat_queue_limit < 0 or self.max_pending_commands < 1:
            raise ValueError("chat_concurrency and max_pending_commands must be at least 1, "
                             "chat_queue_limit at least 0")


class _AlreadyAnswered(Exception):
    """A redelivered command whose answer is queued, or will be by the handling still running."""


class Refused(CoreError):
    """A request answered with an error before (or instead of) running it."""

    def __init__(self, status: int, code: str, message: str, details: Any = None) -> None:
        super().__init__(message, details)
        self.status = status
        self.code = code


@dataclass(frozen=True)
class _Caller:
    """What the MQTT 5 properties of a request say about where its answer goes."""

    response_topic: str | None
    response_topic_given: bool
    correlation_data: bytes | None
    content_type: str | None

    @classmethod
    def of(cls, properties: dict[str, Any]) -> _Caller:
        topic = _first(properties, "response_topic")
        correlation = _first(properties, "correlation_data")
        content_type = _first(properties, "content_type")
        return cls(
            response_topic=topic if isinstance(topic, str) else None,
            response_topic_given=topic is not None,
            correlation_data=bytes(correlation) if isinstance(correlation, bytes | bytearray) else None,
            content_type=content_type if isinstance(content_type, str) else None,
        )


def _first(properties: dict[str, Any], name: str) -> Any:
    """gmqtt gives every property as a list of its values (`{"response_topic": ["a/b"]}`)."""
    value = properties.get(name)
    if isinstance(value, list | tuple):
        return value[0] if value else None
    return value


class CloudRequests:
    """The uplink's `CloudRequestHandler` (requests_api.py): commands and chat for one site."""

    def __init__(self, topics: RequestTopics, devices: Devices, commands: CommandService, agent: Agent | None,
                 rejects: RejectReporter, limits: RequestLimits | None = None,
                 command_log: CommandLookup | None = None) -> None:
        self._topics = topics
        # The command log (Store.get_command): the outcome a redelivered request already got.
        self._command_log = command_log
        self._answered: OrderedDict[str, None] = OrderedDict()
        self._devices = devices
        self._commands = commands
        self._agent = agent
        self._rejects = rejects
        self._limits = limits or RequestLimits()
        self._chat_slots = asyncio.Semaphore(self._limits.chat_concurrency)
        self._chats = 0  # running and waiting
        self._pending_commands = 0

    @property
    def chats_in_progress(self) -> int:
        return self._chats

    def subscriptions(self) -> list[str]:
        return self._topics.subscriptions()

    async def handle(self, topic: str, payload: bytes, properties: dict[str, Any]) -> CloudReply | None:
        """The answer to one request, or None for a topic that carries no request."""
        parsed = self._topics.parse(topic) if isinstance(topic, str) else None
        if parsed is None:
            # Not one of our request topics (a broker-side subscription we did not ask for):
            # nothing says where an answer would be wanted.
            self._rejects.reject("cloud_request", "unknown_topic", repr(topic), "not a command or chat request topic")
            return None
        caller = _Caller.of(properties)
        reply_topic = self._topics.result_topic(parsed.kind, parsed.device_id)
        request_id: str | int | None = None
        # Where the answer goes is settled first: a payload that cannot be read is answered on the
        # caller's response topic too, where the caller waits for it.
        problem = None
        if caller.response_topic_given:
            problem = ("must be text" if caller.response_topic is None
                       else self._topics.response_topic_problem(caller.response_topic))
            if problem is None and caller.response_topic is not None:
                reply_topic = caller.response_topic
        try:
            body = self._decode(payload, caller.content_type)
            request_id = _echoed_id(body.get("requestId"))
            if parsed.site_id != self._topics.site_id:
                raise Refused(403, "forbidden", f"this gateway serves site {self._topics.site_id!r}, not "
                                                f"{parsed.site_id!r}: the request was not run",
                              {"siteId": parsed.site_id})
            if problem is not None:
                raise Refused(403, "forbidden", f"the response topic {problem}; the request was not run "
                                                f"and this answer went to {reply_topic}",
                              {"responseTopic": caller.response_topic})
            if parsed.kind is RequestKind.COMMAND:
                answer = await self._command(parsed, body, redelivered=bool(_first(properties, "dup")))
            else:
                answer = await self._chat(body)
        except _AlreadyAnswered:
            return None
        except CoreError as exc:
            if isinstance(exc, CommandTimeout):
                request_id = exc.request_id
            else:
                self._rejects.reject(f"cloud_{parsed.kind.value}", exc.code, parsed.device_id or parsed.site_id,
                                     exc.message)
            answer = _error(exc.status, exc.code, exc.message, exc.details)
        except (asyncio.CancelledError, KeyboardInterrupt, SystemExit):
            raise
        except Exception as exc:  # a bug: the caller still gets an answer, the journal the traceback
            log.exception("cloud %s request on %s failed", parsed.kind.value, topic)
            answer = _error(500, "internal_error", f"the request failed: {type(exc).__name__}")
        answer.setdefault("requestId", request_id)
        return CloudReply(reply_topic, strictjson.dumps_bytes(answer), caller.correlation_data, JSON,
                          parsed.device_id)

    def _decode(self, payload: bytes, content_type: str | None) -> dict[str, Any]:
        """The payload as a JSON object: the checks of the HTTP API's request bodies."""
        if content_type is not None and content_type.split(";")[0].strip().lower() != JSON:
            raise Refused(415, "unsupported_media_type", f"send the payload as {JSON} (got {content_type[:80]!r})")
        limit = self._limits.max_payload_bytes
        if len(payload) > limit:
            raise Refused(413, "payload_too_large", f"the payload is larger than the limit of {limit} bytes")
        try:
            return strictjson.loads_object(payload, "payload")
        except strictjson.JsonInputError as exc:
            raise Refused(400, "invalid_json", exc.detail) from exc

    async def _command(self, parsed: ParsedRequestTopic, body: dict[str, Any], redelivered: bool) -> dict[str, Any]:
        device = self._devices.get(parsed.device_id)
        if device is None:
            raise Refused(404, "device_not_found", f"device {parsed.device_id!r} is not registered",
                          {"deviceId": parsed.device_id})
        fields = parse_command_request(body)
        if redelivered and isinstance(fields.request_id, str):
            replay = await self._replay(device.device_id, fields.request_id)
            if replay is not None:
                return replay
        if self._pending_commands >= self._limits.max_pending_commands:
            raise Refused(503, "busy", f"{self._pending_commands} cloud commands are already waiting for their "
                                       "devices; try again in a moment")
        self._pending_commands += 1
        try:
            outcome = await self._commands.send(device.device_id, fields.command, fields.params, fields.timeout_ms,
                                                fields.request_id, origin=ORIGIN)
        except CommandTimeout as exc:
            self._remember(exc.request_id)
            raise
        finally:
            self._pending_commands -= 1
        self._remember(outcome.request_id)
        return {**outcome.to_json(), "httpStatus": 200}

    def _remember(self, request_id: str | None) -> None:
        if request_id is None:
            return
        self._answered[request_id] = None
        while len(self._answered) > REMEMBERED_ANSWERS:
            self._answered.popitem(last=False)

    async def _replay(self, device_id: str, request_id: str) -> dict[str, Any] | None:
        """What a redelivered command request gets instead of running again, or None when it is not
        one of ours (then it goes the normal way, where a used requestId is a `conflict`)."""
        if request_id in self._answered or self._commands.is_pending(request_id):
            log.info("cloud command %s delivered again by the broker: already answered or being answered", request_id)
            raise _AlreadyAnswered
        if self._command_log is None:
            return None
        record = await self._command_log(request_id)
        if record is None or record.device_id != device_id or record.extra.get("origin") != ORIGIN:
            return None
        log.info("cloud command %s delivered again by the broker: its outcome (%s) is sent again", request_id,
                 record.status)
        if record.status in ("ok", "error") and record.code is not None:
            latency_ms = float((record.answered_at_ms or record.sent_at_ms) - record.sent_at_ms)
            outcome = CommandOutcome(request_id, record.code, record.msg or "", record.data, latency_ms)
            return {**outcome.to_json(), "httpStatus": 200}
        if record.status == "timeout":
            return _error(504, "command_timeout", f"device {device_id!r} did not answer {record.command} within "
                                                  f"{record.timeout_ms} ms", {"requestId": request_id})
        return None

    async def _chat(self, body: dict[str, Any]) -> dict[str, Any]:
        agent = self._agent
        if agent is None:
            raise Refused(503, "agent_unavailable", "the agent is not running on this gateway")
        reject_unknown_fields(body, CHAT_FIELDS)
        try:
            text = agent.check_message(body.get("text"))
        except InvalidInput as exc:
            raise bad_field("text", _reason(exc)) from None
        session_id = body.get("sessionId")
        if session_id is not None and (not isinstance(session_id, str) or not session_id or len(session_id) > 128):
            raise bad_field("sessionId", "must be a non-empty string of at most 128 characters")
        request_id = body.get("requestId")
        if request_id is not None and (not isinstance(request_id, str)
                                       or not 0 < len(request_id) <= MAX_REQUEST_ID_LEN):
            raise bad_field("requestId", f"must be a string of 1 to {MAX_REQUEST_ID_LEN} characters")
        limit = self._limits.chat_concurrency + self._limits.chat_queue_limit
        if self._chats >= limit:
            raise Refused(503, "busy", f"the gateway is answering {self._chats} chat requests; try again in a moment")
        self._chats += 1
        try:
            async with self._chat_slots:
                # Turns of one session wait for each other (a second question while the first is
                # answered), as over the LAN's MQTT; no one is there to be told "busy".
                outcome = await run_turn(agent, TurnRequest(text, session_id=session_id, wait_if_busy=True))
        finally:
            self._chats -= 1
        return _chat_answer(outcome)


def _chat_answer(outcome: TurnOutcome) -> dict[str, Any]:
    if outcome.failure is not None:
        failure = outcome.failure
        answer = _error(TURN_FAILURE_STATUS.get(failure.code, PROVIDER_FAILURE_STATUS), failure.code, failure.message)
        answer["sessionId"] = outcome.session_id
        return answer
    answer = {"sessionId": outcome.session_id, "text": outcome.text, "httpStatus": 200}
    if outcome.interrupted:
        answer["interrupted"] = True
    return answer


def _error(status: int, code: str, message: str, details: Any = None) -> dict[str, Any]:
    error: dict[str, Any] = {"code": code, "message": message}
    if details is not None:
        error["details"] = details
    return {"error": error, "httpStatus": status}


def _echoed_id(value: Any) -> str | int | None:
    """The caller's requestId, to be sent back even when it was refused (a caller matching answers
    by it gets its error), if it is something a caller could have matched on."""
    if isinstance(value, str) and 0 < len(value) <= MAX_REQUEST_ID_LEN:
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    return None


def _reason(exc: InvalidInput) -> str:
    details = exc.details
    if isinstance(details, list) and details and isinstance(details[0], dict):
        reason = details[0].get("reason")
        if isinstance(reason, str):
            return reason
    return exc.message
