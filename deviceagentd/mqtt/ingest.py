"""Routing of every incoming MQTT message: topic → kind → decode → core call.

Rejections never raise out of here: they are counted and logged (rate limited) and the
message is acknowledged, because redelivering a malformed message cannot make it valid.
Telemetry and events wait (unacknowledged) while storage has no room (mqtt/backpressure.py).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable
from typing import Any, Protocol

from deviceagentd.core.commands import CommandService
from deviceagentd.core.events import EventRecorder
from deviceagentd.core.metrics import Metrics
from deviceagentd.core.registry import DeviceRegistry, Rejected
from deviceagentd.mqtt.backpressure import AckGate
from deviceagentd.mqtt.codec import DecodeError, decode
from deviceagentd.mqtt.ntp import NtpResponder
from deviceagentd.mqtt.rejects import RejectReporter
from deviceagentd.mqtt.topics import BadTopicId, ParsedTopic, TopicKind, TopicParser

PUBACK_SUCCESS = 0
TEXT_KINDS = (TopicKind.DEVICE_IN, TopicKind.PRODUCT_IN)
# Kinds whose messages add rows to the store: they wait for room. Time sync must not wait;
# command answers and text requests add few rows and must not stall behind a full disk.
STORED_KINDS = (TopicKind.TELEMETRY, TopicKind.EVENT)


class TextRequestSink(Protocol):
    def submit(self, kind: TopicKind, product_id: str, device_id: str, payload: bytes,
               content_type: str | None) -> None: ...


def content_type_of_message(properties: dict[str, Any]) -> str | None:
    value = properties.get("content_type")
    if isinstance(value, list):
        value = value[0] if value else None
    return value if isinstance(value, str) else None


class Ingest:
    def __init__(
        self,
        parser: TopicParser,
        registry: DeviceRegistry,
        events: EventRecorder,
        commands: CommandService,
        ntp: NtpResponder,
        metrics: Metrics,
        rejects: RejectReporter,
        max_payload_bytes: int,
        text_requests: TextRequestSink | None = None,
        gate: AckGate | None = None,
    ) -> None:
        self._parser = parser
        self._registry = registry
        self._events = events
        self._commands = commands
        self._ntp = ntp
        self._metrics = metrics
        self._rejects = rejects
        self._max_payload = max_payload_bytes
        self._text_requests = text_requests
        self.gate = gate
        self._received = {kind: metrics.messages_in.labels(kind=kind.value) for kind in TopicKind}

    def on_message(self, topic: str, payload: bytes, qos: int, properties: dict[str, Any]) -> int | Awaitable[int]:
        """The PUBACK reason code, or (when the message must wait for storage room) an
        awaitable of it. Synchronous otherwise: one coroutine per message (gmqtt's) is enough."""
        # Stamp first: serverRecvTime must not include our own parsing.
        recv_ns = time.time_ns()
        try:
            parsed = self._parser.parse(topic)
        except BadTopicId as exc:
            self._rejects.reject("message", "bad_topic_id", topic, str(exc))
            return PUBACK_SUCCESS
        if parsed is None:
            self._rejects.reject("message", "unknown_topic", topic, f"no topic template matches {topic!r}")
            return PUBACK_SUCCESS
        kind = parsed.kind
        self._received[kind].inc()
        content_type = content_type_of_message(properties)
        if kind is TopicKind.NTP_REQUEST:
            encoding = self._ntp.handle(parsed.product_id, parsed.device_id, payload, content_type, recv_ns)
            if encoding is not None:
                self._note_heard(parsed.product_id, parsed.device_id, encoding)
            return PUBACK_SUCCESS
        if kind in TEXT_KINDS:
            if self._text_requests is None:
                self._rejects.reject(kind.value, "not_handled", topic, "text requests are not served here")
            else:
                self._text_requests.submit(kind, parsed.product_id, parsed.device_id, payload, content_type)
            return PUBACK_SUCCESS
        gate = self.gate
        if kind in STORED_KINDS and gate is not None and not gate.open_now():
            return self._when_room(gate, parsed, payload, content_type, topic)
        return self._apply(parsed, payload, content_type, topic)

    async def _when_room(self, gate: AckGate, parsed: ParsedTopic, payload: bytes, content_type: str | None,
                         topic: str) -> int:
        if not await gate.wait():
            # Not handled and not acknowledged on a live connection: the broker delivers it again.
            return PUBACK_SUCCESS
        return self._apply(parsed, payload, content_type, topic)

    def _apply(self, parsed: ParsedTopic, payload: bytes, content_type: str | None, topic: str) -> int:
        kind = parsed.kind
        try:
            body, encoding = decode(payload, content_type, self._max_payload)
        except DecodeError as exc:
            self._rejects.reject(kind.value, exc.reason, parsed.device_id or topic, exc.detail)
            return PUBACK_SUCCESS
        try:
            if kind is TopicKind.TELEMETRY:
                result = self._registry.accept_telemetry(parsed.product_id, parsed.device_id, body, encoding)
                for name, reason in result.dropped_fields:
                    self._rejects.reject("telemetry_field", "wrong_type", parsed.device_id,
                                         f"state field {name!r} dropped: {reason}")
            elif kind is TopicKind.EVENT:
                self._events.accept(parsed.product_id, parsed.device_id, body, encoding)
            elif kind is TopicKind.RESPONSE:
                # Resolve first: an answer under another product's topic must not complete
                # the command.
                spec, device = self._registry.resolve(parsed.product_id, parsed.device_id)
                self._commands.handle_response(parsed.product_id, parsed.device_id, body)
                self._registry.heard_from(spec, parsed.device_id, device, encoding)
        except Rejected as exc:
            self._rejects.reject(kind.value, exc.reason, parsed.device_id or topic, exc.detail)
        return PUBACK_SUCCESS

    def _note_heard(self, product_id: str, device_id: str, encoding: str) -> None:
        """A valid time-sync request shows a known device is alive; it does not register one."""
        if self._registry.get(device_id) is None:
            return
        try:
            spec, device = self._registry.resolve(product_id, device_id)
        except Rejected:
            return
        self._registry.heard_from(spec, device_id, device, encoding)
