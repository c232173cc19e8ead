"""Outbox → cloud broker: rows in id order, QoS 1, a bounded window in flight, each row deleted
only after its PUBACK.

After every (re)connect the forwarder starts again from the head of the outbox: what was in
flight when the connection dropped is sent again (QoS 1 allows duplicates; nothing is lost),
and because one connection delivers in order, each device's rows arrive in order.

A row the broker refuses (a PUBACK reason code of 0x80 or more: its ACL, a quota) is deleted
too, and counted and logged by `Refusals` (refusals.py says why it is not kept).

Catch-up is paced: at most `max_publish_rate` messages per second (a token bucket with a
burst of a tenth of a second), read from the store a page at a time, yielding to the event loop
between publishes, so the LAN ingest, time sync and commands keep their latency while a long
outage drains.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from deviceagentd.core.errors import BrokerUnavailable
from deviceagentd.mqtt.connection import BrokerConnection
from deviceagentd.store.errors import StoreError
from deviceagentd.store.rows import OutboxRow
from deviceagentd.store.store import Store
from deviceagentd.uplink.refusals import Refusals, is_refusal

log = logging.getLogger("deviceagentd.uplink")

PAGE_ROWS = 200
IDLE_WAIT_S = 1.0


class Pacer:
    """A token bucket: `take()` waits until one more message fits the rate."""

    def __init__(self, rate: float, clock: Callable[[], float]) -> None:
        self._rate = rate
        self._burst = max(1.0, rate / 10)
        self._clock = clock
        self._tokens = self._burst
        self._at = clock()

    async def take(self) -> None:
        self._refill()
        if self._tokens < 1:
            await asyncio.sleep((1 - self._tokens) / self._rate)
            # A sleep overshoots (timer granularity, a busy loop): refilling by the time that really
            # passed credits the overshoot. Setting one token instead lost it on every wait, which
            # held a catch-up at about half of max_publish_rate (scripts/bench --only uplink).
            self._refill()
        self._tokens -= 1

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(self._burst, self._tokens + (now - self._at) * self._rate)
        self._at = now


class Forwarder:
    def __init__(self, store: Store, connection: BrokerConnection, max_publish_rate: float,
                 clock: Callable[[], float], refusals: Refusals) -> None:
        self._store = store
        self._refusals = refusals
        self._connection = connection
        self._rate = max_publish_rate
        self._clock = clock
        self._news = asyncio.Event()
        self._connected = asyncio.Event()
        self._generation = 0
        self.published = 0
        self.acked = 0

    def wake(self) -> None:
        """New rows are in the outbox."""
        self._news.set()

    def connected(self) -> None:
        """A new connection is up: start again from the head of the outbox."""
        self._generation += 1
        self._connected.set()
        self._news.set()

    def disconnected(self) -> None:
        self._connected.clear()

    async def run(self) -> None:
        pacer = Pacer(self._rate, self._clock)
        while True:
            await self._connected.wait()
            try:
                await self._drain(self._generation, pacer)
            except BrokerUnavailable as exc:
                log.debug("uplink publishing paused: %s", exc)
                # The connection task notices the loss and calls disconnected(); don't spin meanwhile.
                await asyncio.sleep(IDLE_WAIT_S)
            except StoreError:
                return  # the store closed: the daemon is stopping

    async def _drain(self, generation: int, pacer: Pacer) -> None:
        cursor = 0
        while generation == self._generation and self._connected.is_set():
            self._news.clear()
            rows = await self._store.outbox_after(cursor, limit=PAGE_ROWS)
            if not rows:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._news.wait(), IDLE_WAIT_S)
                continue
            for row in rows:
                if generation != self._generation:
                    return
                await pacer.take()
                await self._publish(row)
                cursor = row.id
                # Yield even when the window and the rate let us go on: LAN traffic first.
                await asyncio.sleep(0)

    async def _publish(self, row: OutboxRow) -> None:
        store = self._store
        refusals = self._refusals
        row_id, topic = row.id, row.topic

        def acked(reason_code: int) -> None:
            if is_refusal(reason_code):
                refusals.refused(topic, reason_code)
            else:
                self.acked += 1
                refusals.accepted(topic)
            with contextlib.suppress(StoreError):  # closing: the row is sent again next start
                store.ack_outbox(row_id)

        await self._connection.publish(row.topic, row.payload, qos=1, content_type=row.content_type or None,
                                       correlation_data=row.correlation_data, on_ack=acked)
        self.published += 1
