"""Which device ids the gateway accepts (docs/configuration.md "Device ids").

Ids arrive in topics from devices we do not control and end up in the database, the API, log
lines and the console: `..`, spaces, `<script>`, zero-width spaces or a 60,000-character id
must not register. Accepted: 1 to 64 letters and digits (of any script: `空调-1` is a fine
id), `-`, `_`, `.` and `:`, starting with a letter or a digit. That covers what devices send in
practice: `thermostat-1a2b3c`, `light-101`, UUIDs, and MAC addresses such as
`aa:bb:cc:dd:ee:ff` (XiaoZhi speakers send theirs); it refuses spaces, punctuation, markup,
control and invisible characters (zero-width spaces) and ids that start with `.` or `-`.
"""

from __future__ import annotations

import re

DEVICE_ID_MAX_CHARS = 64
# \w is a letter, digit or underscore of any script (str.isalnum); not a mark or format char.
_DEVICE_ID = re.compile(r"[^\W_][\w.:-]*")


def device_id_problem(value: str) -> str | None:
    """Why `value` is not an acceptable device id, or None."""
    if not value:
        return "must not be empty"
    if len(value) > DEVICE_ID_MAX_CHARS:
        return f"must be at most {DEVICE_ID_MAX_CHARS} characters (got {len(value)})"
    if not _DEVICE_ID.fullmatch(value):
        return "may hold only letters, digits and - _ . : and must start with a letter or digit"
    return None
