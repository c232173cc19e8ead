"""The uplink across daemon restarts (the daemon as a subprocess): SIGTERM and kill -9 during a
cloud outage, and the gateway's last will."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path
from typing import Any

from daemon_harness import spawn_daemon, wait_until
from mosquitto_broker import MosquittoBroker
from uplink_site import CloudBroker, CloudSubscriber, LanDevices, assert_complete_and_ordered, start_cloud

SITE = "site-p"
BATCH_S = 0.2


def overrides(cloud: CloudBroker, **more: Any) -> dict[str, Any]:
    return {"uplink_url": cloud.uplink_url, "uplink_site_id": SITE, "uplink_tls_ca_file": str(cloud.ca),
            "uplink_reconnect_min_s": 0.2, "uplink_reconnect_max_s": 0.5, "uplink_keepalive_s": 5,
            "storage_batch_interval_s": BATCH_S, **more}


async def _outage_then_restart(broker: MosquittoBroker, tmp_path: Path, sig: int) -> tuple[list[int], float]:
    """Events 0..299 flow while the cloud is down; the daemon gets `sig` mid-stream; it is started
    again (same LAN session: what it never acknowledged comes again) and the cloud comes back.
    Returns what the cloud got and the devices' rate (events/s)."""
    cloud = start_cloud(tmp_path / "cloud")
    sub = CloudSubscriber(cloud.broker.port)
    state = tmp_path / "state"
    lan_session = {"mqtt_client_id": f"gw-{tmp_path.name[-20:]}", "mqtt_session_expiry_s": 120}
    first = spawn_daemon(broker.url, state, **overrides(cloud, **lan_session))
    lan = LanDevices(broker.port)
    second = None
    try:
        first.wait_http()
        await sub.connect()
        await lan.connect()
        lan.state("p-1", temperature=20)
        await wait_until(lambda: sub.on("/devices/p-1/lifecycle"), timeout=10)
        await sub.disconnect()
        cloud.broker.stop()
        loop = asyncio.get_running_loop()
        started = loop.time()
        for n in range(300):
            await lan.room()
            lan.event("p-1", n)
            if n == 200:
                first.terminate(sig)  # mid-stream: the rest waits with the LAN broker
        rate = 300 / (loop.time() - started)
        await lan.disconnect()
        second = spawn_daemon(broker.url, state, **overrides(cloud, **lan_session))
        second.wait_http()
        cloud.broker.start()
        await sub.connect()
        try:
            await wait_until(lambda: 299 in sub.event_numbers("p-1"), timeout=15)
        except AssertionError:
            print("DBG", sorted(set(sub.event_numbers("p-1")))[-5:], len(sub.messages), second.get_json("/api/health"))
            print(second.log()[-3000:])
            print(first.log()[-3000:])
            raise
        await asyncio.sleep(0.5)
        return sub.event_numbers("p-1"), rate
    finally:
        await sub.disconnect()
        if second is not None:
            second.terminate()
        if first.process.poll() is None:
            first.terminate()
        cloud.broker.stop()


async def test_sigterm_during_an_outage_loses_nothing(broker: MosquittoBroker, tmp_path: Path) -> None:
    numbers, _ = await _outage_then_restart(broker, tmp_path, signal.SIGTERM)
    assert_complete_and_ordered(numbers, range(300))


async def test_kill_9_during_an_outage_loses_at_most_one_batch_window(broker: MosquittoBroker, tmp_path: Path) -> None:
    numbers, rate = await _outage_then_restart(broker, tmp_path, signal.SIGKILL)
    missing = sorted(set(range(300)) - set(numbers))
    # What is lost is what the daemon had acknowledged but not committed: one run of events, at
    # most a batch window's worth (plus the messages in flight), as for the events themselves.
    assert len(missing) <= rate * BATCH_S + 20, (len(missing), rate)
    if missing:
        assert missing == list(range(missing[0], missing[-1] + 1))
    assert_complete_and_ordered(numbers, range(300)) if not missing else None
    first = list(dict.fromkeys(numbers))
    assert first == sorted(first)


async def test_the_last_will_says_offline_after_a_kill_9_and_birth_says_online_again(
    broker: MosquittoBroker, tmp_path: Path
) -> None:
    cloud = start_cloud(tmp_path / "cloud")
    sub = CloudSubscriber(cloud.broker.port)
    await sub.connect()
    daemon = spawn_daemon(broker.url, tmp_path / "state", **overrides(cloud))
    try:
        daemon.wait_http()
        await wait_until(lambda: sub.on("/gateway/status"), timeout=10)
        assert sub.on("/gateway/status")[-1].body["status"] == "online"
        daemon.terminate(signal.SIGKILL)
        # The broker notices after 1.5 × keepalive (5 s) and publishes the retained will.
        await wait_until(lambda: sub.on("/gateway/status")[-1].body["status"] == "offline", timeout=12)
        will = sub.on("/gateway/status")[-1].body
        assert will["reason"] == "connection lost" and will["version"]
        late = CloudSubscriber(cloud.broker.port)
        await late.connect()
        await wait_until(lambda: late.on("/gateway/status"), timeout=5)
        assert late.on("/gateway/status")[0].retain and late.on("/gateway/status")[0].body["status"] == "offline"
        await late.disconnect()
    finally:
        await sub.disconnect()
        if daemon.process.poll() is None:
            daemon.terminate()
        cloud.broker.stop()
