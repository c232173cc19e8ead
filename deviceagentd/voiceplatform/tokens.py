"""Voice tokens of in-room speakers (SPEC §6, reference/tuya-voice.md §3).

* An access token works for `access_ttl_s` (7200 s by default), any number of times.
* A refresh token never expires but works once: a refresh replaces BOTH tokens of the pair.
* A speaker has one live pair. Obtaining a new pair does not end it at once: the new pair
  waits as the speaker's *pending* pair, and the live pair keeps working until the pending
  one is first used (an execute or invalidate with its access token, or a refresh with its
  refresh token), which makes it the live pair and ends the old one. So an obtain call that
  the speaker did not make (a guessed brand code, a replayed signed request) cannot cut off
  the speaker that holds the live pair; obtaining again replaces only the pending pair.
  A speaker without a live pair gets its new pair live at once.
* 1010 (TOKEN_EXPIRED) means "refresh me": an access token past its expiry whose pair is still
  one of the speaker's. 1011 (TOKEN_INVALID) means "start over": unknown, revoked, replaced by
  a refresh or by the use of a newer pair, or a refresh token that was used already.

Checks run on every execute call, so `check_access` is a dict lookup on the loop thread: the
pairs are kept in memory, keyed by the SHA-256 of each token, and written through to SQLite
(hashes only, one row per speaker) so they survive restarts. A plain SHA-256 is enough:
tokens are 128 random bits, so there is no dictionary an attacker could run through it.

Ordering and durability: memory changes in the same synchronous step that hands the write
to the store, so memory agrees with the commit order even when calls for one speaker
overlap (the last accepted write wins in both). New tokens are returned only after that
write is committed, so a crash can neither leave a speaker holding a token the database
does not know, nor bring back a refresh token that was already exchanged (its row has been
replaced on disk before the new pair leaves the gateway). If the commit fails the call fails
with 500 and the memory copy stays changed: the new tokens were never handed out, so the
speaker obtains a new pair, and nothing half-done stays usable. Promoting a pending pair at
its first use is written without waiting: after a crash before that commit, the old live
pair works again until the pending one is used again.
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


@dataclass(frozen=True)
class TokenPair:
    """One access/refresh pair of a speaker, as hashes, with when it was issued and expires."""

    voice_id: str
    access_hash: str
    refresh_hash: str
    issued_at_ms: int
    expires_at_ms: int


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
        # Each speaker's live pair and pending pair; every pair by token hash.
        self._live: dict[str, TokenPair] = {}
        self._pending: dict[str, TokenPair] = {}
        self._by_access: dict[str, TokenPair] = {}
        self._by_refresh: dict[str, TokenPair] = {}

    @property
    def live_pairs(self) -> int:
        """Speakers holding a live pair (expired access tokens included: they can refresh)."""
        return len(self._live)

    def pair_of(self, voice_id: str) -> TokenPair | None:
        """The speaker's live pair (hashes and times only), or None."""
        return self._live.get(voice_id)

    async def load(self) -> None:
        """Take the pairs from the store (at daemon start, before any call)."""
        records = self._store.load_voice_tokens()
        for table in (self._live, self._pending, self._by_access, self._by_refresh):
            table.clear()
        for record in records:
            self._index(TokenPair(record.voice_id, record.access_hash, record.refresh_hash, record.issued_at_ms,
                              record.expires_at_ms), self._live)
            if (record.pending_access_hash is not None and record.pending_refresh_hash is not None
                    and record.pending_issued_at_ms is not None and record.pending_expires_at_ms is not None):
                self._index(TokenPair(record.voice_id, record.pending_access_hash, record.pending_refresh_hash,
                                  record.pending_issued_at_ms, record.pending_expires_at_ms), self._pending)

    async def issue(self, voice_id: str) -> IssuedTokens:
        """A new pair for the speaker: live at once if it has none, else pending (see above)."""
        if not voice_id:
            raise ValueError("voice_id must not be empty")
        pair, issued = self._new_pair(voice_id)
        live = self._live.get(voice_id)
        if live is None:
            self._set(voice_id, pair, None)
        else:
            self._set(voice_id, live, pair)
        await self._commit(f"new tokens of speaker {voice_id!r}")
        return issued

    async def refresh(self, refresh_token: str) -> tuple[str, IssuedTokens]:
        """Exchange a refresh token (once) for a new live pair: (voice_id, the new pair)."""
        key = _lookup_key(refresh_token)
        current = None if key is None else self._by_refresh.get(key)
        if current is None:
            raise VoicePlatformError(
                codes.TOKEN_INVALID, "the refresh token is unknown, was used already, or was revoked"
            )
        voice_id = current.voice_id
        pair, issued = self._new_pair(voice_id)
        # Refreshing the pending pair uses it: its successor replaces both pairs. Refreshing the
        # live pair leaves a pending one waiting.
        pending = self._pending.get(voice_id)
        self._set(voice_id, pair, None if pending is current else pending)
        await self._commit(f"refreshed tokens of speaker {voice_id!r}")
        return voice_id, issued

    def check_access(self, access_token: str) -> str:
        """The speaker a live, unexpired access token belongs to; raises 1010 or 1011.

        The first use of a pending pair makes it the live one and ends the old live pair."""
        key = _lookup_key(access_token)
        pair = None if key is None else self._by_access.get(key)
        if pair is None:
            raise VoicePlatformError(
                codes.TOKEN_INVALID, "the access token is unknown, was replaced, or was revoked"
            )
        if self._pending.get(pair.voice_id) is pair:
            self._promote(pair)
        if self._clock.wall_ms() >= pair.expires_at_ms:
            raise VoicePlatformError(codes.TOKEN_EXPIRED, "refresh it with the refresh token")
        return pair.voice_id

    async def revoke(self, voice_id: str) -> bool:
        """End the speaker's pairs, live and pending; False if it had none."""
        if voice_id not in self._live:
            return False
        self._remove(voice_id)
        await self._commit(f"revoking the tokens of speaker {voice_id!r}")
        return True

    async def forget_except(self, voice_ids: set[str]) -> int:
        """Drop the pairs of speakers not in `voice_ids` (no longer configured); how many went."""
        gone = [voice_id for voice_id in self._live if voice_id not in voice_ids]
        for voice_id in gone:
            self._remove(voice_id)
        if gone:
            await self._commit(f"dropping the tokens of {len(gone)} speakers")
        return len(gone)

    # --- internals: every change goes to the store and to memory in one synchronous step ---

    def _new_pair(self, voice_id: str) -> tuple[TokenPair, IssuedTokens]:
        access, refresh = secrets.token_hex(TOKEN_BYTES), secrets.token_hex(TOKEN_BYTES)
        now_ms = self._clock.wall_ms()
        pair = TokenPair(voice_id, token_hash(access), token_hash(refresh), now_ms, now_ms + self.access_ttl_s * 1000)
        return pair, IssuedTokens(access, refresh, self.access_ttl_s)

    def _promote(self, pair: TokenPair) -> None:
        try:
            # No wait for the commit: see the module docstring.
            self._set(pair.voice_id, pair, None)
        except VoicePlatformError:
            # The store is closing: the pair still works (it was handed out), but the old
            # live pair must stop working now as it would have.
            self._drop(self._pending, pair.voice_id)
            self._drop(self._live, pair.voice_id)
            self._index(pair, self._live)
        log.info("voice platform: speaker %s started using its new tokens; the previous ones stopped working",
                 pair.voice_id)

    def _set(self, voice_id: str, live: TokenPair, pending: TokenPair | None) -> None:
        """Hand the speaker's new pairs to the store, then to memory: a store that refuses the
        write (closed) leaves everything as it was."""
        record = VoiceTokenRecord(
            voice_id=voice_id,
            access_hash=live.access_hash,
            refresh_hash=live.refresh_hash,
            issued_at_ms=live.issued_at_ms,
            expires_at_ms=live.expires_at_ms,
            pending_access_hash=None if pending is None else pending.access_hash,
            pending_refresh_hash=None if pending is None else pending.refresh_hash,
            pending_issued_at_ms=None if pending is None else pending.issued_at_ms,
            pending_expires_at_ms=None if pending is None else pending.expires_at_ms,
        )
        try:
            self._store.save_voice_token(record)
        except StoreError as exc:
            raise VoicePlatformError(codes.SYSTEM_ERROR, f"tokens cannot be saved: {exc}") from exc
        self._drop(self._live, voice_id)
        self._drop(self._pending, voice_id)
        self._index(live, self._live)
        if pending is not None:
            self._index(pending, self._pending)

    def _remove(self, voice_id: str) -> None:
        # Memory first: a store that refuses the delete (closed) must still not leave the
        # tokens working until the restart.
        self._drop(self._live, voice_id)
        self._drop(self._pending, voice_id)
        try:
            self._store.delete_voice_token(voice_id)
        except StoreError as exc:
            raise VoicePlatformError(codes.SYSTEM_ERROR, f"tokens cannot be deleted: {exc}") from exc

    def _index(self, pair: TokenPair, table: dict[str, TokenPair]) -> None:
        table[pair.voice_id] = pair
        self._by_access[pair.access_hash] = pair
        self._by_refresh[pair.refresh_hash] = pair

    def _drop(self, table: dict[str, TokenPair], voice_id: str) -> None:
        old = table.pop(voice_id, None)
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
