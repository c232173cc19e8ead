"""When schedules run: rules, one-off times and daylight-saving changes (schedules/timing.py).

Europe/Berlin changes on 2026-03-29 (02:00 → 03:00) and 2026-10-25 (03:00 → 02:00);
America/New_York on 2026-03-08 and 2026-11-01; Asia/Shanghai has no DST.
"""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from deviceagentd.schedules import timing
from deviceagentd.schedules.timing import TimingError

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")
SHANGHAI = ZoneInfo("Asia/Shanghai")


def ms(zone: ZoneInfo, *parts: int) -> int:
    return int(datetime(*parts, tzinfo=zone).timestamp() * 1000)  # type: ignore[misc]


def runs(recurrence: timing.Recurrence, start: int, zone: ZoneInfo, count: int) -> list[str]:
    out = []
    for _ in range(count):
        following = timing.next_run(recurrence, start, zone)
        assert following is not None
        out.append(timing.local_iso(following, zone))
        start = following
    return out


def test_daily_keeps_its_local_time_across_both_dst_changes() -> None:
    daily = timing.repeating("daily", "07:00")
    assert runs(daily, ms(BERLIN, 2026, 3, 27, 12), BERLIN, 4) == [
        "2026-03-28T07:00:00+01:00", "2026-03-29T07:00:00+02:00", "2026-03-30T07:00:00+02:00",
        "2026-03-31T07:00:00+02:00"]
    assert runs(daily, ms(BERLIN, 2026, 10, 24, 12), BERLIN, 2) == [
        "2026-10-25T07:00:00+01:00", "2026-10-26T07:00:00+01:00"]


def test_a_time_skipped_by_the_spring_change_runs_once_when_the_gap_ends() -> None:
    daily = timing.repeating("daily", "02:30")
    assert runs(daily, ms(BERLIN, 2026, 3, 28, 12), BERLIN, 2) == [
        "2026-03-29T03:00:00+02:00", "2026-03-30T02:30:00+02:00"]
    # Every 15 minutes through the gap: the four skipped times are one run at 03:00.
    quarter = timing.parse_cron("*/15 * * * *")
    assert runs(quarter, ms(BERLIN, 2026, 3, 29, 1, 40), BERLIN, 4) == [
        "2026-03-29T01:45:00+01:00", "2026-03-29T03:00:00+02:00", "2026-03-29T03:15:00+02:00",
        "2026-03-29T03:30:00+02:00"]


def test_a_time_repeated_by_the_autumn_change_runs_once_at_its_first_occurrence() -> None:
    daily = timing.repeating("daily", "02:30")
    assert runs(daily, ms(BERLIN, 2026, 10, 24, 12), BERLIN, 2) == [
        "2026-10-25T02:30:00+02:00", "2026-10-26T02:30:00+01:00"]
    hourly = timing.parse_cron("0 * * * *")
    assert runs(hourly, ms(BERLIN, 2026, 10, 25, 0, 30), BERLIN, 4) == [
        "2026-10-25T01:00:00+02:00", "2026-10-25T02:00:00+02:00", "2026-10-25T03:00:00+01:00",
        "2026-10-25T04:00:00+01:00"]


def test_new_york_changes_too() -> None:
    daily = timing.repeating("daily", "02:15")
    assert runs(daily, ms(NEW_YORK, 2026, 3, 7, 12), NEW_YORK, 2) == [
        "2026-03-08T03:00:00-04:00", "2026-03-09T02:15:00-04:00"]


def test_weekdays_weekends_and_named_days() -> None:
    friday_noon = ms(SHANGHAI, 2026, 12, 4, 12)  # a Friday
    assert runs(timing.repeating("weekdays", "07:30"), friday_noon, SHANGHAI, 2) == [
        "2026-12-07T07:30:00+08:00", "2026-12-08T07:30:00+08:00"]
    assert runs(timing.repeating("weekends", "09:00"), friday_noon, SHANGHAI, 3) == [
        "2026-12-05T09:00:00+08:00", "2026-12-06T09:00:00+08:00", "2026-12-12T09:00:00+08:00"]
    days = timing.repeating("Mon,Wednesday, fri", "18:00")
    assert days.days == ("mon", "wed", "fri")
    assert runs(days, friday_noon, SHANGHAI, 3) == [
        "2026-12-04T18:00:00+08:00", "2026-12-07T18:00:00+08:00", "2026-12-09T18:00:00+08:00"]


def test_cron_fields_names_steps_and_the_day_rule() -> None:
    rule = timing.parse_cron("0 9 * * mon-fri").rule
    assert rule.weekdays == timing.mask(range(5)) and rule.hour_list() == [9] and rule.minute_list() == [0]
    twenty = timing.parse_cron("*/20 8-10 * jan,dec *").rule
    assert (twenty.minute_list(), twenty.hour_list(), twenty.months) == ([0, 20, 40], [8, 9, 10], timing.mask([1, 12]))
    sunday = timing.mask([6])
    assert timing.parse_cron("0 0 * * 0").rule.weekdays == sunday == timing.parse_cron("0 0 * * 7").rule.weekdays
    # The same rule is one object, however many schedules use it.
    assert timing.parse_cron("0 23 * * *") is timing.parse_cron("0 23 * * *")
    assert timing.repeating("daily", "23:00") is timing.repeating("daily", "23:00")
    assert timing.parse_cron("@daily").rule == timing.parse_cron("0 0 * * *").rule
    # Both day fields restricted: a day matching either runs (cron's rule).
    either = timing.parse_cron("0 12 1 * mon")
    start = ms(SHANGHAI, 2026, 11, 29)
    assert runs(either, start, SHANGHAI, 3) == [
        "2026-11-30T12:00:00+08:00", "2026-12-01T12:00:00+08:00", "2026-12-07T12:00:00+08:00"]


@pytest.mark.parametrize(("expression", "why"), [
    ("* * * *", "5 fields"), ("60 * * * *", "minute"), ("* 24 * * *", "hour"), ("* * 0 * *", "day of month"),
    ("* * * 13 *", "month"), ("* * * * 8", "day of week"), ("*/0 * * * *", "step"), ("5-1 * * * *", "backwards"),
    ("x * * * *", "minute"), ("@sometimes", "5 fields"),
])
def test_bad_cron_is_refused_with_the_field(expression: str, why: str) -> None:
    with pytest.raises(TimingError, match=why):
        timing.parse_cron(expression)


def test_a_rule_that_never_runs_has_no_next_run() -> None:
    assert timing.next_run(timing.parse_cron("0 0 30 2 *"), ms(SHANGHAI, 2026, 1, 1), SHANGHAI) is None
    # February 29th does run, in leap years.
    leap = timing.next_run(timing.parse_cron("0 0 29 2 *"), ms(SHANGHAI, 2026, 1, 1), SHANGHAI)
    assert leap is not None and timing.local_iso(leap, SHANGHAI) == "2028-02-29T00:00:00+08:00"


@pytest.mark.parametrize(("repeat", "at"), [
    ("hourly", "07:00"), ("daily", "25:00"), ("daily", "7"), ("mon,xyz", "07:00"), ("", "07:00")])
def test_bad_repeat_or_time_of_day_is_refused(repeat: str, at: str) -> None:
    with pytest.raises(TimingError):
        timing.repeating(repeat, at)


def test_one_off_local_times() -> None:
    assert timing.local_iso(timing.parse_local("2026-12-08T07:00", SHANGHAI), SHANGHAI) == "2026-12-08T07:00:00+08:00"
    assert timing.parse_local("2026-12-08T07:00:00Z", SHANGHAI) == ms(UTC, 2026, 12, 8, 7)  # type: ignore[arg-type]
    assert timing.parse_local("2026-12-08T07:00+01:00", SHANGHAI) == ms(BERLIN, 2026, 12, 8, 7)
    # The repeated autumn hour: the first occurrence.
    assert timing.local_iso(timing.parse_local("2026-10-25T02:30", BERLIN), BERLIN) == "2026-10-25T02:30:00+02:00"
    with pytest.raises(TimingError, match="does not exist in Europe/Berlin"):
        timing.parse_local("2026-03-29T02:30", BERLIN)
    for bad in ("tomorrow", "2026-12-08", "2026-13-01T07:00", "07:00:00:00"):
        with pytest.raises(TimingError):
            timing.parse_local(bad, SHANGHAI)


def test_next_time_of_day() -> None:
    now = ms(BERLIN, 2026, 3, 28, 12)
    assert timing.local_iso(timing.next_time_of_day("13:00", now, BERLIN), BERLIN) == "2026-03-28T13:00:00+01:00"
    assert timing.local_iso(timing.next_time_of_day("07:00", now, BERLIN), BERLIN) == "2026-03-29T07:00:00+02:00"
    # Tonight's 02:30 does not happen: refused, not moved.
    with pytest.raises(TimingError, match="does not exist"):
        timing.next_time_of_day("02:30", now, BERLIN)


def test_runs_between_keeps_the_newest() -> None:
    hourly = timing.parse_cron("0 * * * *")
    start = ms(SHANGHAI, 2026, 12, 7, 0, 30)
    found = timing.runs_between(hourly, start, start + 5 * 3_600_000, SHANGHAI)
    assert [timing.local_iso(t, SHANGHAI)[11:16] for t in found] == ["01:00", "02:00", "03:00", "04:00", "05:00"]
    assert len(timing.runs_between(timing.parse_cron("* * * * *"), start, start + 86_400_000, SHANGHAI, limit=10)) == 10
