"""Test helpers for the uplink: a "cloud" broker with TLS, a persistent cloud subscriber that
records what arrives, and a LAN publisher that plays devices."""

from __future__ import annotations

import asyncio
import json
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gmqtt
from gmqtt.mqtt.constants import MQTTv50, MQTTv311
from mosquitto_broker import MosquittoBroker, free_port, start_broker
from test_mqtt_tls_auth import make_ca_and_server_cert


@dataclass
class CloudBroker:
    broker: MosquittoBroker
    tls_port: int
    ca: Path

    @property
    def uplink_url(self) -> str:
        return f"mqtts://127.0.0.1:{self.tls_port}"


def start_cloud(directory: Path, extra_conf: str = "") -> CloudBroker:
    """A Mosquitto with a plain listener (for the test's subscriber) and a TLS one (for the uplink)."""
    ca, cert, key = make_ca_and_server_cert(directory / "pki")
    tls_port = free_port()
    extra = f"listener {tls_port} 127.0.0.1\ncafile {ca}\ncertfile {cert}\nkeyfile {key}\n{extra_conf}"
    return CloudBroker(start_broker(directory / "cloud", extra_conf=extra), tls_port, ca)


def uplink_settings(cloud: CloudBroker, site_id: str, **more: Any) -> dict[str, Any]:
    """Config overrides that point a test daemon's uplink at `cloud`, reconnecting quickly."""
    return {"uplink_url": cloud.uplink_url, "uplink_site_id": site_id, "uplink_tls_ca_file": str(cloud.ca),
            "uplink_reconnect_min_s": 0.2, "uplink_reconnect_max_s": 0.5, **more}


@dataclass
class Received:
    topic: str
    body: Any
    retain: bool
    properties: dict[str, Any]


@dataclass
class CloudSubscriber:
    """Subscribes `sites/#` with a persistent session: what arrives while it is away is kept.
    Also the cloud side's requester (`publish`), as MQTT 5 or (protocol 4) MQTT 3.1.1."""

    url_port: int
    client_id: str = field(default_factory=lambda: f"cloud-{uuid.uuid4().hex[:8]}")
    messages: list[Received] = field(default_factory=list)
    protocol: int = 5
    _client: gmqtt.Client | None = None

    async def connect(self) -> None:
        mqtt5 = self.protocol == 5
        client = gmqtt.Client(self.client_id, clean_session=False,
                              **({"session_expiry_interval": 600} if mqtt5 else {}))
        client.on_message = self._on_message
        await client.connect("127.0.0.1", self.url_port, version=MQTTv50 if mqtt5 else MQTTv311)
        client.subscribe("sites/#", qos=1)
        self._client = client
        await asyncio.sleep(0.2)

    def publish(self, topic: str, body: Any, **properties: Any) -> None:
        """A QoS 1 request; `properties` (MQTT 5 only): response_topic, correlation_data, …"""
        assert self._client is not None
        payload = body if isinstance(body, bytes) else json.dumps(body).encode()
        self._client.publish(topic, payload, qos=1, **properties)

    async def disconnect(self) -> None:
        if self._client is not None:
            await self._client.disconnect()
            self._client = None

    def _on_message(self, client: Any, topic: str, payload: bytes, qos: int, properties: dict[str, Any]) -> int:
        try:
            body: Any = json.loads(payload)
        except ValueError:
            body = payload
        self.messages.append(Received(topic, body, bool(properties.get("retain")), properties))
        return 0

    def on(self, suffix: str) -> list[Received]:
        return [m for m in self.messages if m.topic.endswith(suffix)]

    def event_numbers(self, device_id: str) -> list[int]:
        return [m.body["data"]["n"] for m in self.messages
                if m.topic.endswith(f"/devices/{device_id}/events")]


class LanDevices:
    """Publishes device telemetry and events on the site broker, QoS 1."""

    def __init__(self, port: int) -> None:
        self._port = port
        self._client = gmqtt.Client(f"lan-{uuid.uuid4().hex[:8]}")

    async def connect(self) -> None:
        await self._client.connect("127.0.0.1", self._port, version=MQTTv50)

    async def disconnect(self) -> None:
        """After the broker acknowledged every publish (else the last ones would be lost here)."""
        await self.room(0)
        await self._client.disconnect()

    async def room(self, at_most: int = 9) -> None:
        """Wait while more than `at_most` publishes wait for their PUBACK (the broker's window is small)."""
        while len(self._client._persistent_storage._messages) > at_most:
            await asyncio.sleep(0.002)

    def state(self, device_id: str, **values: Any) -> None:
        self._client.publish(f"v1/thermostat/{device_id}/telemetry",
                             json.dumps({"type": "state", "data": values}), qos=1)

    def event(self, device_id: str, n: int) -> None:
        self._client.publish(f"v1/thermostat/{device_id}/event",
                             json.dumps({"type": "event", "data": {"event": "temperature_alert", "n": n}}), qos=1)

    def offline(self, device_id: str) -> None:
        self._client.publish(f"v1/thermostat/{device_id}/telemetry",
                             json.dumps({"type": "status", "data": {"status": "offline"}}), qos=1)


def assert_complete_and_ordered(numbers: list[int], expected: range) -> None:
    """Every number arrived (QoS 1 may repeat some), and first arrivals are in order."""
    assert set(numbers) == set(expected), f"missing {sorted(set(expected) - set(numbers))[:20]}"
    first: list[int] = []
    seen: set[int] = set()
    for n in numbers:
        if n not in seen:
            seen.add(n)
            first.append(n)
    assert first == sorted(first)
