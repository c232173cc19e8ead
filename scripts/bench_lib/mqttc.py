"""A small gmqtt 0.8.0 client for the benchmark's own traffic (publishers, baselines, NTP).

Kept apart from the daemon's code: the baselines must be *bare* gmqtt, and the helper
processes must not import the daemon. Works around the pitfalls of
reference/gateway-anchors.md §2.1 that matter here: QoS 1 publishes wait for room below the
broker's Receive Maximum (gmqtt raises past it), and subscribing waits for the SUBACK.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import gmqtt
from gmqtt.mqtt.constants import MQTTv50
from gmqtt.subscription import Subscription

from deviceagentd.simulator.link import InflightStore

# topic, payload -> None; called synchronously from gmqtt's packet handler.
OnMessage = Callable[[str, bytes], None]

# Mosquitto advertises Receive Maximum 20 and gmqtt raises once 19 ids are in use; one id
# may be taken by a SUBSCRIBE.
MAX_WINDOW = 18
CONNECT_TIMEOUT_S = 10.0

logging.getLogger("gmqtt").setLevel(logging.ERROR)


def broker_address(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    return parts.hostname or "127.0.0.1", parts.port or 1883


class BenchClient:
    def __init__(self, url: str, client_id: str, on_message: OnMessage | None = None) -> None:
        self.url = url
        self.client_id = client_id
        self._on_message = on_message
        self._store = InflightStore()
        self._suback: dict[int, asyncio.Future[None]] = {}
        self._client: Any = gmqtt.Client(client_id, clean_session=True, persistent_storage=self._store)
        self._client.set_config({"reconnect_retries": 0})
        self._client.on_message = self._handle_message
        self._client.on_subscribe = self._handle_subscribe

    # --- connection -----------------------------------------------------------------------

    async def connect(self) -> None:
        host, port = broker_address(self.url)
        await asyncio.wait_for(self._client.connect(host, port, version=MQTTv50), CONNECT_TIMEOUT_S)

    async def disconnect(self) -> None:
        await asyncio.wait_for(self._client.disconnect(), 5.0)

    async def subscribe(self, *topics: str, qos: int = 1) -> None:
        """Subscribe and wait for the broker's SUBACK."""
        mid = self._client.subscribe([Subscription(topic, qos=qos) for topic in topics])
        waiter = self._suback[mid] = asyncio.get_running_loop().create_future()
        try:
            await asyncio.wait_for(waiter, CONNECT_TIMEOUT_S)
        finally:
            self._suback.pop(mid, None)

    # --- publishing -----------------------------------------------------------------------

    def publish0(self, topic: str, payload: bytes) -> None:
        """QoS 0: written to the transport's buffer right away."""
        self._client.publish(topic, payload, qos=0)

    async def publish1(self, topic: str, payload: bytes, window: int = MAX_WINDOW) -> None:
        """QoS 1 with at most `window` messages waiting for their PUBACK."""
        await self._store.wait_below(min(window, MAX_WINDOW))
        self._client.publish(topic, payload, qos=1)

    async def wait_acked(self, timeout_s: float = 30.0) -> None:
        """Until every QoS 1 message published so far has its PUBACK."""
        await asyncio.wait_for(self._store.wait_empty(), timeout_s)

    @property
    def unacked(self) -> int:
        return self._store.count

    def write_buffer_size(self) -> int:
        """Bytes waiting in our socket's user-space buffer (gmqtt internals, version pinned)."""
        connection = self._client._connection
        transport = getattr(connection, "_transport", None)
        return int(transport.get_write_buffer_size()) if transport is not None else 0

    async def drain(self, high: int = 1 << 20, low: int = 256 << 10) -> None:
        """Flow control for QoS 0 bursts: above `high` buffered bytes, wait until below `low`."""
        if self.write_buffer_size() <= high:
            return
        while self.write_buffer_size() > low:
            await asyncio.sleep(0.0005)

    # --- gmqtt callbacks ------------------------------------------------------------------

    def _handle_message(self, client: Any, topic: str, payload: bytes, qos: int, properties: Any) -> None:
        if self._on_message is not None:
            self._on_message(topic, payload)

    def _handle_subscribe(self, client: Any, mid: int, qos: Any, properties: Any) -> None:
        waiter = self._suback.get(mid)
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
