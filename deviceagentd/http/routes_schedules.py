"""`/api/schedules`: list, create, read and delete timers, alarms and recurring actions."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from deviceagentd.http.context import context_of
from deviceagentd.http.errors import ApiError, bad_field, int_query, read_json_object
from deviceagentd.http.responses import json_response

if TYPE_CHECKING:
    from deviceagentd.schedules.service import ScheduleService

MAX_PAGE = 1000


def _service(request: web.Request) -> ScheduleService:
    schedules = context_of(request).schedules
    if schedules is None:  # pragma: no cover - the daemon always builds it
        raise ApiError(503, "unavailable", "schedules are not available on this gateway")
    return schedules.service()


async def list_schedules(request: web.Request) -> web.Response:
    service = _service(request)
    limit = int_query(request, "limit", 100, 1, MAX_PAGE)
    assert limit is not None
    after = request.query.get("after") or None
    if after is not None and not after.isprintable():
        raise bad_field("after", "must be a schedule id")
    schedules = service.schedules()
    if after is not None:
        # Pages in the listing's order (next run, then id): resume after that schedule.
        ids = [s.schedule_id for s in schedules]
        if after not in ids:
            raise bad_field("after", f"no schedule {after!r} (it may have run or been deleted)")
        schedules = schedules[ids.index(after) + 1:]
    page = schedules[:limit]
    next_after = page[-1].schedule_id if len(schedules) > limit else None
    return json_response({"schedules": [service.to_json(s) for s in page], "nextAfter": next_after,
                              "total": service.count, "timezone": str(service.zone)})


async def create_schedule(request: web.Request) -> web.Response:
    from deviceagentd.core.origin import Origin

    ctx = context_of(request)
    service = _service(request)
    body = await read_json_object(request, ctx.max_body_bytes)
    schedule = await service.create(body, Origin("http"))
    return json_response(service.to_json(schedule), status=201,
                             headers={"Location": f"/api/schedules/{schedule.schedule_id}"})


async def get_schedule(request: web.Request) -> web.Response:
    service = _service(request)
    schedule_id = request.match_info["scheduleId"]
    schedule = service.get(schedule_id)
    if schedule is None:
        raise ApiError(404, "schedule_not_found", f"no schedule {schedule_id!r} (a one-off schedule is gone once it "
                                                  "ran: its outcome is in the events)", {"scheduleId": schedule_id})
    return json_response(service.to_json(schedule))


async def delete_schedule(request: web.Request) -> web.Response:
    service = _service(request)
    schedule_id = request.match_info["scheduleId"]
    if not await service.delete(schedule_id):
        raise ApiError(404, "schedule_not_found", f"no schedule {schedule_id!r}", {"scheduleId": schedule_id})
    return json_response({"deleted": True, "id": schedule_id})


def add_routes(router: web.UrlDispatcher) -> None:
    router.add_get("/api/schedules", list_schedules)
    router.add_post("/api/schedules", create_schedule)
    router.add_get("/api/schedules/{scheduleId}", get_schedule)
    router.add_delete("/api/schedules/{scheduleId}", delete_schedule)
