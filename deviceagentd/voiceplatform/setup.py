"""Builds the voice platform from the config; imported only when `voiceplatform.rooms_file` is set,
so a gateway without speakers does not carry it in memory."""

from __future__ import annotations

from pathlib import Path

from deviceagentd.config import VoicePlatformConfig
from deviceagentd.core.catalog import Catalog
from deviceagentd.core.clock import Clock
from deviceagentd.core.commands import CommandService
from deviceagentd.core.metrics import Metrics
from deviceagentd.core.registry import DeviceRegistry
from deviceagentd.voiceplatform.idempotency import IdempotencyCache
from deviceagentd.voiceplatform.profile import VoiceProfile, load_voice_profiles
from deviceagentd.voiceplatform.rooms import Rooms, load_rooms
from deviceagentd.voiceplatform.service import VoicePlatform, VoicePlatformSettings
from deviceagentd.voiceplatform.signing import RequestVerifier, SigningSettings
from deviceagentd.voiceplatform.tokens import TokenService, TokenStore


def load_configuration(config: VoicePlatformConfig, catalog: Catalog) -> tuple[Rooms, dict[str, VoiceProfile]]:
    """Rooms and voice profiles; raises SpecError (voice sections) or ConfigError (rooms file)."""
    profiles = load_voice_profiles(catalog)
    rooms = load_rooms(Path(config.rooms_file), catalog, frozenset(profiles))
    return rooms, profiles


def build_voice_platform(
    config: VoicePlatformConfig,
    catalog: Catalog,
    registry: DeviceRegistry,
    commands: CommandService,
    token_store: TokenStore,
    metrics: Metrics,
    clock: Clock,
) -> VoicePlatform:
    rooms, profiles = load_configuration(config, catalog)
    verifier = None
    if config.client_id and config.client_secret:
        verifier = RequestVerifier(SigningSettings(config.client_id, config.client_secret, config.sign_skew_s), clock)
    return VoicePlatform(
        rooms=rooms,
        profiles=profiles,
        registry=registry,
        commands=commands,
        tokens=TokenService(token_store, clock, config.access_token_ttl_s),
        verifier=verifier,
        idempotency=IdempotencyCache(config.idempotency_window_s, monotonic=clock.monotonic),
        metrics=metrics,
        settings=VoicePlatformSettings(command_timeout_ms=config.command_timeout_ms),
        clock=clock,
    )
