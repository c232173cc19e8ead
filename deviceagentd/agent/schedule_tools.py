"""The agent's schedule tools: make a timer, alarm or recurring action, list them, cancel them.

A conversation sees the schedules it made (or that its speaker made, since a speaker reconnects
with new sessions), so "cancel my alarm" in room 101 never cancels room 102's. Failures come back
as sentences, like the device tools'.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from deviceagentd.agent.tools import CANCEL_SCHEDULE, CREATE_SCHEDULE, LIST_SCHEDULES, ToolRefused
from deviceagentd.agent.types import ToolSpec, TurnContext
from deviceagentd.core.errors import Conflict, InvalidInput
from deviceagentd.core.origin import Origin
from deviceagentd.schedules.lazy import LazySchedules
from deviceagentd.schedules.model import CommandAction, SayAction, Schedule
from deviceagentd.schedules.schema import request_schema

if TYPE_CHECKING:
    from deviceagentd.schedules.service import ScheduleService

# What "cancel my alarm / timer / reminder" means.
KINDS = ("alarm", "timer", "reminder", "any")


@dataclass
class ScheduleTools:
    schedules: LazySchedules

    @property
    def service(self) -> ScheduleService:
        # Built with the first schedule tool call, not when the tools are listed to a model.
        return self.schedules.service()

    def specs(self) -> list[ToolSpec]:
        return [
            ToolSpec(
                CREATE_SCHEDULE,
                "Do something later: a timer (\"in 30 minutes turn off the AC\"), an alarm (\"wake me up at "
                "7\"), a reminder, or a recurring action (\"every day at 23:00 close the curtains\"). Times "
                f"are local to the site ({self.schedules.zone}). A say or alarm without speaker or room plays "
                "on the speaker this conversation comes from.",
                request_schema(),
            ),
            ToolSpec(
                LIST_SCHEDULES,
                "List the timers, alarms and recurring actions this conversation (or its speaker) made, "
                "soonest first.",
                {"type": "object", "properties": {}, "additionalProperties": False},
            ),
            ToolSpec(
                CANCEL_SCHEDULE,
                "Cancel a schedule this conversation made: by id, or the next one of a kind (alarm = wake-up "
                "alarms, timer = one-off actions, reminder = spoken reminders, any), or all of that kind.",
                {
                    "type": "object",
                    "properties": {
                        "schedule_id": {"type": "string"},
                        "kind": {"type": "string", "enum": list(KINDS)},
                        "all": {"type": "boolean", "description": "Cancel every one of that kind, not just the next."},
                    },
                    "additionalProperties": False,
                },
            ),
        ]

    async def call(self, name: str, args: dict[str, Any], context: TurnContext) -> dict[str, Any]:
        if name == CREATE_SCHEDULE:
            return await self._create(args, context)
        if name == LIST_SCHEDULES:
            return {"schedules": [self.service.to_json(s) for s in self._own(context)]}
        return await self._cancel(args, context)

    async def _create(self, args: dict[str, Any], context: TurnContext) -> dict[str, Any]:
        origin = Origin("agent", context.session_id, context.speaker_id)
        try:
            schedule = await self.service.create(args, origin)
        except InvalidInput as exc:
            raise ToolRefused(f"I can't schedule that: {exc.message}") from None
        except Conflict as exc:
            raise ToolRefused(exc.message) from None
        return self.service.to_json(schedule)

    async def _cancel(self, args: dict[str, Any], context: TurnContext) -> dict[str, Any]:
        own = self._own(context)
        schedule_id = args.get("schedule_id")
        if schedule_id is not None:
            chosen = [s for s in own if s.schedule_id == schedule_id]
            if not chosen:
                raise ToolRefused(f"there is no schedule {schedule_id!r} of this conversation")
        else:
            kind = args.get("kind", "any")
            if kind not in KINDS:
                raise ToolRefused(f"kind must be one of {', '.join(KINDS)}")
            matching = [s for s in own if _is_kind(s, kind)]
            if not matching:
                raise ToolRefused(f"no {'schedule' if kind == 'any' else kind} to cancel")
            chosen = matching if args.get("all") else matching[:1]
        cancelled = [self.service.to_json(s) for s in chosen]
        for schedule in chosen:
            await self.service.delete(schedule.schedule_id)
        return {"cancelled": cancelled}

    def _own(self, context: TurnContext) -> list[Schedule]:
        return self.service.schedules(session_id=context.session_id, speaker=context.speaker_id, owned_only=True)


def _is_kind(schedule: Schedule, kind: str) -> bool:
    action = schedule.action
    if kind == "alarm":
        return isinstance(action, SayAction) and action.alarm
    if kind == "reminder":
        return isinstance(action, SayAction) and not action.alarm
    if kind == "timer":
        return not schedule.recurring and isinstance(action, CommandAction)
    return True
