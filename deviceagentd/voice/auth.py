"""Bearer tokens on the voice port's speaker routes (/ws/voice, /xiaozhi/ota/): the
`Authorization` header, or the `authorization` query parameter for clients that cannot set
headers (browsers; a XiaoZhi speaker's OTA URL)."""

from __future__ import annotations

import hmac

from aiohttp import web


def presented_token(request: web.Request) -> str:
    """The bearer token from the Authorization header, else from `?authorization=` (with or
    without the `Bearer ` prefix)."""
    value = request.headers.get("Authorization") or request.query.get("authorization", "")
    scheme, _, rest = value.strip().partition(" ")
    if rest and scheme.lower() == "bearer":
        return rest.strip()
    return value.strip()


def token_ok(presented: str, tokens: tuple[str, ...]) -> bool:
    given = presented.encode()
    matched = False
    for token in tokens:  # every one, so timing does not tell which nearly matched
        matched |= hmac.compare_digest(given, token.encode())
    return matched and bool(given)


def authorized(request: web.Request, tokens: tuple[str, ...]) -> bool:
    """True when no tokens are configured or the request presents one of them."""
    return not tokens or token_ok(presented_token(request), tokens)
