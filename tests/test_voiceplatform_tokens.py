"""Voice tokens (SPEC §6): issue, expiry, single-use rotating refresh, revocation, restarts.

Against a real Store on an SQLite file in tmp_path. The store's batch window is 30 s, so a
row found in the file right after a call returned was committed by that call itself.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import sqlite3
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from deviceagentd.core.clock import Clock
from deviceagentd.store import Store, StoreSettings, VoiceTokenRecord
from deviceagentd.voiceplatform import errors as codes
from deviceagentd.voiceplatform.errors import VoicePlatformError
from deviceagentd.voiceplatform.tokens import IssuedTokens, TokenService

START_MS = 1_700_000_000_000
TTL_MS = 7200 * 1000
HOLD = StoreSettings(batch_interval_s=30.0)


class FakeClock(Clock):
    def __init__(self) -> None:
        self.now_ms = START_MS

    def wall_ms(self) -> int:
        return self.now_ms


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def db_rows(path: Path) -> list[tuple[object, ...]]:
    with sqlite3.connect(path) as conn:
        return conn.execute(
            "SELECT voice_id, access_hash, refresh_hash, issued_at_ms, expires_at_ms "
            "FROM voice_tokens ORDER BY voice_id"
        ).fetchall()


def error_code(call: Callable[[], object]) -> int:
    with pytest.raises(VoicePlatformError) as caught:
        call()
    return caught.value.code


def access_error(tokens: TokenService, access_token: str) -> int:
    return error_code(lambda: tokens.check_access(access_token))


async def refresh_error(tokens: TokenService, refresh_token: str) -> int:
    with pytest.raises(VoicePlatformError) as caught:
        await tokens.refresh(refresh_token)
    return caught.value.code


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "state.db"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def store(db_path: Path, clock: FakeClock) -> AsyncIterator[Store]:
    opened = Store(db_path, HOLD, clock.wall_ms)
    opened.open()
    yield opened
    opened.close()


@pytest.fixture
async def tokens(store: Store, clock: FakeClock) -> TokenService:
    service = TokenService(store, clock)
    await service.load()
    return service


async def test_issued_tokens_check_and_are_committed_before_they_are_returned(
    tokens: TokenService, db_path: Path
) -> None:
    issued = await tokens.issue("spk-1")

    assert re.fullmatch(r"[0-9a-f]{32}", issued.access_token)
    assert re.fullmatch(r"[0-9a-f]{32}", issued.refresh_token)
    assert issued.access_token != issued.refresh_token
    assert issued.expires_in_s == 7200
    assert tokens.check_access(issued.access_token) == "spk-1"
    assert tokens.check_access(issued.access_token) == "spk-1"  # any number of uses
    assert db_rows(db_path) == [
        ("spk-1", sha256(issued.access_token), sha256(issued.refresh_token), START_MS, START_MS + TTL_MS)
    ]


async def test_each_issue_gives_new_random_tokens(tokens: TokenService) -> None:
    seen: set[str] = set()
    for n in range(20):
        issued = await tokens.issue(f"spk-{n}")
        seen.update((issued.access_token, issued.refresh_token))
    assert len(seen) == 40


async def test_access_token_expires_with_1010_and_refresh_still_works(
    tokens: TokenService, clock: FakeClock
) -> None:
    issued = await tokens.issue("spk-1")

    clock.now_ms = START_MS + TTL_MS - 1
    assert tokens.check_access(issued.access_token) == "spk-1"
    clock.now_ms = START_MS + TTL_MS
    assert error_code(lambda: tokens.check_access(issued.access_token)) == codes.TOKEN_EXPIRED

    # The refresh token has no expiry, even days later.
    clock.now_ms = START_MS + 30 * 86_400_000
    voice_id, renewed = await tokens.refresh(issued.refresh_token)
    assert voice_id == "spk-1"
    assert tokens.check_access(renewed.access_token) == "spk-1"
    # The expired token's pair is gone now: "start over", not "refresh me".
    assert error_code(lambda: tokens.check_access(issued.access_token)) == codes.TOKEN_INVALID


async def test_access_ttl_is_configurable(store: Store, clock: FakeClock) -> None:
    tokens = TokenService(store, clock, access_ttl_s=60)
    issued = await tokens.issue("spk-1")

    assert issued.expires_in_s == 60
    clock.now_ms = START_MS + 59_999
    assert tokens.check_access(issued.access_token) == "spk-1"
    clock.now_ms = START_MS + 60_000
    assert error_code(lambda: tokens.check_access(issued.access_token)) == codes.TOKEN_EXPIRED


async def test_refresh_rotates_both_tokens(tokens: TokenService, clock: FakeClock, db_path: Path) -> None:
    first = await tokens.issue("spk-1")
    clock.now_ms += 1000

    voice_id, second = await tokens.refresh(first.refresh_token)

    assert voice_id == "spk-1"
    assert {second.access_token, second.refresh_token}.isdisjoint({first.access_token, first.refresh_token})
    assert second.expires_in_s == 7200
    assert tokens.check_access(second.access_token) == "spk-1"
    assert error_code(lambda: tokens.check_access(first.access_token)) == codes.TOKEN_INVALID
    assert await refresh_error(tokens, first.refresh_token) == codes.TOKEN_INVALID
    # The exchange is on disk before the new pair was returned: the old refresh token is gone.
    assert db_rows(db_path) == [
        ("spk-1", sha256(second.access_token), sha256(second.refresh_token), START_MS + 1000, START_MS + 1000 + TTL_MS)
    ]
    # And the new refresh token works, once.
    _, third = await tokens.refresh(second.refresh_token)
    assert tokens.check_access(third.access_token) == "spk-1"
    assert await refresh_error(tokens, second.refresh_token) == codes.TOKEN_INVALID


async def test_a_refresh_token_works_once_even_when_used_twice_at_the_same_time(tokens: TokenService) -> None:
    issued = await tokens.issue("spk-1")

    outcomes = await asyncio.gather(
        tokens.refresh(issued.refresh_token), tokens.refresh(issued.refresh_token), return_exceptions=True
    )

    winners = [o for o in outcomes if isinstance(o, tuple)]
    losers = [o for o in outcomes if isinstance(o, VoicePlatformError)]
    assert len(winners) == 1
    assert [e.code for e in losers] == [codes.TOKEN_INVALID]
    assert tokens.check_access(winners[0][1].access_token) == "spk-1"


@pytest.mark.parametrize(
    "token",
    [
        "0" * 32,
        "",
        "not a token",
        "A" * 32,
        "f" * 33,
        "é" * 32,
        "\udcff" * 32,
    ],
)
async def test_unknown_tokens_are_invalid(tokens: TokenService, token: str) -> None:
    issued = await tokens.issue("spk-1")

    assert error_code(lambda: tokens.check_access(token)) == codes.TOKEN_INVALID
    assert await refresh_error(tokens, token) == codes.TOKEN_INVALID
    assert tokens.check_access(issued.access_token) == "spk-1"


async def test_tokens_are_not_interchangeable(tokens: TokenService) -> None:
    issued = await tokens.issue("spk-1")

    assert error_code(lambda: tokens.check_access(issued.refresh_token)) == codes.TOKEN_INVALID
    assert error_code(lambda: tokens.check_access(issued.access_token.upper())) == codes.TOKEN_INVALID
    assert await refresh_error(tokens, issued.access_token) == codes.TOKEN_INVALID
    assert tokens.check_access(issued.access_token) == "spk-1"  # a failed refresh costs nothing


def pending_rows(path: Path) -> list[tuple[object, ...]]:
    with sqlite3.connect(path) as conn:
        return conn.execute("SELECT voice_id, pending_access_hash FROM voice_tokens ORDER BY voice_id").fetchall()


async def test_issuing_again_keeps_the_live_pair_until_the_new_one_is_used(
        tokens: TokenService, store: Store, db_path: Path) -> None:
    old = await tokens.issue("spk-1")
    other = await tokens.issue("spk-2")

    new = await tokens.issue("spk-1")

    # An obtain call the speaker did not make (guessed code, replay) cuts nobody off.
    assert tokens.check_access(old.access_token) == "spk-1"
    assert pending_rows(db_path) == [("spk-1", sha256(new.access_token)), ("spk-2", None)]
    # The first use of the new pair makes it the live one and ends the old one.
    assert tokens.check_access(new.access_token) == "spk-1"
    assert error_code(lambda: tokens.check_access(old.access_token)) == codes.TOKEN_INVALID
    assert await refresh_error(tokens, old.refresh_token) == codes.TOKEN_INVALID
    assert tokens.check_access(other.access_token) == "spk-2"
    await store.flush()
    assert [row[:2] for row in db_rows(db_path)] == [
        ("spk-1", sha256(new.access_token)),
        ("spk-2", sha256(other.access_token)),
    ]
    assert pending_rows(db_path) == [("spk-1", None), ("spk-2", None)]
    assert tokens.live_pairs == 2


async def test_obtaining_again_replaces_only_the_pending_pair(tokens: TokenService) -> None:
    live = await tokens.issue("spk-1")
    first_try = await tokens.issue("spk-1")
    second_try = await tokens.issue("spk-1")

    assert error_code(lambda: tokens.check_access(first_try.access_token)) == codes.TOKEN_INVALID
    assert await refresh_error(tokens, first_try.refresh_token) == codes.TOKEN_INVALID
    assert tokens.check_access(live.access_token) == "spk-1"
    assert tokens.check_access(second_try.access_token) == "spk-1"
    assert error_code(lambda: tokens.check_access(live.access_token)) == codes.TOKEN_INVALID


async def test_refreshing_the_live_pair_keeps_the_pending_one_and_refreshing_the_pending_one_takes_over(
        tokens: TokenService) -> None:
    live = await tokens.issue("spk-1")
    pending = await tokens.issue("spk-1")

    _, rotated = await tokens.refresh(live.refresh_token)
    assert tokens.check_access(rotated.access_token) == "spk-1"

    _, taken_over = await tokens.refresh(pending.refresh_token)
    assert tokens.check_access(taken_over.access_token) == "spk-1"
    for gone in (rotated.access_token, pending.access_token, live.access_token):
        assert access_error(tokens, gone) == codes.TOKEN_INVALID
    assert tokens.live_pairs == 1


async def test_revoke_ends_the_pending_pair_too(tokens: TokenService) -> None:
    live = await tokens.issue("spk-1")
    pending = await tokens.issue("spk-1")
    assert await tokens.revoke("spk-1") is True
    for gone in (live.access_token, pending.access_token):
        assert access_error(tokens, gone) == codes.TOKEN_INVALID
    assert await refresh_error(tokens, pending.refresh_token) == codes.TOKEN_INVALID


async def test_a_pending_pair_survives_a_restart(db_path: Path, clock: FakeClock) -> None:
    first_store = Store(db_path, HOLD, clock.wall_ms)
    first_store.open()
    tokens = TokenService(first_store, clock)
    await tokens.load()
    live = await tokens.issue("spk-1")
    pending = await tokens.issue("spk-1")
    first_store.close()

    second_store = Store(db_path, HOLD, clock.wall_ms)
    second_store.open()
    try:
        restarted = TokenService(second_store, clock)
        await restarted.load()
        assert restarted.check_access(live.access_token) == "spk-1"
        assert restarted.check_access(pending.access_token) == "spk-1"
        assert access_error(restarted, live.access_token) == codes.TOKEN_INVALID
    finally:
        second_store.close()


async def test_revoke_ends_the_pair(tokens: TokenService, db_path: Path) -> None:
    issued = await tokens.issue("spk-1")
    other = await tokens.issue("spk-2")

    assert await tokens.revoke("spk-1") is True

    assert error_code(lambda: tokens.check_access(issued.access_token)) == codes.TOKEN_INVALID
    assert await refresh_error(tokens, issued.refresh_token) == codes.TOKEN_INVALID
    assert [row[0] for row in db_rows(db_path)] == ["spk-2"]
    assert tokens.check_access(other.access_token) == "spk-2"
    assert await tokens.revoke("spk-1") is False
    assert await tokens.revoke("never-issued") is False
    # A revoked speaker can obtain a new pair.
    again = await tokens.issue("spk-1")
    assert tokens.check_access(again.access_token) == "spk-1"


async def test_overlapping_calls_for_one_speaker_leave_memory_and_disk_agreeing(
    tokens: TokenService, store: Store, clock: FakeClock
) -> None:
    first = await tokens.issue("spk-1")

    # The refresh is accepted first, the issue second: the issue's pair is the live one.
    refreshed, reissued = await asyncio.gather(tokens.refresh(first.refresh_token), tokens.issue("spk-1"))

    assert isinstance(refreshed, tuple) and isinstance(reissued, IssuedTokens)
    assert tokens.check_access(reissued.access_token) == "spk-1"
    assert error_code(lambda: tokens.check_access(refreshed[1].access_token)) == codes.TOKEN_INVALID
    after_restart = TokenService(store, clock)
    await after_restart.load()
    assert after_restart.check_access(reissued.access_token) == "spk-1"
    assert error_code(lambda: after_restart.check_access(refreshed[1].access_token)) == codes.TOKEN_INVALID


async def test_tokens_survive_a_restart(db_path: Path, clock: FakeClock) -> None:
    first_store = Store(db_path, HOLD, clock.wall_ms)
    first_store.open()
    tokens = TokenService(first_store, clock)
    await tokens.load()
    rotated = await tokens.issue("spk-1")
    _, live = await tokens.refresh(rotated.refresh_token)
    kept = await tokens.issue("spk-2")
    revoked = await tokens.issue("spk-3")
    await tokens.revoke("spk-3")
    first_store.close()

    second_store = Store(db_path, HOLD, clock.wall_ms)
    second_store.open()
    try:
        restarted = TokenService(second_store, clock)
        await restarted.load()

        assert restarted.live_pairs == 2
        assert restarted.check_access(live.access_token) == "spk-1"
        assert restarted.check_access(kept.access_token) == "spk-2"
        for gone in (rotated.access_token, revoked.access_token):
            assert access_error(restarted, gone) == codes.TOKEN_INVALID
        assert await refresh_error(restarted, rotated.refresh_token) == codes.TOKEN_INVALID
        assert await refresh_error(restarted, revoked.refresh_token) == codes.TOKEN_INVALID
        # Expiry is kept too, and the stored refresh token still works after it.
        clock.now_ms = START_MS + TTL_MS
        assert error_code(lambda: restarted.check_access(kept.access_token)) == codes.TOKEN_EXPIRED
        voice_id, renewed = await restarted.refresh(kept.refresh_token)
        assert voice_id == "spk-2"
        assert restarted.check_access(renewed.access_token) == "spk-2"
    finally:
        second_store.close()


async def test_load_sees_writes_not_committed_yet(store: Store, clock: FakeClock) -> None:
    record = VoiceTokenRecord("spk-9", sha256("a" * 32), sha256("b" * 32), START_MS, START_MS + TTL_MS)
    store.save_voice_token(record)  # waiting in the batch window, not on disk yet
    tokens = TokenService(store, clock)
    await tokens.load()

    assert tokens.check_access("a" * 32) == "spk-9"


async def test_store_reads_merge_waiting_saves_and_deletes(store: Store) -> None:
    stored = VoiceTokenRecord("spk-1", sha256("1"), sha256("2"), START_MS, START_MS + TTL_MS)
    deleted_later = VoiceTokenRecord("spk-2", sha256("3"), sha256("4"), START_MS, START_MS + TTL_MS)
    store.save_voice_token(stored)
    store.save_voice_token(deleted_later)
    await store.flush()

    replaced = VoiceTokenRecord("spk-1", sha256("5"), sha256("6"), START_MS + 1, START_MS + 1 + TTL_MS)
    store.save_voice_token(replaced)
    store.delete_voice_token("spk-2")
    store.save_voice_token(VoiceTokenRecord("spk-3", sha256("7"), sha256("8"), START_MS, START_MS))
    store.delete_voice_token("spk-3")  # saved and deleted in the same batch window

    expected = [replaced]
    assert store.load_voice_tokens() == expected
    await store.flush()
    assert store.load_voice_tokens() == expected


async def test_forget_except_drops_speakers_no_longer_configured(
    tokens: TokenService, db_path: Path, store: Store, clock: FakeClock
) -> None:
    keep = await tokens.issue("spk-a")
    drop_b = await tokens.issue("spk-b")
    drop_c = await tokens.issue("spk-c")

    assert await tokens.forget_except({"spk-a", "spk-never-issued"}) == 2

    assert tokens.check_access(keep.access_token) == "spk-a"
    for gone in (drop_b, drop_c):
        assert access_error(tokens, gone.access_token) == codes.TOKEN_INVALID
        assert await refresh_error(tokens, gone.refresh_token) == codes.TOKEN_INVALID
    assert [row[0] for row in db_rows(db_path)] == ["spk-a"]
    assert await tokens.forget_except({"spk-a"}) == 0
    reloaded = TokenService(store, clock)
    await reloaded.load()
    assert reloaded.live_pairs == 1


async def test_only_hashes_reach_the_disk(db_path: Path, clock: FakeClock) -> None:
    store = Store(db_path, HOLD, clock.wall_ms)
    store.open()
    tokens = TokenService(store, clock)
    await tokens.load()
    first = await tokens.issue("spk-1")
    _, second = await tokens.refresh(first.refresh_token)
    plaintexts = {first.access_token, first.refresh_token, second.access_token, second.refresh_token}
    with sqlite3.connect(db_path) as conn:
        tables = [name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        cells = [str(cell) for table in tables for row in conn.execute(f"SELECT * FROM {table}") for cell in row]
    assert cells  # the pair is there, as hashes
    assert sha256(second.access_token) in cells
    assert not [cell for cell in cells for token in plaintexts if token in cell]
    store.close()

    # Nor anywhere in the files, free pages and WAL included.
    raw = b"".join(path.read_bytes() for path in db_path.parent.iterdir() if path.name.startswith("state.db"))
    assert sha256(second.access_token).encode() in raw
    assert not [token for token in plaintexts if token.encode() in raw]


async def test_a_closed_store_fails_the_call_and_changes_nothing(
    tokens: TokenService, store: Store
) -> None:
    issued = await tokens.issue("spk-1")
    store.close()

    with pytest.raises(VoicePlatformError) as caught:
        await tokens.issue("spk-1")
    assert caught.value.code == codes.SYSTEM_ERROR
    with pytest.raises(VoicePlatformError) as caught:
        await tokens.refresh(issued.refresh_token)
    assert caught.value.code == codes.SYSTEM_ERROR
    # Nothing was saved, so nothing changed: the pair the speaker holds still works.
    assert tokens.check_access(issued.access_token) == "spk-1"


class StuckStore:
    """A store whose commits never finish (a disk that hangs)."""

    def __init__(self) -> None:
        self.saved: list[VoiceTokenRecord] = []

    def save_voice_token(self, record: VoiceTokenRecord) -> None:
        self.saved.append(record)

    def delete_voice_token(self, voice_id: str) -> None:
        pass

    def load_voice_tokens(self) -> list[VoiceTokenRecord]:
        return []

    async def flush(self) -> None:
        await asyncio.Event().wait()


async def test_a_commit_that_does_not_finish_answers_500_and_hands_out_nothing(clock: FakeClock) -> None:
    stuck = StuckStore()
    tokens = TokenService(stuck, clock, commit_timeout_s=0.05)

    with pytest.raises(VoicePlatformError) as caught:
        await tokens.issue("spk-1")

    assert caught.value.code == codes.SYSTEM_ERROR
    assert len(stuck.saved) == 1


def test_settings_are_checked(clock: FakeClock) -> None:
    with pytest.raises(ValueError, match="access_ttl_s"):
        TokenService(StuckStore(), clock, access_ttl_s=0)
    with pytest.raises(ValueError, match="commit_timeout_s"):
        TokenService(StuckStore(), clock, commit_timeout_s=0)
