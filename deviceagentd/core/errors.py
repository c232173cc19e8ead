"""Errors the core raises; adapters turn them into their own wire format (HTTP status, words)."""

from __future__ import annotations

from typing import Any


class CoreError(Exception):
    """Base: `code` is a stable snake_case name, the message is for a person."""

    code = "internal_error"

    def __init__(self, message: str, details: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class InvalidInput(CoreError):
    code = "invalid_request"


class NotFound(CoreError):
    code = "not_found"


class DeviceOffline(CoreError):
    code = "device_offline"


class BrokerUnavailable(CoreError):
    code = "broker_unavailable"


class CommandTimeout(CoreError):
    code = "command_timeout"

    def __init__(self, message: str, request_id: str) -> None:
        super().__init__(message, {"requestId": request_id})
        self.request_id = request_id


class Conflict(CoreError):
    code = "conflict"
