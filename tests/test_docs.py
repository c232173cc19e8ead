"""Docs that must stay true: every configuration key is documented and in the example file."""

from __future__ import annotations

import tomllib
from pathlib import Path

from deviceagentd.config import config_keys, env_name, load_config

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "etc" / "deviceagentd" / "deviceagentd.toml"


def _all_dotted(table: dict[str, object], prefix: str = "") -> set[str]:
    out: set[str] = set()
    for key, value in table.items():
        if isinstance(value, dict):
            out |= _all_dotted(value, f"{prefix}{key}.")
        else:
            out.add(f"{prefix}{key}")
    return out


def test_every_config_key_is_documented() -> None:
    doc = (REPO / "docs" / "configuration.md").read_text()
    missing = [key for key in config_keys() if f"`{key}`" not in doc]
    assert not missing, f"undocumented keys in docs/configuration.md: {missing}"


def test_env_names_follow_section_key() -> None:
    assert env_name("mqtt.topics.command") == "DEVICEAGENTD_MQTT_TOPICS_COMMAND"
    assert env_name("devices.offline_after_s") == "DEVICEAGENTD_DEVICES_OFFLINE_AFTER_S"


def test_example_config_lists_every_key_and_loads() -> None:
    present = _all_dotted(tomllib.loads(EXAMPLE.read_text()))
    expected = set(config_keys())
    # products.dir is commented out on purpose: its default depends on how it was installed.
    assert expected - present == {"products.dir"}
    assert present <= expected, f"example has unknown keys: {present - expected}"
    assert load_config(EXAMPLE, {}).storage.dir == "/var/lib/deviceagentd"
