"""`site.timezone`: a named IANA zone, or the system's; always a zone with DST rules."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from deviceagentd.config import ConfigError, load_config
from deviceagentd.core.timezone import UnknownTimeZone, site_zone


def test_a_named_zone_keeps_its_dst_rules() -> None:
    zone = site_zone("Europe/Berlin")
    winter = datetime(2026, 1, 15, 12, tzinfo=zone)
    summer = datetime(2026, 7, 15, 12, tzinfo=zone)
    assert winter.utcoffset() == timedelta(hours=1)
    assert summer.utcoffset() == timedelta(hours=2)


def test_empty_means_tz_from_the_environment_then_the_system_file(tmp_path: Path) -> None:
    assert site_zone("", {"TZ": ":Asia/Shanghai"}) == ZoneInfo("Asia/Shanghai")
    system = tmp_path / "localtime"
    system.write_bytes(Path("/usr/share/zoneinfo/America/New_York").read_bytes())
    zone = site_zone("", {"TZ": "not/a-zone"}, zone_file=system)
    assert datetime(2026, 7, 1, tzinfo=zone).utcoffset() == timedelta(hours=-4)
    assert site_zone("", {}, zone_file=tmp_path / "missing") == ZoneInfo("UTC")


def test_an_unknown_zone_is_refused_with_its_key() -> None:
    with pytest.raises(UnknownTimeZone):
        site_zone("Mars/Olympus_Mons")
    with pytest.raises(ConfigError) as caught:
        load_config(None, {"DEVICEAGENTD_SITE_TIMEZONE": "Mars/Olympus_Mons"})
    assert [p.key for p in caught.value.problems] == ["site.timezone"]
    assert load_config(None, {"DEVICEAGENTD_SITE_TIMEZONE": "Asia/Shanghai"}).site.timezone == "Asia/Shanghai"


def test_zones_load_without_sysconfig_s_build_data() -> None:
    # ~0.6 MB of the idle daemon's budget: zoneinfo must get its search path another way.
    import subprocess
    import sys

    code = ("import sys; from deviceagentd.core.timezone import site_zone; z = site_zone('Asia/Shanghai'); "
            "print(z.key, any(m.startswith('_sysconfigdata') for m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"PATH": "/usr/bin:/bin"})
    assert out.stdout.split() == ["Asia/Shanghai", "False"]
