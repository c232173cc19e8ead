"""Errors the core raises; adapters turn them into their own wire format (HTTP status, words)."""

from __future__ import annotations

from typing import Any


class CoreError(Exception):
    """Base: `code` is a stable snake_case name, the message is for a person. `status` is the
    HTTP status the API answers it with; other channels (the uplink's cloud requests) carry it
    in their replies so one error table serves every caller."""

    code = "internal_error"
    status = 500

    def __init__(self, message: str, details: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class InvalidInput(CoreError):
    code = "invalid_request"
    status = 400


class NotFound(CoreError):
    code = "not_found"
    status = 404


class DeviceOffline(CoreError):
    code = "device_offline"
    status = 409


class BrokerUnavailable(CoreError):
    code = "broker_unavailable"
    status = 503


class CommandTimeout(CoreError):
    code = "command_timeout"
    status = 504

    def __init__(self, message: str, request_id: str) -> None:
        super().__init__(message, {"requestId": request_id})
        self.request_id = request_id


class Conflict(CoreError):
    code = "conflict"
    status = 409
