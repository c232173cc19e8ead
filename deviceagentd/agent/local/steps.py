"""A plan: what the offline agent will do for one message, in order, before doing any of it.

Each step is one tool call (and one sentence of reply once its result is known), or a
sentence to say without calling anything (a question back, a limit, "I don't understand").
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from deviceagentd.agent.local.text import Language
from deviceagentd.agent.tools import (
    CANCEL_SCHEDULE,
    CREATE_SCHEDULE,
    GET_DEVICE_STATE,
    GET_RECENT_EVENTS,
    LIST_DEVICES,
    LIST_SCHEDULES,
    SEND_COMMAND,
)


@dataclass(frozen=True)
class Reading:
    device_id: str
    # Telemetry fields asked about; empty: the whole state.
    fields: tuple[str, ...] = ()
    # For "is the light on?": the answer that means "yes".
    expect: bool | None = None

    def tool_call(self) -> tuple[str, dict[str, Any]]:
        return GET_DEVICE_STATE, {"device_id": self.device_id}


@dataclass(frozen=True)
class Command:
    device_id: str
    command: str
    params: dict[str, Any] = field(default_factory=dict, hash=False)

    def tool_call(self) -> tuple[str, dict[str, Any]]:
        return SEND_COMMAND, {"device_id": self.device_id, "command": self.command, "params": dict(self.params)}


@dataclass(frozen=True)
class Listing:
    product_id: str | None = None
    status: str | None = None

    def tool_call(self) -> tuple[str, dict[str, Any]]:
        args: dict[str, Any] = {}
        if self.product_id is not None:
            args["product_id"] = self.product_id
        if self.status is not None:
            args["status"] = self.status
        return LIST_DEVICES, args


@dataclass(frozen=True)
class EventsQuery:
    device_id: str | None = None
    since_hours: int | float | None = None
    levels: tuple[str, ...] | None = None

    def tool_call(self) -> tuple[str, dict[str, Any]]:
        args: dict[str, Any] = {}
        if self.device_id is not None:
            args["device_id"] = self.device_id
        if self.since_hours is not None:
            args["since_hours"] = self.since_hours
        if self.levels is not None:
            args["levels"] = list(self.levels)
        return GET_RECENT_EVENTS, args


@dataclass(frozen=True)
class Say:
    text: str
    # False for "I don't understand …": a message of nothing else gets one such answer.
    understood: bool = True


@dataclass(frozen=True)
class Scheduling:
    """Do `action` later: `when` is the schedule's timing ({"inSeconds"} | {"at", "repeat"?} | {"cron"})."""

    when: dict[str, Any] = field(hash=False)
    action: dict[str, Any] = field(hash=False)

    def tool_call(self) -> tuple[str, dict[str, Any]]:
        return CREATE_SCHEDULE, {**self.when, "action": dict(self.action)}


@dataclass(frozen=True)
class ScheduleListing:
    def tool_call(self) -> tuple[str, dict[str, Any]]:
        return LIST_SCHEDULES, {}


@dataclass(frozen=True)
class Cancelling:
    kind: str
    every: bool = False

    def tool_call(self) -> tuple[str, dict[str, Any]]:
        return CANCEL_SCHEDULE, {"kind": self.kind, "all": self.every}


ScheduleStep = Scheduling | ScheduleListing | Cancelling
ToolStep = Reading | Command | Listing | EventsQuery
Step = ToolStep | ScheduleStep | Say


@dataclass(frozen=True)
class Plan:
    language: Language
    steps: tuple[Step, ...]

    def tool_calls(self) -> list[tuple[str, dict[str, Any]]]:
        """The calls this plan makes, in order: (tool name, arguments)."""
        return [step.tool_call() for step in self.steps if not isinstance(step, Say)]

    def sayings(self) -> list[str]:
        """What it says without calling a tool (questions back, limits, not understood)."""
        return [step.text for step in self.steps if isinstance(step, Say)]
