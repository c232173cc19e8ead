"""The uplink against real brokers: a site Mosquitto and a "cloud" Mosquitto with TLS."""

from __future__ import annotations

import asyncio
import json
import logging
import re
from pathlib import Path
from typing import Any

import pytest
from daemon_harness import PRODUCTS_DIR, daemon_env, start_daemon, wait_until
from mosquitto_broker import MosquittoBroker, free_port
from uplink_site import (
    CloudBroker,
    CloudSubscriber,
    LanDevices,
    assert_complete_and_ordered,
    start_cloud,
    uplink_settings,
)

from deviceagentd.config import load_config
from deviceagentd.core.catalog import load_catalog
from deviceagentd.core.spec import load_spec_file
from deviceagentd.daemon import Daemon
from deviceagentd.simulator import SimulatedDevice, SimulatorOptions
from deviceagentd.uplink.requests_api import CloudReply

SITE = "site-7"



def uplink_overrides(cloud: CloudBroker, **more: Any) -> dict[str, Any]:
    return uplink_settings(cloud, SITE, uplink_state_min_interval_s=0.3, **more)


ISO_MS = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


async def test_site_changes_reach_the_cloud_in_order_with_a_retained_birth(
    broker: MosquittoBroker, cloud: CloudBroker, tmp_path: Path
) -> None:
    sub = CloudSubscriber(cloud.broker.port)
    await sub.connect()
    running = await start_daemon(broker.url, tmp_path / "state", **uplink_overrides(cloud))
    lan = LanDevices(broker.port)
    await lan.connect()
    try:
        await wait_until(lambda: running.daemon.uplink and running.daemon.uplink.connection.is_connected)
        for t in range(5):
            lan.state("u-1", temperature=20 + t)
        for n in range(10):
            await lan.room()
            lan.event("u-1", n)
        lan.offline("u-1")
        await wait_until(lambda: sub.on("/devices/u-1/lifecycle") and len(sub.event_numbers("u-1")) >= 10
                         and any(m.body["status"] == "offline" for m in sub.on("/lifecycle")), timeout=10)
        birth = sub.on(f"sites/{SITE}/gateway/status")
        assert birth and birth[0].body["status"] == "online" and birth[0].body["version"]
        assert_complete_and_ordered(sub.event_numbers("u-1"), range(10))
        # Per device, in the order things happened: online, state, events, offline.
        kinds = [m.topic.rsplit("/", 1)[1] for m in sub.messages if "/devices/u-1/" in m.topic]
        assert kinds[0] == "lifecycle" and kinds[-1] == "lifecycle"
        assert kinds.index("state") < kinds.index("events")
        state = sub.on("/devices/u-1/state")
        assert state[-1].body["state"]["temperature"] == 24  # coalesced: the latest value
        assert len(state) < 5
        # Every time on the uplink is written as the HTTP API writes it.
        for message in (birth[0], state[-1], sub.on("/devices/u-1/lifecycle")[0], sub.on("/devices/u-1/events")[0]):
            assert ISO_MS.fullmatch(message.body["ts"]), message.body
        status, health = await running.request("GET", "/api/health")
        assert status == 200
        assert health["uplink"]["connected"] is True and health["uplink"]["siteId"] == SITE
        await wait_until(lambda: running.daemon.store.outbox_stats().rows == 0, timeout=5)
        # A new subscriber sees the retained birth.
        late = CloudSubscriber(cloud.broker.port)
        await late.connect()
        await wait_until(lambda: late.on("/gateway/status"))
        assert late.on("/gateway/status")[0].retain and late.on("/gateway/status")[0].body["status"] == "online"
        await late.disconnect()
    finally:
        await lan.disconnect()
        await running.stop()
    # A clean stop says offline, retained.
    await wait_until(lambda: any(m.body["status"] == "offline" and m.body["reason"] == "shutdown"
                                 for m in sub.on("/gateway/status")))
    await sub.disconnect()


async def test_cloud_broker_down_then_back_nothing_lost_order_kept(
    broker: MosquittoBroker, cloud: CloudBroker, tmp_path: Path
) -> None:
    sub = CloudSubscriber(cloud.broker.port)
    await sub.connect()
    running = await start_daemon(broker.url, tmp_path / "state", **uplink_overrides(cloud))
    lan = LanDevices(broker.port)
    await lan.connect()
    devices = [f"o-{i}" for i in range(5)]
    try:
        await wait_until(lambda: running.daemon.uplink and running.daemon.uplink.connection.is_connected)
        for n in range(20):
            for d in devices:
                await lan.room()
                lan.event(d, n)
        await sub.disconnect()
        cloud.broker.stop()
        for n in range(20, 220):
            for d in devices:
                await lan.room()
                lan.event(d, n)
                lan.state(d, temperature=n)
        await wait_until(lambda: running.daemon.store.outbox_stats().rows >= 5 * 150, timeout=10)
        status, health = await running.request("GET", "/api/health")
        assert status == 200 and health["uplink"]["connected"] is False  # a WAN loss is not "degraded"
        cloud.broker.start()
        await sub.connect()
        await wait_until(lambda: all(len(set(sub.event_numbers(d))) == 220 for d in devices), timeout=20)
        for d in devices:
            assert_complete_and_ordered(sub.event_numbers(d), range(220))
        await wait_until(lambda: running.daemon.store.outbox_stats().rows == 0, timeout=5)
    finally:
        await lan.disconnect()
        await running.stop()
        await sub.disconnect()


async def test_outbox_full_drops_the_oldest_non_lifecycle_counted_and_health_says_so(
    broker: MosquittoBroker, cloud: CloudBroker, tmp_path: Path
) -> None:
    cloud.broker.stop()
    running = await start_daemon(broker.url, tmp_path / "state",
                                 **uplink_overrides(cloud, uplink_outbox_max_rows=100, uplink_forward_state=False))
    lan = LanDevices(broker.port)
    await lan.connect()
    try:
        lan.state("f-1", temperature=20)  # registers f-1: an online row first (state is not forwarded here)
        for n in range(300):
            await lan.room()
            lan.event("f-1", n)
        await wait_until(lambda: running.daemon.store.outbox_stats().dropped >= 201, timeout=10)
        await asyncio.sleep(0.3)  # nothing more goes
        _, health = await running.request("GET", "/api/health")
        outbox = health["uplink"]["outbox"]
        assert outbox["dropped"] == 201 and outbox["rows"] == 100
        assert "dropped" in health["uplink"]["warning"]
        _, metrics = await running.request("GET", "/metrics")
        assert "deviceagentd_uplink_dropped_total 201" in metrics
        sub = CloudSubscriber(cloud.broker.port)
        cloud.broker.start()
        await sub.connect()
        await wait_until(lambda: 299 in sub.event_numbers("f-1"), timeout=10)
        assert sub.event_numbers("f-1") == list(range(201, 300))  # the newest kept, in order
        assert [m.body["status"] for m in sub.on("/devices/f-1/lifecycle")] == ["online"]  # lifecycle kept
        await sub.disconnect()
    finally:
        await lan.disconnect()
        await running.stop()


class EchoHandler:
    """A stand-in for the cloud request handler: what the extension point must carry."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, dict[str, Any]]] = []

    def subscriptions(self) -> list[str]:
        return [f"sites/{SITE}/gateway/chat"]

    async def handle(self, topic: str, payload: bytes, properties: dict[str, Any]) -> CloudReply | None:
        self.seen.append((topic, properties))
        response = properties.get("response_topic", [f"sites/{SITE}/gateway/chat/reply"])[0]
        correlation = properties.get("correlation_data", [None])[0]
        return CloudReply(response, json.dumps({"echo": json.loads(payload)}).encode(), correlation)


async def test_a_cloud_request_handler_gets_its_topics_and_replies_carry_correlation_data(
    broker: MosquittoBroker, cloud: CloudBroker, tmp_path: Path
) -> None:


    handler = EchoHandler()
    config = load_config(None, daemon_env(broker.url, tmp_path / "state", free_port(), **uplink_overrides(cloud)))
    daemon = Daemon(config, load_catalog(Path(config.products.dir)), cloud_requests=lambda _daemon: handler)
    await daemon.start()
    sub = CloudSubscriber(cloud.broker.port)
    await sub.connect()
    try:
        assert daemon.uplink is not None
        await wait_until(lambda: daemon.uplink is not None and daemon.uplink.connection.is_connected)
        await asyncio.sleep(0.3)  # the subscription is sent with the CONNACK
        assert sub._client is not None
        sub._client.publish(f"sites/{SITE}/gateway/chat", b'{"prompt":"hi"}', qos=1,
                            response_topic="sites/site-7/replies/1", correlation_data=b"corr-1")
        await wait_until(lambda: sub.on("sites/site-7/replies/1"), timeout=5)
        reply = sub.on("sites/site-7/replies/1")[0]
        assert reply.body == {"echo": {"prompt": "hi"}}
        assert reply.properties.get("correlation_data") == [b"corr-1"]
        assert handler.seen[0][1]["correlation_data"] == [b"corr-1"]
    finally:
        await sub.disconnect()
        await daemon.stop()


async def test_wrong_credentials_and_untrusted_certificate_retry_with_clear_logs_lan_unaffected(
    broker: MosquittoBroker, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import subprocess

    passwords = tmp_path / "passwd"
    subprocess.run(["mosquitto_passwd", "-c", "-b", str(passwords), "gw", "right"], check=True, capture_output=True)
    cloud = start_cloud(tmp_path / "cloud", extra_conf=f"allow_anonymous false\npassword_file {passwords}\n")
    other = start_cloud(tmp_path / "other")  # a different CA than the one the uplink trusts
    caplog.set_level(logging.INFO, "deviceagentd")
    device = SimulatedDevice(load_spec_file(PRODUCTS_DIR / "thermostat.json"), "w-1", SimulatorOptions(url=broker.url))
    try:
        bad_password = await start_daemon(broker.url, tmp_path / "s1", **uplink_overrides(
            cloud, uplink_username="gw", uplink_password="wrong"))
        untrusted = await start_daemon(broker.url, tmp_path / "s2", **uplink_overrides(
            cloud, uplink_url=other.uplink_url))
        await device.start()
        try:
            for running in (bad_password, untrusted):
                assert running.daemon.uplink is not None
                uplink = running.daemon.uplink
                await wait_until(lambda u=uplink: u.connection.status.failures_seen >= 3, timeout=10)  # type: ignore
                # The LAN side works meanwhile: a command round trip over HTTP.
                await wait_until(lambda r=running: r.daemon.registry.get("w-1") is not None, timeout=5)  # type: ignore
                status, result = await running.request(
                    "POST", "/api/devices/w-1/commands",
                    json_body={"command": "set_target_temperature", "params": {"target_temperature": 21}})
                assert status == 200 and result["ok"] is True
            status, health = await bad_password.request("GET", "/api/health")
            # Mosquitto answers a wrong password with "not authorized" (0x87) under MQTT 5.
            assert status == 200 and "refused the connection: not authorized" in health["uplink"]["lastError"]
            status, health = await untrusted.request("GET", "/api/health")
            assert "not trusted" in health["uplink"]["lastError"]
            lines = [r.getMessage() for r in caplog.records if r.name == "deviceagentd.uplink"]
            assert any("cannot connect to uplink broker" in line and "not authorized" in line for line in lines)
            assert any("cannot connect to uplink broker" in line and "certificate is not trusted" in line
                       for line in lines)
        finally:
            await device.stop()
            await bad_password.stop()
            await untrusted.stop()
    finally:
        cloud.broker.stop()
        other.broker.stop()
