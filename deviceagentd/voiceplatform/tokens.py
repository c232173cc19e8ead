"""Voice tokens of in-room speakers (SPEC §6, reference/tuya-voice.md §3).

* An access token works for `access_ttl_s` (7200 s by default), any number of times.
* A refresh token never expires but works once: a refresh replaces BOTH tokens of the pair.
* A speaker has at most one live pair: issuing a new one revokes the one before.
* 1010 (TOKEN_EXPIRED) means "refresh me": an access token past its expiry whose pair is still
  the live one. 1011 (TOKEN_INVALID) means "start over": unknown, revoked, replaced by a
  refresh, or a refresh token that was used already.

Checks run on every execute call, so `check_access` is a dict lookup on the loop thread: the
live pairs are kept in memory, keyed by the SHA-256 of each token, and written through to
SQLite (hashes only, one row per speaker) so they survive restarts. A plain SHA-256 is enough:
tokens are 128 random bits, so there is no dictionary an attacker could run through it.

Ordering and durability: memory changes in the same synchronous step that hands the write
to the store, so memory agrees with the commit order even when calls for one speaker
overlap (the last accepted write wins in both). New tokens are returned only after that
write is committed, so a crash can neither leave a speaker holding a token the database
does not know, nor bring back a refresh token that was already exchanged (its row has been
replaced on disk before the new pair leaves the gateway). If the commit fails the call fails
with 500 and the memory copy stays changed: the new tokens were never handed out, so the
speaker obtains a new pair, and nothing half-done stays usable.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import secrets
from dataclasses import dataclass
from typing import Protocol

from deviceagentd.core.clock import Clock
from deviceagentd.store.errors import StoreError
from deviceagentd.store.records import VoiceTokenRecord
from deviceagentd.voiceplatform import errors as codes
from deviceagentd.voiceplatform.errors import VoicePlatformError

log = logging.getLogger("deviceagentd.voiceplatform")

DEFAULT_ACCESS_TTL_S = 7200
# A speaker gives up on a call after a few seconds; a store that cannot commit within this
# is failing (bad SD card), and the speaker gets 500 instead of a call that never ends.
DEFAULT_COMMIT_TIMEOUT_S = 10.0
TOKEN_BYTES = 16
# What we issue: 32 lowercase hex characters. Anything else cannot be one of ours.
_TOKEN_SHAPE = re.compile(r"[0-9a-f]{32}")


@dataclass(frozen=True)
class IssuedTokens:
    access_token: str
    refresh_token: str
    expires_in_s: int
    """How long the access token works, in seconds (Tuya's `expire_time` is a duration)."""


class TokenStore(Protocol):
    """What the token service needs from the store (deviceagentd.store.Store has it)."""

    def save_voice_token(self, record: VoiceTokenRecord) -> None: ...

    def delete_voice_token(self, voice_id: str) -> None: ...

    def load_voice_tokens(self) -> list[VoiceTokenRecord]: ...

    async def flush(self) -> None: ...


def token_hash(token: str) -> str:
    """The form a token is stored and looked up in: lowercase hex SHA-256 of its UTF-8 bytes."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def _lookup_key(token: str) -> str | None:
    return token_hash(token) if _TOKEN_SHAPE.fullmatch(token) else None


class TokenService:
    def __init__(
        self,
        store: TokenStore,
        clock: Clock,
        access_ttl_s: int = DEFAULT_ACCESS_TTL_S,
        *,
        commit_timeout_s: float = DEFAULT_COMMIT_TIMEOUT_S,
    ) -> None:
        if access_ttl_s < 1:
            raise ValueError(f"access_ttl_s must be at least 1, got {access_ttl_s}")
        if commit_timeout_s <= 0:
            raise ValueError(f"commit_timeout_s must be positive, got {commit_timeout_s}")
        self._store = store
        self._clock = clock
        self.access_ttl_s = access_ttl_s
        self._commit_timeout_s = commit_timeout_s
        # The live pair of each speaker, and the same records by token hash.
        self._by_voice: dict[str, VoiceTokenRecord] = {}
        self._by_access: dict[str, VoiceTokenRecord] = {}
        self._by_refresh: dict[str, VoiceTokenRecord] = {}

    @property
    def live_pairs(self) -> int:
        """Speakers holding a live pair (expired access tokens included: they can refresh)."""
        return len(self._by_voice)

    def pair_of(self, voice_id: str) -> VoiceTokenRecord | None:
        """The speaker's live pair (hashes and times only), or None."""
        return self._by_voice.get(voice_id)

    async def load(self) -> None:
        """Take the live pairs from the store (at daemon start, before any call)."""
        records = self._store.load_voice_tokens()
        self._by_voice.clear()
        self._by_access.clear()
        self._by_refresh.clear()
        for record in records:
            self._install(record)

    async def issue(self, voice_id: str) -> IssuedTokens:
        """A new pair for the speaker; its previous pair stops working."""
        if not voice_id:
            raise ValueError("voice_id must not be empty")
        issued = self._replace(voice_id)
        await self._commit(f"new tokens of speaker {voice_id!r}")
        return issued

    async def refresh(self, refresh_token: str) -> tuple[str, IssuedTokens]:
        """Exchange a refresh token (once) for a new pair: (voice_id, the new pair)."""
        key = _lookup_key(refresh_token)
        current = None if key is None else self._by_refresh.get(key)
        if current is None:
            raise VoicePlatformError(
                codes.TOKEN_INVALID, "the refresh token is unknown, was used already, or was revoked"
            )
        issued = self._replace(current.voice_id)
        await self._commit(f"refreshed tokens of speaker {current.voice_id!r}")
        return current.voice_id, issued

    def check_access(self, access_token: str) -> str:
        """The speaker a live, unexpired access token belongs to; raises 1010 or 1011."""
        key = _lookup_key(access_token)
        record = None if key is None else self._by_access.get(key)
        if record is None:
            raise VoicePlatformError(
                codes.TOKEN_INVALID, "the access token is unknown, was replaced by a refresh, or was revoked"
            )
        if self._clock.wall_ms() >= record.expires_at_ms:
            raise VoicePlatformError(codes.TOKEN_EXPIRED, "refresh it with the refresh token")
        return record.voice_id

    async def revoke(self, voice_id: str) -> bool:
        """End the speaker's live pair; False if it had none."""
        if voice_id not in self._by_voice:
            return False
        self._remove(voice_id)
        await self._commit(f"revoking the tokens of speaker {voice_id!r}")
        return True

    async def forget_except(self, voice_ids: set[str]) -> int:
        """Drop the pairs of speakers not in `voice_ids` (no longer configured); how many went."""
        gone = [voice_id for voice_id in self._by_voice if voice_id not in voice_ids]
        for voice_id in gone:
            self._remove(voice_id)
        if gone:
            await self._commit(f"dropping the tokens of {len(gone)} speakers")
        return len(gone)

    # --- internals: every change goes to the store and to memory in one synchronous step ---

    def _replace(self, voice_id: str) -> IssuedTokens:
        access, refresh = secrets.token_hex(TOKEN_BYTES), secrets.token_hex(TOKEN_BYTES)
        now_ms = self._clock.wall_ms()
        record = VoiceTokenRecord(
            voice_id=voice_id,
            access_hash=token_hash(access),
            refresh_hash=token_hash(refresh),
            issued_at_ms=now_ms,
            expires_at_ms=now_ms + self.access_ttl_s * 1000,
        )
        try:
            self._store.save_voice_token(record)
        except StoreError as exc:
            raise VoicePlatformError(codes.SYSTEM_ERROR, f"tokens cannot be saved: {exc}") from exc
        self._forget(voice_id)
        self._install(record)
        return IssuedTokens(access, refresh, self.access_ttl_s)

    def _remove(self, voice_id: str) -> None:
        # Memory first: a store that refuses the delete (closed) must still not leave the
        # tokens working until the restart.
        self._forget(voice_id)
        try:
            self._store.delete_voice_token(voice_id)
        except StoreError as exc:
            raise VoicePlatformError(codes.SYSTEM_ERROR, f"tokens cannot be deleted: {exc}") from exc

    def _install(self, record: VoiceTokenRecord) -> None:
        self._by_voice[record.voice_id] = record
        self._by_access[record.access_hash] = record
        self._by_refresh[record.refresh_hash] = record

    def _forget(self, voice_id: str) -> None:
        old = self._by_voice.pop(voice_id, None)
        if old is not None:
            del self._by_access[old.access_hash]
            del self._by_refresh[old.refresh_hash]

    async def _commit(self, what: str) -> None:
        try:
            await asyncio.wait_for(self._store.flush(), self._commit_timeout_s)
        except TimeoutError as exc:
            log.error("voice platform: %s not saved within %.0f s; answering 500", what, self._commit_timeout_s)
            raise VoicePlatformError(codes.SYSTEM_ERROR, "tokens could not be saved in time") from exc
        except StoreError as exc:
            log.error("voice platform: %s not saved: %s", what, exc)
            raise VoicePlatformError(codes.SYSTEM_ERROR, "tokens could not be saved") from exc
