"""The forwarder's token bucket on a fake clock whose sleeps overshoot, as a busy event loop's do."""

from __future__ import annotations

import pytest

from deviceagentd.uplink import forwarder
from deviceagentd.uplink.forwarder import Pacer


class OvershootingClock:
    def __init__(self, overshoot_s: float) -> None:
        self.now = 100.0
        self.overshoot_s = overshoot_s
        self.sleeps = 0

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps += 1
        self.now += seconds + self.overshoot_s


@pytest.mark.parametrize("overshoot_s", [0.0, 0.001, 0.003])
async def test_the_average_rate_is_the_configured_one_however_much_each_sleep_overshoots(
    monkeypatch: pytest.MonkeyPatch, overshoot_s: float
) -> None:
    clock = OvershootingClock(overshoot_s)
    monkeypatch.setattr(forwarder.asyncio, "sleep", clock.sleep)
    pacer = Pacer(500.0, clock)
    for _ in range(5_050):  # the first 50 are the burst
        await pacer.take()
    # 5,000 messages past the burst at 500/s take 10 s of (fake) time; losing each sleep's
    # overshoot would have made it 15 s at 1 ms and 25 s at 3 ms.
    assert clock.now - 100.0 == pytest.approx(10.0, abs=0.01)


async def test_a_burst_of_a_tenth_of_a_second_goes_out_without_waiting(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = OvershootingClock(0.0)
    monkeypatch.setattr(forwarder.asyncio, "sleep", clock.sleep)
    pacer = Pacer(500.0, clock)
    for _ in range(50):
        await pacer.take()
    assert clock.sleeps == 0
    await pacer.take()
    assert clock.sleeps == 1


async def test_the_rate_holds_when_time_passes_between_messages(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = OvershootingClock(0.002)
    monkeypatch.setattr(forwarder.asyncio, "sleep", clock.sleep)
    pacer = Pacer(100.0, clock)
    for _ in range(10):
        await pacer.take()
    clock.now += 60.0  # idle for a minute: the bucket refills to its burst, not beyond
    sleeps = clock.sleeps
    for _ in range(10):
        await pacer.take()
    assert clock.sleeps == sleeps
    await pacer.take()
    assert clock.sleeps == sleeps + 1
