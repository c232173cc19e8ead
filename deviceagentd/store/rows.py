"""Records ⇄ SQLite rows: column order, JSON columns, booleans as 0/1.

Rows are built on the caller's thread at the moment a record is handed to the store, so the
writer thread never touches the caller's (mutable) dicts, and a value JSON cannot hold is
reported to the caller instead of failing a whole batch later.
"""

from __future__ import annotations

import json
from typing import Any, NamedTuple

from deviceagentd.store.records import (
    CommandRecord,
    DeviceRecord,
    EventRecord,
    McpCallRecord,
    NewEvent,
    ScheduleRecord,
    SessionMessage,
    SessionRecord,
    VoiceTokenRecord,
)


class EventRow(NamedTuple):
    id: int
    device_id: str
    product_id: str
    event: str
    level: str
    declared: int
    data: str
    ts_ms: int
    received_at_ms: int
    source: str


class DeviceRow(NamedTuple):
    device_id: str
    product_id: str
    online: int
    state: str
    metadata: str
    first_seen_ms: int
    last_seen_ms: int
    encoding: str


class CommandOutcome(NamedTuple):
    """The fields a later update of a command may overwrite (the tail of CommandRow)."""

    status: str
    code: int | None
    msg: str | None
    data: str | None
    answered_at_ms: int | None
    late: int
    extra: str


class CommandRow(NamedTuple):
    request_id: str
    device_id: str
    product_id: str
    command: str
    params: str
    sent_at_ms: int
    timeout_ms: int
    status: str
    code: int | None
    msg: str | None
    data: str | None
    answered_at_ms: int | None
    late: int
    extra: str


assert CommandRow._fields[-len(CommandOutcome._fields) :] == CommandOutcome._fields


class SessionRow(NamedTuple):
    session_id: str
    created_ms: int
    updated_ms: int
    product_id: str | None
    device_id: str | None
    metadata: str


class VoiceTokenRow(NamedTuple):
    voice_id: str
    access_hash: str
    refresh_hash: str
    issued_at_ms: int
    expires_at_ms: int
    pending_access_hash: str | None
    pending_refresh_hash: str | None
    pending_issued_at_ms: int | None
    pending_expires_at_ms: int | None


class ScheduleRow(NamedTuple):
    schedule_id: str
    spec: str
    created_ms: int
    next_run_ms: int | None
    last_run: str | None


class McpCallRow(NamedTuple):
    id: int
    ts_ms: int
    client: str
    tool: str
    arguments: str
    outcome: str
    detail: str
    latency_ms: float


class OutboxRow(NamedTuple):
    """One message waiting for the uplink (store-and-forward); `id` orders it."""

    id: int
    kind: str
    device_id: str
    topic: str
    payload: bytes
    content_type: str
    correlation_data: bytes | None
    created_ms: int
    lifecycle: int

    @property
    def size(self) -> int:
        """What the row counts against uplink.outbox_max_bytes (the writer's SQL says the same)."""
        return len(self.payload) + len(self.topic.encode())


class MessageRow(NamedTuple):
    id: int
    session_id: str
    role: str
    text: str
    ts_ms: int
    tool_calls: str
    tool_results: str
    interrupted: int


def dump_json(value: Any) -> str:
    """Compact JSON; raises TypeError/ValueError for values JSON cannot hold (bytes, sets…)."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        # A lone surrogate (legal in a JSON string from a device) cannot be bound as UTF-8;
        # \u escapes keep it losslessly.
        text = json.dumps(value, ensure_ascii=True, separators=(",", ":"))
    return text


def event_row(event_id: int, new: NewEvent) -> EventRow:
    return EventRow(
        event_id,
        new.device_id,
        new.product_id,
        new.event,
        new.level,
        int(new.declared),
        dump_json(new.data),
        new.ts_ms,
        new.received_at_ms,
        new.source,
    )


def event_record(row: EventRow) -> EventRecord:
    return EventRecord(
        id=row.id,
        device_id=row.device_id,
        product_id=row.product_id,
        event=row.event,
        level=row.level,
        declared=bool(row.declared),
        data=json.loads(row.data),
        ts_ms=row.ts_ms,
        received_at_ms=row.received_at_ms,
        source=row.source,
    )


def device_row(record: DeviceRecord) -> DeviceRow:
    return DeviceRow(
        record.device_id,
        record.product_id,
        int(record.online),
        dump_json(record.state),
        dump_json(record.metadata),
        record.first_seen_ms,
        record.last_seen_ms,
        record.encoding,
    )


def device_record(row: DeviceRow) -> DeviceRecord:
    return DeviceRecord(
        device_id=row.device_id,
        product_id=row.product_id,
        online=bool(row.online),
        state=json.loads(row.state),
        metadata=json.loads(row.metadata),
        first_seen_ms=row.first_seen_ms,
        last_seen_ms=row.last_seen_ms,
        encoding=row.encoding,
    )


def command_outcome(record: CommandRecord) -> CommandOutcome:
    return CommandOutcome(
        record.status,
        record.code,
        record.msg,
        None if record.data is None else dump_json(record.data),
        record.answered_at_ms,
        int(record.late),
        dump_json(record.extra),
    )


def command_row(record: CommandRecord) -> CommandRow:
    return CommandRow(
        record.request_id,
        record.device_id,
        record.product_id,
        record.command,
        dump_json(record.params),
        record.sent_at_ms,
        record.timeout_ms,
        *command_outcome(record),
    )


def with_outcome(row: CommandRow, outcome: CommandOutcome) -> CommandRow:
    return row._replace(**outcome._asdict())


def command_record(row: CommandRow) -> CommandRecord:
    return CommandRecord(
        request_id=row.request_id,
        device_id=row.device_id,
        product_id=row.product_id,
        command=row.command,
        params=json.loads(row.params),
        sent_at_ms=row.sent_at_ms,
        timeout_ms=row.timeout_ms,
        status=row.status,
        code=row.code,
        msg=row.msg,
        data=None if row.data is None else json.loads(row.data),
        answered_at_ms=row.answered_at_ms,
        late=bool(row.late),
        extra=json.loads(row.extra),
    )


def bindable_text(*values: str | None) -> None:
    """Raise UnicodeEncodeError (a ValueError) now for text SQLite cannot bind (a lone
    surrogate), instead of the writer rejecting the row later."""
    for value in values:
        if value is not None:
            value.encode("utf-8")


def session_row(record: SessionRecord) -> SessionRow:
    bindable_text(record.session_id, record.product_id, record.device_id)
    return SessionRow(
        record.session_id,
        record.created_ms,
        record.updated_ms,
        record.product_id,
        record.device_id,
        dump_json(record.metadata),
    )


def session_record(row: SessionRow) -> SessionRecord:
    return SessionRecord(
        session_id=row.session_id,
        created_ms=row.created_ms,
        updated_ms=row.updated_ms,
        product_id=row.product_id,
        device_id=row.device_id,
        metadata=json.loads(row.metadata),
    )


def message_row(message_id: int, session_id: str, message: SessionMessage) -> MessageRow:
    bindable_text(session_id, message.role, message.text)
    return MessageRow(
        message_id,
        session_id,
        message.role,
        message.text,
        message.ts_ms,
        dump_json(message.tool_calls),
        dump_json(message.tool_results),
        int(message.interrupted),
    )


def message_record(row: MessageRow) -> SessionMessage:
    return SessionMessage(
        role=row.role,
        text=row.text,
        ts_ms=row.ts_ms,
        tool_calls=json.loads(row.tool_calls),
        tool_results=json.loads(row.tool_results),
        interrupted=bool(row.interrupted),
    )


def voice_token_row(record: VoiceTokenRecord) -> VoiceTokenRow:
    bindable_text(record.voice_id, record.access_hash, record.refresh_hash, record.pending_access_hash,
                  record.pending_refresh_hash)
    return VoiceTokenRow(
        record.voice_id, record.access_hash, record.refresh_hash, record.issued_at_ms, record.expires_at_ms,
        record.pending_access_hash, record.pending_refresh_hash, record.pending_issued_at_ms,
        record.pending_expires_at_ms,
    )


def voice_token_record(row: VoiceTokenRow) -> VoiceTokenRecord:
    return VoiceTokenRecord(*row)


def schedule_row(record: ScheduleRecord) -> ScheduleRow:
    bindable_text(record.schedule_id)
    return ScheduleRow(record.schedule_id, dump_json(record.spec), record.created_ms, record.next_run_ms,
                       None if record.last_run is None else dump_json(record.last_run))


def schedule_record(row: ScheduleRow) -> ScheduleRecord:
    return ScheduleRecord(row.schedule_id, json.loads(row.spec), row.created_ms, row.next_run_ms,
                          None if row.last_run is None else json.loads(row.last_run))


def mcp_call_row(call_id: int, record: McpCallRecord) -> McpCallRow:
    bindable_text(record.client, record.tool, record.outcome, record.detail)
    return McpCallRow(call_id, record.ts_ms, record.client, record.tool, dump_json(record.arguments),
                      record.outcome, record.detail, record.latency_ms)
