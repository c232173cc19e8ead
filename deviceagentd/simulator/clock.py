"""Device-side time sync math (SPEC §2 NTP, reference/gateway-anchors.md §2.10)."""

from __future__ import annotations

import time
from dataclasses import dataclass


@dataclass(frozen=True)
class NtpSample:
    """One exchange: how far the device clock is behind the gateway's (`offset_ms`, positive =
    the gateway is ahead) and the round trip spent on the network (`delay_ms`)."""

    offset_ms: float
    delay_ms: float
    server_synced: bool | None

    def describe(self) -> str:
        synced = {True: "yes", False: "no", None: "unknown"}[self.server_synced]
        return (
            f"NTP offset {self.offset_ms:+.1f} ms, round trip {self.delay_ms:.1f} ms "
            f"(gateway clock synced: {synced})"
        )


def now_ms() -> float:
    """Wall clock in epoch milliseconds, with sub-millisecond precision for our own stamps."""
    return time.time_ns() / 1_000_000


def ntp_sample(t1: float, t2: float, t3: float, t4: float, server_synced: bool | None) -> NtpSample:
    """t1 device send, t2 gateway receive, t3 gateway send, t4 device receive (epoch ms)."""
    offset = ((t2 - t1) + (t3 - t4)) / 2
    delay = (t4 - t1) - (t3 - t2)
    # The gateway stamps whole milliseconds, so on a fast LAN the computed round trip can dip
    # a fraction below zero; a negative delay would only confuse the person reading it.
    return NtpSample(offset_ms=offset, delay_ms=max(delay, 0.0), server_synced=server_synced)
