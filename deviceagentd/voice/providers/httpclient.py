"""The HTTP client a provider shares between its streams, and how aiohttp failures become
`VoiceProviderError` codes."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import aiohttp

from deviceagentd.voice.providers.base import (
    PROVIDER_AUTH,
    PROVIDER_RATE_LIMITED,
    PROVIDER_TIMEOUT,
    PROVIDER_UNREACHABLE,
    VoiceProviderError,
)

USER_AGENT = "deviceagentd-voice"
MAX_ERROR_TEXT = 300


@dataclass
class SharedSession:
    """One `aiohttp.ClientSession` per provider, made on first use (inside the running loop) so
    HTTP keep-alive connections are reused across clauses and utterances. A session passed in by
    the caller is used as is and never closed here."""

    external: aiohttp.ClientSession | None = None
    _own: aiohttp.ClientSession | None = field(default=None, repr=False)

    def get(self) -> aiohttp.ClientSession:
        if self.external is not None:
            return self.external
        if self._own is None or self._own.closed:
            self._own = aiohttp.ClientSession(headers={"User-Agent": USER_AGENT})
        return self._own

    async def close(self) -> None:
        own, self._own = self._own, None
        if own is not None and not own.closed:
            await own.close()


def redact(text: str, secret: str) -> str:
    """Providers sometimes echo (part of) the key in error messages; never pass it on."""
    if secret and len(secret) >= 4:
        text = text.replace(secret, "***")
    return text


def status_error(status: int, failure_code: str, detail: str, secret: str) -> VoiceProviderError:
    """An HTTP status from the provider (a plain response or a refused WebSocket upgrade)."""
    if status in (401, 403):
        # Deliberately without the body: it may quote part of the key.
        return VoiceProviderError(PROVIDER_AUTH, f"the provider rejected the credentials (HTTP {status})")
    detail = redact(detail, secret)[:MAX_ERROR_TEXT]
    suffix = f": {detail}" if detail else ""
    if status == 429:
        return VoiceProviderError(PROVIDER_RATE_LIMITED, f"the provider is rate limiting (HTTP 429){suffix}")
    if 500 <= status < 600:
        return VoiceProviderError(PROVIDER_UNREACHABLE, f"the provider is unavailable (HTTP {status}){suffix}")
    return VoiceProviderError(failure_code, f"the provider answered HTTP {status}{suffix}")


def client_error(exc: BaseException, failure_code: str, secret: str, what: str) -> VoiceProviderError:
    """A transport-level failure; `what` says which step failed ("connect", "synthesis", ...)."""
    if isinstance(exc, VoiceProviderError):
        return exc
    if isinstance(exc, TimeoutError):  # includes aiohttp.ServerTimeoutError
        return VoiceProviderError(PROVIDER_TIMEOUT, f"{what}: timed out")
    if isinstance(exc, aiohttp.WSServerHandshakeError):
        return status_error(exc.status, failure_code, exc.message, secret)
    if isinstance(exc, aiohttp.ClientResponseError):
        return status_error(exc.status, failure_code, exc.message, secret)
    if isinstance(exc, aiohttp.ClientConnectionError | OSError):
        return VoiceProviderError(PROVIDER_UNREACHABLE, f"{what}: {redact(str(exc), secret) or type(exc).__name__}")
    return VoiceProviderError(failure_code, f"{what}: {redact(str(exc), secret) or type(exc).__name__}")


def error_detail(body: bytes) -> str:
    """The human part of an error body: OpenAI's `{"error": {"message"}}`, DashScope's
    `{"message"}`, or the text itself."""
    text = body.decode("utf-8", "replace").strip()
    try:
        data = json.loads(text)
    except ValueError:
        return text
    if isinstance(data, dict):
        error = data.get("error")
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            return str(error["message"])
        if isinstance(error, str):
            return error
        if isinstance(data.get("message"), str):
            return str(data["message"])
    return text
