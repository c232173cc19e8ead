"""Storage that cannot keep up (issue 13, findings 1, 2 and 13), in-process and quick: while
commits fail, device messages wait unacknowledged at the broker instead of piling up in memory
or being dropped; a backlog is committed in bounded transactions; a database recovered from
corruption keeps health degraded until an operator removes the moved file."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

from daemon_harness import wait_until
from mosquitto_broker import MosquittoBroker
from test_mqtt_support import WAIT_S, online_device, raw_device, running_gateway

from deviceagentd.mqtt.link import RECEIVE_MAXIMUM
from deviceagentd.mqtt.topics import TopicKind
from deviceagentd.store import EventRecord, NewEvent, Store, StoreSettings, wall_clock_ms
from deviceagentd.store.database import DB_FILENAME


def lock(db: Path) -> sqlite3.Connection:
    """Another connection holding the write lock: every commit of the daemon fails meanwhile
    (busy), as on a full disk, only quicker to set up and undo."""
    blocker = sqlite3.connect(db, isolation_level=None, check_same_thread=False, timeout=30)
    blocker.execute("BEGIN EXCLUSIVE")
    return blocker


async def test_while_commits_fail_device_events_wait_at_the_broker_and_none_is_lost(
        broker: MosquittoBroker, tmp_path: Path) -> None:
    state = tmp_path / "state"
    async with running_gateway(broker.url, state, storage_max_backlog_rows=1000) as gw, \
            raw_device(broker.url, "thermostat") as device:
        await online_device(gw, device)
        store = gw.daemon.store
        gate = gw.daemon.ingest.gate
        assert gate is not None
        await store.flush()
        blocker = await asyncio.to_thread(lock, state / DB_FILENAME)
        try:
            # The first event meets a failing commit; from then on the store has no room.
            await device.send(TopicKind.EVENT, {"type": "event", "data": {"event": "seq", "n": 0}})
            await wait_until(lambda: not store.healthy, 30)
            for n in range(1, 1501):
                await device.send(TopicKind.EVENT, {"type": "event", "data": {"event": "seq", "n": n}})
            await device.flush()  # the broker has every one of them
            await wait_until(lambda: gate.held > 0, WAIT_S)
            assert gate.held <= RECEIVE_MAXIMUM
            # Nothing beyond the window was taken in: the rest waits at the broker.
            assert store.stats().pending_rows < 50
            status, health = await gw.request("GET", "/api/health")
            assert status == 503 and health["storage"]["backpressure"] is True
            assert "\ndeviceagentd_store_backpressure 1" in gw.daemon.metrics.render()
        finally:
            await asyncio.to_thread(blocker.execute, "ROLLBACK")
            blocker.close()
        events = await wait_until_stored(gw.daemon.store, device.device_id, 1501)
        assert [e.data["n"] for e in events] == list(range(1501))  # all, once, in order
        assert store.stats().dropped_rows == 0
        status, health = await gw.request("GET", "/api/health")
        assert health["storage"]["backpressure"] is False and health["storage"]["lostRows"] == 0


async def wait_until_stored(store: Store, device_id: str, count: int) -> list[EventRecord]:
    for _ in range(600):
        events = [e for e in await store.query_events(device_id, limit=5000) if e.event == "seq"]
        if len(events) >= count:
            return list(reversed(events))
        await asyncio.sleep(0.1)
    raise AssertionError(f"only {len(events)} of {count} events were stored")


async def test_a_backlog_is_committed_in_bounded_transactions(tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    store = Store(db, StoreSettings(batch_interval_s=0.05, batch_max_rows=100))
    store.open()
    try:
        store.add_event(NewEvent("dev-1", "p", "warmup", "info", True, {}, 1, wall_clock_ms()))
        await store.flush()
        blocker = lock(db)
        try:
            for n in range(1000):  # a producer that cannot wait (lifecycle events, say)
                store.add_event(NewEvent("dev-1", "p", "tick", "info", True, {"n": n}, 1, wall_clock_ms()))
            await wait_until(lambda: not store.healthy, 30)
            assert not store.has_room or store.stats().pending_rows < store._settings.max_backlog_rows
            commits_before = store.stats().commits
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        await asyncio.wait_for(store.flush(), 60)
        # 1,000 rows in transactions of at most 100, not one of 1,000.
        assert store.stats().commits - commits_before >= 10
        with sqlite3.connect(db) as conn:
            assert conn.execute("SELECT COUNT(*) FROM events WHERE event = 'tick'").fetchone() == (1000,)
    finally:
        store.close()


async def test_a_database_recovered_from_corruption_is_reported_until_removed(broker: MosquittoBroker,
                                                                              tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    (state / DB_FILENAME).write_bytes(b"not an SQLite database " * 400)
    async with running_gateway(broker.url, state) as gw:
        status, health = await gw.request("GET", "/api/health")
        assert status == 503 and health["status"] == "degraded"
        [moved] = health["storage"]["recoveredFromCorruption"]
        assert moved.startswith(f"{DB_FILENAME}.corrupt-")
        # The operator looks at it, then moves it out of the state directory: acknowledged.
        (state / moved).rename(tmp_path / moved)
        status, health = await gw.request("GET", "/api/health")
        assert status == 200 and health["status"] == "ok", health
        assert "recoveredFromCorruption" not in health["storage"]
