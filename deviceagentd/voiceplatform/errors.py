"""Tuya voice platform error codes (reference/tuya-voice.md §8) and the one exception carrying them.

Every failure of the voice platform API is answered with HTTP 200 and `{success: false, code,
msg}` in the envelope, the way Tuya's speaker clients expect; this exception is how any layer
(signing, tokens, mapping, execution) reports one.
"""

from __future__ import annotations

SYSTEM_ERROR = 500
DATA_NOT_EXIST = 1000
ACCESS_TOKEN_NULL = 1002
SIGN_INVALID = 1004
CLIENT_ID_INVALID = 1005
TOKEN_EXPIRED = 1010
TOKEN_INVALID = 1011
REQUEST_TIME_INVALID = 1013
PARAM_EMPTY = 1100
PARAM_RANGE_INVALID = 1101
COMMAND_ISSUE_ERROR = 1103
TYPE_INCORRECT = 1104
MISSING_HEADER = 1105
PERMISSION_DENY = 1106
PARAM_ILLEGAL = 1109
DEVICE_OFFLINE = 2001
FUNCTION_NOT_SUPPORT = 2003
COMMAND_OR_VALUE_NOT_SUPPORT = 2008
DEVICE_NOT_EXIST = 2010

# Tuya's own wording, so speaker vendors can match on the text they already know.
DEFAULT_MESSAGES: dict[int, str] = {
    SYSTEM_ERROR: "system error,please contact the admin",
    DATA_NOT_EXIST: "data not exist",
    ACCESS_TOKEN_NULL: "access_token is null",
    SIGN_INVALID: "sign invalid",
    CLIENT_ID_INVALID: "clientId invalid",
    TOKEN_EXPIRED: "token is expired",
    TOKEN_INVALID: "token invalid",
    REQUEST_TIME_INVALID: "request time is invalid",
    PARAM_EMPTY: "param is empty",
    PARAM_RANGE_INVALID: "params range invalid",
    COMMAND_ISSUE_ERROR: "commands issue error",
    TYPE_INCORRECT: "type is incorrect",
    MISSING_HEADER: "missing the header",
    PERMISSION_DENY: "permission deny",
    PARAM_ILLEGAL: "param is illegal",
    DEVICE_OFFLINE: "device is offline",
    FUNCTION_NOT_SUPPORT: "function not support",
    COMMAND_OR_VALUE_NOT_SUPPORT: "command or value not support",
    DEVICE_NOT_EXIST: "device not exist",
}


class VoicePlatformError(Exception):
    """A failure answered as `{success: false, code, msg}`.

    `msg` starts with Tuya's wording for the code and adds what exactly was wrong, e.g.
    "params range invalid: brightness must be 1..100, got 250".
    """

    def __init__(self, code: int, detail: str = "") -> None:
        base = DEFAULT_MESSAGES.get(code, "error")
        self.code = code
        self.msg = f"{base}: {detail}" if detail else base
        super().__init__(self.msg)
