"""Rows the store keeps. Times are epoch milliseconds (wall clock) in one unit everywhere."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class DeviceRecord:
    device_id: str
    product_id: str
    online: bool
    state: dict[str, Any]
    metadata: dict[str, Any]
    first_seen_ms: int
    last_seen_ms: int
    encoding: str = "json"


@dataclass
class NewEvent:
    device_id: str
    product_id: str
    event: str
    level: str
    declared: bool
    data: dict[str, Any]
    ts_ms: int
    received_at_ms: int
    source: str = "device"


@dataclass
class EventRecord(NewEvent):
    """A stored event: a NewEvent with the id the store gave it when it was accepted."""

    id: int = 0


@dataclass
class CommandRecord:
    """One command sent to a device and, once known, its outcome.

    status: pending | ok | error (device answered code != 0) | timeout | failed (not sent).
    A response that arrives after the timeout sets `late` and fills code/msg/data.
    """

    request_id: str
    device_id: str
    product_id: str
    command: str
    params: dict[str, Any]
    sent_at_ms: int
    timeout_ms: int
    status: str = "pending"
    code: int | None = None
    msg: str | None = None
    data: Any = None
    answered_at_ms: int | None = None
    late: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class SessionRecord:
    """A conversation's header: when it started, when it was last used, its default device.

    `updated_ms` is the store's clock at the last write to the session (header or message);
    retention deletes sessions whose `updated_ms` is older than `sessions_max_age_days`.
    """

    session_id: str
    created_ms: int
    updated_ms: int
    product_id: str | None = None
    device_id: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass
class SessionMessage:
    """One entry of a session's history, as plain JSON values.

    The store does not know the agent's types (dependencies point inward); the agent turns
    its tool calls and results into JSON objects and back.
    """

    role: str
    text: str
    ts_ms: int
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    tool_results: list[dict[str, Any]] = field(default_factory=list)
    interrupted: bool = False


@dataclass(frozen=True)
class VoiceTokenRecord:
    """The token pairs of one voice platform speaker: only SHA-256 hashes of the tokens.

    One row per speaker (`voice_id`): issuing or refreshing replaces it, so a rotated or
    revoked token is simply no longer in the table. `pending_*` is a pair obtained but not
    used yet (all None when there is none): it replaces the live pair at its first use.
    """

    voice_id: str
    access_hash: str
    refresh_hash: str
    issued_at_ms: int
    expires_at_ms: int
    """When the access token stops working; the refresh token does not expire."""
    pending_access_hash: str | None = None
    pending_refresh_hash: str | None = None
    pending_issued_at_ms: int | None = None
    pending_expires_at_ms: int | None = None


@dataclass
class ScheduleRecord:
    """A schedule as stored: `spec` is its JSON (name, action, when, origin); `next_run_ms` the
    next time it runs; `last_run` how its last run went (JSON), if it ran."""

    schedule_id: str
    spec: dict[str, Any]
    created_ms: int
    next_run_ms: int | None
    last_run: dict[str, Any] | None = None


@dataclass(frozen=True)
class McpCallRecord:
    """One tool call of an MCP client: who, which tool with which arguments, how it went."""

    ts_ms: int
    client: str
    tool: str
    arguments: dict[str, Any]
    outcome: str
    """ok | error (the tool ran and failed) | refused (not allowed, unknown tool, bad arguments)."""
    detail: str
    latency_ms: float
