"""The site's time zone: what "7 in the morning" and "today" mean for this gateway.

`site.timezone` names an IANA zone ("Asia/Shanghai", "Europe/Berlin"); empty means the system's
own (`$TZ`, else /etc/localtime, else UTC). Always a real zone with its DST rules, never a fixed
offset taken from the clock now, so a time computed for next week is right across a DST change.
"""

from __future__ import annotations

import os
import sys
from datetime import tzinfo
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from zoneinfo import ZoneInfo

SYSTEM_ZONE_FILE = Path("/etc/localtime")
# CPython's default zone search path (`configure --with-tzpath`), the value Debian's and
# pyenv's builds report. zoneinfo reads the real one from sysconfig's build data at import
# unless PYTHONTZPATH is set, and that data stays resident: ~0.6 MB of the idle daemon's
# 50 MB budget for one string.
DEFAULT_TZPATH = "/usr/share/zoneinfo:/usr/lib/zoneinfo:/usr/share/lib/zoneinfo:/etc/zoneinfo"


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
    zone_class = _zone_class()
    try:
        with zone_file.open("rb") as fh:
            return zone_class.from_file(fh, key=_key_of(zone_file))
    except (OSError, ValueError):
        return zone_class("UTC")


def _named(name: str) -> ZoneInfo:
    try:
        return _zone_class()(name)
    except (KeyError, ValueError) as exc:  # ZoneInfoNotFoundError is a KeyError
        raise UnknownTimeZone(f"{name!r} is not a known IANA time zone (e.g. Europe/Berlin, Asia/Shanghai)") from exc


def _zone_class() -> type[ZoneInfo]:
    """zoneinfo.ZoneInfo, its module imported without loading sysconfig's build data (DEFAULT_TZPATH)."""
    if "zoneinfo" not in sys.modules and "PYTHONTZPATH" not in os.environ:
        os.environ["PYTHONTZPATH"] = DEFAULT_TZPATH
        try:
            import zoneinfo
        finally:
            # Only zoneinfo's import reads it; children (espeak-ng, ...) need not see it.
            del os.environ["PYTHONTZPATH"]
    import zoneinfo

    return zoneinfo.ZoneInfo


def _key_of(zone_file: Path) -> str:
    # /etc/localtime is usually a link to /usr/share/zoneinfo/<Area>/<City>: keep that name.
    try:
        target = str(zone_file.resolve())
    except OSError:
        return "localtime"
    marker = "/zoneinfo/"
    return target.split(marker, 1)[1] if marker in target else "localtime"
