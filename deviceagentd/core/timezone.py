"""The site's time zone: what "7 in the morning" and "today" mean for this gateway.

`site.timezone` names an IANA zone ("Asia/Shanghai", "Europe/Berlin"); empty means the system's
own (`$TZ`, else /etc/localtime, else UTC). Always a real zone with its DST rules, never a fixed
offset taken from the clock now, so a time computed for next week is right across a DST change.
"""

from __future__ import annotations

import os
from datetime import tzinfo
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

SYSTEM_ZONE_FILE = Path("/etc/localtime")


class UnknownTimeZone(ValueError):
    pass


def site_zone(name: str, environ: dict[str, str] | None = None, zone_file: Path = SYSTEM_ZONE_FILE) -> tzinfo:
    """The zone named `name`, or the system's when `name` is empty. Raises UnknownTimeZone."""
    if name:
        return _named(name)
    env = os.environ if environ is None else environ
    tz = env.get("TZ", "").lstrip(":")
    if tz:
        try:
            return _named(tz)
        except UnknownTimeZone:
            pass  # a POSIX TZ rule string or a typo: fall back to the system file
    try:
        with zone_file.open("rb") as fh:
            return ZoneInfo.from_file(fh, key=_key_of(zone_file))
    except (OSError, ValueError):
        return ZoneInfo("UTC")


def _named(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise UnknownTimeZone(f"{name!r} is not a known IANA time zone (e.g. Europe/Berlin, Asia/Shanghai)") from exc


def _key_of(zone_file: Path) -> str:
    # /etc/localtime is usually a link to /usr/share/zoneinfo/<Area>/<City>: keep that name.
    try:
        target = str(zone_file.resolve())
    except OSError:
        return "localtime"
    marker = "/zoneinfo/"
    return target.split(marker, 1)[1] if marker in target else "localtime"
