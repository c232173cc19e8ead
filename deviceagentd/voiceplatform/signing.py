"""Tuya HMAC-SHA256 request signing (reference/tuya-voice.md §2.2, §2.3), current algorithm.

    token APIs (obtain, refresh):  sign = UPPER(HEX(HMAC_SHA256(secret, client_id + t + nonce + stringToSign)))
    business APIs (DELETE, execute): ... client_id + access_token + t + nonce + stringToSign
    stringToSign = METHOD + "\\n" + sha256hex(body) + "\\n" + headers_block + "\\n" + url

`headers_block` is `name:value\\n` for each header named in `Signature-Headers` (names split on
':'), empty when none; `url` is the path, plus `?` and the query parameters sorted by key as
`k=v` joined by `&` when there are any. A LAN gateway has no global token, so obtaining a
voice token is signed as a token API, like refreshing one.

The server checks, in this order (each its own code, so a speaker vendor can tell what to
fix): required headers present (1105), client_id (1005), `t` within the skew window (1013),
a nonce not seen before (1013), access_token on business APIs (1002), sign_method and the
signature over the raw body bytes as received (1004).
"""

from __future__ import annotations

import hashlib
import heapq
import hmac
from collections.abc import Mapping
from dataclasses import dataclass

from deviceagentd.core.clock import Clock
from deviceagentd.voiceplatform import errors as codes
from deviceagentd.voiceplatform.errors import VoicePlatformError

SIGN_METHOD = "HMAC-SHA256"
SIGNATURE_HEADERS = "Signature-Headers"
REQUIRED_HEADERS = ("client_id", "sign", "sign_method", "t")
DEFAULT_MAX_NONCES = 100_000
# Longer than any millisecond timestamp this side of the year 30000: not worth parsing.
_MAX_T_DIGITS = 15


@dataclass(frozen=True)
class SigningSettings:
    client_id: str
    secret: str
    skew_s: float = 300.0
    """How far `t` may be from the gateway's clock, either way; nonces are remembered as long."""
    max_nonces: int = DEFAULT_MAX_NONCES
    """Bound of the replay cache (about 100 bytes each); see _NonceCache for what happens past it."""

    def __post_init__(self) -> None:
        if not self.client_id or not self.secret:
            raise ValueError("signing needs both a client_id and a secret")
        if not self.skew_s > 0:
            raise ValueError(f"skew_s must be positive, got {self.skew_s}")
        if self.max_nonces < 1:
            raise ValueError(f"max_nonces must be at least 1, got {self.max_nonces}")


def string_to_sign(
    method: str,
    path: str,
    query: Mapping[str, str],
    body: bytes,
    signed_headers: Mapping[str, str] | None = None,
) -> str:
    """Tuya's stringToSign; `signed_headers` in the order `Signature-Headers` names them."""
    headers_block = "".join(f"{name}:{value}\n" for name, value in (signed_headers or {}).items())
    url = path
    if query:
        url += "?" + "&".join(f"{key}={query[key]}" for key in sorted(query))
    return f"{method.upper()}\n{hashlib.sha256(body).hexdigest()}\n{headers_block}\n{url}"


def compute_sign(
    secret: str, client_id: str, t_ms: int, nonce: str, string_to_sign: str, access_token: str = ""
) -> str:
    """The `sign` header: pass `access_token` for business APIs, leave it empty for token APIs."""
    message = client_id + access_token + str(t_ms) + nonce + string_to_sign
    return _hmac_hex(secret.encode("utf-8"), message.encode("utf-8"))


def signed_request_headers(
    settings: SigningSettings,
    *,
    method: str,
    path: str,
    query: Mapping[str, str],
    body: bytes,
    t_ms: int,
    nonce: str = "",
    access_token: str = "",
) -> dict[str, str]:
    """The headers a client sends (no Signature-Headers); a business call passes its access_token."""
    sign = compute_sign(
        settings.secret, settings.client_id, t_ms, nonce, string_to_sign(method, path, query, body), access_token
    )
    headers = {"client_id": settings.client_id, "sign": sign, "sign_method": SIGN_METHOD, "t": str(t_ms)}
    if nonce:
        headers["nonce"] = nonce
    if access_token:
        headers["access_token"] = access_token
    return headers


def _hmac_hex(key: bytes, message: bytes) -> str:
    return hmac.new(key, message, hashlib.sha256).hexdigest().upper()


def _text_bytes(text: str) -> bytes:
    # aiohttp decodes header bytes that are not UTF-8 with surrogateescape; this gives back
    # exactly the bytes the client sent (and signed). Other lone surrogates raise.
    return text.encode("utf-8", "surrogateescape")


class RequestVerifier:
    """Checks the signature headers of one request; raises VoicePlatformError, returns None if fine.

    Call it on the event loop thread only (the replay cache is not locked).
    """

    def __init__(self, settings: SigningSettings, clock: Clock) -> None:
        self._settings = settings
        self._clock = clock
        self._key = settings.secret.encode("utf-8")
        self._skew_ms = round(settings.skew_s * 1000)
        self._nonces = _NonceCache(self._skew_ms, settings.max_nonces)

    def verify(
        self,
        *,
        method: str,
        path: str,
        query: Mapping[str, str],
        headers: Mapping[str, str],
        body: bytes,
        business: bool,
    ) -> None:
        found = _lower_keys(headers)
        missing = [name for name in REQUIRED_HEADERS if not found.get(name)]
        if missing:
            raise VoicePlatformError(codes.MISSING_HEADER, ", ".join(missing))
        client_id = found["client_id"]
        if client_id != self._settings.client_id:
            raise VoicePlatformError(codes.CLIENT_ID_INVALID, f"unknown client_id {client_id[:64]!r}")
        t_raw = found["t"]
        if not (t_raw.isascii() and t_raw.isdigit() and len(t_raw) <= _MAX_T_DIGITS):
            raise VoicePlatformError(codes.REQUEST_TIME_INVALID, "t must be a 13-digit millisecond timestamp")
        t_ms = int(t_raw)
        now_ms = self._clock.wall_ms()
        if abs(now_ms - t_ms) > self._skew_ms:
            raise VoicePlatformError(
                codes.REQUEST_TIME_INVALID,
                f"t is {(t_ms - now_ms) / 1000:+.0f} s from the gateway's clock "
                f"(allowed ±{self._settings.skew_s:g} s)",
            )
        nonce = found.get("nonce", "")
        # A token request is accepted once: without a nonce (tuya-connector-python sends none)
        # its signature stands in for one, so replaying it within the skew window gets nothing.
        # Business calls without a nonce may repeat: execute answers a retried message_id
        # from its idempotency cache.
        once = nonce or ("" if business else "sign:" + found["sign"])
        nonce_key = b""
        if once:
            # A digest, not the nonce: a header can be kilobytes long, the cache holds many.
            nonce_key = hashlib.blake2b(once.encode("utf-8", "surrogatepass"), digest_size=16).digest()
            problem = self._nonces.problem(nonce_key, t_ms, now_ms)
            if problem:
                raise VoicePlatformError(codes.REQUEST_TIME_INVALID, problem)
        access_token = found.get("access_token", "")
        if business and not access_token:
            raise VoicePlatformError(codes.ACCESS_TOKEN_NULL, "business APIs are signed with the access_token")
        sign_method = found["sign_method"]
        if sign_method.upper() != SIGN_METHOD:
            raise VoicePlatformError(codes.SIGN_INVALID, f"sign_method must be {SIGN_METHOD}, got {sign_method[:32]!r}")
        if not self._signature_matches(
            found, method, path, query, body, t_raw, nonce, access_token if business else ""
        ):
            raise VoicePlatformError(codes.SIGN_INVALID)
        # Remembered only once the signature holds: unsigned junk must not fill the cache.
        if once:
            self._nonces.add(nonce_key, t_ms, now_ms)

    def _signature_matches(
        self,
        found: Mapping[str, str],
        method: str,
        path: str,
        query: Mapping[str, str],
        body: bytes,
        t_raw: str,
        nonce: str,
        access_token: str,
    ) -> bool:
        names = [name.strip() for name in found.get(SIGNATURE_HEADERS.lower(), "").split(":")]
        signed = {name: found.get(name.lower(), "") for name in names if name}
        sign = found["sign"]
        try:
            text = string_to_sign(method, path, query, body, signed)
            message = _text_bytes(self._settings.client_id + access_token + t_raw + nonce + text)
        except UnicodeEncodeError:  # a lone surrogate no client could have signed
            return False
        expected = _hmac_hex(self._key, message)
        return sign.isascii() and hmac.compare_digest(expected, sign.upper())


def _lower_keys(headers: Mapping[str, str]) -> dict[str, str]:
    """Header names folded to lower case; the first of repeated headers wins, as in aiohttp's get()."""
    found: dict[str, str] = {}
    for name, value in headers.items():
        found.setdefault(name.lower(), value)
    return found


class _NonceCache:
    """(nonce, t) of accepted requests while `t` is inside the window, at most `max_entries`.

    A request's t must be within ±window of now, so a nonce needs remembering only until its
    t falls out of the window behind us. Entries leave in t order (a heap); whenever one
    leaves, early (the cache is full) or on time, `floor_ms` rises to its t and any nonce-
    carrying request with t at or below the floor is refused: the cache can no longer tell
    whether it is a replay. On time this never refuses anything the window would accept;
    when full, it refuses the oldest-stamped requests instead of letting a replay through.
    """

    def __init__(self, window_ms: int, max_entries: int) -> None:
        self._window_ms = window_ms
        self._max_entries = max_entries
        self._t_by_key: dict[bytes, int] = {}
        self._heap: list[tuple[int, bytes]] = []
        self.floor_ms = -1

    def __len__(self) -> int:
        return len(self._t_by_key)

    def problem(self, key: bytes, t_ms: int, now_ms: int) -> str | None:
        self._expire(now_ms)
        if key in self._t_by_key:
            return "this nonce (or signed token request) was used already (replayed request)"
        if t_ms <= self.floor_ms:
            return "t is too old to be checked for a replay; sign the request again"
        return None

    def add(self, key: bytes, t_ms: int, now_ms: int) -> None:
        self._expire(now_ms)
        if key in self._t_by_key:
            return
        while len(self._t_by_key) >= self._max_entries:
            self._pop()
        self._t_by_key[key] = t_ms
        heapq.heappush(self._heap, (t_ms, key))

    def _expire(self, now_ms: int) -> None:
        oldest_useful = now_ms - self._window_ms
        while self._heap and self._heap[0][0] < oldest_useful:
            self._pop()

    def _pop(self) -> None:
        t_ms, key = heapq.heappop(self._heap)
        del self._t_by_key[key]
        self.floor_ms = max(self.floor_ms, t_ms)
