"""When a schedule runs: one-off instants and wall-clock rules (daily, weekdays, cron-like) in the
site's time zone, right across daylight-saving changes.

A recurring rule is a cron rule over local time (minute, hour, day of month, month, day of week);
"daily at 23:00" is `0 23 * * *`. Its next run is found day by day in local dates, so "7:00" stays
7:00 local through a DST change. Two local times are special:

- a time that does not exist (the hour skipped when clocks go forward) runs at the instant the
  gap ends (02:30 on that night runs at 03:00), once — like cron;
- a time that exists twice (the hour repeated when clocks go back) runs once, at its first
  occurrence.

A one-off schedule at a local time that does not exist is refused instead: the person asked for
a time that will not happen.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from typing import Literal

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
# A rule that matches no day within this many years never runs (e.g. February 30th).
HORIZON_YEARS = 8
# How far ahead a one-off schedule may be.
MAX_AHEAD_DAYS = 5 * 366
MINUTE_MS = 60_000

RepeatKind = Literal["daily", "weekdays", "weekends", "days", "cron"]
_MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_TIME_OF_DAY = re.compile(r"([01]?\d|2[0-3]):([0-5]\d)")


class TimingError(ValueError):
    """A time or rule that cannot be used; the message says why, for a person."""


@dataclass(frozen=True, slots=True)
class CronRule:
    """Which minutes, hours, days of the month, months and weekdays match, as bit masks (bit n set:
    value n matches): a gateway may hold ten thousand rules, and five small ints cost a fraction of
    five sets."""

    minutes: int
    hours: int
    days: int  # of the month, bits 1..31
    months: int  # bits 1..12
    weekdays: int  # bit 0 = Monday .. 6 = Sunday (date.weekday())
    # cron's rule: when both day fields are restricted, a day matching either one runs.
    days_restricted: bool
    weekdays_restricted: bool

    def matches_day(self, day: date) -> bool:
        if not self.months >> day.month & 1:
            return False
        in_month = bool(self.days >> day.day & 1)
        in_week = bool(self.weekdays >> day.weekday() & 1)
        if self.days_restricted and self.weekdays_restricted:
            return in_month or in_week
        return in_month and in_week

    def hour_list(self) -> list[int]:
        return _bits(self.hours)

    def minute_list(self) -> list[int]:
        return _bits(self.minutes)


def mask(values: Iterable[int]) -> int:
    out = 0
    for value in values:
        out |= 1 << value
    return out


def _bits(value: int) -> list[int]:
    return [n for n in range(value.bit_length()) if value >> n & 1]


@dataclass(frozen=True, slots=True)
class Recurrence:
    """A recurring rule as the person gave it (`kind`, `at`, `days` or `cron`) and as cron."""

    kind: RepeatKind
    rule: CronRule
    at: str | None = None  # "HH:MM" for daily/weekdays/weekends/days
    days: tuple[str, ...] = ()  # for "days": mon..sun
    cron: str | None = None  # for "cron": the expression as given

    def to_json(self) -> dict[str, object]:
        out: dict[str, object] = {"repeat": self.kind}
        if self.at is not None:
            out["at"] = self.at
        if self.days:
            out["days"] = list(self.days)
        if self.cron is not None:
            out["cron"] = self.cron
        return out


# ----------------------------------------------------------------------------- parsing rules


def time_of_day(text: str) -> tuple[int, int]:
    match = _TIME_OF_DAY.fullmatch(text.strip())
    if match is None:
        raise TimingError(f"{text!r} is not a time of day (HH:MM, 00:00 to 23:59)")
    return int(match.group(1)), int(match.group(2))


@functools.lru_cache(maxsize=4096)
def repeating(repeat: str, at: str) -> Recurrence:
    """"daily" / "weekdays" / "weekends" / "mon,wed,fri" at "HH:MM" (cached: schedules with the same
    rule share one object)."""
    hour, minute = time_of_day(at)
    word = repeat.strip().lower()
    days: tuple[str, ...] = ()
    kind: RepeatKind
    if word in ("daily", "every day", "everyday"):
        kind, weekdays = "daily", frozenset(range(7))
    elif word == "weekdays":
        kind, weekdays = "weekdays", frozenset(range(5))
    elif word == "weekends":
        kind, weekdays = "weekends", frozenset({5, 6})
    else:
        names = [part.strip()[:3] for part in word.split(",") if part.strip()]
        unknown = [name for name in names if name not in WEEKDAYS]
        if not names or unknown:
            raise TimingError(f"repeat must be daily, weekdays, weekends or days like \"mon,wed,fri\" (got {repeat!r})")
        weekdays = frozenset(WEEKDAYS.index(name) for name in names)
        kind, days = "days", tuple(WEEKDAYS[i] for i in sorted(weekdays))
    rule = CronRule(mask([minute]), mask([hour]), mask(range(1, 32)), mask(range(1, 13)), mask(weekdays),
                    days_restricted=False, weekdays_restricted=kind != "daily")
    return Recurrence(kind, rule, at=f"{hour:02d}:{minute:02d}", days=days)


@functools.lru_cache(maxsize=4096)
def parse_cron(expression: str) -> Recurrence:
    """Five fields (minute hour day-of-month month day-of-week) with `*`, lists, ranges, steps and
    names (jan..dec, sun..sat; 0 and 7 are Sunday), or @hourly/@daily/@weekly/@monthly/@yearly."""
    text = expression.strip()
    fields = _MACROS.get(text.lower(), text).split()
    if len(fields) != 5:
        raise TimingError(f"cron needs 5 fields (minute hour day-of-month month day-of-week), got {len(fields)}")
    minutes = _field(fields[0], "minute", 0, 59, ())
    hours = _field(fields[1], "hour", 0, 23, ())
    days = _field(fields[2], "day of month", 1, 31, ())
    months = _field(fields[3], "month", 1, 12, _MONTHS)
    # cron counts Sunday as 0 (and 7); Python's weekday() counts Monday as 0.
    cron_weekdays = _field(fields[4], "day of week", 0, 7, ("sun", "mon", "tue", "wed", "thu", "fri", "sat"))
    weekdays = {(d - 1) % 7 for d in cron_weekdays}
    rule = CronRule(mask(minutes), mask(hours), mask(days), mask(months), mask(weekdays),
                    days_restricted=not fields[2].startswith("*"), weekdays_restricted=not fields[4].startswith("*"))
    return Recurrence("cron", rule, cron=text)


def _field(text: str, what: str, low: int, high: int, names: tuple[str, ...]) -> frozenset[int]:
    values: set[int] = set()
    for part in text.lower().split(","):
        base, slash, step_text = part.partition("/")
        step = 1
        if slash:
            if not step_text.isdigit() or int(step_text) == 0:
                raise TimingError(f"cron {what}: step {step_text!r} must be a positive number")
            step = int(step_text)
        if base == "*":
            first, last = low, high
        elif "-" in base:
            start, _, end = base.partition("-")
            first, last = _value(start, what, low, high, names), _value(end, what, low, high, names)
            if first > last:
                raise TimingError(f"cron {what}: range {base!r} goes backwards")
        else:
            first = _value(base, what, low, high, names)
            last = high if slash else first
        values.update(range(first, last + 1, step))
    return frozenset(values)


def _value(text: str, what: str, low: int, high: int, names: tuple[str, ...]) -> int:
    if text in names:
        # Names count from `low`: jan = 1, sun = 0.
        return names.index(text) + low
    if not text.isdigit() or not low <= int(text) <= high:
        raise TimingError(f"cron {what}: {text!r} is not a value from {low} to {high}")
    return int(text)


# ----------------------------------------------------------------------------- local times


def local_instant(moment: datetime, zone: tzinfo) -> int | None:
    """Epoch ms of a naive local time in `zone`; None if that local time does not exist there.
    A local time that exists twice gives its first occurrence."""
    aware = moment.replace(tzinfo=zone, fold=0)
    utc = aware.astimezone(UTC)
    if utc.astimezone(zone).replace(tzinfo=None) != moment:
        return None
    return _ms(utc)


def gap_end(moment: datetime, zone: tzinfo) -> int:
    """The instant a DST gap that swallowed the naive local time `moment` ends."""
    # Before the gap, `fold=1` reads `moment` with the later offset: an instant before the
    # change. Walk forward to the first instant whose local time is past `moment`.
    probe = moment.replace(tzinfo=zone, fold=1).astimezone(UTC).replace(second=0, microsecond=0)
    for _ in range(24 * 60):
        # Every local time in the gap is skipped, so the first instant past `moment` on the
        # local clock is where the gap ends (zones change on whole minutes).
        if probe.astimezone(zone).replace(tzinfo=None) > moment:
            return _ms(probe)
        probe += timedelta(minutes=1)
    raise TimingError(f"{moment:%Y-%m-%d %H:%M} could not be placed in {zone}")  # pragma: no cover


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def describe_gap(moment: datetime, zone: tzinfo) -> str:
    return (f"{moment:%Y-%m-%d %H:%M} does not exist in {zone} (the clocks skip that hour for daylight "
            "saving time)")


# ----------------------------------------------------------------------------- next runs


def next_run(recurrence: Recurrence, after_ms: int, zone: tzinfo) -> int | None:
    """The first run strictly after `after_ms`; None if the rule never matches again."""
    rule = recurrence.rule
    start = datetime.fromtimestamp(after_ms / 1000, tz=zone).replace(tzinfo=None)
    hours = rule.hour_list()
    minutes = rule.minute_list()
    day = start.date()
    last_day = day + timedelta(days=366 * HORIZON_YEARS)
    while day <= last_day:
        if rule.matches_day(day):
            for hour in hours:
                if day == start.date() and hour < start.hour:
                    continue
                for minute in minutes:
                    moment = datetime.combine(day, time(hour, minute))
                    at_ms = local_instant(moment, zone)
                    if at_ms is None:
                        at_ms = gap_end(moment, zone)
                    if at_ms > after_ms:
                        return at_ms
        day += timedelta(days=1)
    return None


def runs_between(recurrence: Recurrence, after_ms: int, until_ms: int, zone: tzinfo, limit: int = 1000) -> list[int]:
    """Runs in (after_ms, until_ms], oldest first, at most `limit` (the newest kept)."""
    found: list[int] = []
    cursor = after_ms
    while True:
        following = next_run(recurrence, cursor, zone)
        if following is None or following > until_ms:
            return found
        found.append(following)
        if len(found) > limit:
            found.pop(0)
        cursor = following


def next_time_of_day(at: str, now_ms: int, zone: tzinfo) -> int:
    """The next time the local clock shows `at` ("07:00"): today if still ahead, else tomorrow.
    Raises TimingError when that local time does not exist that day (DST gap)."""
    hour, minute = time_of_day(at)
    now_local = datetime.fromtimestamp(now_ms / 1000, tz=zone).replace(tzinfo=None)
    for offset in (0, 1, 2):
        moment = datetime.combine(now_local.date() + timedelta(days=offset), time(hour, minute))
        at_ms = local_instant(moment, zone)
        if at_ms is None:
            if moment > now_local:
                raise TimingError(describe_gap(moment, zone))
            continue
        if at_ms > now_ms:
            return at_ms
    raise TimingError(f"{at} could not be placed in {zone}")  # pragma: no cover


def parse_local(text: str, zone: tzinfo) -> int:
    """An ISO 8601 date and time: with an offset or Z it is that instant; without, a local time in
    `zone` (which must exist)."""
    raw = text.strip()
    try:
        moment = datetime.fromisoformat(raw.replace("Z", "+00:00") if raw.endswith(("Z", "z")) else raw)
    except ValueError:
        raise TimingError(f"{text!r} is not a time: use HH:MM, YYYY-MM-DDTHH:MM (local) or an ISO 8601 "
                          "date and time with an offset") from None
    if "T" not in raw.upper() and " " not in raw:
        raise TimingError(f"{text!r} has no time of day: use YYYY-MM-DDTHH:MM")
    if moment.tzinfo is not None:
        return _ms(moment)
    at_ms = local_instant(moment, zone)
    if at_ms is None:
        raise TimingError(describe_gap(moment, zone))
    return at_ms


def local_iso(epoch_ms: int, zone: tzinfo) -> str:
    """An instant as the site's local time with its offset: 2026-12-08T07:00:00+08:00."""
    return datetime.fromtimestamp(epoch_ms / 1000, tz=zone).isoformat(timespec="seconds")
