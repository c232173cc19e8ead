"""Schedules ⇄ their stored JSON and the JSON the APIs serve."""

from __future__ import annotations

from datetime import tzinfo
from typing import Any

from deviceagentd.core.clock import iso_ms
from deviceagentd.core.origin import Origin
from deviceagentd.schedules import timing
from deviceagentd.schedules.model import (
    Action,
    CommandAction,
    LastRun,
    SayAction,
    SceneAction,
    Schedule,
)
from deviceagentd.schedules.timing import Recurrence
from deviceagentd.store.records import ScheduleRecord


class StoredScheduleError(ValueError):
    """A stored schedule this version cannot read (written by a newer one, or damaged)."""


def to_record(schedule: Schedule) -> ScheduleRecord:
    spec: dict[str, Any] = {
        "name": schedule.name,
        "action": schedule.action.to_json(),
        "when": _when_json(schedule),
        "origin": schedule.origin.to_json(),
    }
    return ScheduleRecord(schedule.schedule_id, spec, schedule.created_ms, schedule.next_run_ms,
                          None if schedule.last_run is None else schedule.last_run.to_json())


def from_record(record: ScheduleRecord) -> Schedule:
    spec = record.spec
    try:
        when = spec["when"]
        once_ms = when.get("onceMs")
        recurrence = None if once_ms is not None else _recurrence(when)
        last = record.last_run
        return Schedule(
            schedule_id=record.schedule_id,
            name=str(spec.get("name", "")),
            action=_action(spec["action"]),
            origin=Origin.from_json(spec.get("origin") or {}),
            created_ms=record.created_ms,
            once_ms=once_ms,
            recurrence=recurrence,
            next_run_ms=record.next_run_ms,
            last_run=None if last is None else LastRun(int(last["at"]), str(last["outcome"]), str(last["detail"])),
        )
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise StoredScheduleError(f"schedule {record.schedule_id} cannot be read: {exc!r}") from exc


def _when_json(schedule: Schedule) -> dict[str, Any]:
    if schedule.recurrence is None:
        return {"onceMs": schedule.once_ms}
    return schedule.recurrence.to_json()


def _recurrence(when: dict[str, Any]) -> Recurrence:
    kind = when["repeat"]
    if kind == "cron":
        return timing.parse_cron(when["cron"])
    repeat = ",".join(when["days"]) if kind == "days" else kind
    return timing.repeating(repeat, when["at"])


def _action(data: dict[str, Any]) -> Action:
    kind = data["type"]
    if kind == "command":
        return CommandAction(str(data["deviceId"]), str(data["command"]), dict(data.get("params") or {}))
    if kind == "scene":
        return SceneAction(str(data["sceneId"]))
    if kind in ("say", "alarm"):
        return SayAction(str(data.get("text") or ""), data.get("speaker"), data.get("room"), data.get("language"),
                         alarm=kind == "alarm")
    raise ValueError(f"unknown action type {kind!r}")


def schedule_json(schedule: Schedule, zone: tzinfo) -> dict[str, Any]:
    """A schedule as the HTTP API, MCP and the agent show it; times local with their offset."""
    when: dict[str, Any]
    if schedule.recurrence is None:
        assert schedule.once_ms is not None
        when = {"at": timing.local_iso(schedule.once_ms, zone)}
    else:
        when = schedule.recurrence.to_json()
    last = schedule.last_run
    return {
        "id": schedule.schedule_id,
        "name": schedule.name,
        "when": when,
        "timezone": str(zone),
        "action": schedule.action.to_json(),
        "nextRun": None if schedule.next_run_ms is None else timing.local_iso(schedule.next_run_ms, zone),
        "createdAt": iso_ms(schedule.created_ms),
        "createdBy": schedule.origin.to_json(),
        "lastRun": None if last is None else {"at": timing.local_iso(last.at_ms, zone), "outcome": last.outcome,
                                              "detail": last.detail},
    }
