"""The broker fixtures start real mosquitto processes that behave like the LAN broker."""

from __future__ import annotations

import asyncio
import os
import socket
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import gmqtt
import pytest
from gmqtt.mqtt.constants import MQTTv50
from mosquitto_broker import MosquittoBroker, start_broker

TIMEOUT = 5.0


@dataclass
class Probe:
    """A gmqtt client plus everything its callbacks saw."""

    client: gmqtt.Client
    connect_flags: list[int] = field(default_factory=list)
    messages: asyncio.Queue[tuple[str, bytes, int]] = field(default_factory=asyncio.Queue)
    subacks: asyncio.Queue[int] = field(default_factory=asyncio.Queue)

    async def subscribe(self, topic: str, qos: int = 1) -> None:
        self.client.subscribe(topic, qos=qos)
        await asyncio.wait_for(self.subacks.get(), TIMEOUT)

    async def next_message(self) -> tuple[str, bytes, int]:
        return await asyncio.wait_for(self.messages.get(), TIMEOUT)


@asynccontextmanager
async def mqtt_client(
    broker: MosquittoBroker, client_id: str | None = None, **client_kwargs: Any
) -> AsyncIterator[Probe]:
    client = gmqtt.Client(client_id or f"test-{uuid.uuid4().hex[:12]}", **client_kwargs)
    probe = Probe(client)

    def on_connect(_c: gmqtt.Client, flags: int, rc: int, _props: Any) -> None:
        probe.connect_flags.append(flags)

    def on_message(_c: gmqtt.Client, topic: str, payload: bytes, qos: int, _p: Any) -> int:
        probe.messages.put_nowait((topic, payload, qos))
        return 0

    def on_subscribe(_c: gmqtt.Client, mid: int, qos: Any, _props: Any) -> None:
        probe.subacks.put_nowait(mid)

    client.on_connect = on_connect
    client.on_message = on_message
    client.on_subscribe = on_subscribe
    # gmqtt's initial connect does not retry: a refused connection raises here.
    await asyncio.wait_for(client.connect(broker.host, broker.port, version=MQTTv50), TIMEOUT)
    try:
        yield probe
    finally:
        if client.is_connected:
            await client.disconnect()


def _topic() -> str:
    return f"test/{uuid.uuid4().hex}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def test_session_broker_pubsub_roundtrip(broker: MosquittoBroker) -> None:
    assert broker.is_running
    assert broker.url == f"mqtt://127.0.0.1:{broker.port}"
    topic = _topic()
    async with mqtt_client(broker) as sub, mqtt_client(broker) as pub:
        await sub.subscribe(topic, qos=1)
        pub.client.publish(topic, b"hello", qos=1)
        assert await sub.next_message() == (topic, b"hello", 1)


async def test_restart_keeps_port_and_persistent_session(fresh_broker: MosquittoBroker) -> None:
    port, pid_before = fresh_broker.port, fresh_broker.pid
    client_id = f"persistent-{uuid.uuid4().hex[:8]}"
    session = {"clean_session": False, "session_expiry_interval": 300}
    topic = _topic()

    async with mqtt_client(fresh_broker, client_id, **session) as sub:
        assert sub.connect_flags == [0]  # brand-new session
        await sub.subscribe(topic, qos=1)

    # Published while the subscriber is offline -> queued in its broker session.
    # The publisher also subscribes, so receiving its own copy proves the broker
    # routed (and therefore queued) the message before we restart it.
    async with mqtt_client(fresh_broker) as pub:
        await pub.subscribe(topic, qos=1)
        pub.client.publish(topic, b"before-restart", qos=1)
        assert (await pub.next_message())[1] == b"before-restart"

    fresh_broker.restart()
    assert fresh_broker.port == port
    assert fresh_broker.pid is not None and fresh_broker.pid != pid_before
    assert pid_before is not None and not _pid_alive(pid_before)

    async with mqtt_client(fresh_broker) as pub:
        pub.client.publish(topic, b"after-restart", qos=1)
        await asyncio.sleep(0.2)  # let the broker queue it before the subscriber returns

    async with mqtt_client(fresh_broker, client_id, **session) as sub:
        assert sub.connect_flags == [1], "session_present=0: broker lost the persistent session"
        got = [await sub.next_message(), await sub.next_message()]
        assert sorted(got) == [(topic, b"after-restart", 1), (topic, b"before-restart", 1)]


async def test_session_lost_without_persistence(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Negative control: the check above really depends on broker persistence."""
    with start_broker(tmp_path_factory.mktemp("nopersist"), extra_conf="persistence false") as b:
        client_id = f"persistent-{uuid.uuid4().hex[:8]}"
        session = {"clean_session": False, "session_expiry_interval": 300}
        async with mqtt_client(b, client_id, **session) as sub:
            await sub.subscribe(_topic(), qos=1)
        b.restart()
        async with mqtt_client(b, client_id, **session) as sub:
            assert sub.connect_flags == [0]


async def test_kill_refuses_connections_until_started_again(fresh_broker: MosquittoBroker) -> None:
    pid = fresh_broker.pid
    assert pid is not None
    fresh_broker.kill()
    assert not fresh_broker.is_running and not _pid_alive(pid)
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((fresh_broker.host, fresh_broker.port), timeout=1).close()
    with pytest.raises(ConnectionRefusedError):
        async with mqtt_client(fresh_broker):
            pass

    fresh_broker.start()
    topic = _topic()
    async with mqtt_client(fresh_broker) as c:
        await c.subscribe(topic, qos=0)
        c.client.publish(topic, b"back", qos=0)
        assert await c.next_message() == (topic, b"back", 0)


def test_stop_is_idempotent_and_reaps_process(tmp_path_factory: pytest.TempPathFactory) -> None:
    b = start_broker(tmp_path_factory.mktemp("stop"))
    pid = b.pid
    assert pid is not None and _pid_alive(pid)
    b.stop()
    b.stop()
    assert not b.is_running and not _pid_alive(pid)
    assert "mosquitto version" in b.log_tail(), "notice-level lines missing from the broker log"
