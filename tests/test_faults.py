"""Fault tests (issue 13): broker restart, daemon SIGTERM and kill -9 mid-traffic, and a full
disk, each counting what an mqtt.js device had acknowledged against what the gateway stored.

Small sizes here; scripts/faults runs the same scenarios at full size (docs/benchmarks.md).
"""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
from fault_scenarios import FaultResult, broker_restart, can_mount_tmpfs, daemon_restart, full_disk

pytestmark = pytest.mark.slow

RATE = 400  # events/s from one device


def show(result: FaultResult) -> None:
    print(f"\n{result.row()}")


async def test_a_broker_restart_mid_traffic_loses_nothing(tmp_path: Path) -> None:
    result = await broker_restart(tmp_path, count=2000, rate=RATE, down_s=2)
    show(result)
    assert result.acked == result.sent == 2000
    assert result.lost == 0, result


async def test_a_daemon_sigterm_mid_traffic_loses_nothing(tmp_path: Path) -> None:
    result = await daemon_restart(tmp_path, count=2000, rate=RATE, down_s=2, sig=signal.SIGTERM)
    show(result)
    assert result.acked == 2000
    assert result.lost == 0 and result.reported == 0, result
    assert "exit code 0" in result.notes


async def test_a_daemon_kill_9_mid_traffic_loses_at_most_one_batch_window(tmp_path: Path) -> None:
    result = await daemon_restart(tmp_path, count=2000, rate=RATE, down_s=1, sig=signal.SIGKILL)
    show(result)
    assert result.acked == 2000
    # Acknowledged but not yet committed when killed: at most the 1 s batch window (plus the
    # commit in progress). The broker redelivers everything the daemon had not acknowledged.
    assert result.lost <= 2 * RATE, result


@pytest.mark.skipif(can_mount_tmpfs() is not None, reason=str(can_mount_tmpfs()))
async def test_a_full_disk_holds_messages_at_the_broker_and_loses_nothing(tmp_path: Path) -> None:
    result = await full_disk(tmp_path, count=8000, rate=1000, full_s=4, sigterm_while_full=False)
    show(result)
    assert result.acked == 8000
    assert result.lost == 0 and result.reported == 0, result
    # While full, new messages wait at the broker: the daemon holds about one batch window of
    # rows (accepted before the first failed commit), not everything sent meanwhile (4,000).
    assert result.peak_pending_rows < 2000, result


@pytest.mark.skipif(can_mount_tmpfs() is not None, reason=str(can_mount_tmpfs()))
async def test_sigterm_on_a_full_disk_reports_every_lost_row_and_fails(tmp_path: Path) -> None:
    result = await full_disk(tmp_path, count=6000, rate=1000, full_s=3, sigterm_while_full=True)
    show(result)
    assert result.acked == 6000
    # Whatever could not be written is reported by the daemon (and it exits 1), never passed
    # off as stored; messages it had not acknowledged were redelivered by the broker.
    assert result.lost <= result.reported, result
    assert ("exit code 1 at SIGTERM while full" in result.notes) == (result.reported > 0), result
