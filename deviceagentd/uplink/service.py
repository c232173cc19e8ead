"""The uplink: one persistent MQTT session to the cloud broker, fed by the outbox.

Parts: OutboxSource (site feed → outbox rows), Forwarder (outbox → broker, paced, deleted after
PUBACK), presence (birth / will / offline / health), and the cloud request handler, if any
(its topics subscribed on this connection, its replies queued in the outbox).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import gmqtt
from gmqtt.subscription import Subscription

from deviceagentd.config import UplinkConfig
from deviceagentd.core.errors import BrokerUnavailable
from deviceagentd.core.feed import SiteFeed
from deviceagentd.core.metrics import Metrics
from deviceagentd.mqtt.connection import BrokerConnection, ConnectSettings
from deviceagentd.store.store import Store
from deviceagentd.uplink import presence
from deviceagentd.uplink.forwarder import Forwarder
from deviceagentd.uplink.refusals import Refusals, is_refusal
from deviceagentd.uplink.requests_api import CloudRequestHandler
from deviceagentd.uplink.source import OutboxSource
from deviceagentd.uplink.topics import SiteTopics

log = logging.getLogger("deviceagentd.uplink")

# Cloud requests we accept unacknowledged at once (each may wait for a device's answer).
RECEIVE_MAXIMUM = 32
OFFLINE_PUBACK_WAIT_S = 2.0

Snapshot = Callable[[], presence.GatewaySnapshot]
HealthDetail = Callable[[], dict[str, Any]]


class Uplink:
    def __init__(
        self,
        config: UplinkConfig,
        store: Store,
        feed: SiteFeed,
        metrics: Metrics,
        version: str,
        snapshot: Snapshot,
        health_detail: HealthDetail,
        handler: CloudRequestHandler | None = None,
    ) -> None:
        self._config = config
        self._store = store
        self._feed = feed
        self._snapshot = snapshot
        self._health_detail = health_detail
        self._handler = handler
        self._subscriptions = handler.subscriptions() if handler is not None else []
        self.topics = SiteTopics(config.topics, config.site_id)
        self.connection = BrokerConnection(
            ConnectSettings(
                url=config.url, client_id=config.effective_client_id, username=config.username,
                password=config.password, protocol_version=config.protocol_version, keepalive_s=config.keepalive_s,
                session_expiry_s=config.session_expiry_s, tls_ca_file=config.tls_ca_file,
                tls_cert_file=config.tls_cert_file, tls_key_file=config.tls_key_file,
                tls_insecure=config.tls_insecure, reconnect_min_s=config.reconnect_min_s,
                reconnect_max_s=config.reconnect_max_s, receive_maximum=RECEIVE_MAXIMUM,
                max_inflight=config.max_inflight, what="uplink broker",
            ),
            log,
            on_connect=self._on_connect,
            on_message=self._on_message,
            on_connection_lost=self._on_lost,
            will_message=gmqtt.Message(self.topics.status, presence.will(version), qos=1, retain=True),
        )
        self.refusals = Refusals(
            metrics.counter("deviceagentd_uplink_refused_total",
                            "Messages the cloud broker refused (a PUBACK reason code of 0x80 or more, e.g. its ACL), "
                            "by reason; each was dropped"),
            self.topics.site_prefix,
            lambda: int(time.time() * 1000))
        self.forwarder = Forwarder(store, self.connection, config.max_publish_rate, time.monotonic, self.refusals)
        self.source = OutboxSource(config, self.topics, store, self.forwarder.wake, time.monotonic)
        self._unsubscribe: Callable[[], None] | None = None
        self._tasks: list[asyncio.Task[Any]] = []
        self._birth: asyncio.Task[None] | None = None
        self.requests_failed = 0
        # Request topics the cloud broker refused to subscribe us to (its SUBACK), since the last connect.
        self.subscriptions_refused: list[str] = []
        self._register_metrics(metrics)

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        self._unsubscribe = self._feed.subscribe(self.source.on_change)
        for coro, name in ((self.connection.run(), "uplink-connection"), (self.forwarder.run(), "uplink-forwarder"),
                           (self.source.run(), "uplink-state"), (self._health_loop(), "uplink-health")):
            self._tasks.append(asyncio.create_task(coro, name=name))
        log.info("uplink to %s as site %r (client id %s)", self._config.url, self._config.site_id,
                 self._config.effective_client_id)

    async def stop(self) -> None:
        """Queue what waits in memory, say offline (retained) if connected, disconnect."""
        if self._unsubscribe is not None:
            self._unsubscribe()
        self.source.flush_all()
        if self.connection.is_connected:
            acked = asyncio.Event()
            try:
                await self.connection.publish(self.topics.status, presence.offline(self._snapshot()), qos=1,
                                              retain=True, on_ack=self._checked(self.topics.status, acked.set))
                await asyncio.wait_for(acked.wait(), OFFLINE_PUBACK_WAIT_S)
            except (BrokerUnavailable, TimeoutError) as exc:
                log.warning("uplink: could not publish offline before stopping (%s); the broker will publish "
                            "the last will", exc)
        await self.connection.stop()
        for task in (*self._tasks, *([self._birth] if self._birth else [])):
            task.cancel()
        await asyncio.gather(*self._tasks, *([self._birth] if self._birth else []), return_exceptions=True)
        self._tasks.clear()

    # ------------------------------------------------------------------ connection callbacks

    def _on_connect(self, client: gmqtt.Client, session_present: bool) -> None:
        self._birth = asyncio.ensure_future(self._publish_birth())
        if self._subscriptions and not session_present:
            client.on_subscribe = self._on_subscribed
            client.subscribe([Subscription(topic, qos=1) for topic in self._subscriptions])
        self.forwarder.connected()

    def _on_subscribed(self, client: gmqtt.Client, mid: int, codes: tuple[int, ...], properties: Any) -> None:
        # A SUBACK code of 0x80 or more: the broker (its ACL) will not deliver requests there.
        refused = [topic for topic, code in zip(self._subscriptions, codes, strict=False) if code >= 0x80]
        self.subscriptions_refused = refused
        if refused:
            log.warning("uplink: the cloud broker refused the subscription to %s: cloud requests there will not "
                        "arrive; its ACL must let this gateway subscribe to %s#", ", ".join(refused),
                        self.topics.site_prefix)

    def _on_lost(self) -> None:
        self.forwarder.disconnected()

    async def _publish_birth(self) -> None:
        try:
            await self.connection.publish(self.topics.status, presence.birth(self._snapshot()), qos=1, retain=True,
                                          on_ack=self._checked(self.topics.status))
        except BrokerUnavailable as exc:
            log.debug("uplink birth not published: %s", exc)
        await self._publish_health()

    def _on_message(self, topic: str, payload: bytes, qos: int, properties: dict[str, Any]) -> int | Awaitable[int]:
        if self._handler is None:
            return 0
        return self._handle_request(self._handler, topic, payload, properties)

    async def _handle_request(self, handler: CloudRequestHandler, topic: str, payload: bytes,
                              properties: dict[str, Any]) -> int:
        # The PUBACK goes out once the reply is in the outbox: a request is never lost between the two.
        try:
            reply = await handler.handle(topic, payload, properties)
        except Exception:
            self.requests_failed += 1
            log.exception("uplink: error handling a cloud request on %s", topic)
            return 0
        if reply is not None:
            self.source.add_reply(reply)
        return 0

    def _checked(self, topic: str, then: Callable[[], None] | None = None) -> Callable[[int], None]:
        """A presence message's PUBACK: refusals counted like the outbox's."""
        def on_ack(reason_code: int) -> None:
            if is_refusal(reason_code):
                self.refusals.refused(topic, reason_code)
            else:
                self.refusals.accepted(topic)
            if then is not None:
                then()
        return on_ack

    # ------------------------------------------------------------------ health

    async def _health_loop(self) -> None:
        while True:
            await asyncio.sleep(self._config.health_interval_s)
            await self._publish_health()

    async def _publish_health(self) -> None:
        if not self._config.forward_health or not self.connection.is_connected:
            return  # never queued: the next one supersedes it
        with contextlib.suppress(BrokerUnavailable):
            await self.connection.publish(self.topics.health, presence.health(self._snapshot(), self._health_detail()),
                                          qos=1, retain=True, on_ack=self._checked(self.topics.health))

    def detail(self) -> dict[str, Any]:
        """The `uplink` section of /api/health."""
        stats = self._store.outbox_stats()
        status = self.connection.status
        oldest_age = None if stats.oldest_ms is None else max(0.0, (time.time() * 1000 - stats.oldest_ms) / 1000)
        detail: dict[str, Any] = {
            "state": status.state,
            "connected": self.connection.is_connected,
            "url": self._config.url,
            "siteId": self._config.site_id,
            "connects": status.connects,
            "outbox": {"rows": stats.rows, "bytes": stats.bytes,
                       "oldestAgeS": None if oldest_age is None else round(oldest_age, 1),
                       "dropped": stats.dropped},
        }
        detail["refused"] = self.refusals.detail()
        warnings = []
        if stats.dropped:
            warnings.append(f"{stats.dropped} outbox rows were dropped since start (the outbox was over its "
                            "bounds while the cloud broker was away)")
        refused = self.refusals.warning()
        if refused is not None:
            warnings.append(refused)
        if self.subscriptions_refused:
            warnings.append(f"the cloud broker refused the subscription to {', '.join(self.subscriptions_refused)}: "
                            f"cloud requests there do not arrive (its ACL must allow {self.topics.site_prefix}#)")
        if warnings:
            detail["warning"] = "; ".join(warnings)
        if status.last_error:
            detail["lastError"] = status.last_error
        return detail

    def _register_metrics(self, m: Metrics) -> None:
        m.gauge("deviceagentd_uplink_connected", "1 when the uplink to the cloud broker is up",
                lambda: float(self.connection.is_connected))
        m.gauge("deviceagentd_uplink_outbox_rows", "Rows in the uplink outbox (waiting for the cloud broker)",
                lambda: self._store.outbox_stats().rows)
        m.gauge("deviceagentd_uplink_outbox_bytes", "Payload and topic bytes in the uplink outbox on disk",
                lambda: self._store.outbox_stats().bytes)
        m.gauge("deviceagentd_uplink_dropped_total",
                "Outbox rows dropped because the outbox was over its bounds (each one lost for the cloud)",
                lambda: self._store.outbox_stats().dropped, kind="counter")
        m.gauge("deviceagentd_uplink_published_total", "Messages published to the cloud broker (resends included)",
                lambda: self.forwarder.published, kind="counter")
        m.gauge("deviceagentd_uplink_acked_total", "Messages the cloud broker acknowledged",
                lambda: self.forwarder.acked, kind="counter")
