"""The schedules of the site: made, listed and deleted through HTTP, MCP and the agent; kept in
SQLite; run on time by one timer task.

Every schedule is in memory with its next run, ordered in a heap; the timer sleeps until the
earliest (at most `MAX_SLEEP_S`, so a wall-clock step is noticed) and starts each due schedule's
action in a task of its own. A schedule that is due by more than `missed_grace_s` — the gateway
was off, suspended, or its clock jumped — is not run but recorded as missed; a recurring one
that missed several runs runs once (if its latest run is within the grace) and the others are
recorded as missed. Each run and each miss is an event (`schedule_fired` / `schedule_missed`,
source `schedule`) with its outcome; a one-off schedule is deleted once it ran.

Durability: a new schedule is answered only after it is committed; a run's bookkeeping (next
run, last outcome, a one-off's removal) is written with the next batch, so a crash within a
second of a run may run it again at the next start (if still within the grace).
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import tzinfo
from typing import TYPE_CHECKING, Any, Protocol

from deviceagentd.core.clock import Clock, iso_ms
from deviceagentd.core.commands import CommandService
from deviceagentd.core.errors import Conflict
from deviceagentd.core.events import event_to_json
from deviceagentd.core.feed import ChangeKind, SiteChange, SiteFeed
from deviceagentd.core.metrics import Metrics
from deviceagentd.core.origin import Origin
from deviceagentd.schedules import timing
from deviceagentd.schedules.codec import StoredScheduleError, from_record, schedule_json, to_record
from deviceagentd.schedules.model import MISSED, OK, LastRun, Schedule
from deviceagentd.schedules.runner import ActionRunner, RunResult
from deviceagentd.store.records import EventRecord, NewEvent, ScheduleRecord

if TYPE_CHECKING:
    from deviceagentd.voiceplatform.rooms import Rooms

log = logging.getLogger("deviceagentd.schedules")

# The timer wakes at least this often, so a wall-clock step (NTP at boot) is noticed.
MAX_SLEEP_S = 30.0
# Actions running at once; more due at the same moment wait for a slot.
MAX_RUNNING = 64
FIRED_EVENT = "schedule_fired"
MISSED_EVENT = "schedule_missed"
_LEVELS = {OK: "info", MISSED: "warning", "no_speaker": "warning"}


class ScheduleStore(Protocol):
    def save_schedule(self, record: ScheduleRecord) -> None: ...
    def delete_schedule(self, schedule_id: str) -> None: ...
    def schedule_pages(self) -> Iterator[list[ScheduleRecord]]: ...
    def add_event(self, event: NewEvent) -> EventRecord: ...
    async def flush(self) -> None: ...


@dataclass(frozen=True)
class ScheduleSettings:
    max_schedules: int = 10_000
    missed_grace_s: float = 300.0


class ScheduleService:
    def __init__(
        self,
        store: ScheduleStore,
        commands: CommandService,
        runner: ActionRunner,
        zone: tzinfo,
        metrics: Metrics,
        feed: SiteFeed,
        rooms: Rooms | None = None,
        settings: ScheduleSettings | None = None,
        clock: Clock | None = None,
    ) -> None:
        self._store = store
        self._commands = commands
        self._runner = runner
        self.zone = zone
        self._metrics = metrics
        self._feed = feed
        self.rooms = rooms
        self.settings = settings or ScheduleSettings()
        self._clock = clock or Clock()
        self._schedules: dict[str, Schedule] = {}
        self._heap: list[tuple[int, str]] = []
        self._wake = asyncio.Event()
        self._running: set[asyncio.Task[None]] = set()
        self._slots = asyncio.Semaphore(MAX_RUNNING)
        self._sequence = 0

    # ------------------------------------------------------------------ reading

    @property
    def count(self) -> int:
        return len(self._schedules)

    @property
    def running(self) -> int:
        return len(self._running)

    def get(self, schedule_id: str) -> Schedule | None:
        return self._schedules.get(schedule_id)

    def schedules(self, *, session_id: str | None = None, speaker: str | None = None,
             owned_only: bool = False) -> list[Schedule]:
        """Every schedule by next run (then id); `owned_only`: those of that session or speaker."""
        found = [s for s in self._schedules.values() if not owned_only or s.owned_by(session_id, speaker)]
        found.sort(key=lambda s: (s.next_run_ms if s.next_run_ms is not None else 2**62, s.schedule_id))
        return found

    def to_json(self, schedule: Schedule) -> dict[str, Any]:
        return schedule_json(schedule, self.zone)

    # ------------------------------------------------------------------ changing

    async def create(self, body: Mapping[str, Any], origin: Origin) -> Schedule:
        """Check, store (committed before this returns) and arm a schedule.

        Raises InvalidInput (details name the field) or Conflict (the limit is reached).
        """
        # Checking requests is loaded with the first one.
        from deviceagentd.schedules import requests

        now_ms = self._clock.wall_ms()
        context = requests.Context(self.zone, now_ms, self._commands, self.rooms, origin.speaker)
        request = requests.parse(body, context)
        if len(self._schedules) >= self.settings.max_schedules:
            raise Conflict(f"the gateway already holds {len(self._schedules)} schedules, its limit "
                           "(schedules.max_schedules); delete some first", {"limit": self.settings.max_schedules})
        if request.recurrence is not None:
            next_ms = timing.next_run(request.recurrence, now_ms, self.zone)
        else:
            next_ms = request.once_ms
        schedule = Schedule(
            schedule_id=self._new_id(now_ms),
            name=request.name,
            action=request.action,
            origin=origin,
            created_ms=now_ms,
            once_ms=request.once_ms,
            recurrence=request.recurrence,
            next_run_ms=next_ms,
        )
        self._schedules[schedule.schedule_id] = schedule
        self._arm(schedule)
        self._store.save_schedule(to_record(schedule))
        await self._store.flush()
        log.info("schedule %s created by %s: %s, next run %s", schedule.schedule_id, origin.channel,
                 _summary(schedule), timing.local_iso(next_ms, self.zone) if next_ms else "never")
        return schedule

    async def delete(self, schedule_id: str) -> bool:
        schedule = self._schedules.pop(schedule_id, None)
        if schedule is None:
            return False
        # The heap entry stays; the timer skips entries whose schedule is gone.
        self._store.delete_schedule(schedule_id)
        await self._store.flush()
        log.info("schedule %s deleted", schedule_id)
        return True

    def _new_id(self, now_ms: int) -> str:
        self._sequence = (self._sequence + 1) % 0x10000
        return f"sch-{now_ms:011x}{self._sequence:04x}{uuid.uuid4().hex[:6]}"

    # ------------------------------------------------------------------ lifecycle

    def load(self) -> int:
        """Read every stored schedule (blocking; at start, before `run`). Returns how many."""
        for page in self._store.schedule_pages():
            for record in page:
                try:
                    schedule = from_record(record)
                except StoredScheduleError as exc:
                    log.error("%s; it is kept in the database but not run", exc)
                    continue
                self._schedules[schedule.schedule_id] = schedule
                self._arm(schedule)
        return len(self._schedules)

    async def run(self) -> None:
        """The timer: runs due schedules until cancelled; then waits for running actions."""
        try:
            while True:
                self._wake.clear()
                now_ms = self._clock.wall_ms()
                delay_s = self._fire_due(now_ms)
                if delay_s > 0:
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(delay_s):
                            await self._wake.wait()
        finally:
            await self._finish_running()

    async def _finish_running(self) -> None:
        if self._running:
            _, pending = await asyncio.wait(self._running, timeout=2.0)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

    def wake(self) -> None:
        """Look at the clock again now (after it was set, or in tests)."""
        self._wake.set()

    def _arm(self, schedule: Schedule) -> None:
        if schedule.next_run_ms is None:
            return
        heapq.heappush(self._heap, (schedule.next_run_ms, schedule.schedule_id))
        if self._heap[0][1] == schedule.schedule_id:
            self._wake.set()

    def _fire_due(self, now_ms: int) -> float:
        """Start every due schedule; returns the seconds until the next one (capped)."""
        heap = self._heap
        while heap and heap[0][0] <= now_ms:
            due_ms, schedule_id = heapq.heappop(heap)
            schedule = self._schedules.get(schedule_id)
            if schedule is None or schedule.next_run_ms != due_ms:
                continue  # deleted, or re-armed for another time
            self._due(schedule, now_ms)
        if not heap:
            return MAX_SLEEP_S
        return min(MAX_SLEEP_S, (heap[0][0] - now_ms) / 1000)

    def _due(self, schedule: Schedule, now_ms: int) -> None:
        grace_ms = int(self.settings.missed_grace_s * 1000)
        assert schedule.next_run_ms is not None
        due_ms = schedule.next_run_ms
        missed: list[int] = []
        if schedule.recurrence is not None:
            # Several runs may have fallen due while the gateway was off: the latest may still
            # run, the others are recorded as missed.
            later = timing.runs_between(schedule.recurrence, due_ms, now_ms, self.zone)
            if later:
                missed = [due_ms, *later[:-1]]
                due_ms = later[-1]
        if now_ms - due_ms > grace_ms:
            missed.append(due_ms)
            run = False
        else:
            run = True
        if missed:
            self._record_missed(schedule, missed, now_ms)
        # Bookkeeping first: the next run is armed before this one's action even starts.
        if schedule.recurrence is not None:
            schedule.next_run_ms = timing.next_run(schedule.recurrence, now_ms, self.zone)
            self._arm(schedule)
        else:
            schedule.next_run_ms = None
        if run:
            task = asyncio.create_task(self._fire(schedule, due_ms), name=f"schedule-{schedule.schedule_id}")
            self._running.add(task)
            task.add_done_callback(self._running.discard)
        else:
            self._after_run(schedule, LastRun(now_ms, MISSED, "not run: too late"))

    async def _fire(self, schedule: Schedule, due_ms: int) -> None:
        async with self._slots:
            started_ms = self._clock.wall_ms()
            self._metrics.schedule_lateness.observe(max(0.0, (started_ms - due_ms) / 1000))
            try:
                result = await self._runner.run(schedule, started_ms)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the timer must outlive any one action
                log.exception("schedule %s failed unexpectedly", schedule.schedule_id)
                result = RunResult("failed", f"internal error: {exc!r}", "", "")
        self._metrics.schedule_runs.inc({"outcome": result.outcome})
        self._record_run(schedule, due_ms, started_ms, result)
        self._after_run(schedule, LastRun(started_ms, result.outcome, result.detail))

    def _after_run(self, schedule: Schedule, last: LastRun) -> None:
        if schedule.recurrence is None:
            # A one-off schedule is done; its outcome lives on in the event.
            if self._schedules.pop(schedule.schedule_id, None) is not None:
                self._store.delete_schedule(schedule.schedule_id)
            return
        schedule.last_run = last
        if schedule.schedule_id in self._schedules:
            self._store.save_schedule(to_record(schedule))

    # ------------------------------------------------------------------ events

    def _record_run(self, schedule: Schedule, due_ms: int, started_ms: int, result: RunResult) -> None:
        level = _LEVELS.get(result.outcome, "error")
        data: dict[str, Any] = {
            "scheduleId": schedule.schedule_id,
            "name": schedule.name,
            "action": schedule.action.to_json(),
            "outcome": result.outcome,
            "detail": result.detail,
            "due": iso_ms(due_ms),
            "firedAt": iso_ms(started_ms),
            "lateMs": started_ms - due_ms,
        }
        if result.result:
            data["result"] = result.result
        device_id = result.device_id or _filed_under(schedule)
        product_id = result.product_id or "schedule"
        self._add_event(FIRED_EVENT, level, device_id, product_id, data, due_ms)
        log_level = logging.INFO if result.outcome == OK else logging.WARNING
        log.log(log_level, "schedule %s (%s): %s — %s", schedule.schedule_id, _summary(schedule), result.outcome,
                result.detail)

    def _record_missed(self, schedule: Schedule, missed: list[int], now_ms: int) -> None:
        data = {
            "scheduleId": schedule.schedule_id,
            "name": schedule.name,
            "action": schedule.action.to_json(),
            "outcome": MISSED,
            "detail": f"the gateway could not run it within {self.settings.missed_grace_s:g} s of its time",
            "due": iso_ms(missed[-1]),
            "missed": len(missed),
            "firstMissed": iso_ms(missed[0]),
        }
        self._metrics.schedule_runs.inc({"outcome": MISSED}, len(missed))
        self._add_event(MISSED_EVENT, "warning", _filed_under(schedule), _product_of(schedule), data, missed[-1])
        log.warning("schedule %s (%s): %d run(s) missed, the last due %s", schedule.schedule_id, _summary(schedule),
                    len(missed), timing.local_iso(missed[-1], self.zone))

    def _add_event(self, name: str, level: str, device_id: str, product_id: str, data: dict[str, Any],
                   due_ms: int) -> None:
        now_ms = self._clock.wall_ms()
        stored = self._store.add_event(NewEvent(device_id, product_id, name, level, True, data, due_ms, now_ms,
                                                source="schedule"))
        if self._feed.listening:
            self._feed.publish(SiteChange(ChangeKind.EVENT, device_id, product_id, now_ms, event_to_json(stored),
                                          event_id=stored.id))


def _filed_under(schedule: Schedule) -> str:
    """The device id an event of this schedule is filed under (the device, scene or speaker)."""
    action = schedule.action.to_json()
    return str(action.get("deviceId") or action.get("sceneId") or action.get("speaker")
               or f"room:{action.get('room')}")


def _product_of(schedule: Schedule) -> str:
    kind = schedule.action.to_json()["type"]
    return {"scene": "scene", "say": "speaker", "alarm": "speaker"}.get(kind, "schedule")


def _summary(schedule: Schedule) -> str:
    action = schedule.action.to_json()
    kind = action["type"]
    if kind == "command":
        what = f"{action['command']} on {action['deviceId']}"
    elif kind == "scene":
        what = f"scene {action['sceneId']}"
    else:
        what = f"{kind} on {action.get('speaker') or 'room ' + str(action.get('room'))}"
    return f"{schedule.name + ': ' if schedule.name else ''}{what}"
