"""One connection to an MQTT broker, kept up forever, on top of gmqtt 0.8.0 as a thin transport.

Shared by the LAN link (mqtt/link.py) and the uplink to a central broker (uplink/connection.py).
gmqtt's own behaviour is not what a gateway needs (reference/gateway-anchors.md §2.1), so this
class owns it:
- the connect loop: retry from boot with exponential backoff and jitter, forever, including
  after refusals gmqtt considers permanent (a password file being rewritten is not permanent);
  a clear log line for the first failure and every tenth (refused: why; TLS: which check);
- a fresh gmqtt client per connection, whose `reconnect` hands every loss back to our loop;
- QoS 1 publishes limited to the broker's Receive Maximum (gmqtt raises past it), with an
  optional callback when the PUBACK arrives, given the PUBACK's MQTT 5 reason code (gmqtt 0.8.0
  ignores it, so a publish the broker refused, e.g. by its ACL, would look delivered);
- incoming QoS 1 messages acknowledged only after our handler returns (async handler → 0).
What to do once connected (subscribe, publish a birth message) is the owner's `on_connect`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import socket
import ssl
import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import gmqtt
from gmqtt.mqtt.constants import MQTTCommands, MQTTv50, MQTTv311
from gmqtt.mqtt.handler import MQTTConnectError
from gmqtt.storage import PersistentStorage

from deviceagentd.config import parse_broker_url
from deviceagentd.core.errors import BrokerUnavailable

# on_message(topic, payload, qos, properties) -> reason code for the PUBACK (0 = success), or
# an awaitable of it when the message must wait: the PUBACK goes out once it is there.
MessageHandler = Callable[[str, bytes, int, dict[str, Any]], int | Awaitable[int]]

# on_ack(reason_code): the PUBACK of a QoS 1 publish arrived; 0 (or any code below 0x80) means
# the broker took the message, 0x80 and above that it refused it (PUBACK_REASONS).
AckHandler = Callable[[int], None]

CONNECT_TIMEOUT_S = 10.0
PUBACK_WAIT_S = 10.0

# MQTT 5 §3.4.2.1: the PUBACK reason codes that say the broker did not take the message.
PUBACK_REASONS = {
    0x80: "unspecified error",
    0x83: "implementation specific error",
    0x87: "not authorized",
    0x90: "topic name invalid",
    0x91: "packet identifier in use",
    0x97: "quota exceeded",
    0x99: "payload format invalid",
}


def puback_reason(code: int) -> str:
    return PUBACK_REASONS.get(code, f"reason code 0x{code:02x}")

CONNACK_REASONS = {
    0x80: "unspecified error",
    0x81: "malformed packet",
    0x84: "unsupported protocol version",
    0x85: "client identifier not valid",
    0x86: "bad user name or password",
    0x87: "not authorized",
    0x88: "server unavailable",
    0x89: "server busy",
    0x8A: "banned",
    1: "unacceptable protocol version",
    2: "identifier rejected",
    3: "server unavailable",
    4: "bad user name or password",
    5: "not authorized",
}


@dataclass(frozen=True)
class ConnectSettings:
    url: str
    client_id: str
    username: str = ""
    password: str = ""
    protocol_version: int = 5
    keepalive_s: int = 60
    session_expiry_s: int = 3600
    tls_ca_file: str = ""
    tls_cert_file: str = ""
    tls_key_file: str = ""
    tls_insecure: bool = False
    reconnect_min_s: float = 1.0
    reconnect_max_s: float = 5.0
    receive_maximum: int = 1000
    """What we accept unacknowledged from the broker (MQTT 5 Receive Maximum in CONNECT)."""
    max_inflight: int = 65535
    """Our own QoS 1 publishes waiting for their PUBACK at most (the broker's Receive Maximum too)."""
    what: str = "MQTT broker"
    """How log lines name the broker."""


class _InflightStorage(PersistentStorage):  # type: ignore[misc]
    """gmqtt's in-flight store, also counting free Receive-Maximum slots for our publishes and
    calling a publish's `on_ack` with its reason code when its PUBACK arrives.

    gmqtt calls push_message on every QoS>0 publish (inside publish()) and
    remove_message_by_mid on its PUBACK; _Client notes the PUBACK's reason code just before.
    """

    def __init__(self, capacity: int) -> None:
        super().__init__()
        self._limit = capacity
        self.slots = asyncio.Semaphore(min(20, capacity))
        self.next_ack: AckHandler | None = None
        self._acks: dict[int, AckHandler] = {}
        self._reasons: dict[int, int] = {}

    def note_reason(self, mid: int, code: int) -> None:
        if mid in self._messages:
            self._reasons[mid] = code

    def set_capacity(self, capacity: int) -> None:
        self.slots = asyncio.Semaphore(max(1, min(capacity, self._limit)))

    def push_message(self, mid: int, raw_package: Any) -> None:
        super().push_message(mid, raw_package)
        if self.next_ack is not None:
            self._acks[mid] = self.next_ack
            self.next_ack = None

    def remove_message_by_mid(self, mid: int) -> None:
        known = mid in self._messages
        super().remove_message_by_mid(mid)
        reason = self._reasons.pop(mid, 0)
        if known:
            self.slots.release()
            on_ack = self._acks.pop(mid, None)
            if on_ack is not None:
                on_ack(reason)


class _Client(gmqtt.Client):  # type: ignore[misc]
    """A gmqtt client that never reconnects by itself (every loss goes to `on_lost`) and that
    reads the reason code of each PUBACK."""

    def __init__(self, client_id: str, on_lost: Callable[[], None], storage: _InflightStorage,
                 **kwargs: Any) -> None:
        super().__init__(client_id, persistent_storage=storage, **kwargs)
        self._on_lost = on_lost
        self._inflight = storage
        # gmqtt 0.8.0 dispatches packets through this table (MqttPackageHandler.__get_handler__)
        # and its PUBACK handler drops the MQTT 5 reason code: we note it, then let gmqtt go on.
        handler = self._package_handler
        self._gmqtt_puback = handler._handle_puback_packet
        handler._handler_cache[int(MQTTCommands.PUBACK)] = self._handle_puback

    def _handle_puback(self, cmd: int, packet: bytes) -> None:
        # §3.4.2.1: no reason code (remaining length 2) means success.
        if len(packet) >= 3:
            (mid,) = struct.unpack("!H", packet[:2])
            self._inflight.note_reason(mid, packet[2])
        self._gmqtt_puback(cmd, packet)

    async def reconnect(self, delay: bool = False) -> None:
        self._on_lost()


@dataclass
class LinkStatus:
    state: str = "starting"  # starting | connecting | connected | disconnected | stopped
    connects: int = 0
    # Failed connection attempts since start (consecutive ones drive the backoff).
    failures_seen: int = 0
    last_error: str = ""
    since_monotonic: float = 0.0


# on_connect(client, session_present): the CONNACK is in; subscribe, publish a birth message.
ConnectHandler = Callable[["gmqtt.Client", bool], None]


class BrokerConnection:
    def __init__(
        self,
        settings: ConnectSettings,
        log: logging.Logger,
        *,
        on_connect: ConnectHandler,
        on_message: MessageHandler,
        on_connection_lost: Callable[[], None] | None = None,
        will_message: gmqtt.Message | None = None,
    ) -> None:
        self._settings = settings
        self._log = log
        self._on_connect = on_connect
        self._on_message = on_message
        # Called once per lost connection (not per failed attempt to connect).
        self._on_connection_lost = on_connection_lost
        self._will = will_message
        self._broker = parse_broker_url(settings.url)
        self._client: _Client | None = None
        self._storage: _InflightStorage | None = None
        self._lost = asyncio.Event()
        self._stopping = asyncio.Event()
        self.status = LinkStatus()
        self._version = MQTTv50 if settings.protocol_version == 5 else MQTTv311
        self._failures = 0

    # ------------------------------------------------------------------ state

    @property
    def is_connected(self) -> bool:
        client = self._client
        if client is None or self.status.state != "connected":
            return False
        connected: bool = client.is_connected
        return connected

    @property
    def is_mqtt5(self) -> bool:
        return bool(self._version == MQTTv50)

    # ------------------------------------------------------------------ connect loop

    async def run(self) -> None:
        """Keep a connection up until stop(); never returns early, never raises on its own."""
        loop = asyncio.get_running_loop()
        settings = self._settings
        while not self._stopping.is_set():
            self.status.state = "connecting"
            self._lost = asyncio.Event()
            lost = self._lost
            storage = _InflightStorage(settings.max_inflight)
            client = _Client(
                settings.client_id,
                on_lost=lost.set,
                storage=storage,
                clean_session=False,
                optimistic_acknowledgement=False,
                will_message=self._will,
                logger=logging.getLogger(f"{self._log.name}.gmqtt"),
                **self._connect_properties(),
            )
            client.on_connect = self._handle_connect
            client.on_message = self._handle_message
            if settings.username:
                client.set_auth_credentials(settings.username, settings.password or None)
            self._client, self._storage = client, storage
            try:
                await asyncio.wait_for(
                    client.connect(
                        self._broker.host,
                        self._broker.port,
                        ssl=self._ssl_context(),
                        keepalive=settings.keepalive_s,
                        version=self._version,
                        raise_exc=True,
                    ),
                    CONNECT_TIMEOUT_S,
                )
            except (OSError, TimeoutError, MQTTConnectError, ssl.SSLError) as exc:
                self._connect_failed(exc)
                await self._close(client)
                await self._backoff()
                continue
            if lost.is_set():
                # Refused with a code gmqtt would retry, or dropped right after CONNACK.
                self._connect_failed(ConnectionError("connection closed by the broker"))
                await self._close(client)
                await self._backoff()
                continue
            self._failures = 0
            self.status.connects += 1
            self.status.state = "connected"
            self.status.since_monotonic = loop.time()
            self._log.info("connected to %s %s (MQTT %s)", settings.what, settings.url,
                           "5" if self._version == MQTTv50 else "3.1.1")
            stop_wait = asyncio.ensure_future(self._stopping.wait())
            lost_wait = asyncio.ensure_future(lost.wait())
            await asyncio.wait({stop_wait, lost_wait}, return_when=asyncio.FIRST_COMPLETED)
            stop_wait.cancel()
            lost_wait.cancel()
            if self._stopping.is_set():
                break
            self.status.state = "disconnected"
            self.status.last_error = "connection lost"
            self.status.since_monotonic = loop.time()
            self._log.warning("lost connection to %s %s; reconnecting", settings.what, settings.url)
            if self._on_connection_lost is not None:
                try:
                    self._on_connection_lost()
                except Exception:
                    self._log.exception("error handling the lost MQTT connection")
            await self._close(client)
        self.status.state = "stopped"

    async def stop(self) -> None:
        self._stopping.set()
        client = self._client
        if client is not None and client.is_connected:
            with contextlib.suppress(OSError, TimeoutError):
                await asyncio.wait_for(client.disconnect(), 2.0)
        self.status.state = "stopped"

    def _connect_properties(self) -> dict[str, Any]:
        if self._version != MQTTv50:
            return {}
        # gmqtt hands on_connect our CONNECT properties merged over the broker's CONNACK ones,
        # so _handle_connect reads the broker's Receive Maximum from the CONNACK itself.
        return {"session_expiry_interval": self._settings.session_expiry_s,
                "receive_maximum": self._settings.receive_maximum}

    def _ssl_context(self) -> ssl.SSLContext | bool:
        settings = self._settings
        if not self._broker.tls:
            return False
        context = ssl.create_default_context(cafile=settings.tls_ca_file or None)
        if settings.tls_cert_file:
            context.load_cert_chain(settings.tls_cert_file, settings.tls_key_file or None)
        if settings.tls_insecure:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context

    def _connect_failed(self, exc: BaseException) -> None:
        if isinstance(exc, MQTTConnectError):
            code = getattr(exc, "_code", None)
            reason = CONNACK_REASONS.get(code, f"code {code}") if isinstance(code, int) else str(exc)
            message = f"broker refused the connection: {reason}"
        elif isinstance(exc, TimeoutError):
            message = f"no answer within {CONNECT_TIMEOUT_S:g} s"
        elif isinstance(exc, ssl.SSLCertVerificationError):
            message = (f"TLS error: {exc.reason or 'CERTIFICATE_VERIFY_FAILED'}: the broker's certificate is not "
                       f"trusted ({exc.verify_message}); check tls_ca_file")
        elif isinstance(exc, ssl.SSLError):
            message = f"TLS error: {exc.reason or exc}"
        elif isinstance(exc, ConnectionRefusedError):
            message = f"connection refused (is the broker running on {self._broker.host}:{self._broker.port}?)"
        elif isinstance(exc, socket.gaierror):
            message = f"cannot resolve the broker host {self._broker.host!r}"
        elif isinstance(exc, OSError) and exc.strerror:
            message = exc.strerror.lower()
        else:
            message = str(exc) or type(exc).__name__
        self.status.state = "disconnected"
        self.status.last_error = message
        self._failures += 1
        self.status.failures_seen += 1
        # The first failure and then every tenth: enough to see in the journal, not a flood.
        if self._failures == 1 or self._failures % 10 == 0:
            self._log.warning("cannot connect to %s %s: %s (attempt %d, retrying)",
                              self._settings.what, self._settings.url, message, self._failures)

    async def _backoff(self) -> None:
        settings = self._settings
        base = min(settings.reconnect_max_s, settings.reconnect_min_s * 2 ** min(self._failures - 1, 16))
        delay = base * random.uniform(0.8, 1.2)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), delay)

    async def _close(self, client: _Client) -> None:
        try:
            await asyncio.wait_for(client.disconnect(), 2.0)
        except Exception:
            self._log.debug("ignored error closing a dead MQTT connection", exc_info=True)

    # ------------------------------------------------------------------ gmqtt callbacks

    def _handle_connect(self, client: _Client, flags: int, rc: int, properties: dict[str, Any]) -> None:
        # CONNACK accepted: usable from here on (connect() itself returns a little later).
        self.status.state = "connected"
        # The broker's own CONNACK properties (gmqtt 0.8.0 keeps them apart from the merged ones).
        broker_properties = getattr(getattr(client, "_package_handler", None), "_connack_properties", None)
        if not isinstance(broker_properties, dict):
            broker_properties = properties if isinstance(properties, dict) else {}
        receive_max = broker_properties.get("receive_maximum")
        capacity = receive_max[0] if isinstance(receive_max, list) and receive_max else 65535
        if self._storage is not None:
            # Keep one id spare: gmqtt raises when every id of the window is in use.
            self._storage.set_capacity(max(1, min(capacity, 65535) - 1))
        self._on_connect(client, bool(flags))

    async def _handle_message(self, client: _Client, topic: str, payload: bytes, qos: int,
                              properties: dict[str, Any]) -> int:
        result = self._on_message(topic, payload, qos, properties)
        return result if isinstance(result, int) else await result

    # ------------------------------------------------------------------ publishing

    def publish_now(self, topic: str, payload: bytes, content_type: str | None = None) -> None:
        """QoS 0 publish written to the socket right away (time sync). Raises BrokerUnavailable."""
        client = self._client
        if client is None or not self.is_connected:
            raise BrokerUnavailable("MQTT broker not connected")
        props = {"content_type": content_type} if content_type and self.is_mqtt5 else {}
        client.publish(topic, payload, qos=0, **props)

    async def publish(self, topic: str, payload: bytes, qos: int = 1, content_type: str | None = None,
                      retain: bool = False, correlation_data: bytes | None = None,
                      on_ack: AckHandler | None = None) -> None:
        """Publish, waiting for a Receive-Maximum slot for QoS 1; `on_ack` is called with the
        reason code of its PUBACK (never if the connection is lost first). Raises BrokerUnavailable."""
        client, storage = self._client, self._storage
        if client is None or storage is None or not self.is_connected:
            raise BrokerUnavailable("MQTT broker not connected")
        if qos > 0:
            try:
                await asyncio.wait_for(storage.slots.acquire(), PUBACK_WAIT_S)
            except TimeoutError:
                raise BrokerUnavailable("the broker is not acknowledging messages") from None
            if client is not self._client or not self.is_connected:
                raise BrokerUnavailable("MQTT connection lost while waiting to publish")
        props: dict[str, Any] = {}
        if self.is_mqtt5:
            if content_type:
                props["content_type"] = content_type
            if correlation_data is not None:
                props["correlation_data"] = correlation_data
        storage.next_ack = on_ack if qos > 0 else None
        try:
            client.publish(topic, payload, qos=qos, retain=retain, **props)
        except (OSError, OverflowError, AttributeError) as exc:
            if qos > 0:
                storage.slots.release()  # the slot taken above was never used
            raise BrokerUnavailable(f"publish failed: {exc}") from exc
        finally:
            storage.next_ack = None
