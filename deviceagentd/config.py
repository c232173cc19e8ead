"""Configuration: one typed object read from TOML, overridable by environment variables.

Every key `section.key` can be overridden by `DEVICEAGENTD_<SECTION>_<KEY>` (nested tables join
with `_`, e.g. `mqtt.topics.command` ← `DEVICEAGENTD_MQTT_TOPICS_COMMAND`). `check()` returns
every problem with the key it concerns so `deviceagentd check-config` can list them all.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_type_hints
from urllib.parse import urlsplit

from deviceagentd.core.timezone import UnknownTimeZone, site_zone
from deviceagentd.http.tls import tls_problem
from deviceagentd.mqtt.topics import TopicTemplates, template_problems

ENV_PREFIX = "DEVICEAGENTD_"
# Read by the CLI (which file to load), not a key inside the file.
CONFIG_PATH_ENV = "DEVICEAGENTD_CONFIG"
SECRET_KEYS = frozenset(
    {"mqtt.password", "uplink.password", "http.tokens", "openai.api_key", "voice.aliyun.api_key",
     "voice.openai.api_key", "voiceplatform.client_secret", "mcp.clients"}
)
PACKAGE_DIR = Path(__file__).resolve().parent
# Running from a checkout: the shipped examples sit next to the package.
SOURCE_PRODUCTS_DIR = PACKAGE_DIR.parent / "etc" / "deviceagentd" / "products"
INSTALLED_PRODUCTS_DIR = Path("/etc/deviceagentd/products")


def default_products_dir() -> str:
    return str(SOURCE_PRODUCTS_DIR if SOURCE_PRODUCTS_DIR.is_dir() else INSTALLED_PRODUCTS_DIR)


@dataclass
class MqttConfig:
    url: str = "mqtt://127.0.0.1:1883"
    username: str = ""
    password: str = ""
    client_id: str = "deviceagentd"
    # 5 = MQTT 5, 4 = MQTT 3.1.1 (the numbers brokers and EMQX use for the protocol level).
    protocol_version: int = 5
    keepalive_s: int = 60
    # How long the broker keeps our session (and queues QoS 1 messages) while we restart.
    session_expiry_s: int = 3600
    tls_ca_file: str = ""
    tls_cert_file: str = ""
    tls_key_file: str = ""
    tls_insecure: bool = False
    max_payload_bytes: int = 262144
    reconnect_min_s: float = 1.0
    reconnect_max_s: float = 5.0
    topics: TopicTemplates = field(default_factory=TopicTemplates)


@dataclass
class UplinkTopics:
    """Topics on the cloud broker. Placeholders: {siteId} (every template) and {deviceId} (the
    per-device ones). `commands` and `chat` are subscribed to for cloud requests; their default
    replies go to `command_result` and `chat_result`."""

    state: str = "sites/{siteId}/devices/{deviceId}/state"
    events: str = "sites/{siteId}/devices/{deviceId}/events"
    lifecycle: str = "sites/{siteId}/devices/{deviceId}/lifecycle"
    command_result: str = "sites/{siteId}/devices/{deviceId}/commands/result"
    gateway_status: str = "sites/{siteId}/gateway/status"
    gateway_health: str = "sites/{siteId}/gateway/health"
    commands: str = "sites/{siteId}/devices/{deviceId}/commands"
    chat: str = "sites/{siteId}/gateway/chat"
    chat_result: str = "sites/{siteId}/gateway/chat/result"


# The templates that name a device (the others are the gateway's own).
UPLINK_DEVICE_TOPICS = frozenset({"state", "events", "lifecycle", "command_result", "commands"})


@dataclass
class UplinkConfig:
    """Store-and-forward to a central MQTT broker or cluster (docs/uplink.md). Off while url is empty."""

    # mqtt://host:port or mqtts://host:port; setting it turns the uplink on.
    url: str = ""
    # This site's name on the cloud broker: [A-Za-z0-9_.-], at most 64 characters.
    site_id: str = ""
    # Empty: "deviceagentd-<site_id>".
    client_id: str = ""
    username: str = ""
    password: str = ""
    tls_ca_file: str = ""
    tls_cert_file: str = ""
    tls_key_file: str = ""
    tls_insecure: bool = False
    # 5 = MQTT 5, 4 = MQTT 3.1.1.
    protocol_version: int = 5
    keepalive_s: int = 60
    # How long the cloud broker keeps our session (subscriptions, queued requests) while we are away.
    session_expiry_s: int = 86400
    reconnect_min_s: float = 1.0
    reconnect_max_s: float = 60.0
    # What to forward.
    forward_lifecycle: bool = True
    forward_state: bool = True
    forward_events: bool = True
    forward_commands: bool = True
    forward_health: bool = True
    # At most one state message per device per interval, carrying the changes merged since the last.
    state_min_interval_s: float = 5.0
    health_interval_s: float = 60.0
    # Outbox bounds: past any of them the oldest rows that are not online/offline are dropped.
    outbox_max_rows: int = 500000
    outbox_max_age_s: float = 7 * 86400.0
    outbox_max_bytes: int = 256 * 1024 * 1024
    # Catch-up pacing: messages per second at most, and how many wait for their PUBACK at once.
    # 200, not 500: at 500 a catch-up cost LAN ingest headroom up to 0.63x (docs/benchmarks.md §15).
    max_publish_rate: float = 200.0
    max_inflight: int = 100
    topics: UplinkTopics = field(default_factory=UplinkTopics)

    @property
    def enabled(self) -> bool:
        return bool(self.url)

    @property
    def effective_client_id(self) -> str:
        return self.client_id or f"deviceagentd-{self.site_id}"


@dataclass
class HttpConfig:
    listen: str = "127.0.0.1:3000"
    tokens: list[str] = field(default_factory=list)
    max_body_bytes: int = 1048576
    # HTTPS on the HTTP port (the console, the API): PEM certificate chain and key, both or neither.
    tls_cert_file: str = ""
    tls_key_file: str = ""


@dataclass
class VoiceAliyunConfig:
    """DashScope: realtime ASR (Paraformer) and CosyVoice TTS over WebSocket."""

    # Empty: DASHSCOPE_API_KEY from the environment; still empty = not configured.
    api_key: str = ""
    url: str = "wss://dashscope.aliyuncs.com/api-ws/v1/inference"
    workspace: str = ""
    asr_model: str = "paraformer-realtime-v2"
    # DashScope's current voice list pairs each voice with one model (voices cannot be mixed).
    tts_model: str = "cosyvoice-v3-flash"
    tts_voice: str = "longanyang"
    tts_sample_rate: int = 24000


@dataclass
class VoiceOpenAIConfig:
    """OpenAI-compatible /audio/transcriptions and /audio/speech (also LAN servers)."""

    # Empty base_url = not configured. Empty api_key: OPENAI_API_KEY, or none for LAN servers.
    base_url: str = ""
    api_key: str = ""
    # whisper-1 and gpt-4o-*-transcribe shut down 2027-02-26 (openai SDK 3.63). Every model of
    # OpenAI's speech endpoint shuts down 2027-01-06; check-config says so (retired_models.py).
    asr_model: str = "gpt-transcribe"
    tts_model: str = "gpt-4o-mini-tts"
    tts_voice: str = "alloy"


@dataclass
class VoiceEspeakConfig:
    binary: str = "espeak-ng"
    voice: str = "en"
    voice_zh: str = "cmn"
    words_per_minute: int = 175


@dataclass
class VoiceOfflineConfig:
    """The offline recogniser: pocketsphinx (model inside its package) on a grammar built from the
    site's own products and devices. English only. The default when no cloud recogniser is
    configured, and the fallback when the configured one cannot be reached."""

    enabled: bool = True
    # Utterances recognised at once (each holds a decoder, ~15 MB, on its own worker thread).
    max_decoders: int = 2
    # Grammar and decoders are dropped after this long without an utterance.
    unload_after_s: float = 300.0


# Wake words XiaoZhi firmware reports in `listen detect` (xiaozhi-esp32-server's list and the
# English ones of ESP-SR): greeted, not answered as requests.
DEFAULT_WAKE_WORDS = ("你好小智", "嘿你好呀", "你好小志", "小爱同学", "你好小鑫", "你好小新", "小美同学", "小龙小龙",
                      "喵喵同学", "小滨小滨", "小冰小冰", "Hi ESP", "Hi Lexin", "Alexa", "Hey Jarvis")


@dataclass
class VoiceXiaozhiConfig:
    """Stock XiaoZhi speakers and py-xiaozhi (docs/voice-devices.md)."""

    # The WebSocket URL /xiaozhi/ota/ hands a speaker; empty: ws://<the host it asked>/ws/voice.
    websocket_url: str = ""
    # `listen detect` with one of these (case, spaces and punctuation ignored) is a wake word.
    wake_words: list[str] = field(default_factory=lambda: list(DEFAULT_WAKE_WORDS))
    # A wake word is greeted with a short phrase ("我在，请说。" / "I'm listening.").
    wake_greeting: bool = True
    # Device MCP tools: how long a tools/call may take; how many of a speaker's tools are offered.
    tool_timeout_s: float = 10.0
    max_tools: int = 32


@dataclass
class VoiceConfig:
    listen: str = "127.0.0.1:3001"
    # wss:// on the voice port (needed by a browser on an https console): PEM chain and key.
    tls_cert_file: str = ""
    tls_key_file: str = ""
    # The provider used when hello names none ("" = the first configured: aliyun, openai, offline).
    default_provider: str = ""
    # End of speech in auto mode: silence after the last voiced frame (200..1250 ms).
    silence_ms: int = 700
    vad_mode: int = 2
    energy_margin_db: float = 9.0
    min_voiced_s: float = 0.3
    max_utterance_s: float = 15.0
    no_speech_timeout_s: float = 8.0
    idle_timeout_s: float = 120.0
    # What the gateway sends: PCM s16le mono at this rate, in frames of this duration.
    output_sample_rate: int = 16000
    output_frame_ms: int = 60
    max_sessions: int = 16
    aliyun: VoiceAliyunConfig = field(default_factory=VoiceAliyunConfig)
    openai: VoiceOpenAIConfig = field(default_factory=VoiceOpenAIConfig)
    espeak: VoiceEspeakConfig = field(default_factory=VoiceEspeakConfig)
    offline: VoiceOfflineConfig = field(default_factory=VoiceOfflineConfig)
    xiaozhi: VoiceXiaozhiConfig = field(default_factory=VoiceXiaozhiConfig)


@dataclass
class StorageConfig:
    dir: str = "./state"
    batch_interval_s: float = 1.0
    batch_max_rows: int = 5000
    # Past this many rows waiting for a commit (a slow or full disk), device messages are not
    # acknowledged until commits catch up: the broker keeps them queued, nothing is dropped.
    max_backlog_rows: int = 20000
    device_state_save_s: float = 60.0
    events_max_age_days: float = 30.0
    events_max_rows: int = 1000000
    commands_max_age_days: float = 30.0
    commands_max_rows: int = 200000
    retention_interval_s: float = 300.0


@dataclass
class ProductsConfig:
    dir: str = field(default_factory=default_products_dir)


@dataclass
class DevicesConfig:
    # Seconds without any message before a device counts as offline; 0 = never by time.
    offline_after_s: float = 120.0


@dataclass
class CommandsConfig:
    default_timeout_ms: int = 30000


@dataclass
class AgentConfig:
    # local = the offline intent engine; openai = any OpenAI-compatible endpoint ([openai]).
    provider: str = "local"
    history_max_messages: int = 50
    sessions_max_age_days: float = 30.0
    max_tool_iterations: int = 6
    turn_timeout_s: float = 120.0
    max_message_chars: int = 4000
    # Turns started per second at most while several are under way (0 = no limit): device
    # traffic shares the event loop, so a chat flood makes turns wait instead of starving
    # telemetry. Far above what a room's speakers and business systems ask; a turn alone and a
    # voice turn never wait (agent.runner.TurnPacer).
    max_turns_per_s: float = 10.0
    # MQTT text requests (*_in topics): how many run at once, how many may wait.
    text_requests_concurrency: int = 2
    text_requests_queue: int = 100


@dataclass
class OpenAIConfig:
    base_url: str = "https://api.openai.com/v1"
    # Empty: OPENAI_API_KEY from the environment is used (LAN servers may need none).
    api_key: str = ""
    # gpt-4o-mini shuts down 2027-01-14 (openai SDK 3.63).
    model: str = "gpt-5.4-mini"
    connect_timeout_s: float = 5.0
    read_timeout_s: float = 30.0
    max_retries: int = 2


@dataclass
class VisionConfig:
    max_frame_bytes: int = 4194304
    frame_ttl_s: float = 900.0


@dataclass
class VoicePlatformConfig:
    """The Tuya-compatible voice platform API for in-room speakers (docs/voice-platform.md)."""

    # The speakers, rooms and scenes (TOML); empty = the /v1.0 voice platform API is off.
    rooms_file: str = ""
    # Tuya HMAC-SHA256 request signing: on when both are set.
    client_id: str = ""
    client_secret: str = ""
    # How far a signed request's `t` may be from our clock (and how long nonces are remembered).
    sign_skew_s: float = 300.0
    access_token_ttl_s: int = 7200
    # A retried message_id within this window gets the first answer, without running it again.
    idempotency_window_s: float = 300.0
    # How long Control waits for the device; speakers give up after a few seconds.
    command_timeout_ms: int = 5000


@dataclass
class McpConfig:
    """The MCP server at /mcp on the HTTP port (docs/mcp.md)."""

    enabled: bool = True
    # true: no tool that changes anything (send_command, run_scene, create/delete_schedule) for anyone.
    read_only: bool = False
    # Clients with a token of their own that works only on /mcp and only for the tools listed:
    # "<name>:<token>:<tool>,<tool>" (or "read" for every read-only tool, "*" for all tools).
    clients: list[str] = field(default_factory=list)
    # Browser origins allowed to call /mcp besides the gateway's own address.
    allowed_origins: list[str] = field(default_factory=list)
    # Sessions of clients on the 2025 protocol versions (the 2026 protocol has none).
    max_sessions: int = 64
    session_idle_s: float = 3600.0


@dataclass
class SchedulesConfig:
    """Timers, alarms and recurring actions (docs/schedules.md)."""

    max_schedules: int = 10000
    # A schedule that fell due while the gateway was off (or its clock jumped) still runs, once,
    # if it is less than this late; an older one is recorded as missed.
    missed_grace_s: float = 300.0
    # How long a scheduled command waits for the device's answer.
    command_timeout_ms: int = 10000


@dataclass
class SiteConfig:
    # The site's IANA time zone ("Asia/Shanghai"); empty = the system's ($TZ, /etc/localtime).
    # Times of day (schedules, "7 in the morning") and event summaries use it.
    timezone: str = ""


@dataclass
class LogConfig:
    level: str = "info"


@dataclass
class Config:
    mqtt: MqttConfig = field(default_factory=MqttConfig)
    uplink: UplinkConfig = field(default_factory=UplinkConfig)
    http: HttpConfig = field(default_factory=HttpConfig)
    voice: VoiceConfig = field(default_factory=VoiceConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    products: ProductsConfig = field(default_factory=ProductsConfig)
    devices: DevicesConfig = field(default_factory=DevicesConfig)
    commands: CommandsConfig = field(default_factory=CommandsConfig)
    agent: AgentConfig = field(default_factory=AgentConfig)
    openai: OpenAIConfig = field(default_factory=OpenAIConfig)
    vision: VisionConfig = field(default_factory=VisionConfig)
    voiceplatform: VoicePlatformConfig = field(default_factory=VoicePlatformConfig)
    mcp: McpConfig = field(default_factory=McpConfig)
    schedules: SchedulesConfig = field(default_factory=SchedulesConfig)
    site: SiteConfig = field(default_factory=SiteConfig)
    log: LogConfig = field(default_factory=LogConfig)
    source: str = "<defaults>"


@dataclass(frozen=True)
class ConfigProblem:
    key: str
    message: str

    def __str__(self) -> str:
        return f"{self.key}: {self.message}"


class ConfigError(Exception):
    def __init__(self, problems: list[ConfigProblem]) -> None:
        super().__init__("; ".join(str(p) for p in problems))
        self.problems = problems


@dataclass(frozen=True)
class Endpoint:
    host: str
    port: int


@dataclass(frozen=True)
class BrokerAddress:
    host: str
    port: int
    tls: bool


# ---------------------------------------------------------------------------------- loading


def load_config(path: Path | None, environ: Mapping[str, str] | None = None) -> Config:
    """Read TOML (or defaults when path is None), apply env overrides, and check everything.

    Raises ConfigError listing every problem found.
    """
    env = os.environ if environ is None else environ
    problems: list[ConfigProblem] = []
    data: dict[str, Any] = {}
    if path is not None:
        try:
            with path.open("rb") as fh:
                data = tomllib.load(fh)
        except OSError as exc:
            raise ConfigError([ConfigProblem("(file)", f"cannot read {path}: {exc.strerror}")]) from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError([ConfigProblem("(file)", f"{path} is not valid TOML: {exc}")]) from exc
    config = Config(source=str(path) if path else "<defaults>")
    _apply_table(config, data, "", problems)
    _apply_env(config, env, problems)
    if path is not None:
        _resolve_relative_dirs(config, path.parent)
    problems.extend(check(config))
    if problems:
        raise ConfigError(problems)
    return config


# Keys that existed once. A config that still sets one (in the file or the environment) is told
# what happened and what to use instead, rather than "unknown key".
REMOVED_KEYS = {
    "mqtt.shared_group": (
        "was removed: gateways sharing one broker's subscriptions each saw only part of the devices "
        "(404 for the others) and command answers went to whichever gateway the broker picked (504). "
        "Run one gateway per site and connect the sites to a central MQTT cluster with [uplink] "
        "(see docs/fleet.md); delete this key"
    ),
}


def _fields_of(obj: Any) -> dict[str, tuple[dataclasses.Field[Any], Any]]:
    hints = get_type_hints(type(obj))
    return {f.name: (f, hints[f.name]) for f in dataclasses.fields(obj) if f.name != "source"}


def _apply_table(obj: Any, table: dict[str, Any], prefix: str, problems: list[ConfigProblem]) -> None:
    known = _fields_of(obj)
    for key, value in table.items():
        dotted = f"{prefix}{key}"
        if dotted in REMOVED_KEYS:
            problems.append(ConfigProblem(dotted, REMOVED_KEYS[dotted]))
            continue
        if key not in known:
            problems.append(ConfigProblem(dotted, f"unknown key (known here: {', '.join(known)})"))
            continue
        _, hint = known[key]
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current):
            if not isinstance(value, dict):
                problems.append(ConfigProblem(dotted, "must be a table"))
                continue
            if isinstance(current, TopicTemplates):
                setattr(obj, key, _topics_from_table(current, value, dotted + ".", problems))
            else:
                _apply_table(current, value, dotted + ".", problems)
            continue
        converted = _convert(value, hint, dotted, problems)
        if converted is not None:
            setattr(obj, key, converted)


def _topics_from_table(
    current: TopicTemplates, table: dict[str, Any], prefix: str, problems: list[ConfigProblem]
) -> TopicTemplates:
    values = dataclasses.asdict(current)
    for key, value in table.items():
        if key not in values:
            problems.append(ConfigProblem(f"{prefix}{key}", f"unknown topic (known: {', '.join(values)})"))
        elif not isinstance(value, str):
            problems.append(ConfigProblem(f"{prefix}{key}", "must be a string"))
        else:
            values[key] = value
    return TopicTemplates(**values)


def _convert(value: Any, hint: Any, key: str, problems: list[ConfigProblem]) -> Any:
    if hint is bool:
        if isinstance(value, bool):
            return value
        problems.append(ConfigProblem(key, "must be true or false"))
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        problems.append(ConfigProblem(key, "must be an integer"))
    elif hint is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        problems.append(ConfigProblem(key, "must be a number"))
    elif hint is str:
        if isinstance(value, str):
            return value
        problems.append(ConfigProblem(key, "must be a string"))
    elif hint == list[str]:
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return list(value)
        problems.append(ConfigProblem(key, "must be a list of strings"))
    else:  # pragma: no cover - a new field type without a converter is a programming error
        raise TypeError(f"no converter for {key}: {hint}")
    return None


def env_name(dotted: str) -> str:
    return ENV_PREFIX + dotted.replace(".", "_").upper()


def _settable(obj: Any, prefix: str = "") -> dict[str, tuple[Any, str, Any]]:
    """Every settable key as {dotted key: (owner object, attribute, type hint)}."""
    out: dict[str, tuple[Any, str, Any]] = {}
    for name, (_, hint) in _fields_of(obj).items():
        dotted = f"{prefix}{name}"
        current = getattr(obj, name)
        if dataclasses.is_dataclass(current):
            out.update(_settable(current, dotted + "."))
        else:
            out[dotted] = (obj, name, hint)
    return out


def config_keys() -> list[str]:
    """Every configuration key, dotted (`mqtt.topics.command`), in declaration order."""
    return list(_settable(Config()))


def _parse_env_value(raw: str, hint: Any) -> Any:
    """Env values are text; lists may be JSON (`["a","b"]`) or comma separated."""
    if hint is bool:
        lowered = raw.strip().lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        return raw
    if hint is int:
        try:
            return int(raw)
        except ValueError:
            return raw
    if hint is float:
        try:
            return float(raw)
        except ValueError:
            return raw
    if hint == list[str]:
        text = raw.strip()
        if text.startswith("["):
            try:
                return json.loads(text)
            except json.JSONDecodeError:
                return raw
        return [part.strip() for part in text.split(",") if part.strip()]
    return raw


def _apply_env(config: Config, env: Mapping[str, str], problems: list[ConfigProblem]) -> None:
    known = {env_name(dotted): target for dotted, target in _settable(config).items()}
    removed = {env_name(dotted): dotted for dotted in REMOVED_KEYS}
    for name, raw in env.items():
        if not name.startswith(ENV_PREFIX) or name == CONFIG_PATH_ENV:
            continue
        if name in removed:
            dotted = removed[name]
            problems.append(ConfigProblem(name, f"sets {dotted}, which {REMOVED_KEYS[dotted]}"))
            continue
        if name not in known:
            problems.append(ConfigProblem(name, "unknown environment override (no such key)"))
            continue
        owner, attr, hint = known[name]
        if isinstance(owner, TopicTemplates):
            # Topic templates are frozen: rebuild from the current ones, so that several
            # overrides all apply.
            values = dataclasses.asdict(config.mqtt.topics)
            values[attr] = raw
            config.mqtt.topics = TopicTemplates(**values)
            continue
        converted = _convert(_parse_env_value(raw, hint), hint, name, problems)
        if converted is not None:
            setattr(owner, attr, converted)


def _resolve_relative_dirs(config: Config, base: Path) -> None:
    # Paths in a config file are relative to that file, so `deviceagentd -c /etc/x.toml` does
    # not depend on the working directory systemd happens to give us.
    for section, attr in ((config.storage, "dir"), (config.products, "dir"), (config.voiceplatform, "rooms_file")):
        value = getattr(section, attr)
        if value and not Path(value).is_absolute():
            setattr(section, attr, str((base / value).resolve()))
    files: list[tuple[object, str]] = [(broker, a) for broker in (config.mqtt, config.uplink)
                                       for a in ("tls_ca_file", "tls_cert_file", "tls_key_file")]
    files += [(ports, a) for ports in (config.http, config.voice) for a in ("tls_cert_file", "tls_key_file")]
    for owner, attr in files:
        value = getattr(owner, attr)
        if value and not Path(value).is_absolute():
            setattr(owner, attr, str((base / value).resolve()))


# ---------------------------------------------------------------------------------- checking


def parse_listen(value: str) -> Endpoint:
    host, sep, port_text = value.rpartition(":")
    if not sep or not host:
        raise ValueError("must be host:port, e.g. 127.0.0.1:3000")
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError("port must be a number from 1 to 65535")
    return Endpoint(host.strip("[]"), int(port_text))


def parse_broker_url(url: str) -> BrokerAddress:
    parts = urlsplit(url)
    if parts.scheme not in ("mqtt", "mqtts"):
        raise ValueError("must start with mqtt:// or mqtts://")
    if not parts.hostname:
        raise ValueError("has no host")
    try:
        port = parts.port
    except ValueError as exc:
        raise ValueError("port must be a number from 1 to 65535") from exc
    tls = parts.scheme == "mqtts"
    return BrokerAddress(parts.hostname, port or (8883 if tls else 1883), tls)


def check(config: Config) -> list[ConfigProblem]:
    problems: list[ConfigProblem] = []

    def bad(key: str, message: str) -> None:
        problems.append(ConfigProblem(key, message))

    mqtt = config.mqtt
    try:
        broker = parse_broker_url(mqtt.url)
    except ValueError as exc:
        bad("mqtt.url", f"{mqtt.url!r} {exc}")
        broker = None
    if mqtt.protocol_version not in (4, 5):
        bad("mqtt.protocol_version", "must be 5 (MQTT 5) or 4 (MQTT 3.1.1)")
    if not mqtt.client_id or any(c in mqtt.client_id for c in "+#/ "):
        bad("mqtt.client_id", "must be non-empty, without spaces or + # /")
    if mqtt.password and not mqtt.username:
        bad("mqtt.password", "is set but mqtt.username is empty")
    if not 5 <= mqtt.keepalive_s <= 65535:
        bad("mqtt.keepalive_s", "must be between 5 and 65535 seconds")
    if not 0 <= mqtt.session_expiry_s <= 0xFFFFFFFF:
        bad("mqtt.session_expiry_s", "must be between 0 and 4294967295 seconds")
    if not 1024 <= mqtt.max_payload_bytes <= 16 * 1024 * 1024:
        bad("mqtt.max_payload_bytes", "must be between 1024 and 16777216")
    if not 0 < mqtt.reconnect_min_s <= mqtt.reconnect_max_s:
        bad("mqtt.reconnect_min_s", "must be above 0 and at most mqtt.reconnect_max_s")
    for attr in ("tls_ca_file", "tls_cert_file", "tls_key_file"):
        value = getattr(mqtt, attr)
        if value and not Path(value).is_file():
            bad(f"mqtt.{attr}", f"file {value} does not exist")
    if bool(mqtt.tls_cert_file) != bool(mqtt.tls_key_file):
        bad("mqtt.tls_cert_file", "a client certificate needs both tls_cert_file and tls_key_file")
    if broker is not None and not broker.tls and (mqtt.tls_ca_file or mqtt.tls_cert_file):
        bad("mqtt.url", "TLS files are set but the URL is mqtt://; use mqtts:// to enable TLS")
    for name, value in dataclasses.asdict(mqtt.topics).items():
        for message in template_problems(name, value):
            bad(f"mqtt.topics.{name}", f"{value!r} {message}")

    problems.extend(ConfigProblem(key, message) for key, message in _uplink_problems(config.uplink))

    endpoints: dict[str, Endpoint] = {}
    for key, value in (("http.listen", config.http.listen), ("voice.listen", config.voice.listen)):
        try:
            endpoints[key] = parse_listen(value)
        except ValueError as exc:
            bad(key, f"{value!r} {exc}")
    if len(endpoints) == 2 and endpoints["http.listen"] == endpoints["voice.listen"]:
        bad("voice.listen", "must differ from http.listen")
    for index, token in enumerate(config.http.tokens):
        if len(token) < 16 or token != token.strip():
            bad(f"http.tokens[{index}]", "must be at least 16 characters without surrounding spaces")
    if not 1024 <= config.http.max_body_bytes <= 64 * 1024 * 1024:
        bad("http.max_body_bytes", "must be between 1024 and 67108864")
    for section in ("http", "voice"):
        ports: HttpConfig | VoiceConfig = getattr(config, section)
        problem = tls_problem(ports.tls_cert_file, ports.tls_key_file)
        if problem is not None:
            bad(f"{section}.tls_cert_file", problem)

    storage = config.storage
    if not storage.dir:
        bad("storage.dir", "must not be empty")
    if not 0.01 <= storage.batch_interval_s <= 60:
        bad("storage.batch_interval_s", "must be between 0.01 and 60 seconds")
    if not 0 <= storage.device_state_save_s <= 3600:
        bad("storage.device_state_save_s", "must be between 0 (every batch) and 3600 seconds")
    if storage.batch_max_rows < 1:
        bad("storage.batch_max_rows", "must be at least 1")
    if not 1000 <= storage.max_backlog_rows <= 1_000_000:
        bad("storage.max_backlog_rows", "must be between 1000 and 1000000")
    for attr in ("events_max_age_days", "commands_max_age_days"):
        if getattr(storage, attr) <= 0:
            bad(f"storage.{attr}", "must be above 0")
    for attr in ("events_max_rows", "commands_max_rows"):
        if getattr(storage, attr) < 100:
            bad(f"storage.{attr}", "must be at least 100")
    if storage.retention_interval_s < 1:
        bad("storage.retention_interval_s", "must be at least 1 second")

    if not Path(config.products.dir).is_dir():
        bad("products.dir", f"directory {config.products.dir} does not exist")
    if config.devices.offline_after_s < 0:
        bad("devices.offline_after_s", "must be 0 (never) or a positive number of seconds")
    if not 100 <= config.commands.default_timeout_ms <= 120000:
        bad("commands.default_timeout_ms", "must be between 100 and 120000")
    voice = config.voice
    if voice.default_provider not in ("", "aliyun", "openai", "offline"):
        bad("voice.default_provider", "must be aliyun, openai, offline or empty (the first configured)")
    if not 200 <= voice.silence_ms <= 1250:
        bad("voice.silence_ms", "must be between 200 and 1250 ms")
    if voice.vad_mode not in (0, 1, 2, 3):
        bad("voice.vad_mode", "must be 0, 1, 2 or 3 (3 filters non-speech most aggressively)")
    if not 0 <= voice.energy_margin_db <= 30:
        bad("voice.energy_margin_db", "must be between 0 and 30 dB")
    if not 0.1 <= voice.min_voiced_s <= 5:
        bad("voice.min_voiced_s", "must be between 0.1 and 5 seconds")
    if not 2 <= voice.max_utterance_s <= 60:
        bad("voice.max_utterance_s", "must be between 2 and 60 seconds")
    if not 1 <= voice.no_speech_timeout_s <= 60:
        bad("voice.no_speech_timeout_s", "must be between 1 and 60 seconds")
    if not 5 <= voice.idle_timeout_s <= 3600:
        bad("voice.idle_timeout_s", "must be between 5 and 3600 seconds")
    if voice.output_sample_rate not in (8000, 16000, 24000, 48000):
        bad("voice.output_sample_rate", "must be 8000, 16000, 24000 or 48000")
    if not 10 <= voice.output_frame_ms <= 120 or voice.output_frame_ms % 10:
        bad("voice.output_frame_ms", "must be a multiple of 10 between 10 and 120")
    if not 1 <= voice.max_sessions <= 256:
        bad("voice.max_sessions", "must be between 1 and 256")
    if not 1 <= voice.offline.max_decoders <= 8:
        bad("voice.offline.max_decoders", "must be between 1 and 8")
    if not 10 <= voice.offline.unload_after_s <= 86400:
        bad("voice.offline.unload_after_s", "must be between 10 and 86400 seconds")
    xiaozhi = voice.xiaozhi
    ws_url = urlsplit(xiaozhi.websocket_url)
    if xiaozhi.websocket_url and (ws_url.scheme not in ("ws", "wss") or not ws_url.netloc):
        bad("voice.xiaozhi.websocket_url", "must be a ws:// or wss:// URL (or empty: from the host the speaker asked)")
    if any(not word.strip() or len(word) > 64 for word in xiaozhi.wake_words):
        bad("voice.xiaozhi.wake_words", "must be non-empty words of at most 64 characters")
    if not 1 <= xiaozhi.tool_timeout_s <= 120:
        bad("voice.xiaozhi.tool_timeout_s", "must be between 1 and 120 seconds")
    if not 1 <= xiaozhi.max_tools <= 128:
        bad("voice.xiaozhi.max_tools", "must be between 1 and 128")
    if voice.aliyun.tts_sample_rate not in (8000, 16000, 22050, 24000, 44100, 48000):
        bad("voice.aliyun.tts_sample_rate", "must be 8000, 16000, 22050, 24000, 44100 or 48000")
    for key, url, schemes in (("voice.aliyun.url", voice.aliyun.url, ("ws", "wss")),
                              ("voice.openai.base_url", voice.openai.base_url, ("http", "https"))):
        if url and (urlsplit(url).scheme not in schemes or not urlsplit(url).netloc):
            bad(key, f"{url!r} must be a {' or '.join(s + '://' for s in schemes)} URL")
    agent = config.agent
    if agent.provider not in ("local", "openai"):
        bad("agent.provider", "must be local or openai")
    if not 2 <= agent.history_max_messages <= 1000:
        bad("agent.history_max_messages", "must be between 2 and 1000")
    if agent.sessions_max_age_days <= 0:
        bad("agent.sessions_max_age_days", "must be above 0")
    if not 1 <= agent.max_tool_iterations <= 20:
        bad("agent.max_tool_iterations", "must be between 1 and 20")
    if not 1 <= agent.turn_timeout_s <= 600:
        bad("agent.turn_timeout_s", "must be between 1 and 600 seconds")
    if not 0 <= agent.max_turns_per_s <= 1000:
        bad("agent.max_turns_per_s", "must be between 0 (no limit) and 1000")
    if not 1 <= agent.max_message_chars <= 100000:
        bad("agent.max_message_chars", "must be between 1 and 100000")
    if not 1 <= agent.text_requests_concurrency <= 32:
        bad("agent.text_requests_concurrency", "must be between 1 and 32")
    if not 1 <= agent.text_requests_queue <= 10000:
        bad("agent.text_requests_queue", "must be between 1 and 10000")
    openai = config.openai
    if urlsplit(openai.base_url).scheme not in ("http", "https") or not urlsplit(openai.base_url).netloc:
        bad("openai.base_url", f"{openai.base_url!r} must be an http:// or https:// URL")
    if agent.provider == "openai" and not openai.model:
        bad("openai.model", "is required when agent.provider is openai")
    if not 0.1 <= openai.connect_timeout_s <= 120:
        bad("openai.connect_timeout_s", "must be between 0.1 and 120 seconds")
    if not 0.1 <= openai.read_timeout_s <= 600:
        bad("openai.read_timeout_s", "must be between 0.1 and 600 seconds")
    if not 0 <= openai.max_retries <= 10:
        bad("openai.max_retries", "must be between 0 and 10")
    if not 1024 <= config.vision.max_frame_bytes <= 32 * 1024 * 1024:
        bad("vision.max_frame_bytes", "must be between 1024 and 33554432")
    if not 1 <= config.vision.frame_ttl_s <= 7 * 86400:
        bad("vision.frame_ttl_s", "must be between 1 second and 7 days")
    vp = config.voiceplatform
    if vp.rooms_file and not Path(vp.rooms_file).is_file():
        bad("voiceplatform.rooms_file", f"{vp.rooms_file} does not exist or is not a file")
    if bool(vp.client_id) != bool(vp.client_secret):
        bad("voiceplatform.client_id", "client_id and client_secret turn signing on together: set both or neither")
    if not 1 <= vp.sign_skew_s <= 3600:
        bad("voiceplatform.sign_skew_s", "must be between 1 and 3600 seconds")
    if not 60 <= vp.access_token_ttl_s <= 30 * 86400:
        bad("voiceplatform.access_token_ttl_s", "must be between 60 seconds and 30 days")
    if not 0 <= vp.idempotency_window_s <= 86400:
        bad("voiceplatform.idempotency_window_s", "must be between 0 (off) and 86400 seconds")
    if not 100 <= vp.command_timeout_ms <= 120000:
        bad("voiceplatform.command_timeout_ms", "must be between 100 and 120000")
    problems.extend(ConfigProblem(key, message) for key, message in _mcp_problems(config))
    sched = config.schedules
    if not 1 <= sched.max_schedules <= 100000:
        bad("schedules.max_schedules", "must be between 1 and 100000")
    if not 0 <= sched.missed_grace_s <= 7 * 86400:
        bad("schedules.missed_grace_s", "must be between 0 (never run late) and 604800 seconds")
    if not 100 <= sched.command_timeout_ms <= 120000:
        bad("schedules.command_timeout_ms", "must be between 100 and 120000")
    if config.site.timezone:
        try:
            site_zone(config.site.timezone)
        except UnknownTimeZone as exc:
            bad("site.timezone", str(exc))
    if config.log.level.lower() not in ("debug", "info", "warning", "error"):
        bad("log.level", "must be debug, info, warning or error")
    return problems


SITE_ID_RE = re.compile(r"[A-Za-z0-9_.-]{1,64}")


def _uplink_problems(uplink: UplinkConfig) -> list[tuple[str, str]]:
    problems: list[tuple[str, str]] = []
    if not uplink.url:
        return problems
    try:
        broker: BrokerAddress | None = parse_broker_url(uplink.url)
    except ValueError as exc:
        problems.append(("uplink.url", f"{uplink.url!r} {exc}"))
        broker = None
    if not uplink.site_id:
        problems.append(("uplink.site_id", "is required when uplink.url is set"))
    elif not SITE_ID_RE.fullmatch(uplink.site_id):
        problems.append(("uplink.site_id", f"{uplink.site_id!r} must be 1 to 64 of A-Z a-z 0-9 _ . - "
                                           "(no spaces or + # /: it is a topic level)"))
    if uplink.client_id and (any(c in uplink.client_id for c in "+#/ ") or len(uplink.client_id) > 128):
        problems.append(("uplink.client_id", "must be at most 128 characters, without spaces or + # /"))
    if uplink.password and not uplink.username:
        problems.append(("uplink.password", "is set but uplink.username is empty"))
    if uplink.protocol_version not in (4, 5):
        problems.append(("uplink.protocol_version", "must be 5 (MQTT 5) or 4 (MQTT 3.1.1)"))
    if not 5 <= uplink.keepalive_s <= 65535:
        problems.append(("uplink.keepalive_s", "must be between 5 and 65535 seconds"))
    if not 0 <= uplink.session_expiry_s <= 0xFFFFFFFF:
        problems.append(("uplink.session_expiry_s", "must be between 0 and 4294967295 seconds"))
    if not 0 < uplink.reconnect_min_s <= uplink.reconnect_max_s:
        problems.append(("uplink.reconnect_min_s", "must be above 0 and at most uplink.reconnect_max_s"))
    for attr in ("tls_ca_file", "tls_cert_file", "tls_key_file"):
        value = getattr(uplink, attr)
        if value and not Path(value).is_file():
            problems.append((f"uplink.{attr}", f"file {value} does not exist"))
    if bool(uplink.tls_cert_file) != bool(uplink.tls_key_file):
        problems.append(("uplink.tls_cert_file", "a client certificate needs both tls_cert_file and tls_key_file"))
    if broker is not None and not broker.tls and (uplink.tls_ca_file or uplink.tls_cert_file or uplink.tls_insecure):
        problems.append(("uplink.url", "TLS settings are set but the URL is mqtt://; use mqtts:// to enable TLS"))
    if not 0 <= uplink.state_min_interval_s <= 3600:
        problems.append(("uplink.state_min_interval_s", "must be between 0 (every change) and 3600 seconds"))
    if not 1 <= uplink.health_interval_s <= 86400:
        problems.append(("uplink.health_interval_s", "must be between 1 and 86400 seconds"))
    if not 100 <= uplink.outbox_max_rows <= 10_000_000:
        problems.append(("uplink.outbox_max_rows", "must be between 100 and 10000000"))
    if not 60 <= uplink.outbox_max_age_s <= 365 * 86400:
        problems.append(("uplink.outbox_max_age_s", "must be between 60 seconds and 365 days"))
    if not 1024 * 1024 <= uplink.outbox_max_bytes <= 64 * 1024**3:
        problems.append(("uplink.outbox_max_bytes", "must be between 1048576 (1 MiB) and 68719476736 (64 GiB)"))
    if not 1 <= uplink.max_publish_rate <= 100000:
        problems.append(("uplink.max_publish_rate", "must be between 1 and 100000 messages per second"))
    if not 1 <= uplink.max_inflight <= 65535:
        problems.append(("uplink.max_inflight", "must be between 1 and 65535"))
    template_problems = [(f"uplink.topics.{name}", f"{value!r} {message}")
                         for name, value in dataclasses.asdict(uplink.topics).items()
                         for message in uplink_template_problems(name, value)]
    problems.extend(template_problems)
    if not template_problems and not any(key == "uplink.site_id" for key, _ in problems):
        problems.extend(_request_topic_problems(uplink))
    return problems


def _request_topic_problems(uplink: UplinkConfig) -> list[tuple[str, str]]:
    """What the cloud request handler refuses in the request and reply templates (they must share
    one `sites/{siteId}/` prefix, under which a caller's response topic must lie too)."""
    # Imported only with the uplink on (this runs after the uplink.url check).
    from deviceagentd.uplink.request_topics import RequestTopics, TemplateError

    topics = uplink.topics
    try:
        RequestTopics(uplink.site_id, command=topics.commands, command_result=topics.command_result,
                      chat=topics.chat, chat_result=topics.chat_result)
    except TemplateError as exc:
        key = "uplink.topics." + ("commands" if exc.name == "command" else exc.name)
        return [(key, str(exc))]
    return []


def uplink_template_problems(name: str, template: str) -> list[str]:
    """Why an uplink topic template cannot work; empty when it is fine."""
    problems: list[str] = []
    if not template or template.startswith("/") or template.endswith("/") or "//" in template:
        problems.append("must be a non-empty topic without empty levels or a leading or trailing /")
    rest = template.replace("{siteId}", "").replace("{deviceId}", "")
    if any(c in rest for c in "+#{}$"):
        problems.append("may contain only the placeholders {siteId} and {deviceId}, no + # $ or other braces")
    if "{siteId}" not in template:
        problems.append("must contain {siteId} (one gateway must never write another site's topics)")
    if name in UPLINK_DEVICE_TOPICS and "{deviceId}" not in template:
        problems.append("must contain {deviceId}")
    if name not in UPLINK_DEVICE_TOPICS and "{deviceId}" in template:
        problems.append("is the gateway's own topic: it cannot contain {deviceId}")
    for placeholder in ("{siteId}", "{deviceId}"):
        levels = template.split("/")
        if template.count(placeholder) > 1:
            problems.append(f"uses {placeholder} more than once")
        elif placeholder in template and placeholder not in levels:
            problems.append(f"{placeholder} must fill a whole topic level")
    return problems


def _mcp_problems(config: Config) -> list[tuple[str, str]]:
    # The client entries are parsed where they are used (deviceagentd.mcp.clients, a small
    # module without the server), so the rules live in one place.
    from deviceagentd.mcp.clients import ClientSpecError, parse_clients

    mcp = config.mcp
    problems: list[tuple[str, str]] = []
    try:
        clients = parse_clients(mcp.clients)
    except ClientSpecError as exc:
        problems.append((f"mcp.clients[{exc.index}]", exc.reason))
        clients = []
    if clients and not config.http.tokens:
        problems.append(("mcp.clients", "needs http.tokens: without them the whole API is open, so a client's "
                                        "tool list would limit nothing"))
    clashing = {c.name for c in clients if c.token in config.http.tokens}
    if clashing:
        problems.append(("mcp.clients", f"the token of {', '.join(sorted(clashing))} is also in http.tokens; "
                                        "give each client a token of its own"))
    for index, origin in enumerate(mcp.allowed_origins):
        parts = urlsplit(origin)
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.path not in ("", "/"):
            problems.append((f"mcp.allowed_origins[{index}]",
                             f"{origin!r} must be an origin like http://host:port (scheme, host, optional port)"))
    if not 1 <= mcp.max_sessions <= 10000:
        problems.append(("mcp.max_sessions", "must be between 1 and 10000"))
    if not 60 <= mcp.session_idle_s <= 7 * 86400:
        problems.append(("mcp.session_idle_s", "must be between 60 and 604800 seconds"))
    return problems


# ---------------------------------------------------------------------------------- showing


def effective_config(config: Config) -> dict[str, Any]:
    """The config as a plain dict with secrets masked, for `check-config` and logs."""
    data = dataclasses.asdict(config)
    data.pop("source", None)
    for dotted in SECRET_KEYS:
        *path, key = dotted.split(".")
        table = data
        for part in path:
            table = table[part]
        value = table[key]
        if isinstance(value, list):
            table[key] = ["********" for _ in value]
        elif value:
            table[key] = "********"
    return data


def to_toml(data: Mapping[str, Any], prefix: str = "") -> str:
    """Render a nested dict as TOML (enough for our own config: scalars, string lists, tables)."""
    lines: list[str] = []
    tables: list[tuple[str, Mapping[str, Any]]] = []
    for key, value in data.items():
        if isinstance(value, Mapping):
            tables.append((f"{prefix}{key}", value))
        else:
            lines.append(f"{key} = {_toml_value(value)}")
    out = "\n".join(lines)
    for name, table in tables:
        block = f"[{name}]\n" + to_toml(table, f"{name}.")
        out = f"{out}\n\n{block}" if out else block
    return out


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return json.dumps(str(value), ensure_ascii=False)
