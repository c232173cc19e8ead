"""The simulator's MQTT connection: a thin layer over gmqtt 0.8.0 that works around its
pitfalls (reference/gateway-anchors.md §2.1):

- the first `connect()` does not retry, so we retry with exponential back-off and jitter;
- subscriptions are not restored, so `on_connect` re-subscribes when the broker has no session
  (re-using the same Subscription objects so gmqtt's list does not grow);
- a burst of QoS 1 publishes past the broker's Receive Maximum raises OverflowError, so QoS 1
  publishes wait for room in a small in-flight store;
- there is no public way to drop the connection without DISCONNECT, which `kill()` needs to
  make the broker publish the last will; it uses gmqtt internals (version pinned).

After the first connect, gmqtt's own reconnect (fixed delay) takes over; `on_connect` runs
again and so does `on_online`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import socket
import ssl
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

import gmqtt
from gmqtt.mqtt.constants import MQTTv50, MQTTv311
from gmqtt.subscription import Subscription

DEFAULT_PORTS = {"mqtt": 1883, "mqtts": 8883}
CONNECT_TIMEOUT_S = 10.0
SUBACK_TIMEOUT_S = 10.0
FIRST_RETRY_S = 1.0
MAX_RETRY_S = 30.0
RECONNECT_DELAY_S = 2
# MQTT 3.1.1 has no Receive Maximum; Mosquitto's default in-flight window is 20.
V311_RECEIVE_MAXIMUM = 20

MessageHandler = Callable[[str, bytes, dict[str, Any]], None]
OnlineHandler = Callable[[bool], Awaitable[None]]


@dataclass(frozen=True)
class BrokerAddress:
    host: str
    port: int
    tls: bool
    username: str | None = None
    password: str | None = None

    @property
    def url(self) -> str:
        """The address to show a person: never the password."""
        return f"{'mqtts' if self.tls else 'mqtt'}://{self.host}:{self.port}"


def parse_broker_url(url: str) -> BrokerAddress:
    """`mqtt://host[:port]` or `mqtts://host[:port]`, optionally with `user:password@`."""
    parts = urlsplit(url if "://" in url else f"mqtt://{url}")
    if parts.scheme not in DEFAULT_PORTS:
        raise ValueError(f"broker URL {url!r}: use mqtt://host:port or mqtts://host:port")
    if not parts.hostname:
        raise ValueError(f"broker URL {url!r} has no host")
    try:
        port = parts.port or DEFAULT_PORTS[parts.scheme]
    except ValueError as exc:
        raise ValueError(f"broker URL {url!r} has a bad port") from exc
    return BrokerAddress(
        host=parts.hostname,
        port=port,
        tls=parts.scheme == "mqtts",
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
    )


@dataclass(frozen=True)
class LinkSettings:
    address: BrokerAddress
    client_id: str
    protocol: int  # 5 or 4 (MQTT 3.1.1)
    will_topic: str
    will_payload: bytes
    content_type: str
    subscriptions: tuple[str, ...]
    tls_insecure: bool = False
    keepalive_s: int = 60


def connect_failure(url: str, exc: BaseException) -> str:
    """Why a connection attempt failed, in words an installer can act on."""
    if isinstance(exc, gmqtt.MQTTConnectError):
        reason = exc.message.removeprefix("Connection Refused: ").lower()
        hint = " (check --username and --password)" if "auth" in reason or "password" in reason else ""
        return f"the broker at {url} refused the connection: {reason}{hint}"
    if isinstance(exc, ConnectionRefusedError):
        reason = "connection refused (is the broker running on that port?)"
    elif isinstance(exc, socket.gaierror):
        reason = "unknown host name"
    elif isinstance(exc, TimeoutError):
        reason = "no answer in time"
    elif isinstance(exc, ssl.SSLError):
        reason = f"TLS failed: {exc.reason or exc}"
    elif isinstance(exc, OSError) and exc.strerror:
        reason = exc.strerror.lower()
    else:
        reason = str(exc) or type(exc).__name__
    return f"cannot reach broker at {url}: {reason}"


class InflightStore:
    """gmqtt's outbound QoS>0 store (same methods as gmqtt.storage.PersistentStorage), which
    also lets a publisher wait until fewer than `limit` messages await their PUBACK."""

    def __init__(self) -> None:
        self._messages: OrderedDict[int, bytes] = OrderedDict()
        self._changed = asyncio.Event()

    def push_message(self, mid: int, raw_package: bytes) -> None:
        self._messages[mid] = raw_package

    def remove_message_by_mid(self, mid: int) -> None:
        if self._messages.pop(mid, None) is not None:
            self._changed.set()

    @property
    def is_empty(self) -> bool:
        return not self._messages

    # No __len__: gmqtt does `persistent_storage or PersistentStorage()`, and an empty store
    # with a length would be falsy and silently replaced.
    @property
    def count(self) -> int:
        return len(self._messages)

    async def wait_empty(self) -> None:
        await self.wait_below(1)

    async def wait_below(self, limit: int) -> None:
        while len(self._messages) >= limit:
            self._changed.clear()
            await self._changed.wait()

    def clear(self) -> None:
        self._messages.clear()
        self._changed.set()

    def get_all(self) -> list[tuple[int, bytes]]:
        return list(self._messages.items())


class DeviceLink:
    """One gmqtt client for one simulated device."""

    def __init__(
        self,
        settings: LinkSettings,
        on_message: MessageHandler,
        on_online: OnlineHandler,
        log: logging.LoggerAdapter[logging.Logger],
        rng: random.Random,
    ) -> None:
        self.settings = settings
        self._on_message = on_message
        self._on_online = on_online
        self._log = log
        self._rng = rng
        self._store = InflightStore()
        self._client: Any = None
        self._subscriptions = [Subscription(topic, qos=1) for topic in settings.subscriptions]
        self._subscribed_once = False
        self._suback: dict[int, asyncio.Future[tuple[int, ...]]] = {}
        self._inflight_limit = V311_RECEIVE_MAXIMUM - 2
        self._tasks: set[asyncio.Task[None]] = set()
        self._closing = False
        self._online_once = asyncio.Event()

    @property
    def is_connected(self) -> bool:
        return self._client is not None and bool(self._client.is_connected)

    @property
    def version_name(self) -> str:
        return "MQTT 5" if self.settings.protocol == 5 else "MQTT 3.1.1"

    # --- connecting ---------------------------------------------------------------------------

    async def connect(self) -> None:
        """Connect, retrying until the broker answers; returns after the first `on_online`."""
        delay = FIRST_RETRY_S
        address = self.settings.address
        while True:
            client = self._new_client()
            # Set before connecting: the on-connect callback publishes the online status
            # through self._client, and it runs before connect() returns.
            self._client = client
            try:
                await asyncio.wait_for(
                    client.connect(
                        address.host,
                        port=address.port,
                        ssl=self._ssl_context(),
                        keepalive=self.settings.keepalive_s,
                        version=MQTTv50 if self.settings.protocol == 5 else MQTTv311,
                    ),
                    CONNECT_TIMEOUT_S,
                )
            except (OSError, TimeoutError, gmqtt.MQTTConnectError) as exc:
                self._client = None
                await self._abandon(client)
                wait = delay * self._rng.uniform(0.8, 1.2)
                self._log.warning("%s — retrying in %.0f s", connect_failure(address.url, exc), wait)
                await asyncio.sleep(wait)
                delay = min(delay * 2, MAX_RETRY_S)
                continue
            except BaseException:
                self._client = None
                await self._abandon(client)
                raise
            break
        await self._online_once.wait()

    def _new_client(self) -> Any:
        will = gmqtt.Message(
            self.settings.will_topic,
            self.settings.will_payload,
            qos=1,
            retain=False,
            **self._publish_properties(),
        )
        client = gmqtt.Client(
            self.settings.client_id,
            clean_session=True,
            will_message=will,
            persistent_storage=self._store,
        )
        address = self.settings.address
        if address.username is not None:
            client.set_auth_credentials(address.username, address.password)
        client.set_config({"reconnect_retries": -1, "reconnect_delay": RECONNECT_DELAY_S})
        client.on_connect = self._handle_connect
        client.on_message = self._handle_message
        client.on_subscribe = self._handle_subscribe
        client.on_disconnect = self._handle_disconnect
        return client

    def _ssl_context(self) -> ssl.SSLContext | bool:
        if not self.settings.address.tls:
            return False
        context = ssl.create_default_context()
        if self.settings.tls_insecure:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context

    def _publish_properties(self) -> dict[str, Any]:
        # gmqtt drops properties on 3.1.1 itself; kept explicit so the intent is readable.
        return {"content_type": self.settings.content_type} if self.settings.protocol == 5 else {}

    # --- gmqtt callbacks ------------------------------------------------------------------------

    def _handle_connect(self, client: Any, flags: int, rc: int, properties: dict[str, Any]) -> None:
        received = properties.get("receive_maximum") if self.settings.protocol == 5 else None
        receive_maximum = received[0] if received else (
            65535 if self.settings.protocol == 5 else V311_RECEIVE_MAXIMUM
        )
        # gmqtt raises once ids in use reach Receive Maximum - 1, and SUBSCRIBE takes one too.
        self._inflight_limit = max(1, receive_maximum - 2)
        self._spawn(self._after_connect(client, session_present=bool(flags)))

    async def _after_connect(self, client: Any, session_present: bool) -> None:
        if not session_present:
            await self._subscribe(client)
        await self._on_online(not self._online_once.is_set())
        self._online_once.set()

    async def _subscribe(self, client: Any) -> None:
        if not self._subscribed_once:
            mid = client.subscribe(self._subscriptions)
            mids = [mid]
            self._subscribed_once = True
        else:
            mids = [client.resubscribe(sub) for sub in self._subscriptions]
        loop = asyncio.get_running_loop()
        waiters = [self._suback.setdefault(mid, loop.create_future()) for mid in mids]
        try:
            results = await asyncio.wait_for(asyncio.gather(*waiters), SUBACK_TIMEOUT_S)
        except TimeoutError:
            self._log.warning("the broker did not confirm the subscriptions in time")
            return
        finally:
            for mid in mids:
                self._suback.pop(mid, None)
        granted = [qos for result in results for qos in result]
        refused = [sub.topic for sub, qos in zip(self._subscriptions, granted, strict=False) if qos >= 128]
        if refused:
            self._log.error(
                "the broker refused the subscription to %s (check its ACL)", ", ".join(refused)
            )

    def _handle_subscribe(self, client: Any, mid: int, qos: tuple[int, ...], properties: Any) -> None:
        waiter = self._suback.get(mid)
        if waiter is not None and not waiter.done():
            waiter.set_result(tuple(qos))

    def _handle_message(
        self, client: Any, topic: str, payload: bytes, qos: int, properties: dict[str, Any]
    ) -> None:
        self._on_message(topic, payload, properties)

    def _handle_disconnect(self, client: Any, packet: Any, exc: Any = None) -> None:
        if not self._closing and client is self._client:
            self._log.warning(
                "lost the connection to %s — reconnecting every %d s",
                self.settings.address.url, RECONNECT_DELAY_S,
            )

    # --- sending --------------------------------------------------------------------------------

    async def publish(self, topic: str, payload: bytes, qos: int) -> bool:
        """Publish if connected; False when the message was dropped because we are not."""
        if qos > 0:
            await self._store.wait_below(self._inflight_limit)
        if not self.is_connected:
            return False
        self._client.publish(topic, payload, qos=qos, retain=False, **self._publish_properties())
        return True

    async def flush(self, timeout_s: float) -> bool:
        """Wait until every QoS 1 message was acknowledged; False on timeout."""
        try:
            await asyncio.wait_for(self._store.wait_empty(), timeout_s)
        except TimeoutError:
            return False
        return True

    # --- stopping ---------------------------------------------------------------------------------

    async def disconnect(self) -> None:
        """Clean MQTT DISCONNECT: the broker drops the last will."""
        self._closing = True
        self._cancel_tasks()
        client, self._client = self._client, None
        if client is not None:
            try:
                await client.disconnect()
            except (OSError, RuntimeError) as exc:
                self._log.debug("disconnect: %s", exc)

    async def kill(self) -> None:
        """Close the socket without DISCONNECT, as a power cut would: the broker publishes the
        last will."""
        self._closing = True
        self._cancel_tasks()
        client, self._client = self._client, None
        if client is not None:
            await self._abandon(client)

    @staticmethod
    async def _abandon(client: Any) -> None:
        # gmqtt has no public "close without DISCONNECT". `_is_active = False` stops its own
        # reconnect (which a closed socket or a refused CONNACK would otherwise schedule);
        # MQTTConnection.close() closes the transport and sends nothing.
        client._is_active = False
        connection = client._connection
        if connection is not None:
            with contextlib.suppress(OSError, RuntimeError):
                await connection.close()

    def _spawn(self, coro: Awaitable[None]) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self._log.error("after connect: %s", task.exception())

    def _cancel_tasks(self) -> None:
        for task in list(self._tasks):
            task.cancel()
