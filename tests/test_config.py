"""Configuration: TOML file, environment overrides, every check() rule, secrets masked, paths
relative to the file, and `deviceagentd check-config` run as a real subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from deviceagentd.config import (
    Config,
    ConfigError,
    check,
    effective_config,
    env_name,
    load_config,
    parse_broker_url,
    parse_listen,
    to_toml,
)
from deviceagentd.mqtt.topics import TopicTemplates

REPO = Path(__file__).resolve().parents[1]
EXAMPLE_CONFIG = REPO / "etc" / "deviceagentd" / "deviceagentd.toml"
PRODUCTS_DIR = REPO / "etc" / "deviceagentd" / "products"
TOKEN_A = "first-token-at-least-16"
TOKEN_B = "second-token-at-least-16"


def problems(env: dict[str, str] | None = None, toml: str | None = None,
             tmp_path: Path | None = None) -> dict[str, str]:
    path = None
    if toml is not None:
        assert tmp_path is not None
        path = tmp_path / "deviceagentd.toml"
        path.write_text(toml)
    with pytest.raises(ConfigError) as info:
        load_config(path, env or {})
    found: dict[str, str] = {}
    for problem in info.value.problems:
        found[problem.key] = f"{found[problem.key]}; {problem.message}" if problem.key in found else problem.message
    return found


def write(tmp_path: Path, text: str, name: str = "deviceagentd.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


# --------------------------------------------------------------------------------- loading


def test_defaults_without_file_or_environment() -> None:
    config = load_config(None, {})
    assert config.source == "<defaults>"
    assert config.mqtt.url == "mqtt://127.0.0.1:1883"
    assert config.mqtt.protocol_version == 5
    assert config.mqtt.max_payload_bytes == 256 * 1024
    assert config.mqtt.topics == TopicTemplates()
    assert config.http.listen == "127.0.0.1:3000"
    assert config.voice.listen == "127.0.0.1:3001"
    assert config.devices.offline_after_s == 120
    assert config.commands.default_timeout_ms == 30000
    assert check(config) == []


def test_the_shipped_example_config_loads_and_shows_the_defaults() -> None:
    config = load_config(EXAMPLE_CONFIG, {})
    assert config.source == str(EXAMPLE_CONFIG)
    defaults = load_config(None, {})
    assert config.mqtt == defaults.mqtt
    assert config.http == defaults.http
    assert config.storage.dir == "/var/lib/deviceagentd"


def test_a_toml_file(tmp_path: Path) -> None:
    path = write(tmp_path, f"""
[mqtt]
url = "mqtt://broker.lan:1884"
username = "gw"
password = "s3cret"
client_id = "gw-hall"
protocol_version = 4
keepalive_s = 30
tls_insecure = false
reconnect_min_s = 2

[mqtt.topics]
command = "site/{{productId}}/{{deviceId}}/cmd"

[http]
listen = "0.0.0.0:8080"
tokens = ["{TOKEN_A}"]

[storage]
dir = "/srv/state"
batch_interval_s = 2

[products]
dir = "{PRODUCTS_DIR}"

[devices]
offline_after_s = 0

[commands]
default_timeout_ms = 5000

[log]
level = "debug"
""")
    config = load_config(path, {})
    assert config.mqtt.url == "mqtt://broker.lan:1884"
    assert (config.mqtt.username, config.mqtt.password, config.mqtt.client_id) == ("gw", "s3cret", "gw-hall")
    assert config.mqtt.protocol_version == 4
    assert config.mqtt.keepalive_s == 30
    assert config.mqtt.reconnect_min_s == 2.0 and isinstance(config.mqtt.reconnect_min_s, float)
    assert config.mqtt.topics.command == "site/{productId}/{deviceId}/cmd"
    assert config.mqtt.topics.telemetry == TopicTemplates().telemetry  # others keep their default
    assert config.http.listen == "0.0.0.0:8080"
    assert config.http.tokens == [TOKEN_A]
    assert config.storage.dir == "/srv/state"
    assert config.storage.batch_interval_s == 2.0
    assert config.products.dir == str(PRODUCTS_DIR)
    assert config.devices.offline_after_s == 0
    assert config.commands.default_timeout_ms == 5000
    assert config.log.level == "debug"


def test_environment_overrides_every_form(tmp_path: Path) -> None:
    path = write(tmp_path, '[mqtt]\nurl = "mqtt://from-file:1883"\nkeepalive_s = 30\n')
    env = {
        "DEVICEAGENTD_MQTT_URL": "mqtts://from-env:8884",
        "DEVICEAGENTD_MQTT_KEEPALIVE_S": "45",
        "DEVICEAGENTD_MQTT_RECONNECT_MAX_S": "12.5",
        "DEVICEAGENTD_MQTT_TLS_INSECURE": "yes",
        "DEVICEAGENTD_MQTT_TOPICS_COMMAND": "gw/{productId}/{deviceId}/cmd",
        "DEVICEAGENTD_HTTP_TOKENS": json.dumps([TOKEN_A, TOKEN_B]),
        "DEVICEAGENTD_DEVICES_OFFLINE_AFTER_S": "0",
        "DEVICEAGENTD_LOG_LEVEL": "warning",
        "OTHER_VARIABLE": "ignored",
    }
    config = load_config(path, env)
    assert config.mqtt.url == "mqtts://from-env:8884"  # env wins over the file
    assert config.mqtt.keepalive_s == 45
    assert config.mqtt.reconnect_max_s == 12.5
    assert config.mqtt.tls_insecure is True
    assert config.mqtt.topics.command == "gw/{productId}/{deviceId}/cmd"
    assert config.mqtt.topics.telemetry == TopicTemplates().telemetry
    assert config.http.tokens == [TOKEN_A, TOKEN_B]
    assert config.devices.offline_after_s == 0.0
    assert config.log.level == "warning"


def test_a_topic_override_keeps_the_file_topics(tmp_path: Path) -> None:
    path = write(tmp_path, '[mqtt.topics]\nevent = "site/{productId}/{deviceId}/ev"\n')
    config = load_config(path, {"DEVICEAGENTD_MQTT_TOPICS_COMMAND": "gw/{productId}/{deviceId}/cmd"})
    assert config.mqtt.topics.event == "site/{productId}/{deviceId}/ev"
    assert config.mqtt.topics.command == "gw/{productId}/{deviceId}/cmd"


def test_several_topic_overrides_all_apply() -> None:
    config = load_config(None, {
        "DEVICEAGENTD_MQTT_TOPICS_COMMAND": "gw/{productId}/{deviceId}/cmd",
        "DEVICEAGENTD_MQTT_TOPICS_NTP_REQUEST": "time/{productId}/{deviceId}/req",
        "DEVICEAGENTD_MQTT_TOPICS_TELEMETRY": "up/{productId}/{deviceId}/state",
    })
    assert config.mqtt.topics.command == "gw/{productId}/{deviceId}/cmd"
    assert config.mqtt.topics.ntp_request == "time/{productId}/{deviceId}/req"
    assert config.mqtt.topics.telemetry == "up/{productId}/{deviceId}/state"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (f"{TOKEN_A},{TOKEN_B}", [TOKEN_A, TOKEN_B]),
        (f" {TOKEN_A} , {TOKEN_B} ,", [TOKEN_A, TOKEN_B]),
        (json.dumps([TOKEN_A]), [TOKEN_A]),
        (TOKEN_A, [TOKEN_A]),
        ("", []),
        ("[]", []),
    ],
)
def test_list_overrides_as_json_or_comma_list(raw: str, expected: list[str]) -> None:
    assert load_config(None, {"DEVICEAGENTD_HTTP_TOKENS": raw}).http.tokens == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("1", True), ("true", True), ("TRUE", True), ("yes", True), ("on", True),
     ("0", False), ("false", False), ("no", False), ("off", False), (" Off ", False)],
)
def test_bool_overrides(raw: str, expected: bool) -> None:
    assert load_config(None, {"DEVICEAGENTD_MQTT_TLS_INSECURE": raw}).mqtt.tls_insecure is expected


def test_env_names() -> None:
    assert env_name("mqtt.url") == "DEVICEAGENTD_MQTT_URL"
    assert env_name("mqtt.topics.command") == "DEVICEAGENTD_MQTT_TOPICS_COMMAND"
    assert env_name("storage.batch_interval_s") == "DEVICEAGENTD_STORAGE_BATCH_INTERVAL_S"


def test_unknown_keys_in_the_file_are_reported(tmp_path: Path) -> None:
    found = problems(toml='colour = "red"\n[mqtt]\nhost = "x"\n[mqtt.topics]\nalarm = "a/{productId}"\n[nope]\n',
                     tmp_path=tmp_path)
    assert set(found) == {"colour", "mqtt.host", "mqtt.topics.alarm", "nope"}
    assert "unknown key" in found["mqtt.host"]
    assert "url" in found["mqtt.host"]  # lists the known keys
    assert "unknown topic" in found["mqtt.topics.alarm"]


def test_unknown_environment_names_are_reported() -> None:
    found = problems({"DEVICEAGENTD_MQTT_HOST": "x", "DEVICEAGENTD_MQTT_TOPICS_ALARM": "a/{productId}",
                      "DEVICEAGENTD_NOPE": "1"})
    assert set(found) == {"DEVICEAGENTD_MQTT_HOST", "DEVICEAGENTD_MQTT_TOPICS_ALARM", "DEVICEAGENTD_NOPE"}
    assert all("unknown environment override" in m for m in found.values())



def test_the_config_file_variable_itself_is_not_an_unknown_override() -> None:
    # The CLI reads DEVICEAGENTD_CONFIG for the file path; it must not be refused as a key.
    load_config(None, {"DEVICEAGENTD_CONFIG": "/etc/deviceagentd/deviceagentd.toml"})


def test_wrong_types_in_the_file(tmp_path: Path) -> None:
    found = problems(toml="""
[mqtt]
keepalive_s = "60"
protocol_version = 5.0
tls_insecure = "no"
reconnect_min_s = true
url = 1883
topics = "v1"
[http]
tokens = "abc"
[storage]
batch_max_rows = 1.5
[devices]
offline_after_s = "2m"
[log]
level = ["info"]
[commands]
default_timeout_ms = false
""", tmp_path=tmp_path)
    assert found == {
        "mqtt.keepalive_s": "must be an integer",
        "mqtt.protocol_version": "must be an integer",
        "mqtt.tls_insecure": "must be true or false",
        "mqtt.reconnect_min_s": "must be a number",
        "mqtt.url": "must be a string",
        "mqtt.topics": "must be a table",
        "http.tokens": "must be a list of strings",
        "storage.batch_max_rows": "must be an integer",
        "devices.offline_after_s": "must be a number",
        "log.level": "must be a string",
        "commands.default_timeout_ms": "must be an integer",
    }


def test_wrong_types_in_the_file_list_and_topic_values(tmp_path: Path) -> None:
    found = problems(toml='[http]\ntokens = [1, 2]\n[mqtt.topics]\ncommand = 5\n[storage]\ndir = 3\n',
                     tmp_path=tmp_path)
    assert found == {"http.tokens": "must be a list of strings", "mqtt.topics.command": "must be a string",
                     "storage.dir": "must be a string"}


def test_a_section_given_as_a_value(tmp_path: Path) -> None:
    assert problems(toml='mqtt = "mqtt://x"\n', tmp_path=tmp_path) == {"mqtt": "must be a table"}


def test_wrong_types_in_the_environment_name_the_variable() -> None:
    found = problems({
        "DEVICEAGENTD_MQTT_KEEPALIVE_S": "sixty",
        "DEVICEAGENTD_MQTT_TLS_INSECURE": "maybe",
        "DEVICEAGENTD_STORAGE_BATCH_INTERVAL_S": "1s",
        "DEVICEAGENTD_HTTP_TOKENS": "[1, 2]",
    })
    assert found == {
        "DEVICEAGENTD_MQTT_KEEPALIVE_S": "must be an integer",
        "DEVICEAGENTD_MQTT_TLS_INSECURE": "must be true or false",
        "DEVICEAGENTD_STORAGE_BATCH_INTERVAL_S": "must be a number",
        "DEVICEAGENTD_HTTP_TOKENS": "must be a list of strings",
    }


def test_broken_json_list_in_the_environment() -> None:
    found = problems({"DEVICEAGENTD_HTTP_TOKENS": '["abc'})
    assert "DEVICEAGENTD_HTTP_TOKENS" in found


def test_unreadable_and_invalid_files(tmp_path: Path) -> None:
    assert set(problems(toml="[mqtt\nurl=", tmp_path=tmp_path)) == {"(file)"}
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "missing.toml", {})
    assert info.value.problems[0].key == "(file)"
    assert "cannot read" in info.value.problems[0].message


def test_all_problems_at_once() -> None:
    found = problems({
        "DEVICEAGENTD_MQTT_URL": "http://x",
        "DEVICEAGENTD_MQTT_KEEPALIVE_S": "1",
        "DEVICEAGENTD_HTTP_LISTEN": "nowhere",
        "DEVICEAGENTD_LOG_LEVEL": "loud",
        "DEVICEAGENTD_BOGUS": "1",
    })
    assert set(found) == {"mqtt.url", "mqtt.keepalive_s", "http.listen", "log.level", "DEVICEAGENTD_BOGUS"}


# --------------------------------------------------------------------------------- check() rules


@pytest.mark.parametrize(
    ("env", "key", "fragment"),
    [
        ({"MQTT_URL": "http://broker"}, "mqtt.url", "mqtt:// or mqtts://"),
        ({"MQTT_URL": "mqtt://"}, "mqtt.url", "no host"),
        ({"MQTT_URL": "mqtt://broker:99999"}, "mqtt.url", "port"),
        ({"MQTT_URL": "mqtt://broker:abc"}, "mqtt.url", "port"),
        ({"MQTT_PROTOCOL_VERSION": "3"}, "mqtt.protocol_version", "5 (MQTT 5) or 4"),
        ({"MQTT_CLIENT_ID": ""}, "mqtt.client_id", "non-empty"),
        ({"MQTT_CLIENT_ID": "gw 1"}, "mqtt.client_id", "without spaces"),
        ({"MQTT_CLIENT_ID": "gw/1"}, "mqtt.client_id", "without spaces"),
        ({"MQTT_CLIENT_ID": "gw#"}, "mqtt.client_id", "without spaces"),
        ({"MQTT_PASSWORD": "pw"}, "mqtt.password", "username is empty"),
        ({"MQTT_KEEPALIVE_S": "4"}, "mqtt.keepalive_s", "between 5 and 65535"),
        ({"MQTT_KEEPALIVE_S": "65536"}, "mqtt.keepalive_s", "between 5 and 65535"),
        ({"MQTT_SESSION_EXPIRY_S": "-1"}, "mqtt.session_expiry_s", "between 0 and 4294967295"),
        ({"MQTT_SESSION_EXPIRY_S": "4294967296"}, "mqtt.session_expiry_s", "between 0 and 4294967295"),
        ({"MQTT_MAX_PAYLOAD_BYTES": "1023"}, "mqtt.max_payload_bytes", "between 1024"),
        ({"MQTT_MAX_PAYLOAD_BYTES": str(16 * 1024 * 1024 + 1)}, "mqtt.max_payload_bytes", "between 1024"),
        ({"MQTT_RECONNECT_MIN_S": "0"}, "mqtt.reconnect_min_s", "above 0"),
        ({"MQTT_RECONNECT_MIN_S": "10", "MQTT_RECONNECT_MAX_S": "5"}, "mqtt.reconnect_min_s", "at most"),
        ({"MQTT_URL": "mqtts://b", "MQTT_TLS_CA_FILE": "/no/such/ca.pem"}, "mqtt.tls_ca_file", "does not exist"),
        ({"MQTT_URL": "mqtts://b", "MQTT_TLS_CERT_FILE": "/no/such/c.pem"}, "mqtt.tls_cert_file", "does not exist"),
        ({"MQTT_URL": "mqtts://b", "MQTT_TLS_KEY_FILE": "/no/such/k.pem"}, "mqtt.tls_key_file", "does not exist"),
        ({"MQTT_URL": "mqtts://b", "MQTT_TLS_CERT_FILE": __file__}, "mqtt.tls_cert_file", "both"),
        ({"MQTT_TLS_CA_FILE": __file__}, "mqtt.url", "use mqtts://"),
        ({"MQTT_TOPICS_TELEMETRY": "v1/{productId}/+/telemetry"}, "mqtt.topics.telemetry", "no + #"),
        ({"MQTT_TOPICS_COMMAND": "cmd/{productId}"}, "mqtt.topics.command", "must contain {deviceId}"),
        ({"MQTT_TOPICS_EVENT": "/ev/{productId}/{deviceId}"}, "mqtt.topics.event", "leading or trailing"),
        ({"MQTT_TOPICS_NTP_REQUEST": "t/{productId}{deviceId}"}, "mqtt.topics.ntp_request", "whole topic level"),
        ({"HTTP_LISTEN": "3000"}, "http.listen", "host:port"),
        ({"HTTP_LISTEN": "127.0.0.1:0"}, "http.listen", "port must be"),
        ({"HTTP_LISTEN": "127.0.0.1:http"}, "http.listen", "port must be"),
        ({"VOICE_LISTEN": "127.0.0.1:99999"}, "voice.listen", "port must be"),
        ({"VOICE_LISTEN": "127.0.0.1:3000"}, "voice.listen", "differ from http.listen"),
        ({"HTTP_TOKENS": "short"}, "http.tokens[0]", "at least 16"),
        ({"HTTP_TOKENS": json.dumps([TOKEN_A, " " + TOKEN_B])}, "http.tokens[1]", "surrounding spaces"),
        ({"HTTP_MAX_BODY_BYTES": "100"}, "http.max_body_bytes", "between 1024"),
        ({"STORAGE_DIR": ""}, "storage.dir", "must not be empty"),
        ({"STORAGE_BATCH_INTERVAL_S": "0"}, "storage.batch_interval_s", "between 0.01 and 60"),
        ({"STORAGE_BATCH_INTERVAL_S": "61"}, "storage.batch_interval_s", "between 0.01 and 60"),
        ({"STORAGE_BATCH_MAX_ROWS": "0"}, "storage.batch_max_rows", "at least 1"),
        ({"STORAGE_DEVICE_STATE_SAVE_S": "-1"}, "storage.device_state_save_s", "between 0"),
        ({"STORAGE_DEVICE_STATE_SAVE_S": "3601"}, "storage.device_state_save_s", "between 0"),
        ({"VOICE_OFFLINE_MAX_DECODERS": "0"}, "voice.offline.max_decoders", "between 1 and 8"),
        ({"VOICE_OFFLINE_MAX_DECODERS": "9"}, "voice.offline.max_decoders", "between 1 and 8"),
        ({"VOICE_OFFLINE_UNLOAD_AFTER_S": "9"}, "voice.offline.unload_after_s", "between 10 and 86400"),
        ({"VOICE_DEFAULT_PROVIDER": "pocketsphinx"}, "voice.default_provider", "aliyun, openai, offline"),
        ({"VOICEPLATFORM_ROOMS_FILE": "/no/such/rooms.toml"}, "voiceplatform.rooms_file", "does not exist"),
        ({"VOICEPLATFORM_CLIENT_ID": "speaker-cloud"}, "voiceplatform.client_id", "set both or neither"),
        ({"VOICEPLATFORM_CLIENT_SECRET": "s3cret-value"}, "voiceplatform.client_id", "set both or neither"),
        ({"VOICEPLATFORM_SIGN_SKEW_S": "0"}, "voiceplatform.sign_skew_s", "between 1 and 3600"),
        ({"VOICEPLATFORM_SIGN_SKEW_S": "3601"}, "voiceplatform.sign_skew_s", "between 1 and 3600"),
        ({"VOICEPLATFORM_ACCESS_TOKEN_TTL_S": "59"}, "voiceplatform.access_token_ttl_s", "between 60"),
        ({"VOICEPLATFORM_ACCESS_TOKEN_TTL_S": str(30 * 86400 + 1)}, "voiceplatform.access_token_ttl_s", "between 60"),
        ({"VOICEPLATFORM_IDEMPOTENCY_WINDOW_S": "-1"}, "voiceplatform.idempotency_window_s", "between 0"),
        ({"VOICEPLATFORM_IDEMPOTENCY_WINDOW_S": "86401"}, "voiceplatform.idempotency_window_s", "between 0"),
        ({"VOICEPLATFORM_COMMAND_TIMEOUT_MS": "99"}, "voiceplatform.command_timeout_ms", "between 100 and 120000"),
        ({"VOICEPLATFORM_COMMAND_TIMEOUT_MS": "120001"}, "voiceplatform.command_timeout_ms", "between 100 and 120000"),
        ({"STORAGE_EVENTS_MAX_AGE_DAYS": "0"}, "storage.events_max_age_days", "above 0"),
        ({"STORAGE_COMMANDS_MAX_AGE_DAYS": "-1"}, "storage.commands_max_age_days", "above 0"),
        ({"STORAGE_EVENTS_MAX_ROWS": "99"}, "storage.events_max_rows", "at least 100"),
        ({"STORAGE_COMMANDS_MAX_ROWS": "10"}, "storage.commands_max_rows", "at least 100"),
        ({"STORAGE_RETENTION_INTERVAL_S": "0.5"}, "storage.retention_interval_s", "at least 1"),
        ({"PRODUCTS_DIR": "/no/such/products"}, "products.dir", "does not exist"),
        ({"DEVICES_OFFLINE_AFTER_S": "-1"}, "devices.offline_after_s", "0 (never)"),
        ({"COMMANDS_DEFAULT_TIMEOUT_MS": "99"}, "commands.default_timeout_ms", "between 100 and 120000"),
        ({"COMMANDS_DEFAULT_TIMEOUT_MS": "120001"}, "commands.default_timeout_ms", "between 100 and 120000"),
        ({"LOG_LEVEL": "verbose"}, "log.level", "debug, info, warning or error"),
        ({"SCHEDULES_MAX_SCHEDULES": "0"}, "schedules.max_schedules", "between 1 and 100000"),
        ({"SCHEDULES_MAX_SCHEDULES": "100001"}, "schedules.max_schedules", "between 1 and 100000"),
        ({"SCHEDULES_MISSED_GRACE_S": "-1"}, "schedules.missed_grace_s", "between 0"),
        ({"SCHEDULES_MISSED_GRACE_S": "604801"}, "schedules.missed_grace_s", "between 0"),
        ({"SCHEDULES_COMMAND_TIMEOUT_MS": "99"}, "schedules.command_timeout_ms", "between 100 and 120000"),
        ({"MCP_MAX_SESSIONS": "0"}, "mcp.max_sessions", "between 1 and 10000"),
        ({"MCP_SESSION_IDLE_S": "59"}, "mcp.session_idle_s", "between 60"),
        ({"MCP_ALLOWED_ORIGINS": "console.local"}, "mcp.allowed_origins[0]", "must be an origin"),
        ({"MCP_ALLOWED_ORIGINS": "http://console.local/page"}, "mcp.allowed_origins[0]", "must be an origin"),
        ({"MCP_CLIENTS": "claude:a-token-of-16-chars:read"}, "mcp.clients", "needs http.tokens"),
        ({"HTTP_TOKENS": "api-token-0123456789", "MCP_CLIENTS": "claude-read"}, "mcp.clients[0]",
         "<name>:<token>:<tools>"),
        ({"HTTP_TOKENS": "api-token-0123456789", "MCP_CLIENTS": "cl aude:a-token-of-16-chars:read"},
         "mcp.clients[0]", "the name must be"),
        ({"HTTP_TOKENS": "api-token-0123456789", "MCP_CLIENTS": "claude:short:read"}, "mcp.clients[0]",
         "at least 16 characters"),
        ({"HTTP_TOKENS": "api-token-0123456789", "MCP_CLIENTS": "claude:a-token-of-16-chars:"}, "mcp.clients[0]",
         "lists no tools"),
        ({"HTTP_TOKENS": "api-token-0123456789", "MCP_CLIENTS": "claude:a-token-of-16-chars:explode"},
         "mcp.clients[0]", "'explode' is not a tool"),
        ({"HTTP_TOKENS": "api-token-0123456789",
          "MCP_CLIENTS": '["a:a-token-of-16-chars:read", "a:another-token-16chars:read"]'},
         "mcp.clients[1]", "used twice"),
        ({"HTTP_TOKENS": "api-token-0123456789",
          "MCP_CLIENTS": '["a:a-token-of-16-chars:read", "b:a-token-of-16-chars:read"]'},
         "mcp.clients[1]", "another client's"),
        ({"HTTP_TOKENS": "a-token-of-16-chars", "MCP_CLIENTS": "claude:a-token-of-16-chars:read"}, "mcp.clients",
         "also in http.tokens"),
    ],
)
def test_each_check_rule(env: dict[str, str], key: str, fragment: str) -> None:
    found = problems({f"DEVICEAGENTD_{k}": v for k, v in env.items()})
    assert key in found, found
    assert fragment in found[key]


@pytest.mark.parametrize(
    "env",
    [
        {"MQTT_URL": "mqtts://broker.lan"},
        {"MQTT_URL": "mqtt://[::1]:1883"},
        {"MQTT_PROTOCOL_VERSION": "4"},
        {"MQTT_USERNAME": "gw", "MQTT_PASSWORD": "pw"},
        {"MQTT_SESSION_EXPIRY_S": "0"},
        {"MQTT_URL": "mqtts://b", "MQTT_TLS_CA_FILE": __file__, "MQTT_TLS_CERT_FILE": __file__,
         "MQTT_TLS_KEY_FILE": __file__},
        {"HTTP_LISTEN": "[::1]:3000", "VOICE_LISTEN": "[::1]:3001"},
        {"DEVICES_OFFLINE_AFTER_S": "0"},
        {"LOG_LEVEL": "DEBUG"},
        {"STORAGE_BATCH_INTERVAL_S": "0.01"},
        {"STORAGE_DEVICE_STATE_SAVE_S": "0"},
        {"VOICEPLATFORM_CLIENT_ID": "speaker-cloud", "VOICEPLATFORM_CLIENT_SECRET": "s3cret-value"},
        {"VOICEPLATFORM_IDEMPOTENCY_WINDOW_S": "0", "VOICEPLATFORM_ACCESS_TOKEN_TTL_S": "60"},
        {"SCHEDULES_MAX_SCHEDULES": "1", "SCHEDULES_MISSED_GRACE_S": "0"},
        {"HTTP_TOKENS": "api-token-0123456789",
         "MCP_CLIENTS": '["claude:a-token-of-16-chars:read", "ha:another-token-16chars:list_devices,send_command"]'},
        {"MCP_ALLOWED_ORIGINS": "https://console.example:8443,http://10.0.0.5", "MCP_READ_ONLY": "true"},
    ],
)
def test_edge_values_that_are_fine(env: dict[str, str]) -> None:
    load_config(None, {f"DEVICEAGENTD_{k}": v for k, v in env.items()})


def test_broker_url_and_listen_parsing() -> None:
    assert parse_broker_url("mqtt://b").port == 1883
    tls = parse_broker_url("mqtts://b")
    assert (tls.port, tls.tls) == (8883, True)
    assert parse_broker_url("mqtt://b:1999").port == 1999
    assert parse_listen("0.0.0.0:3000") == parse_listen("0.0.0.0:3000")
    assert parse_listen("[::1]:3000").host == "::1"


# --------------------------------------------------------------------------------- showing


def test_secrets_are_masked_in_the_effective_config() -> None:
    config = load_config(None, {"DEVICEAGENTD_MQTT_USERNAME": "gw", "DEVICEAGENTD_MQTT_PASSWORD": "hunter2-secret",
                                "DEVICEAGENTD_HTTP_TOKENS": f"{TOKEN_A},{TOKEN_B}"})
    shown = effective_config(config)
    assert shown["mqtt"]["username"] == "gw"
    assert shown["mqtt"]["password"] == "********"
    assert shown["http"]["tokens"] == ["********", "********"]
    text = to_toml(shown)
    for secret in ("hunter2-secret", TOKEN_A, TOKEN_B):
        assert secret not in text
        assert secret not in json.dumps(shown)
    # The real values stay in the config object.
    assert config.mqtt.password == "hunter2-secret"
    # An empty password stays visibly empty.
    assert effective_config(load_config(None, {}))["mqtt"]["password"] == ""


def test_effective_config_renders_as_toml_that_loads_back(tmp_path: Path) -> None:
    config = load_config(None, {"DEVICEAGENTD_MQTT_TOPICS_COMMAND": "gw/{productId}/{deviceId}/cmd",
                                "DEVICEAGENTD_HTTP_TOKENS": TOKEN_A})
    shown = effective_config(config)
    loaded = tomllib.loads(to_toml(shown))
    assert loaded == shown
    shown["http"]["tokens"] = []  # masked tokens are too short to load back
    reloaded = load_config(write(tmp_path, to_toml(shown)), {})
    assert reloaded.mqtt == config.mqtt
    assert reloaded.storage.batch_interval_s == config.storage.batch_interval_s


def test_relative_paths_are_resolved_against_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    etc = tmp_path / "etc"
    (etc / "products").mkdir(parents=True)
    (etc / "tls").mkdir()
    for name in ("ca.pem", "gw.pem", "gw.key"):
        (etc / "tls" / name).write_text("x")
    path = write(etc, """
[mqtt]
url = "mqtts://broker.lan"
tls_ca_file = "tls/ca.pem"
tls_cert_file = "tls/gw.pem"
tls_key_file = "./tls/gw.key"
[storage]
dir = "state"
[products]
dir = "products"
""")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    config = load_config(path, {})
    assert config.storage.dir == str(etc / "state")
    assert config.products.dir == str(etc / "products")
    assert config.mqtt.tls_ca_file == str(etc / "tls" / "ca.pem")
    assert config.mqtt.tls_cert_file == str(etc / "tls" / "gw.pem")
    assert config.mqtt.tls_key_file == str(etc / "tls" / "gw.key")
    absolute = load_config(write(etc, '[storage]\ndir = "/var/lib/x"\n', "abs.toml"), {})
    assert absolute.storage.dir == "/var/lib/x"


def test_relative_paths_without_a_file_stay_relative() -> None:
    assert load_config(None, {"DEVICEAGENTD_STORAGE_DIR": "state"}).storage.dir == "state"


def test_config_object_is_plain_data() -> None:
    config = Config()
    assert config.source == "<defaults>"
    assert "source" not in effective_config(config)


# --------------------------------------------------------------------------------- check-config CLI


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("DEVICEAGENTD_")}
    clean.update(env or {})
    return subprocess.run([sys.executable, "-m", "deviceagentd", *args], capture_output=True, text=True,
                          env=clean, cwd=REPO, timeout=60)


def test_check_config_with_a_good_file(tmp_path: Path) -> None:
    path = write(tmp_path, f"""
[mqtt]
username = "gw"
password = "very-secret-password"
[http]
tokens = ["{TOKEN_A}"]
[storage]
dir = "state"
""")
    result = run_cli("check-config", "--config", str(path))
    assert result.returncode == 0, result.stderr
    shown = tomllib.loads("\n".join(line for line in result.stdout.splitlines() if not line.startswith("#")))
    assert shown["mqtt"]["username"] == "gw"
    assert shown["mqtt"]["password"] == "********"
    assert shown["http"]["tokens"] == ["********"]
    assert shown["storage"]["dir"] == str(tmp_path / "state")
    assert "very-secret-password" not in result.stdout + result.stderr
    assert TOKEN_A not in result.stdout + result.stderr
    assert "thermostat" in result.stdout  # the products it found


def test_check_config_tells_which_recogniser_and_voice_each_language_gets(tmp_path: Path) -> None:
    def voice_lines(env: dict[str, str]) -> list[str]:
        result = run_cli("check-config", env={k: v for k, v in env.items()})
        assert result.returncode == 0, result.stderr
        return [line[2:] for line in result.stdout.splitlines() if line.startswith(("# voice,", "# WARNING"))]

    keyless = {k: "" for k in ("DASHSCOPE_API_KEY", "OPENAI_API_KEY")}
    lines = voice_lines(keyless)
    assert lines[0].startswith("voice, English: recogniser offline (pocketsphinx")
    assert "speaks with espeak-ng voice en" in lines[0]
    assert lines[1].startswith("voice, Chinese: recogniser none: the offline recogniser understands English only")
    assert "espeak-ng voice cmn" in lines[1]
    lines = voice_lines({**keyless, "DASHSCOPE_API_KEY": "sk-check-config-0123456789"})
    assert lines[:2] == ["voice, English: recogniser aliyun, offline when it cannot be reached; speaks with aliyun TTS",
                         "voice, Chinese: recogniser aliyun; speaks with aliyun TTS"]
    lines = voice_lines({**keyless, "DEVICEAGENTD_VOICE_OFFLINE_ENABLED": "false",
                         "DEVICEAGENTD_VOICE_ESPEAK_BINARY": str(tmp_path / "no-espeak")})
    assert lines[0] == "voice, English: recogniser none; speaks with no voice (replies are text only)"
    assert any(line.startswith("WARNING: voice cannot work: no recogniser (voice.offline.enabled is false")
               for line in lines)
    assert any("no-espeak is not installed" in line for line in lines)


def test_check_config_reads_the_file_from_the_environment(tmp_path: Path) -> None:
    path = write(tmp_path, '[mqtt]\nclient_id = "from-env-file"\n')
    result = run_cli("check-config", env={"DEVICEAGENTD_CONFIG": str(path)})
    assert result.returncode == 0, result.stderr
    assert 'client_id = "from-env-file"' in result.stdout


def test_check_config_with_a_bad_file_lists_every_problem(tmp_path: Path) -> None:
    path = write(tmp_path, '[mqtt]\nurl = "http://broker"\nkeepalive_s = "x"\n[log]\nlevel = "loud"\n')
    result = run_cli("check-config", "-c", str(path))
    assert result.returncode == 1
    assert str(path) in result.stderr
    for key in ("mqtt.url", "mqtt.keepalive_s", "log.level"):
        assert key in result.stderr
    assert result.stdout == ""


def test_check_config_with_bad_environment(tmp_path: Path) -> None:
    result = run_cli("check-config", env={"DEVICEAGENTD_MQTT_KEEPALIVE_S": "soon",
                                          "DEVICEAGENTD_MQTT_PORT": "1883"})
    assert result.returncode == 1
    assert "DEVICEAGENTD_MQTT_KEEPALIVE_S: must be an integer" in result.stderr
    assert "DEVICEAGENTD_MQTT_PORT: unknown environment override" in result.stderr


def test_check_config_refuses_the_removed_shared_group_in_a_file(tmp_path: Path) -> None:
    """Gateways sharing one broker's subscriptions broke the product (issue 15): an old config
    that still asks for it is told why and where to go, not merely "unknown key"."""
    path = write(tmp_path, '[mqtt]\nurl = "mqtt://127.0.0.1:1883"\nshared_group = "gateways"\n')
    result = run_cli("check-config", "-c", str(path))
    assert result.returncode == 1
    [line] = [line for line in result.stderr.splitlines() if "shared_group" in line]
    assert line.strip().startswith("mqtt.shared_group: was removed")
    assert "unknown key" not in line
    assert "[uplink]" in line and "docs/fleet.md" in line
    assert result.stdout == ""


def test_check_config_refuses_the_removed_shared_group_in_the_environment() -> None:
    # Even empty (the old default) it is refused: the variable names a key that no longer exists.
    for value in ("gateways", ""):
        result = run_cli("check-config", env={"DEVICEAGENTD_MQTT_SHARED_GROUP": value})
        assert result.returncode == 1
        [line] = [line for line in result.stderr.splitlines() if "SHARED_GROUP" in line]
        assert line.strip().startswith("DEVICEAGENTD_MQTT_SHARED_GROUP: sets mqtt.shared_group, which was removed")
        assert "unknown environment override" not in line
        assert "[uplink]" in line and "docs/fleet.md" in line


def test_check_config_with_a_bad_product_dir(tmp_path: Path) -> None:
    products = tmp_path / "products"
    products.mkdir()
    (products / "lamp.json").write_text(json.dumps({"telemetry": {"on": {"type": "switch"}}}))
    (products / "fan.json").write_text('{"commands": ')
    result = run_cli("check-config", env={"DEVICEAGENTD_PRODUCTS_DIR": str(products)})
    assert result.returncode == 1
    assert f"{products / 'lamp.json'}: $.telemetry.on.type" in result.stderr
    assert f"{products / 'fan.json'}: $: not valid JSON" in result.stderr


def test_check_config_with_a_missing_product_dir(tmp_path: Path) -> None:
    result = run_cli("check-config", env={"DEVICEAGENTD_PRODUCTS_DIR": str(tmp_path / "none")})
    assert result.returncode == 1
    assert "products.dir" in result.stderr


def test_version_flag() -> None:
    result = run_cli("--version")
    assert result.returncode == 0
    assert result.stdout.startswith("deviceagentd ")
