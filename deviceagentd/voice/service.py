"""What every voice session shares: the configured speech providers, their HTTP client, the
session settings and the registry of open sessions; and `announce`, which speaks on a speaker's
open session. Built once by the daemon.

Providers (`[voice]` in the config):
- `aliyun`: DashScope realtime ASR + CosyVoice TTS, configured when `voice.aliyun.api_key` (or
  `$DASHSCOPE_API_KEY`) is set;
- `openai`: the OpenAI-compatible audio endpoints, configured when `voice.openai.base_url` is
  set (key from `voice.openai.api_key` or `$OPENAI_API_KEY`; LAN servers may need none);
- `espeak`: local espeak-ng, TTS only. It speaks when the chosen provider has no TTS (its
  `tts_model` is empty) and espeak-ng is installed, and it says the apologies when a turn fails;
- `offline`: the offline recogniser (voice/recognizer/, ASR only, English): pocketsphinx on a
  grammar built from the site's products and devices. It is the default when no cloud
  recogniser is configured, and each session's cloud recogniser falls back to it for a turn
  the cloud cannot take (fallback.py). `voice.offline.enabled = false` turns it off.

A provider with an empty `asr_model` offers no ASR (and cannot be chosen in hello); one with an
empty `tts_model` offers no TTS. Credentials are never logged.

Importing this module loads neither numpy nor webrtcvad (nor the provider clients): the daemon
builds the service at start, and the audio modules load with the first voice session.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import tzinfo
from typing import TYPE_CHECKING, Final

import aiohttp

from deviceagentd.agent.runner import Agent
from deviceagentd.config import VoiceConfig
from deviceagentd.core.clock import Clock
from deviceagentd.core.language import mostly_chinese
from deviceagentd.core.metrics import Metrics
from deviceagentd.core.timezone import site_zone
from deviceagentd.voice.connection import SessionRegistry
from deviceagentd.voice.mcp import McpStats
from deviceagentd.voice.settings import SessionSettings

if TYPE_CHECKING:
    from deviceagentd.voice.providers.base import AsrProvider, TtsProvider
    from deviceagentd.voice.providers.offline_asr import OfflineAsr
    from deviceagentd.voice.recognizer.engine import OfflineEngine
    from deviceagentd.voice.recognizer.site import SiteSource

log = logging.getLogger("deviceagentd.voice")

ALIYUN = "aliyun"
OPENAI = "openai"
ESPEAK = "espeak"
OFFLINE = "offline"
# Providers a hello may name, in the order used when it names none (and no default is set).
ASR_PROVIDERS = (ALIYUN, OPENAI, OFFLINE)
CLOUD_ASR = (ALIYUN, OPENAI)
USER_AGENT = "deviceagentd-voice"
ASR_NOT_CONFIGURED = "asr_not_configured"
# An announcement longer than this is refused (a schedule's reminder, not an audiobook).
MAX_ANNOUNCEMENT_CHARS: Final = 1000


@dataclass(frozen=True)
class Capabilities:
    """Which speech providers this gateway can use, from the config, the environment and what
    is installed (found, never imported). Shared by the service and `check-config`."""

    config: VoiceConfig
    aliyun_key: str
    openai_key: str
    espeak_path: str | None
    pocketsphinx: bool

    @classmethod
    def detect(cls, config: VoiceConfig, environ: Mapping[str, str] | None = None) -> Capabilities:
        env = os.environ if environ is None else environ
        return cls(config, config.aliyun.api_key or env.get("DASHSCOPE_API_KEY", ""),
                   config.openai.api_key or env.get("OPENAI_API_KEY", ""), shutil.which(config.espeak.binary),
                   importlib.util.find_spec("pocketsphinx") is not None)

    def has_asr(self, name: str) -> bool:
        if name == ALIYUN:
            return bool(self.aliyun_key and self.config.aliyun.asr_model)
        if name == OPENAI:
            return bool(self.config.openai.base_url and self.config.openai.asr_model)
        if name == OFFLINE:
            return self.config.offline.enabled and self.pocketsphinx
        return False

    def has_tts(self, name: str) -> bool:
        if name == ALIYUN:
            return bool(self.aliyun_key and self.config.aliyun.tts_model)
        if name == OPENAI:
            return bool(self.config.openai.base_url and self.config.openai.tts_model)
        if name == ESPEAK:
            return self.espeak_path is not None
        return False

    def asr_providers(self) -> tuple[str, ...]:
        """The recognisers a hello may choose, the default first."""
        names = [name for name in ASR_PROVIDERS if self.has_asr(name)]
        default = self.config.default_provider
        if default in names:
            names.remove(default)
            names.insert(0, default)
        return tuple(names)

    def tts_for(self, asr: str) -> str | None:
        return asr if self.has_tts(asr) else ESPEAK if self.has_tts(ESPEAK) else None

    def plan(self) -> list[str]:
        """What each language gets, and warnings when voice cannot work: for check-config."""
        lines: list[str] = []
        espeak = self.config.espeak
        for language, label in (("en", "English"), ("zh", "Chinese")):
            recognisers = [n for n in self.asr_providers() if n != OFFLINE or language == "en"]
            asr = recognisers[0] if recognisers else None
            tts = self.tts_for(asr) if asr else self.tts_for(OFFLINE)
            voice = (f"espeak-ng voice {espeak.voice_zh if language == 'zh' else espeak.voice}" if tts == ESPEAK
                     else f"{tts} TTS" if tts else "no voice (replies are text only)")
            if asr is None:
                heard = ("none: the offline recogniser understands English only, so a Chinese speaker is told "
                         "so aloud" if language == "zh" and self.has_asr(OFFLINE) else "none")
            elif asr == OFFLINE:
                heard = "offline (pocketsphinx, a grammar of this site's products and devices)"
            else:
                fallback = ", offline when it cannot be reached" if language == "en" and self.has_asr(OFFLINE) else ""
                heard = f"{asr}{fallback}"
            lines.append(f"voice, {label}: recogniser {heard}; speaks with {voice}")
        if not self.asr_providers():
            why = ("voice.offline.enabled is false" if not self.config.offline.enabled
                   else "pocketsphinx is not installed")
            lines.append(f"WARNING: voice cannot work: no recogniser ({why}; no voice.aliyun.api_key or "
                         "DASHSCOPE_API_KEY, no voice.openai.base_url)")
        elif self.config.offline.enabled and not self.pocketsphinx:
            lines.append("WARNING: voice.offline.enabled but pocketsphinx is not installed: no offline recogniser "
                         "and no fallback when the cloud cannot be reached")
        if self.espeak_path is None:
            lines.append(f"WARNING: {espeak.binary} is not installed: no offline voice and no spoken apologies "
                         "(apt-get install espeak-ng)")
        return lines


@dataclass(frozen=True)
class ProviderChoice:
    asr: str
    tts: str | None  # None: no TTS at all (replies are text only)


class ProviderChoiceError(Exception):
    """hello named a provider we cannot use; `code` and `message` go to the client."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass
class VoiceStats:
    """Totals since start (exported in /metrics)."""

    sessions: int = 0
    turns: int = 0
    errors: int = 0
    dropped_audio: int = 0  # audio messages received while not listening
    bad_audio: int = 0  # audio messages that did not decode (corrupt Opus packets)


class VoiceService:
    def __init__(
        self,
        config: VoiceConfig,
        agent: Agent,
        metrics: Metrics,
        clock: Clock,
        *,
        tokens: Sequence[str] = (),
        environ: Mapping[str, str] | None = None,
        settings: SessionSettings | None = None,
        zone: tzinfo | None = None,
        site: SiteSource | None = None,
    ) -> None:
        self.config = config
        self.agent = agent
        self.clock = clock
        self.tokens = tuple(tokens)
        self.zone = zone if zone is not None else site_zone("")  # the site's, for the OTA answer
        self.settings = settings or SessionSettings.from_config(config)
        self.stats = VoiceStats()
        self.mcp_stats = McpStats()
        self.sessions = SessionRegistry(config.max_sessions)
        self.capabilities = Capabilities.detect(config, environ)
        self._aliyun_key = self.capabilities.aliyun_key
        self._openai_key = self.capabilities.openai_key
        # The offline recogniser needs the site (for its grammar) and pocketsphinx (found, not
        # imported: nothing of it is loaded before a speaker talks).
        self._site = site
        self._offline: OfflineEngine | None = None
        self._offline_provider: OfflineAsr | None = None
        self._asr: dict[str, AsrProvider] = {}
        self._tts: dict[str, TtsProvider] = {}
        self._http: aiohttp.ClientSession | None = None
        self._register_metrics(metrics)
        self._log_providers()

    # ------------------------------------------------------------------ what is configured

    def has_asr(self, name: str) -> bool:
        if name == OFFLINE and self._site is None:
            return False
        return self.capabilities.has_asr(name)

    def has_tts(self, name: str) -> bool:
        return self.capabilities.has_tts(name)

    @property
    def asr_providers(self) -> tuple[str, ...]:
        """The providers a hello may choose, the default first."""
        return tuple(n for n in self.capabilities.asr_providers() if self.has_asr(n))

    @property
    def open_sessions(self) -> int:
        return len(self.sessions)

    async def announce(self, device_id: str, text: str, language: str | None = None) -> bool:
        """Speak `text` on the open /ws/voice session of the speaker `device_id` (its Device-Id
        header, else its hello's deviceId), outside any turn: it waits for a reply being spoken
        to end, is heard like a reply (the microphone muted meanwhile), and a client's `abort`
        stops it. `language` ("zh", "en-US", ...) picks the voice; None: from the text.

        Returns True once it has been played to the end; False when no session of that speaker
        is open (or it has no TTS), or the speech failed, was aborted or the client left.
        Raises ValueError for empty text or text over MAX_ANNOUNCEMENT_CHARS characters."""
        if not text.strip():
            raise ValueError("an announcement needs text")
        if len(text) > MAX_ANNOUNCEMENT_CHARS:
            raise ValueError(f"an announcement is limited to {MAX_ANNOUNCEMENT_CHARS} characters")
        session = self.sessions.for_device(device_id)
        if session is None:
            return False
        return await session.announce(text, language)

    def choose(self, requested: str | None) -> ProviderChoice:
        """The providers for a hello's `provider` (None = the default). Raises
        ProviderChoiceError naming what is configured."""
        configured = self.asr_providers
        if not configured:
            raise ProviderChoiceError(
                ASR_NOT_CONFIGURED,
                "no speech recognition is configured on this gateway: set voice.aliyun.api_key "
                "(or DASHSCOPE_API_KEY) or voice.openai.base_url, or install pocketsphinx and keep "
                "voice.offline.enabled for the offline recogniser",
            )
        listed = ", ".join(configured)
        if requested is None:
            name = configured[0]
        elif requested in configured:
            name = requested
        elif requested == ESPEAK:
            raise ProviderChoiceError(
                "provider_not_configured", f"espeak only speaks, it cannot recognise speech; configured: {listed}"
            )
        elif requested in ASR_PROVIDERS:
            raise ProviderChoiceError(
                "provider_not_configured",
                f"provider {requested!r} is not configured on this gateway; configured: {listed}",
            )
        else:
            raise ProviderChoiceError("unknown_provider", f"unknown provider {requested!r}; configured: {listed}")
        return ProviderChoice(name, self.capabilities.tts_for(name))

    # ------------------------------------------------------------------ provider clients

    def asr(self, name: str) -> AsrProvider:
        """The ASR client of a configured provider, built on first use."""
        if name == OFFLINE:
            return self._offline_asr()
        provider = self._asr.get(name)
        if provider is None:
            provider = self._asr[name] = self._build_asr(name)
        return provider

    def session_asr(self, name: str, session: str) -> AsrProvider:
        """The recogniser of one session: a cloud one with the offline recogniser behind it (when
        that is available), or the offline one itself (remembering the session's voice)."""
        if name == OFFLINE:
            from deviceagentd.voice.providers.offline_asr import SessionOfflineAsr

            return SessionOfflineAsr(self._offline_asr(), session)
        provider = self.asr(name)
        if name in CLOUD_ASR and self.has_asr(OFFLINE):
            from deviceagentd.voice.fallback import FallbackAsr
            from deviceagentd.voice.providers.offline_asr import SessionOfflineAsr

            return FallbackAsr(provider, SessionOfflineAsr(self._offline_asr(), session),
                               max_buffer_s=self.config.max_utterance_s + 5.0)
        return provider

    async def prepare_offline(self) -> None:
        """Load the offline recogniser ahead of the first utterance (a session chose it at hello);
        a failure is logged by the engine and reported at the utterance."""
        from deviceagentd.voice.recognizer.decoder import RecogniserUnavailable

        with contextlib.suppress(RecogniserUnavailable):
            await self._offline_engine().prepare()

    def _offline_engine(self) -> OfflineEngine:
        if self._offline is None:
            from deviceagentd.voice.recognizer.engine import EngineSettings, OfflineEngine

            assert self._site is not None
            offline = self.config.offline
            self._offline = OfflineEngine(self._site, EngineSettings(
                max_decoders=offline.max_decoders, unload_after_s=offline.unload_after_s,
                espeak_binary=self.config.espeak.binary))
        return self._offline

    def _offline_asr(self) -> OfflineAsr:
        if self._offline_provider is None:
            from deviceagentd.voice.providers.offline_asr import OfflineAsr

            self._offline_provider = OfflineAsr(self._offline_engine())
        return self._offline_provider

    def tts(self, name: str) -> TtsProvider:
        provider = self._tts.get(name)
        if provider is None:
            provider = self._tts[name] = self._build_tts(name)
        return provider

    def tts_voice(self, name: str, text: str, language: str | None = None) -> str | None:
        """The voice for a clause: espeak-ng needs a Chinese voice for Chinese text (or when
        `language` says Chinese); the cloud voices speak both."""
        if name == ESPEAK:
            espeak = self.config.espeak
            zh = language.lower().startswith("zh") if language else mostly_chinese(text)
            return espeak.voice_zh if zh else espeak.voice
        return None

    def _client(self) -> aiohttp.ClientSession:
        # One HTTP client for every provider and session (keep-alive to the cloud), made on
        # first use inside the running loop.
        if self._http is None or self._http.closed:
            self._http = aiohttp.ClientSession(headers={"User-Agent": USER_AGENT})
        return self._http

    def _build_asr(self, name: str) -> AsrProvider:
        from deviceagentd.voice.providers import DashScopeAsr, DashScopeAsrSettings, OpenAiAsr, OpenAiAsrSettings

        if name == ALIYUN:
            aliyun = self.config.aliyun
            return DashScopeAsr(
                DashScopeAsrSettings(
                    api_key=self._aliyun_key,
                    url=aliyun.url,
                    model=aliyun.asr_model,
                    workspace=aliyun.workspace,
                    # The service's sentence breaks agree with our end of speech.
                    max_sentence_silence_ms=min(max(self.config.silence_ms, 200), 6000),
                ),
                self._client(),
            )
        if name == OPENAI:
            openai = self.config.openai
            return OpenAiAsr(
                OpenAiAsrSettings(
                    base_url=openai.base_url,
                    api_key=self._openai_key,
                    model=openai.asr_model,
                    max_utterance_s=max(30.0, self.config.max_utterance_s + 5.0),
                ),
                self._client(),
            )
        raise ValueError(f"no ASR provider {name!r}")

    def _build_tts(self, name: str) -> TtsProvider:
        from deviceagentd.voice.providers import (
            DashScopeTts,
            DashScopeTtsSettings,
            EspeakSettings,
            EspeakTts,
            OpenAiTts,
            OpenAiTtsSettings,
        )

        if name == ALIYUN:
            aliyun = self.config.aliyun
            return DashScopeTts(
                DashScopeTtsSettings(
                    api_key=self._aliyun_key,
                    url=aliyun.url,
                    workspace=aliyun.workspace,
                    model=aliyun.tts_model,
                    voice=aliyun.tts_voice,
                    sample_rate=aliyun.tts_sample_rate,
                ),
                self._client(),
            )
        if name == OPENAI:
            openai = self.config.openai
            return OpenAiTts(
                OpenAiTtsSettings(
                    base_url=openai.base_url, api_key=self._openai_key, model=openai.tts_model, voice=openai.tts_voice
                ),
                self._client(),
            )
        if name == ESPEAK:
            espeak = self.config.espeak
            return EspeakTts(
                EspeakSettings(binary=espeak.binary, voice=espeak.voice, words_per_minute=espeak.words_per_minute)
            )
        raise ValueError(f"no TTS provider {name!r}")

    # ------------------------------------------------------------------ lifecycle

    async def close(self) -> None:
        """Close every open session (1001), then the provider clients. Idempotent."""
        await self.sessions.close_all()
        providers: list[AsrProvider | TtsProvider] = [*self._asr.values(), *self._tts.values()]
        self._asr.clear()
        self._tts.clear()
        for provider in providers:
            await provider.close()
        self._offline_provider = None
        offline, self._offline = self._offline, None
        if offline is not None:
            await offline.close()
        http, self._http = self._http, None
        if http is not None and not http.closed:
            await http.close()

    def _register_metrics(self, metrics: Metrics) -> None:
        stats = self.stats
        metrics.gauge("deviceagentd_voice_sessions_total", "Voice sessions accepted since start",
                      lambda: stats.sessions, kind="counter")
        metrics.gauge("deviceagentd_voice_turns_total", "Voice turns sent to the agent", lambda: stats.turns,
                      kind="counter")
        metrics.gauge("deviceagentd_voice_errors_total", "error messages sent to voice clients",
                      lambda: stats.errors, kind="counter")
        metrics.gauge("deviceagentd_voice_dropped_audio_total", "Audio messages received while not listening",
                      lambda: stats.dropped_audio, kind="counter")
        mcp = self.mcp_stats
        metrics.gauge("deviceagentd_voice_device_tool_calls_total", "Calls of speakers' own (MCP) tools",
                      lambda: mcp.tool_calls, kind="counter")
        metrics.gauge("deviceagentd_voice_device_tool_failures_total",
                      "Calls of speakers' own tools that failed (error, timeout, disconnect)",
                      lambda: mcp.tool_failures, kind="counter")
        metrics.gauge("deviceagentd_voice_mcp_bad_messages_total", "MCP messages from speakers that were dropped",
                      lambda: mcp.bad_messages, kind="counter")
        metrics.gauge("deviceagentd_voice_bad_audio_total", "Audio messages that did not decode (corrupt Opus)",
                      lambda: stats.bad_audio, kind="counter")

    def _log_providers(self) -> None:
        parts = []
        if self.has_asr(ALIYUN) or self.has_tts(ALIYUN):
            source = "voice.aliyun.api_key" if self.config.aliyun.api_key else "DASHSCOPE_API_KEY"
            parts.append(f"aliyun (key from {source})")
        if self.has_asr(OPENAI) or self.has_tts(OPENAI):
            parts.append("openai")
        if self.has_tts(ESPEAK):
            parts.append("espeak (TTS)")
        if self.has_asr(OFFLINE):
            parts.append("offline (ASR, English)")
        elif self.config.offline.enabled and self._site is not None and not self.capabilities.pocketsphinx:
            log.warning("voice: the offline recogniser is enabled but pocketsphinx is not installed "
                        "(pip install pocketsphinx)")
        if self.config.default_provider and not self.has_asr(self.config.default_provider):
            log.warning("voice.default_provider %r is not configured; hello without provider uses %s",
                        self.config.default_provider, (self.asr_providers or ("none",))[0])
        if not self.asr_providers:
            log.info("voice: no speech recognition configured; /ws/voice answers hello with an error")
        else:
            log.info("voice providers: %s", ", ".join(parts))
