"""The [uplink] section: defaults, and every bad value refused with a message naming the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from deviceagentd.config import ConfigError, UplinkTopics, effective_config, load_config

GOOD = {"DEVICEAGENTD_UPLINK_URL": "mqtts://cloud.example.com:8883", "DEVICEAGENTD_UPLINK_SITE_ID": "site-1"}


def problems(**env: str) -> dict[str, str]:
    with pytest.raises(ConfigError) as info:
        load_config(None, {**GOOD, **{f"DEVICEAGENTD_UPLINK_{k.upper()}": v for k, v in env.items()}})
    return {p.key: p.message for p in info.value.problems}


def test_off_by_default_and_on_with_a_url_and_site() -> None:
    config = load_config(None, {})
    assert not config.uplink.enabled and config.uplink.topics == UplinkTopics()
    config = load_config(None, {**GOOD, "DEVICEAGENTD_UPLINK_PASSWORD": "s3cret", "DEVICEAGENTD_UPLINK_USERNAME": "gw"})
    assert config.uplink.enabled and config.uplink.effective_client_id == "deviceagentd-site-1"
    assert effective_config(config)["uplink"]["password"] == "********"


@pytest.mark.parametrize(("env", "key", "says"), [
    ({"url": "http://cloud:1883"}, "uplink.url", "mqtt:// or mqtts://"),
    ({"url": "mqtt://"}, "uplink.url", "no host"),
    ({"url": "mqtt://cloud:99999"}, "uplink.url", "port"),
    ({"site_id": ""}, "uplink.site_id", "required"),
    ({"site_id": "a/b"}, "uplink.site_id", "topic level"),
    ({"site_id": "a+"}, "uplink.site_id", "topic level"),
    ({"site_id": "#"}, "uplink.site_id", "topic level"),
    ({"site_id": "x" * 65}, "uplink.site_id", "64"),
    ({"client_id": "gw 1"}, "uplink.client_id", "without spaces"),
    ({"password": "p"}, "uplink.password", "username is empty"),
    ({"protocol_version": "3"}, "uplink.protocol_version", "5 (MQTT 5) or 4"),
    ({"keepalive_s": "2"}, "uplink.keepalive_s", "between 5 and 65535"),
    ({"session_expiry_s": "-1"}, "uplink.session_expiry_s", "between 0"),
    ({"reconnect_min_s": "10", "reconnect_max_s": "5"}, "uplink.reconnect_min_s", "at most"),
    ({"tls_ca_file": "/nonexistent/ca.pem"}, "uplink.tls_ca_file", "does not exist"),
    ({"tls_key_file": __file__}, "uplink.tls_cert_file", "both"),
    ({"url": "mqtt://cloud:1883", "tls_insecure": "true"}, "uplink.url", "use mqtts://"),
    ({"state_min_interval_s": "-1"}, "uplink.state_min_interval_s", "between 0"),
    ({"health_interval_s": "0"}, "uplink.health_interval_s", "between 1"),
    ({"outbox_max_rows": "10"}, "uplink.outbox_max_rows", "between 100"),
    ({"outbox_max_age_s": "1"}, "uplink.outbox_max_age_s", "between 60"),
    ({"outbox_max_bytes": "1000"}, "uplink.outbox_max_bytes", "1 MiB"),
    ({"max_publish_rate": "0"}, "uplink.max_publish_rate", "between 1"),
    ({"max_inflight": "0"}, "uplink.max_inflight", "between 1 and 65535"),
    ({"topics_state": "devices/{deviceId}/state"}, "uplink.topics.state", "must contain {siteId}"),
    ({"topics_events": "sites/{siteId}/events"}, "uplink.topics.events", "must contain {deviceId}"),
    ({"topics_gateway_status": "sites/{siteId}/{deviceId}"}, "uplink.topics.gateway_status", "cannot contain"),
    ({"topics_lifecycle": "sites/{siteId}/+/{deviceId}"}, "uplink.topics.lifecycle", "no + #"),
    ({"topics_state": "sites/x{siteId}/{deviceId}"}, "uplink.topics.state", "whole topic level"),
    ({"topics_state": "/sites/{siteId}/{deviceId}"}, "uplink.topics.state", "leading or trailing"),
])
def test_bad_values_are_refused_naming_the_key(env: dict[str, str], key: str, says: str) -> None:
    found = problems(**env)
    assert key in found, found
    assert says in found[key]


def test_a_bad_value_in_a_toml_file_is_refused_too(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[uplink]\nurl = "mqtt://cloud:1883"\nsite_id = "bad site"\n[uplink.topics]\nchat = "x/chat"\n')
    with pytest.raises(ConfigError) as info:
        load_config(path, {})
    keys = {p.key for p in info.value.problems}
    assert {"uplink.site_id", "uplink.topics.chat"} <= keys


def test_uplink_settings_are_ignored_while_it_is_off() -> None:
    # Half-filled settings do not stop a gateway that does not use the uplink.
    config = load_config(None, {"DEVICEAGENTD_UPLINK_SITE_ID": "a/b"})
    assert not config.uplink.enabled


def test_a_running_daemon_without_an_uplink_imports_none_of_it(tmp_path: Path) -> None:
    """Off means free: the daemon built and started without uplink.url never loads deviceagentd.uplink."""
    import subprocess
    import sys

    from mosquitto_broker import free_port

    http, voice = free_port(), free_port()
    script = (
        "import asyncio, sys\n"
        "from pathlib import Path\n"
        "from deviceagentd.config import load_config\n"
        "from deviceagentd.core.catalog import load_catalog\n"
        "from deviceagentd.daemon import Daemon\n"
        "async def main():\n"
        f"    env = {{'DEVICEAGENTD_STORAGE_DIR': {str(tmp_path)!r}, 'DEVICEAGENTD_HTTP_LISTEN': '127.0.0.1:{http}',\n"
        f"           'DEVICEAGENTD_VOICE_LISTEN': '127.0.0.1:{voice}', 'DEVICEAGENTD_MQTT_URL': 'mqtt://127.0.0.1:9'}}\n"
        "    config = load_config(None, env)\n"
        "    daemon = Daemon(config, load_catalog(Path(config.products.dir)), ready_without_broker_s=0.1)\n"
        "    await daemon.start()\n"
        "    await asyncio.sleep(0.3)\n"
        "    print(sorted(m for m in sys.modules if m.startswith('deviceagentd.uplink')), daemon.uplink)\n"
        "    await daemon.stop()\n"
        "asyncio.run(main())\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip().splitlines()[-1] == "[] None", out


@pytest.mark.parametrize(("env", "key"), [
    ({"DEVICEAGENTD_UPLINK_TOPICS_CHAT": "fleet/{siteId}/chat"}, "uplink.topics.chat"),
    ({"DEVICEAGENTD_UPLINK_TOPICS_CHAT_RESULT": "replies/{siteId}/chat"}, "uplink.topics.chat_result"),
    ({"DEVICEAGENTD_UPLINK_TOPICS_COMMAND_RESULT": "out/{siteId}/{deviceId}/result"}, "uplink.topics.command_result"),
])
def test_request_topics_that_do_not_share_the_site_prefix_are_refused_by_check_config(
        env: dict[str, str], key: str) -> None:
    """The cloud request handler's rule, as `deviceagentd check-config` reports it (a real subprocess)."""
    from test_config import run_cli

    result = run_cli("check-config", env={**GOOD, **env})
    assert result.returncode != 0
    line = next(line for line in result.stderr.splitlines() if key in line)
    assert "must start like the command template (sites/{siteId}/)" in line
    assert "Traceback" not in result.stderr


def test_the_default_request_topics_pass_and_chat_result_is_a_key() -> None:
    config = load_config(None, {**GOOD, "DEVICEAGENTD_UPLINK_TOPICS_CHAT_RESULT": "sites/{siteId}/chat/answers"})
    assert config.uplink.topics.chat_result == "sites/{siteId}/chat/answers"
