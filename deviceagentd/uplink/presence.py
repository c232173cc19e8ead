"""The gateway's presence on the cloud broker: birth, last will, clean offline, health summary.

`gateway/status` is retained, so a dashboard subscribing at any time sees whether the gateway is
there: `online` (published on every connect), `offline` with reason `shutdown` (published before a
clean stop disconnects), or the last will `offline` with reason `connection lost` (published by the
broker when the connection dies without a DISCONNECT: a crash, a power cut, a WAN loss; about 1.5 ×
keepalive later). `gateway/health` (retained too) is a periodic summary; it is published directly,
never queued in the outbox: while the cloud is away a newer one would supersede it anyway.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from deviceagentd.core.clock import iso_ms
from deviceagentd.uplink.source import encode


@dataclass(frozen=True)
class GatewaySnapshot:
    version: str
    uptime_s: float
    devices_online: int
    devices_total: int
    ts_ms: int


def birth(snapshot: GatewaySnapshot) -> bytes:
    return encode({"status": "online", "version": snapshot.version, "uptimeS": round(snapshot.uptime_s, 1),
                   "devicesOnline": snapshot.devices_online, "devicesTotal": snapshot.devices_total,
                   "ts": iso_ms(snapshot.ts_ms)})


def offline(snapshot: GatewaySnapshot) -> bytes:
    return encode({"status": "offline", "reason": "shutdown", "version": snapshot.version,
                   "uptimeS": round(snapshot.uptime_s, 1), "devicesOnline": snapshot.devices_online,
                   "devicesTotal": snapshot.devices_total, "ts": iso_ms(snapshot.ts_ms)})


def will(version: str) -> bytes:
    # Fixed when the connection is made; the broker publishes it later, so no time or counts.
    return encode({"status": "offline", "reason": "connection lost", "version": version})


def health(snapshot: GatewaySnapshot, detail: dict[str, Any]) -> bytes:
    return encode({"version": snapshot.version, "uptimeS": round(snapshot.uptime_s, 1),
                   "devicesOnline": snapshot.devices_online, "devicesTotal": snapshot.devices_total,
                   **detail, "ts": iso_ms(snapshot.ts_ms)})
