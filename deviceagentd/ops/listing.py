"""`deviceagentd devices` and `deviceagentd events`: a quick look at the database from a shell.

The file is read through a read-only connection (URI mode=ro), which in WAL mode reads a
consistent snapshot while the daemon writes and never blocks it. It shows what is
committed, so it can trail the HTTP API by one batch window (`storage.batch_interval_s`).
JSON output uses the HTTP API's shapes, so scripts can switch between the two.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from deviceagentd.core.events import event_to_json
from deviceagentd.core.registry import Device
from deviceagentd.ops.database import open_read_only
from deviceagentd.ops.errors import OpsError
from deviceagentd.store.reader import select_devices, select_events
from deviceagentd.store.records import DeviceRecord, EventRecord
from deviceagentd.store.rows import device_record, event_record

DATA_CHARS = 60


def read_devices(path: Path) -> list[DeviceRecord]:
    conn = open_read_only(path)
    try:
        return [device_record(row) for row in select_devices(conn)]
    except sqlite3.Error as exc:
        raise OpsError(f"cannot read devices from {path}: {exc}") from exc
    finally:
        conn.close()


def read_events(
    path: Path, device_id: str | None, *, limit: int, levels: frozenset[str] | None, event: str | None
) -> list[EventRecord]:
    """Newest first, like the HTTP API."""
    conn = open_read_only(path)
    try:
        rows = select_events(conn, device_id, limit=limit, before=None, event=event, levels=levels)
        return [event_record(row) for row in rows]
    except sqlite3.Error as exc:
        raise OpsError(f"cannot read events from {path}: {exc}") from exc
    finally:
        conn.close()


def devices_json(devices: Sequence[DeviceRecord]) -> str:
    return _dumps({"devices": [Device.from_record(record).to_json() for record in devices]})


def events_json(events: Sequence[EventRecord]) -> str:
    return _dumps({"events": [event_to_json(record) for record in events]})


def devices_table(devices: Sequence[DeviceRecord], now_ms: int | None = None) -> str:
    if not devices:
        return "no devices"
    now = time.time_ns() // 1_000_000 if now_ms is None else now_ms
    rows = [
        [
            record.device_id,
            record.product_id,
            "yes" if record.online else "no",
            f"{local_time(record.last_seen_ms)} ({age(now - record.last_seen_ms)})",
        ]
        for record in devices
    ]
    return render_table(["DEVICE", "PRODUCT", "ONLINE", "LAST SEEN"], rows)


def events_table(events: Sequence[EventRecord]) -> str:
    if not events:
        return "no events"
    rows = [
        [local_time(record.received_at_ms), record.device_id, record.event, record.level, short_data(record.data)]
        for record in events
    ]
    return render_table(["TIME", "DEVICE", "EVENT", "LEVEL", "DATA"], rows)


def render_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Columns padded to their widest cell, two spaces apart; the last one is not padded."""
    cells = [list(headers), *([printable(cell) for cell in row] for row in rows)]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = []
    for row in cells:
        padded = [cell.ljust(width) for cell, width in zip(row[:-1], widths, strict=False)]
        lines.append("  ".join([*padded, row[-1]]))
    return "\n".join(lines)


def printable(text: str) -> str:
    """Ids and data come from devices: escape control characters instead of sending them to
    the operator's terminal."""
    return "".join(ch if ch.isprintable() else f"\\x{ord(ch):02x}" if ord(ch) < 256 else f"\\u{ord(ch):04x}"
                   for ch in text)


def short_data(data: dict[str, Any]) -> str:
    text = json.dumps(data, ensure_ascii=False, separators=(", ", ": "))
    return text if len(text) <= DATA_CHARS else text[: DATA_CHARS - 1] + "…"


def local_time(epoch_ms: int) -> str:
    return datetime.fromtimestamp(epoch_ms / 1000).strftime("%Y-%m-%d %H:%M:%S")


def age(elapsed_ms: int) -> str:
    seconds = elapsed_ms // 1000
    if seconds < 0:
        return "in the future"
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds // size} {unit} ago"
    return f"{seconds} s ago"


def _dumps(value: dict[str, Any]) -> str:
    return json.dumps(value, ensure_ascii=False, indent=2)
