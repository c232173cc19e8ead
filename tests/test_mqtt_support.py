"""Helpers shared by the MQTT and lifecycle tests (no tests in here).

`RawDevice` is a device as a bare gmqtt client, so a test controls every byte it publishes
(malformed payloads, CBOR, MQTT 3.1.1, answers after a timeout). `running_gateway` runs the
real daemon in-process against a real broker and stops it afterwards.

Imported as a top-level module (`from test_mqtt_support import ...`), found through
`pythonpath = ["tests"]`, like the other helpers.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cbor2
import gmqtt
from daemon_harness import RunningDaemon, start_daemon, wait_until
from gmqtt.mqtt.constants import MQTTv50, MQTTv311
from gmqtt.subscription import Subscription

from deviceagentd.mqtt.codec import decode
from deviceagentd.mqtt.topics import TopicKind, TopicTemplates
from deviceagentd.simulator.link import InflightStore

WAIT_S = 15.0  # generous: only a broken daemon takes this long
# Below Mosquitto's in-flight window of 20 (gmqtt raises when every id of the window is used).
DEVICE_INFLIGHT = 10

SEED_STATUS = {
    "type": "status",
    "data": {"status": "online", "state": {"temperature": 28, "humidity": 62, "mode": "auto"}},
    "metadata": {"productId": "thermostat", "source": "existing-device"},
}
SEED_EVENT = {
    "type": "event",
    "data": {"event": "temperature_alert", "temperature": 38.5, "level": "warning"},
    "metadata": {"productId": "thermostat", "source": "existing-device"},
}


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def rejects(gw: RunningDaemon, kind: str, reason: str) -> float:
    return gw.daemon.metrics.rejects.get({"kind": kind, "reason": reason})


@dataclass
class Received:
    topic: str
    payload: bytes
    properties: dict[str, Any]
    at_ms: int
    qos: int = 0

    @property
    def content_type(self) -> str | None:
        value = self.properties.get("content_type")
        if isinstance(value, list):
            return value[0] if value else None
        return value if isinstance(value, str) else None

    def body(self) -> dict[str, Any]:
        value, _ = decode(self.payload, self.content_type, 1 << 20)
        return value


class _AckStore(InflightStore):
    """gmqtt's outbound QoS 1 store that also resolves one future per message on its PUBACK."""

    def __init__(self) -> None:
        super().__init__()
        self.acks: dict[int, asyncio.Future[float]] = {}
        self.last: asyncio.Future[float] | None = None

    def push_message(self, mid: int, raw_package: bytes) -> None:
        super().push_message(mid, raw_package)
        future: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self.acks[mid] = future
        self.last = future

    def remove_message_by_mid(self, mid: int) -> None:
        super().remove_message_by_mid(mid)
        future = self.acks.pop(mid, None)
        if future is not None and not future.done():
            future.set_result(time.monotonic())


class RawDevice:
    """One device as a plain gmqtt client: publishes exactly the bytes it is given and keeps
    everything it receives on its command and NTP response topics."""

    def __init__(self, url: str, product_id: str, device_id: str, *, protocol: int = 5,
                 client_id: str | None = None, will: dict[str, Any] | None = None,
                 topics: TopicTemplates | None = None) -> None:
        host_port = url.split("://", 1)[1]
        host, _, port = host_port.rpartition(":")
        self.host, self.port = host, int(port)
        self.product_id = product_id
        self.device_id = device_id
        self.protocol = protocol
        self.templates = topics or TopicTemplates()
        self.store = _AckStore()
        self.received: list[Received] = []
        self._arrived = asyncio.Event()
        self._suback = asyncio.Event()
        self._commands_taken = 0
        will_message = None
        if will is not None:
            will_message = gmqtt.Message(self.topic(TopicKind.TELEMETRY), json.dumps(will).encode(), qos=1)
        self.client = gmqtt.Client(client_id or f"raw-{device_id}-{uuid.uuid4().hex[:6]}",
                                   clean_session=True, persistent_storage=self.store,
                                   will_message=will_message)
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *_: self._suback.set()

    def topic(self, kind: TopicKind, device_id: str | None = None) -> str:
        return self.templates.format(kind, self.product_id, self.device_id if device_id is None else device_id)

    async def connect(self, subscribe: bool = True) -> RawDevice:
        version = MQTTv50 if self.protocol == 5 else MQTTv311
        await asyncio.wait_for(self.client.connect(self.host, self.port, version=version), WAIT_S)
        if subscribe:
            self.client.subscribe([Subscription(self.topic(TopicKind.COMMAND), qos=1),
                                   Subscription(self.topic(TopicKind.NTP_RESPONSE), qos=1)])
            await asyncio.wait_for(self._suback.wait(), WAIT_S)
        return self

    async def disconnect(self) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.client.disconnect(), 5)

    async def kill(self) -> None:
        """Drop the socket without DISCONNECT (the broker publishes the will)."""
        self.client._is_active = False
        connection = self.client._connection
        if connection is not None:
            with contextlib.suppress(OSError, RuntimeError):
                await connection.close()

    def _on_message(self, client: Any, topic: str, payload: bytes, qos: int, properties: dict[str, Any]) -> None:
        self.received.append(Received(topic, payload, properties, now_ms(), qos))
        self._arrived.set()

    async def raw(self, topic: str, payload: bytes, qos: int = 1,
                  content_type: str | None = None) -> asyncio.Future[float] | None:
        """Publish bytes; for QoS 1 returns a future resolved (monotonic time) on the broker's PUBACK."""
        if qos:
            await asyncio.wait_for(self.store.wait_below(DEVICE_INFLIGHT), WAIT_S)
        props = {"content_type": content_type} if content_type and self.protocol == 5 else {}
        self.store.last = None
        self.client.publish(topic, payload, qos=qos, **props)
        return self.store.last if qos else None

    async def send(self, kind: TopicKind, body: Any, *, encoding: str = "json", qos: int = 1,
                   content_type: str | None = "auto", device_id: str | None = None) -> asyncio.Future[float] | None:
        """Encode `body` as JSON or CBOR and publish it on this device's `kind` topic.
        content_type "auto" labels the payload (MQTT 5 only); None sends no label."""
        payload = cbor2.dumps(body) if encoding == "cbor" else json.dumps(body).encode()
        if content_type == "auto":
            content_type = "application/cbor" if encoding == "cbor" else "application/json"
        return await self.raw(self.topic(kind, device_id), payload, qos, content_type)

    async def flush(self) -> None:
        """Wait until the broker acknowledged every QoS 1 message."""
        await asyncio.wait_for(self.store.wait_empty(), WAIT_S)

    async def expect(self, match: Callable[[Received], bool], timeout: float = WAIT_S) -> Received:
        deadline = time.monotonic() + timeout
        seen = 0
        while True:
            for item in self.received[seen:]:
                if match(item):
                    return item
            seen = len(self.received)
            self._arrived.clear()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"{self.device_id}: no matching message within {timeout} s "
                                     f"(got {[r.topic for r in self.received]})")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), remaining)

    def commands(self) -> list[Received]:
        return [r for r in self.received if r.topic == self.topic(TopicKind.COMMAND)]

    async def command(self, timeout: float = WAIT_S) -> Received:
        """The next command not returned before."""
        index = self._commands_taken
        await wait_until(lambda: len(self.commands()) > index, timeout)
        self._commands_taken += 1
        return self.commands()[index]

    def ntp_answers(self) -> list[Received]:
        return [r for r in self.received if r.topic == self.topic(TopicKind.NTP_RESPONSE)]


@contextlib.asynccontextmanager
async def raw_device(url: str, product_id: str, device_id: str | None = None,
                     **kwargs: Any) -> AsyncIterator[RawDevice]:
    device = RawDevice(url, product_id, device_id or unique(product_id), **kwargs)
    await device.connect()
    try:
        yield device
    finally:
        await device.disconnect()


async def forget_session(url: str, client_id: str) -> None:
    """Make the broker drop a stopped daemon's session (clean start, expiry 0), so a shared broker
    does not keep queueing every later test's traffic for gateways that are gone."""
    host, _, port = url.split("://", 1)[1].rpartition(":")
    client = gmqtt.Client(client_id, clean_session=True)
    with contextlib.suppress(Exception):
        await asyncio.wait_for(client.connect(host, int(port), version=MQTTv50), WAIT_S)
        await asyncio.wait_for(client.disconnect(), 5)


@contextlib.asynccontextmanager
async def running_gateway(url: str, state_dir: Path, *, wait_subscribed: bool = True, keep_session: bool = False,
                          **overrides: Any) -> AsyncIterator[RunningDaemon]:
    """The real daemon in-process. Its broker session is dropped afterwards unless keep_session
    (for tests that restart it with the same mqtt_client_id)."""
    gw = await start_daemon(url, state_dir, wait_subscribed=wait_subscribed, **overrides)
    try:
        yield gw
    finally:
        await gw.stop()
        if not keep_session:
            await forget_session(url, gw.config.mqtt.client_id)


async def online_device(gw: RunningDaemon, device: RawDevice, state: dict[str, Any] | None = None,
                        encoding: str = "json", content_type: str | None = "auto") -> None:
    """Publish a status online (with a state snapshot) and wait until the gateway has the device online."""
    body = {"type": "status", "data": {"status": "online", "state": state or {}},
            "metadata": {"productId": device.product_id, "source": "test"}}
    await device.send(TopicKind.TELEMETRY, body, encoding=encoding, content_type=content_type)

    def ready() -> bool:
        found = gw.daemon.registry.get(device.device_id)
        return found is not None and found.online and all(found.state.get(k) == v for k, v in (state or {}).items())

    await wait_until(ready, WAIT_S)


async def events_of(gw: RunningDaemon, device_id: str, limit: int = 1000) -> list[Any]:
    """Events of a device as the store returns them, oldest first."""
    return list(reversed(await gw.daemon.store.query_events(device_id, limit=limit)))


async def wait_events(gw: RunningDaemon, device_id: str, predicate: Callable[[list[Any]], bool],
                      timeout: float = WAIT_S) -> list[Any]:
    deadline = time.monotonic() + timeout
    while True:
        events = await events_of(gw, device_id)
        if predicate(events):
            return events
        if time.monotonic() > deadline:
            raise AssertionError(f"events of {device_id} never matched: {[(e.event, e.source) for e in events]}")
        await asyncio.sleep(0.05)


async def wait_for_value(read: Callable[[], Any], expected: Any, timeout: float = WAIT_S) -> None:
    await wait_until(lambda: read() == expected, timeout)
