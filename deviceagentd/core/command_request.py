"""The body of a command request, checked the same way for every channel that takes one.

`POST /api/devices/:deviceId/commands` and cloud requests over the uplink read the same fields
with the same rules and the same error details, so a caller moving from one to the other sees no
difference. What the DeviceSpec says about the command and its params is checked afterwards by
`CommandService.send`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from deviceagentd.core.errors import InvalidInput

COMMAND_FIELDS = frozenset({"command", "params", "timeoutMs", "requestId"})


@dataclass(frozen=True)
class CommandRequest:
    command: str
    params: dict[str, Any]
    timeout_ms: int | None
    request_id: str | None


def bad_field(field: str, reason: str) -> InvalidInput:
    """A 400 naming the field, as `{"field", "reason"}` details."""
    return InvalidInput(f"{field} {reason}", [{"field": field, "reason": reason}])


def reject_unknown_fields(body: dict[str, Any], allowed: frozenset[str] | set[str]) -> None:
    extra = sorted(set(body) - allowed)
    if extra:
        details = [{"field": name, "reason": "is not a known field"} for name in extra]
        raise InvalidInput(f"unknown field(s) {', '.join(extra)} (allowed: {', '.join(sorted(allowed))})", details)


def parse_command_request(body: dict[str, Any]) -> CommandRequest:
    """The fields of a command request, or InvalidInput naming the first bad one."""
    reject_unknown_fields(body, COMMAND_FIELDS)
    command = body.get("command")
    if not isinstance(command, str) or not command:
        raise bad_field("command", "is required and must be a non-empty string")
    params = body.get("params", {})
    if params is None:
        params = {}
    if not isinstance(params, dict):
        raise bad_field("params", "must be an object")
    timeout_ms = body.get("timeoutMs")
    if timeout_ms is not None and (isinstance(timeout_ms, bool) or not isinstance(timeout_ms, int)):
        raise bad_field("timeoutMs", "must be an integer number of milliseconds (100..120000)")
    request_id = body.get("requestId")
    if request_id is not None and not isinstance(request_id, str):
        raise bad_field("requestId", "must be a string")
    return CommandRequest(command, params, timeout_ms, request_id)
