"""The site feed: every state change, online/offline transition, device event and finished command
is published once, as it happens, to whoever subscribed — and nothing is built when nobody did."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from daemon_harness import RunningDaemon, wait_until
from mosquitto_broker import MosquittoBroker
from test_mqtt_support import WAIT_S, online_device, raw_device, running_gateway

from deviceagentd.core.catalog import load_catalog
from deviceagentd.core.feed import ChangeKind, SiteChange, SiteFeed
from deviceagentd.core.metrics import Metrics
from deviceagentd.core.registry import DeviceRegistry
from deviceagentd.mqtt.topics import TopicKind
from deviceagentd.store.records import DeviceRecord, EventRecord, NewEvent

PRODUCTS = Path(__file__).resolve().parent.parent / "etc" / "deviceagentd" / "products"


class NumberingStore:
    def __init__(self) -> None:
        self.next_id = 0

    def save_device(self, record: DeviceRecord) -> None:
        pass

    def add_event(self, event: NewEvent) -> EventRecord:
        self.next_id += 1
        return EventRecord(**vars(event), id=self.next_id)


def state(**values: object) -> dict[str, object]:
    return {"type": "state", "data": values}


def test_only_changed_values_are_published_and_online_comes_with_its_stored_event() -> None:
    feed = SiteFeed()
    seen: list[SiteChange] = []
    feed.subscribe(seen.append)
    registry = DeviceRegistry(load_catalog(PRODUCTS), NumberingStore(), Metrics(), offline_after_s=0, feed=feed)

    registry.accept_telemetry("thermostat", "t-1", state(temperature=20.5, humidity=40), "json")
    registry.accept_telemetry("thermostat", "t-1", state(temperature=20.5, humidity=41), "json")
    registry.accept_telemetry("thermostat", "t-1", state(temperature=20.5), "json")  # nothing changed

    assert [(c.kind, c.data, c.event_id) for c in seen] == [
        (ChangeKind.LIFECYCLE, {"status": "online", "reason": "message received"}, 1),
        (ChangeKind.STATE, {"temperature": 20.5, "humidity": 40}, None),
        (ChangeKind.STATE, {"humidity": 41}, None),
    ]
    assert {(c.device_id, c.product_id) for c in seen} == {("t-1", "thermostat")}


def test_a_wrongly_typed_field_is_not_published_as_a_change() -> None:
    feed = SiteFeed()
    seen: list[SiteChange] = []
    feed.subscribe(seen.append)
    registry = DeviceRegistry(load_catalog(PRODUCTS), NumberingStore(), Metrics(), offline_after_s=0, feed=feed)
    registry.accept_telemetry("thermostat", "t-1", state(temperature="hot"), "json")
    assert [c.kind for c in seen] == [ChangeKind.LIFECYCLE]


def test_unsubscribe_stops_delivery_and_a_failing_subscriber_does_not_stop_the_others(
        caplog: pytest.LogCaptureFixture) -> None:
    feed = SiteFeed()
    seen: list[str] = []

    def broken(change: SiteChange) -> None:
        raise RuntimeError("consumer bug")

    feed.subscribe(broken)
    stop = feed.subscribe(lambda c: seen.append(c.device_id))
    assert feed.listening
    with caplog.at_level(logging.ERROR, "deviceagentd.feed"):
        feed.publish(SiteChange(ChangeKind.STATE, "d-1", "light", 0, {"on": True}))
    assert seen == ["d-1"]
    assert "subscriber failed" in caplog.text
    stop()
    stop()  # twice is harmless
    feed.publish(SiteChange(ChangeKind.STATE, "d-2", "light", 0, {"on": True}))
    assert seen == ["d-1"]


def test_nothing_is_built_when_nobody_listens() -> None:
    feed = SiteFeed()
    registry = DeviceRegistry(load_catalog(PRODUCTS), NumberingStore(), Metrics(), offline_after_s=0, feed=feed)
    published: list[SiteChange] = []
    feed.publish = published.append  # type: ignore[method-assign]
    registry.accept_telemetry("thermostat", "t-1", state(temperature=20.5), "json")
    assert not feed.listening
    assert published == []


@pytest.fixture
async def gw(broker: MosquittoBroker, tmp_path: Path) -> AsyncIterator[RunningDaemon]:
    async with running_gateway(broker.url, tmp_path / "state") as daemon:
        yield daemon


async def test_a_real_device_s_changes_events_and_command_outcomes_reach_a_subscriber(
        broker: MosquittoBroker, gw: RunningDaemon) -> None:
    seen: list[SiteChange] = []
    gw.daemon.feed.subscribe(seen.append)
    async with raw_device(broker.url, "thermostat") as device:
        await online_device(gw, device, {"temperature": 21})
        await device.send(TopicKind.EVENT, {"type": "event", "data": {"event": "temperature_alert",
                                                                       "temperature": 38.5}})
        await wait_until(lambda: any(c.kind is ChangeKind.EVENT for c in seen), WAIT_S)

        async def answer() -> None:
            command = await device.command()
            body = command.body()
            await device.send(TopicKind.RESPONSE, {"code": 0, "msg": "ok", "requestId": body["requestId"],
                                                   "data": body["params"]})

        answering = asyncio.create_task(answer())
        status, outcome = await gw.request("POST", f"/api/devices/{device.device_id}/commands",
                                           json_body={"command": "set_target_temperature",
                                                      "params": {"target_temperature": 24}})
        await answering
        assert status == 200, outcome
        await wait_until(lambda: any(c.kind is ChangeKind.COMMAND for c in seen), WAIT_S)

    mine = [c for c in seen if c.device_id == device.device_id]
    kinds = [c.kind for c in mine]
    assert kinds[:2] == [ChangeKind.LIFECYCLE, ChangeKind.STATE]
    event = next(c for c in mine if c.kind is ChangeKind.EVENT)
    stored = await gw.daemon.store.query_events(device.device_id, limit=10)
    assert event.event_id in {e.id for e in stored}
    assert event.data["event"] == "temperature_alert" and event.data["data"] == {"temperature": 38.5}
    command = next(c for c in mine if c.kind is ChangeKind.COMMAND)
    assert command.data["requestId"] == outcome["requestId"]
    assert (command.data["status"], command.data["code"], command.data["command"]) == (
        "ok", 0, "set_target_temperature")
