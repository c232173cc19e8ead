"""The schedule service on a real SQLite store: runs on time, survives restarts (a run that fell due
while the gateway was off runs once within the grace, older ones are recorded as missed), limits,
deletes, and every run or miss is an event with its outcome.

The clock is a settable one, so a day passes in no time; the timer loop itself runs for real.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any, cast
from zoneinfo import ZoneInfo

import pytest
from daemon_harness import wait_until

from deviceagentd.core.clock import Clock
from deviceagentd.core.commands import CommandService
from deviceagentd.core.errors import Conflict, InvalidInput
from deviceagentd.core.feed import SiteChange, SiteFeed
from deviceagentd.core.metrics import Metrics
from deviceagentd.core.origin import Origin
from deviceagentd.schedules.model import Schedule
from deviceagentd.schedules.runner import ActionRunner, RunResult
from deviceagentd.schedules.service import ScheduleService, ScheduleSettings
from deviceagentd.store.records import EventRecord, ScheduleRecord
from deviceagentd.store.settings import StoreSettings
from deviceagentd.store.store import Store

ZONE = ZoneInfo("Europe/Berlin")
SAY = {"type": "say", "text": "hello", "speaker": "aa:bb:cc:dd:ee:01"}


def local_ms(*parts: int) -> int:
    return int(datetime(*parts, tzinfo=ZONE).timestamp() * 1000)  # type: ignore[misc]


class SettableClock(Clock):
    def __init__(self, now_ms: int) -> None:
        self.now_ms = now_ms

    def wall_ms(self) -> int:
        return self.now_ms


class RecordingRunner:
    """Stands in for ActionRunner: records what ran and when."""

    def __init__(self, outcome: str = "ok") -> None:
        self.runs: list[tuple[str, int]] = []
        self.outcome = outcome

    async def run(self, schedule: Schedule, now_ms: int) -> RunResult:
        self.runs.append((schedule.schedule_id, now_ms))
        speaker = schedule.action.to_json().get("speaker", "")
        return RunResult(self.outcome, "said it", speaker, "speaker", {"text": "hello"})


class Site:
    """A schedule service over a store file that can be closed and opened again (a restart)."""

    def __init__(self, path: Path, clock: SettableClock, grace_s: float = 300.0, max_schedules: int = 100) -> None:
        self.path = path
        self.clock = clock
        self.grace_s = grace_s
        self.max_schedules = max_schedules
        self.runner = RecordingRunner()
        self.feed = SiteFeed()
        self.changes: list[SiteChange] = []
        self.feed.subscribe(self.changes.append)
        self.store: Store | None = None
        self.service: ScheduleService | None = None
        self.task: asyncio.Task[None] | None = None

    async def start(self) -> ScheduleService:
        self.store = Store(self.path, StoreSettings(batch_interval_s=0.05), self.clock.wall_ms)
        self.store.open()
        self.service = ScheduleService(
            self.store, cast(CommandService, None), cast(ActionRunner, self.runner), ZONE, Metrics(), self.feed,
            None, ScheduleSettings(self.max_schedules, self.grace_s), self.clock)
        self.service.load()
        self.task = asyncio.create_task(self.service.run())
        return self.service

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
        if self.store is not None:
            self.store.close()
        self.task = self.store = self.service = None

    async def restart(self, at_ms: int) -> ScheduleService:
        await self.stop()
        self.clock.now_ms = at_ms
        return await self.start()

    async def advance(self, to_ms: int) -> None:
        self.clock.now_ms = to_ms
        assert self.service is not None
        self.service.wake()
        await asyncio.sleep(0.02)

    async def events(self, name: str) -> list[EventRecord]:
        assert self.store is not None
        return list(reversed(await self.store.query_events(None, limit=100, event=name)))


@pytest.fixture
async def site(tmp_path: Path) -> AsyncIterator[Site]:
    s = Site(tmp_path / "state.db", SettableClock(local_ms(2026, 12, 7, 6, 0)))
    try:
        yield s
    finally:
        await s.stop()


async def test_a_timer_runs_once_on_time_and_is_gone_with_its_event(site: Site) -> None:
    service = await site.start()
    start = site.clock.now_ms
    timer = await service.create({"name": "hello", "inSeconds": 60, "action": SAY}, Origin("http"))
    await site.advance(start + 59_900)
    assert site.runner.runs == []
    await site.advance(start + 60_003)
    await wait_until(lambda: site.runner.runs)
    assert site.runner.runs == [(timer.schedule_id, start + 60_003)]
    await wait_until(lambda: service.get(timer.schedule_id) is None)
    assert site.store is not None
    await site.store.flush()
    assert site.store.load_schedules() == []
    [event] = await site.events("schedule_fired")
    assert (event.device_id, event.product_id, event.source, event.level) == (SAY["speaker"], "speaker", "schedule",
                                                                             "info")
    assert event.data["scheduleId"] == timer.schedule_id and event.data["outcome"] == "ok"
    assert event.data["lateMs"] == 3 and event.ts_ms == start + 60_000
    # The feed carries it too (the live stream, the uplink).
    assert [c.data["event"] for c in site.changes] == ["schedule_fired"]
    await site.advance(start + 3_600_000)
    assert len(site.runner.runs) == 1


async def test_a_recurring_schedule_keeps_running_and_remembers_its_last_run(site: Site) -> None:
    service = await site.start()
    daily = await service.create({"at": "07:00", "repeat": "daily", "action": SAY}, Origin("http"))
    assert daily.next_run_ms == local_ms(2026, 12, 7, 7, 0)
    for day in (7, 8, 9):
        await site.advance(local_ms(2026, 12, day, 7, 0))
        await wait_until(lambda d=day: len(site.runner.runs) == d - 6)
    schedule = service.get(daily.schedule_id)
    assert schedule is not None and schedule.next_run_ms == local_ms(2026, 12, 10, 7, 0)
    assert schedule.last_run is not None and schedule.last_run.outcome == "ok"
    assert service.to_json(schedule)["lastRun"]["at"] == "2026-12-09T07:00:00+01:00"


async def test_after_a_restart_a_run_within_the_grace_runs_once(site: Site) -> None:
    service = await site.start()
    daily = await service.create({"at": "07:00", "repeat": "daily", "action": SAY}, Origin("http"))
    once = await service.create({"at": "2026-12-07T06:30", "action": SAY}, Origin("http"))
    # The gateway is off from 06:10 to 07:02: both fell due, both within the 300 s grace? No: the
    # one-off one at 06:30 is 32 minutes late (missed), the daily one 2 minutes (runs).
    await site.advance(local_ms(2026, 12, 7, 6, 10))
    service = await site.restart(local_ms(2026, 12, 7, 7, 2))
    await wait_until(lambda: site.runner.runs)
    assert site.runner.runs == [(daily.schedule_id, local_ms(2026, 12, 7, 7, 2))]
    [missed] = await site.events("schedule_missed")
    assert missed.data["scheduleId"] == once.schedule_id and missed.data["missed"] == 1
    assert missed.level == "warning" and missed.ts_ms == local_ms(2026, 12, 7, 6, 30)
    assert service.get(once.schedule_id) is None
    [fired] = await site.events("schedule_fired")
    assert fired.data["lateMs"] == 120_000
    kept = service.get(daily.schedule_id)
    assert kept is not None and kept.next_run_ms == local_ms(2026, 12, 8, 7, 0)
    # And once more: nothing is run twice after another restart.
    service = await site.restart(local_ms(2026, 12, 7, 7, 3))
    await asyncio.sleep(0.05)
    assert len(site.runner.runs) == 1


async def test_runs_missed_while_off_are_recorded_and_only_the_latest_runs(site: Site) -> None:
    service = await site.start()
    hourly = await service.create({"cron": "0 * * * *", "action": SAY}, Origin("http"))
    # Off from 06:00 to 11:01: 07:00 … 10:00 are too late, 11:00 is within the grace.
    service = await site.restart(local_ms(2026, 12, 7, 11, 1))
    await wait_until(lambda: site.runner.runs)
    [missed] = await site.events("schedule_missed")
    assert missed.data["missed"] == 4
    assert (missed.data["firstMissed"], missed.data["due"]) == ("2026-12-07T06:00:00.000Z", "2026-12-07T09:00:00.000Z")
    [fired] = await site.events("schedule_fired")
    assert fired.ts_ms == local_ms(2026, 12, 7, 11, 0)
    kept = service.get(hourly.schedule_id)
    assert kept is not None and kept.next_run_ms == local_ms(2026, 12, 7, 12, 0)


async def test_nothing_runs_late_when_the_grace_is_zero(tmp_path: Path) -> None:
    site = Site(tmp_path / "state.db", SettableClock(local_ms(2026, 12, 7, 6, 0)), grace_s=0)
    try:
        service = await site.start()
        await service.create({"at": "06:30", "action": SAY}, Origin("http"))
        await site.restart(local_ms(2026, 12, 7, 6, 30, 1))
        await wait_until(lambda: site.store is not None and site.service is not None and site.service.count == 0)
        assert site.runner.runs == []
        assert len(await site.events("schedule_missed")) == 1
    finally:
        await site.stop()


async def test_the_limit_is_kept_and_a_deleted_schedule_never_runs(tmp_path: Path) -> None:
    site = Site(tmp_path / "state.db", SettableClock(local_ms(2026, 12, 7, 6, 0)), max_schedules=2)
    try:
        service = await site.start()
        first = await service.create({"inSeconds": 10, "action": SAY}, Origin("http"))
        await service.create({"inSeconds": 20, "action": SAY}, Origin("http"))
        with pytest.raises(Conflict, match=r"schedules\.max_schedules") as caught:
            await service.create({"inSeconds": 30, "action": SAY}, Origin("http"))
        assert caught.value.details == {"limit": 2}
        assert await service.delete(first.schedule_id)
        assert not await service.delete(first.schedule_id)
        third = await service.create({"inSeconds": 30, "action": SAY}, Origin("http"))
        await site.advance(site.clock.now_ms + 40_000)
        await wait_until(lambda: len(site.runner.runs) == 2)
        assert first.schedule_id not in {run[0] for run in site.runner.runs}
        assert third.schedule_id in {run[0] for run in site.runner.runs}
    finally:
        await site.stop()


async def test_created_schedules_are_on_disk_before_create_returns(site: Site) -> None:
    service = await site.start()
    # A batch window far longer than the test: only the flush in create() can have written it.
    assert site.store is not None
    site.store.close()
    site.store = Store(site.path, StoreSettings(batch_interval_s=30.0), site.clock.wall_ms)
    site.store.open()
    service._store = site.store  # the same service, on a slow-committing store
    made = await service.create({"at": "23:00", "repeat": "weekdays", "action": SAY}, Origin("agent", "s1", "spk"))
    with sqlite3.connect(site.path) as conn:
        rows = conn.execute("SELECT schedule_id FROM schedules").fetchall()
    assert rows == [(made.schedule_id,)]


async def test_a_stored_schedule_this_version_cannot_read_is_skipped(site: Site, caplog: Any) -> None:
    service = await site.start()
    good = await service.create({"at": "08:00", "repeat": "daily", "action": SAY}, Origin("http"))
    assert site.store is not None
    site.store.save_schedule(ScheduleRecord("sch-broken", {"when": {"repeat": "fortnightly"}}, 1, 2))
    service = await site.restart(site.clock.now_ms)
    assert service.count == 1 and service.get(good.schedule_id) is not None
    assert "sch-broken cannot be read" in caplog.text


@pytest.mark.parametrize(("body", "field"), [
    ({"at": "2026-12-07T05:00", "action": SAY}, "at"),  # in the past
    ({"at": "2027-03-28T02:30", "action": SAY}, "at"),  # skipped by the DST change
    ({"at": "2040-01-01T00:00", "action": SAY}, "at"),  # more than five years ahead
    ({"cron": "0 0 30 2 *", "action": SAY}, "cron"),  # never runs
    ({"cron": "61 * * * *", "action": SAY}, "cron"),
    ({"at": "07:00", "repeat": "fortnightly", "action": SAY}, "repeat"),
    ({"inSeconds": 10, "repeat": "daily", "action": SAY}, "repeat"),
    ({"inSeconds": 0, "action": SAY}, "inSeconds"),
    ({"inSeconds": "10", "action": SAY}, "inSeconds"),
    ({"inSeconds": True, "action": SAY}, "inSeconds"),
    ({"inSeconds": 10, "at": "07:00", "action": SAY}, "at"),
    ({"action": SAY}, "at"),
    ({"inSeconds": 10}, "action"),
    ({"inSeconds": 10, "action": {"type": "dance"}}, "action.type"),
    ({"inSeconds": 10, "action": {"type": "say", "text": "", "speaker": "x"}}, "action.text"),
    ({"inSeconds": 10, "action": {"type": "say", "text": "hi"}}, "action.speaker"),
    ({"inSeconds": 10, "action": {"type": "say", "text": "hi", "speaker": "a", "room": "101"}}, "action.speaker"),
    ({"inSeconds": 10, "action": {"type": "say", "text": "hi", "room": "101"}}, "action.room"),
    ({"inSeconds": 10, "action": {"type": "alarm", "speaker": "a", "language": "fr"}}, "action.language"),
    ({"inSeconds": 10, "action": {"type": "scene", "sceneId": "SCENE#sleep-101"}}, "action.sceneId"),
    ({"inSeconds": 10, "action": {**SAY, "volume": 3}}, "action.volume"),
    ({"inSeconds": 10, "action": SAY, "priority": 1}, "priority"),
    ({"name": "x" * 101, "inSeconds": 10, "action": SAY}, "name"),
])
async def test_bad_requests_name_the_field_and_store_nothing(site: Site, body: dict[str, Any], field: str) -> None:
    service = await site.start()
    with pytest.raises(InvalidInput) as caught:
        await service.create(body, Origin("http"))
    assert field in [item["field"] for item in caught.value.details], caught.value.details
    assert service.count == 0
