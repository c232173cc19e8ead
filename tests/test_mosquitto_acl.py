"""The shipped Mosquitto example (etc/mosquitto/conf.d/deviceagentd.conf + deviceagentd.acl) on a
real broker: every client authenticates, each device publishes and reads only its own topics
(whatever client id it picks), and the gateway user can do all the daemon needs.

The broker runs the shipped files with only the site-specific lines replaced (listener port,
password file path, acl file path) and what Debian's mosquitto.conf adds (persistence
location, log). Denied publishes are invisible to the publisher (MQTT 3.1.1 drops them, MQTT 5
answers PUBACK 0x87), so "not delivered" is checked with a marker: a client's packets are
handled in order, so once a marker it sent after a denied publish has arrived, the denied
message would have arrived before it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gmqtt
import pytest
from daemon_harness import PRODUCTS_DIR, start_daemon, wait_until
from gmqtt.mqtt.constants import MQTTv50, MQTTv311
from gmqtt.subscription import Subscription
from mosquitto_broker import MosquittoBroker, free_port

from deviceagentd.core.spec import load_spec_file
from deviceagentd.mqtt.topics import TopicKind, TopicTemplates, subscription_filter
from deviceagentd.simulator import SimulatedDevice, SimulatorOptions

REPO = Path(__file__).resolve().parent.parent
SHIPPED_CONF = REPO / "etc" / "mosquitto" / "conf.d" / "deviceagentd.conf"
SHIPPED_ACL = REPO / "etc" / "mosquitto" / "deviceagentd.acl"
WAIT_S = 10.0

GATEWAY = "deviceagentd"
PASSWORDS = {GATEWAY: "gateway-secret-1", "acl-dev-a": "device-a-secret", "acl-dev-b": "device-b-secret"}
PRODUCT = "thermostat"
TEMPLATES = TopicTemplates()
# The default templates by direction (SPEC section 2).
DEVICE_TO_GATEWAY = (TopicKind.TELEMETRY, TopicKind.EVENT, TopicKind.RESPONSE, TopicKind.NTP_REQUEST,
                     TopicKind.DEVICE_IN)
GATEWAY_TO_DEVICE = (TopicKind.COMMAND, TopicKind.NTP_RESPONSE, TopicKind.DEVICE_OUT)


def topic(kind: TopicKind, device_id: str = "", product_id: str = PRODUCT) -> str:
    return TEMPLATES.format(kind, product_id, device_id)


def test_the_directions_cover_every_default_topic() -> None:
    """A new topic kind must be sorted into a direction here (and given a rule in the ACL)."""
    product_level = {TopicKind.PRODUCT_IN, TopicKind.PRODUCT_OUT}
    assert set(DEVICE_TO_GATEWAY) | set(GATEWAY_TO_DEVICE) | product_level == set(TopicKind)


# ------------------------------------------------------------------------------ the broker

def shipped_config(port: int, passwd: Path, workdir: Path) -> str:
    """The shipped conf.d file with the three site lines replaced, plus Debian's defaults."""
    text = SHIPPED_CONF.read_text()
    replacements = {
        r"(?m)^listener 1883$": f"listener {port} 127.0.0.1",
        r"(?m)^password_file .*$": f"password_file {passwd}",
        r"(?m)^acl_file .*$": f"acl_file {SHIPPED_ACL}",
    }
    for pattern, replacement in replacements.items():
        text, count = re.subn(pattern, replacement, text)
        assert count == 1, f"{SHIPPED_CONF} has {count} lines matching {pattern!r}"
    lines = [text, f"persistence_location {workdir / 'data'}/", f"log_dest file {workdir / 'mosquitto.log'}",
             "log_type error", "log_type warning", "log_type notice", "log_type information"]
    if os.geteuid() == 0:
        # pytest's tmp directories are root's 0700: stay root (see mosquitto_broker).
        lines.append("user root")
    return "\n".join(lines) + "\n"


@pytest.fixture
def acl_broker(tmp_path: Path) -> Iterator[MosquittoBroker]:
    workdir = tmp_path / "broker"
    (workdir / "data").mkdir(parents=True)
    passwd = workdir / "passwd"
    for user, password in PASSWORDS.items():
        flags = ["-b"] if passwd.exists() else ["-c", "-b"]
        subprocess.run(["mosquitto_passwd", *flags, str(passwd), user, password], check=True, capture_output=True)
    passwd.chmod(0o640)
    broker = MosquittoBroker(host="127.0.0.1", port=free_port(), workdir=workdir)
    broker.conf_path.write_text(shipped_config(broker.port, passwd, workdir))
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


# ------------------------------------------------------------------------------ clients

@dataclass
class Client:
    """A plain gmqtt client with a user name: records what it receives and its SUBACK codes."""

    broker: MosquittoBroker
    username: str | None
    password: str | None = None
    client_id: str = field(default_factory=lambda: f"acl-{uuid.uuid4().hex[:8]}")
    protocol: int = 5
    received: list[tuple[str, bytes]] = field(default_factory=list)
    suback_codes: list[int] = field(default_factory=list)
    _client: Any = None
    _arrived: asyncio.Event = field(default_factory=asyncio.Event)
    _suback: asyncio.Event = field(default_factory=asyncio.Event)

    async def connect(self) -> Client:
        self._client = gmqtt.Client(self.client_id, clean_session=True)
        if self.username is not None:
            self._client.set_auth_credentials(self.username, self.password)
        self._client.on_message = self._on_message
        self._client.on_subscribe = self._on_subscribe
        version = MQTTv50 if self.protocol == 5 else MQTTv311
        await asyncio.wait_for(self._client.connect(self.broker.host, self.broker.port, version=version), WAIT_S)
        return self

    async def subscribe(self, *topics: str) -> list[int]:
        """Subscribe at QoS 1; returns the broker's SUBACK codes (0x80 and up: refused)."""
        self._suback.clear()
        self._client.subscribe([Subscription(t, qos=1) for t in topics])
        await asyncio.wait_for(self._suback.wait(), WAIT_S)
        return self.suback_codes

    def publish(self, topic_name: str, payload: bytes) -> None:
        self._client.publish(topic_name, payload, qos=1)

    async def expect(self, topic_name: str, payload: bytes) -> None:
        async with asyncio.timeout(WAIT_S):
            while (topic_name, payload) not in self.received:
                self._arrived.clear()
                await self._arrived.wait()

    def got(self, payload: bytes) -> list[str]:
        """Topics on which this payload arrived."""
        return [t for t, p in self.received if p == payload]

    async def disconnect(self) -> None:
        if self._client is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._client.disconnect(), 5)

    def _on_message(self, client: Any, topic_name: str, payload: bytes, qos: int, properties: Any) -> int:
        self.received.append((topic_name, payload))
        self._arrived.set()
        return 0

    def _on_subscribe(self, client: Any, mid: int, qos: tuple[int, ...], properties: Any) -> None:
        self.suback_codes = [int(code) for code in qos]
        self._suback.set()


@contextlib.asynccontextmanager
async def connected(broker: MosquittoBroker, username: str, *, client_id: str | None = None,
                    protocol: int = 5) -> AsyncIterator[Client]:
    client = Client(broker, username, PASSWORDS[username], protocol=protocol)
    if client_id is not None:
        client.client_id = client_id
    await client.connect()
    try:
        yield client
    finally:
        await client.disconnect()


def marker(label: str) -> bytes:
    return f"{label}-{uuid.uuid4().hex[:8]}".encode()


async def subscribed_gateway(broker: MosquittoBroker, stack: contextlib.AsyncExitStack) -> Client:
    """The gateway user watching all device traffic, the way the daemon subscribes."""
    gateway = await stack.enter_async_context(connected(broker, GATEWAY))
    codes = await gateway.subscribe(*(subscription_filter(TEMPLATES.template(kind)) for kind in DEVICE_TO_GATEWAY),
                                    subscription_filter(TEMPLATES.template(TopicKind.PRODUCT_IN)))
    assert all(code < 0x80 for code in codes), codes
    return gateway


async def subscribed_device(broker: MosquittoBroker, stack: contextlib.AsyncExitStack, device_id: str,
                            **kwargs: Any) -> Client:
    device = await stack.enter_async_context(connected(broker, device_id, **kwargs))
    codes = await device.subscribe(*(topic(kind, device_id) for kind in GATEWAY_TO_DEVICE))
    assert all(code < 0x80 for code in codes), f"{device_id} may subscribe to its own topics: {codes}"
    return device


# ------------------------------------------------------------------------------ authentication

@pytest.mark.parametrize("username, password", [(None, None), ("acl-dev-a", "wrong-password"),
                                                ("unknown-device", "device-a-secret")])
async def test_clients_without_valid_credentials_are_refused(acl_broker: MosquittoBroker, username: str | None,
                                                             password: str | None) -> None:
    client = Client(acl_broker, username, password)
    with pytest.raises(gmqtt.MQTTConnectError):
        await client.connect()
    await client.disconnect()


# ------------------------------------------------------------------------------ devices

@pytest.mark.parametrize("protocol", [5, 4])
async def test_a_device_reaches_the_gateway_on_each_of_its_own_topics(acl_broker: MosquittoBroker,
                                                                      protocol: int) -> None:
    async with contextlib.AsyncExitStack() as stack:
        gateway = await subscribed_gateway(acl_broker, stack)
        device = await stack.enter_async_context(connected(acl_broker, "acl-dev-a", protocol=protocol))
        sent = {}
        for kind in DEVICE_TO_GATEWAY:
            sent[kind] = marker(kind.value)
            device.publish(topic(kind, "acl-dev-a"), sent[kind])
        for kind in DEVICE_TO_GATEWAY:
            await gateway.expect(topic(kind, "acl-dev-a"), sent[kind])


@pytest.mark.parametrize("protocol", [5, 4])
async def test_a_device_cannot_publish_as_another_device_or_as_the_gateway(acl_broker: MosquittoBroker,
                                                                           protocol: int) -> None:
    async with contextlib.AsyncExitStack() as stack:
        gateway = await subscribed_gateway(acl_broker, stack)
        # Everything on the gateway's side of the broker, to see any leak, not only device traffic.
        assert all(c < 0x80 for c in await gateway.subscribe("v1/#", "device-agent/#"))
        victim = await subscribed_device(acl_broker, stack, "acl-dev-b")
        device = await stack.enter_async_context(connected(acl_broker, "acl-dev-a", protocol=protocol))
        forged = marker("forged")
        # Device -> gateway traffic in the other device's name,
        forbidden = [topic(kind, "acl-dev-b") for kind in DEVICE_TO_GATEWAY]
        # gateway -> device traffic (to the other device and to itself),
        forbidden += [topic(kind, device_id) for kind in GATEWAY_TO_DEVICE for device_id in ("acl-dev-b", "acl-dev-a")]
        # product-level text topics (for app/panel users) and topics outside the schema.
        forbidden += [topic(TopicKind.PRODUCT_IN), topic(TopicKind.PRODUCT_OUT), "v1/thermostat/acl-dev-b",
                      "device-agent/thermostat/device/acl-dev-a", "v1/x/acl-dev-a/telemetry/extra", "acl-dev-a/x"]
        for name in forbidden:
            device.publish(name, forged)
        # The device's next allowed publish arrives after anything the broker let through.
        done = marker("done")
        device.publish(topic(TopicKind.TELEMETRY, "acl-dev-a"), done)
        await gateway.expect(topic(TopicKind.TELEMETRY, "acl-dev-a"), done)
        # The victim's queue: a real command sent after the forged ones have been handled.
        real = marker("real")
        gateway.publish(topic(TopicKind.COMMAND, "acl-dev-b"), real)
        await victim.expect(topic(TopicKind.COMMAND, "acl-dev-b"), real)
        assert gateway.got(forged) == []
        assert victim.got(forged) == []


@pytest.mark.parametrize("client_id", [None, "sim-acl-dev-b"], ids=["own-client-id", "other-device-client-id"])
async def test_a_device_cannot_read_another_devices_topics(acl_broker: MosquittoBroker,
                                                           client_id: str | None) -> None:
    """Not even by subscribing to wildcards, or by taking the other device's client id (the ACL
    keys on the user name, which the password proves)."""
    async with contextlib.AsyncExitStack() as stack:
        gateway = await subscribed_gateway(acl_broker, stack)
        victim = await subscribed_device(acl_broker, stack, "acl-dev-b")
        spy = await subscribed_device(acl_broker, stack, "acl-dev-a", client_id=client_id)
        # Mosquitto 2.0 grants these subscriptions (refusing them would do as well) and checks
        # each message against the ACL on delivery: what matters is that nothing arrives.
        await spy.subscribe(*(topic(kind, "acl-dev-b") for kind in GATEWAY_TO_DEVICE + DEVICE_TO_GATEWAY))
        await spy.subscribe("#", "v1/#", "device-agent/#", "device-agent/+/device/+/commands")

        secret = marker("secret")
        for kind in GATEWAY_TO_DEVICE:
            gateway.publish(topic(kind, "acl-dev-b"), secret)
        victim_secret = marker("victim")
        for kind in DEVICE_TO_GATEWAY:
            victim.publish(topic(kind, "acl-dev-b"), victim_secret)
        for kind in GATEWAY_TO_DEVICE:
            await victim.expect(topic(kind, "acl-dev-b"), secret)
        for kind in DEVICE_TO_GATEWAY:
            await gateway.expect(topic(kind, "acl-dev-b"), victim_secret)
        # Sent after the secrets by the same publisher: the spy's own command arrives after them.
        own = marker("own")
        gateway.publish(topic(TopicKind.COMMAND, "acl-dev-a"), own)
        await spy.expect(topic(TopicKind.COMMAND, "acl-dev-a"), own)
        assert spy.got(secret) == [] and spy.got(victim_secret) == []


# ------------------------------------------------------------------------------ the gateway

async def test_the_gateway_user_reaches_every_device_and_product_topic(acl_broker: MosquittoBroker) -> None:
    async with contextlib.AsyncExitStack() as stack:
        device = await subscribed_device(acl_broker, stack, "acl-dev-a")
        gateway = await subscribed_gateway(acl_broker, stack)
        panel_view = await stack.enter_async_context(connected(acl_broker, GATEWAY))
        codes = await panel_view.subscribe(subscription_filter(TEMPLATES.template(TopicKind.PRODUCT_OUT)))
        assert all(code < 0x80 for code in codes), codes
        sent = {kind: marker(kind.value) for kind in GATEWAY_TO_DEVICE}
        for kind, payload in sent.items():
            gateway.publish(topic(kind, "acl-dev-a"), payload)
        for kind, payload in sent.items():
            await device.expect(topic(kind, "acl-dev-a"), payload)
        product_in, product_out = marker("product-in"), marker("product-out")
        panel_view.publish(topic(TopicKind.PRODUCT_IN), product_in)
        gateway.publish(topic(TopicKind.PRODUCT_OUT), product_out)
        await gateway.expect(topic(TopicKind.PRODUCT_IN), product_in)
        await panel_view.expect(topic(TopicKind.PRODUCT_OUT), product_out)


async def test_the_gateway_user_cannot_forge_device_telemetry(acl_broker: MosquittoBroker) -> None:
    """It only reads v1/: its password, leaked, must not let anyone speak as a device there."""
    async with contextlib.AsyncExitStack() as stack:
        gateway = await subscribed_gateway(acl_broker, stack)
        forger = await stack.enter_async_context(connected(acl_broker, GATEWAY))
        forged = marker("forged")
        for kind in (TopicKind.TELEMETRY, TopicKind.EVENT):
            forger.publish(topic(kind, "acl-dev-a"), forged)
        # Same publisher, same subscriber, sent after the forged ones: once it is here, they would be.
        done = marker("done")
        forger.publish(topic(TopicKind.RESPONSE, "acl-dev-a"), done)
        await gateway.expect(topic(TopicKind.RESPONSE, "acl-dev-a"), done)
        assert gateway.got(forged) == []


async def test_the_daemon_and_a_device_work_through_the_shipped_acl(acl_broker: MosquittoBroker,
                                                                    tmp_path: Path) -> None:
    """The real daemon as user deviceagentd and the simulator as its device: registration,
    events, a command round trip and a time sync all pass the ACL."""
    running = await start_daemon(acl_broker.url, tmp_path / "state", mqtt_username=GATEWAY,
                                 mqtt_password=PASSWORDS[GATEWAY])
    device = SimulatedDevice(load_spec_file(PRODUCTS_DIR / "thermostat.json"), "acl-dev-a",
                             SimulatorOptions(url=acl_broker.url, username="acl-dev-a",
                                              password=PASSWORDS["acl-dev-a"]))
    try:
        await device.start()
        await wait_until(lambda: running.daemon.registry.get("acl-dev-a") is not None, timeout=WAIT_S)
        await device.emit_event("temperature_alert", {"temperature": 38.5})

        async def alert_stored() -> bool:
            status, body = await running.request("GET", "/api/devices/acl-dev-a/events?event=temperature_alert")
            return status == 200 and bool(body["events"])

        async with asyncio.timeout(WAIT_S):
            while not await alert_stored():
                await asyncio.sleep(0.05)
        status, result = await running.request(
            "POST", "/api/devices/acl-dev-a/commands",
            json_body={"command": "set_target_temperature", "params": {"target_temperature": 21.5}})
        assert status == 200 and result["ok"] is True, result
        sample = await device.sync_clock()
        assert sample is not None
    finally:
        await device.stop()
        await running.stop()
