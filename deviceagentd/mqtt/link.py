"""The daemon's one connection to the LAN broker (SPEC §2 "Link").

The connection itself (connect loop with backoff and jitter, a fresh gmqtt client per
connection, Receive Maximum, acknowledgement after the handler) is mqtt/connection.py's, shared
with the uplink. This module adds what the LAN side needs on top:
- subscriptions restored by us whenever the broker reports no session;
- a handler error counted as a reject and acknowledged, so a bug never stalls the broker's window.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import gmqtt
from gmqtt.subscription import Subscription

from deviceagentd.config import MqttConfig
from deviceagentd.core.metrics import Metrics
from deviceagentd.mqtt.connection import BrokerConnection, ConnectSettings, LinkStatus

log = logging.getLogger("deviceagentd.mqtt")

# on_message(topic, payload, qos, properties) -> reason code for the PUBACK (0 = success), or
# an awaitable of it when the message must wait (back-pressure, mqtt/backpressure.py): the
# PUBACK goes out once it is there. Synchronous when it need not wait: gmqtt already runs one
# coroutine per message, a second one would cost on every message.
MessageHandler = Callable[[str, bytes, int, dict[str, Any]], int | Awaitable[int]]

# At most this many QoS 1 messages from the broker unacknowledged at a time (MQTT 5 Receive
# Maximum in CONNECT): while storage holds acknowledgements, this bounds what waits in memory.
RECEIVE_MAXIMUM = 1000

__all__ = ["RECEIVE_MAXIMUM", "LinkStatus", "MessageHandler", "MqttLink"]


class MqttLink:
    def __init__(
        self,
        config: MqttConfig,
        subscriptions: list[str],
        on_message: MessageHandler,
        metrics: Metrics,
        on_connection_lost: Callable[[], None] | None = None,
    ) -> None:
        self._config = config
        self._subscriptions = subscriptions
        self._on_message = on_message
        self._metrics = metrics
        self.subscribed = asyncio.Event()
        self._connection = BrokerConnection(
            ConnectSettings(
                url=config.url, client_id=config.client_id, username=config.username, password=config.password,
                protocol_version=config.protocol_version, keepalive_s=config.keepalive_s,
                session_expiry_s=config.session_expiry_s, tls_ca_file=config.tls_ca_file,
                tls_cert_file=config.tls_cert_file, tls_key_file=config.tls_key_file,
                tls_insecure=config.tls_insecure, reconnect_min_s=config.reconnect_min_s,
                reconnect_max_s=config.reconnect_max_s, receive_maximum=RECEIVE_MAXIMUM,
            ),
            log,
            on_connect=self._handle_connect,
            on_message=self._handle_message,
            on_connection_lost=self._handle_lost,
        )
        # Called once per lost connection (not per failed attempt to connect): commands that
        # wait for an answer fail at once instead of waiting out their timeout.
        self._on_connection_lost = on_connection_lost

    # ------------------------------------------------------------------ state

    @property
    def status(self) -> LinkStatus:
        return self._connection.status

    @property
    def is_connected(self) -> bool:
        return self._connection.is_connected

    @property
    def is_mqtt5(self) -> bool:
        return self._connection.is_mqtt5

    # ------------------------------------------------------------------ connect loop

    async def run(self) -> None:
        """Keep a connection up until stop(); never returns early, never raises on its own."""
        await self._connection.run()

    async def stop(self) -> None:
        await self._connection.stop()

    def _handle_lost(self) -> None:
        self.subscribed.clear()
        if self._on_connection_lost is not None:
            self._on_connection_lost()

    # ------------------------------------------------------------------ gmqtt callbacks

    def _handle_connect(self, client: gmqtt.Client, session_present: bool) -> None:
        if session_present:
            # The broker kept our session and its subscriptions; re-subscribing would only
            # replay retained messages.
            self.subscribed.set()
            return
        self.subscribed.clear()
        client.on_subscribe = self._handle_subscribe
        client.subscribe([Subscription(topic, qos=1) for topic in self._subscriptions])

    def _handle_subscribe(self, client: gmqtt.Client, mid: int, qos: Any, properties: Any) -> None:
        granted = list(qos) if isinstance(qos, list | tuple) else [qos]
        refused = [topic for topic, code in zip(self._subscriptions, granted, strict=False)
                   if isinstance(code, int) and code >= 0x80]
        if refused:
            log.error("broker refused subscriptions %s (check the broker's ACL for user %r)",
                      ", ".join(refused), self._config.username)
        self.subscribed.set()

    def _handle_message(self, topic: str, payload: bytes, qos: int, properties: dict[str, Any]) -> int | Awaitable[int]:
        try:
            result = self._on_message(topic, payload, qos, properties)
        except Exception:
            return self._handler_failed(topic)
        if isinstance(result, int):
            return result
        return self._finish(topic, result)

    async def _finish(self, topic: str, result: Awaitable[int]) -> int:
        try:
            return await result
        except Exception:
            return self._handler_failed(topic)

    def _handler_failed(self, topic: str) -> int:
        # A bug in a handler must not stall the broker's window (a missing ack stops delivery).
        # Counted like a reject; the log line is rate-limited with every other kind.
        self._metrics.rejects.inc({"kind": "message", "reason": "internal_error"})
        log.exception("error handling a message on %s", topic)
        return 0

    # ------------------------------------------------------------------ publishing

    def publish_now(self, topic: str, payload: bytes, content_type: str | None = None) -> None:
        """QoS 0 publish written to the socket right away (time sync). Raises BrokerUnavailable."""
        self._connection.publish_now(topic, payload, content_type)

    async def publish(self, topic: str, payload: bytes, qos: int = 1, content_type: str | None = None,
                      retain: bool = False) -> None:
        """Publish, waiting for a Receive-Maximum slot for QoS 1. Raises BrokerUnavailable."""
        await self._connection.publish(topic, payload, qos, content_type, retain)
