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


def test_every_metric_is_in_the_operations_table() -> None:
    """Every series name the daemon registers (a string literal in the package) has a row."""
    import re

    names: set[str] = set()
    for source in (REPO / "deviceagentd").rglob("*.py"):
        names |= set(re.findall(r'"(deviceagentd_[a-z_]+)"', source.read_text()))
    assert "deviceagentd_store_commits_total" in names, "the metric names were not found in the sources"
    doc = (REPO / "docs" / "operations.md").read_text()
    rows = [line for line in doc.splitlines() if line.startswith("| `deviceagentd_")]
    missing = sorted(name for name in names if not any(re.search(rf"`{name}[`{{]", row) for row in rows))
    assert not missing, f"metrics missing from docs/operations.md's table: {missing}"


def test_every_cli_command_is_in_the_readme_and_operations() -> None:
    from deviceagentd.cli import build_parser

    parser = build_parser()
    commands = next(
        action.choices for action in parser._actions if isinstance(action.choices, dict)
    )
    assert {"run", "check-config", "backup", "restore", "devices", "events"} <= set(commands)
    readme = (REPO / "README.md").read_text()
    operations = (REPO / "docs" / "operations.md").read_text()
    for name in commands:
        assert f"deviceagentd {name}" in readme, f"README.md does not show `deviceagentd {name}`"
        # operations.md lists them all in its install table, and shows most in use.
        assert f"`{name}`" in operations or f"deviceagentd {name}" in operations, \
            f"docs/operations.md does not name `{name}`"
