"""`GET /api/stream` against the real daemon: state changes, online/offline, events and command
outcomes as they happen, filtered, resumable with Last-Event-ID from the stored events, a slow
reader told what it missed, a stuck one cut off, and every stream ended at shutdown."""

from __future__ import annotations

import asyncio
import json
import re
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from daemon_harness import RunningDaemon, start_daemon, wait_until
from mosquitto_broker import MosquittoBroker
from simulated_site import Sims
from sse_client import SseEvent, SseReader

from deviceagentd.core.feed import ChangeKind, SiteChange, SiteFeed
from deviceagentd.http import routes_stream
from deviceagentd.http.live import DEFAULT_RING_SIZE, LiveHub, StreamFilter

TOKEN = "stream-test-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
WAIT_S = 15.0


@pytest.fixture
async def gateway(broker: MosquittoBroker, tmp_path: Path) -> AsyncIterator[RunningDaemon]:
    gw = await start_daemon(broker.url, tmp_path / "state", http_tokens=[TOKEN])
    try:
        yield gw
    finally:
        await gw.stop()


class Stream:
    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self.response = response
        self.reader = SseReader(response)

    async def ready(self) -> tuple[SseEvent, list[SseEvent]]:
        return await self.reader.until("ready")

    async def next_of(self, name: str, **data: Any) -> SseEvent:
        """The next `name` event whose data (or data["state"]) has these values."""
        async with asyncio.timeout(WAIT_S):
            while True:
                event, _ = await self.reader.until(name, WAIT_S)
                fields = event.data.get("state", event.data) if name == "state" else event.data
                if all(fields.get(key) == value for key, value in data.items()):
                    return event


def stream_clients(gw: RunningDaemon) -> int:
    """Open /api/stream connections, as /metrics says."""
    found = re.search(r"^deviceagentd_stream_clients (\d+)$", gw.daemon.metrics.render(), re.M)
    assert found, "the deviceagentd_stream_clients gauge is missing"
    return int(found.group(1))


async def open_stream(gw: RunningDaemon, query: str = "", headers: dict[str, str] | None = None) -> Stream:
    response = await gw.session.get(f"{gw.base_url}/api/stream{query}", headers={**AUTH, **(headers or {})})
    assert response.status == 200, await response.text()
    assert response.headers["Content-Type"] == "text/event-stream; charset=utf-8"
    assert response.headers["Cache-Control"] == "no-cache"
    return Stream(response)


async def test_every_kind_of_change_arrives_live(gateway: RunningDaemon, sims: Sims) -> None:
    stream = await open_stream(gateway)
    ready, before = await stream.ready()
    assert before == []
    assert ready.data == {"resumed": False, "replayed": 0, "lastEventId": None}
    assert stream.reader.retry_ms == routes_stream.RETRY_MS

    thermostat = await sims.start("thermostat", "thermostat-001")
    online = await stream.next_of("lifecycle")
    assert online.data["deviceId"] == "thermostat-001" and online.data["status"] == "online"
    assert online.has_id and online.last_event_id == str(online.data["eventId"])

    await thermostat.report_state(temperature=30.5)
    state = await stream.next_of("state", temperature=30.5)
    assert state.data["deviceId"] == "thermostat-001" and state.data["productId"] == "thermostat"
    assert state.data["state"] == {"temperature": 30.5}  # only what changed
    assert not state.has_id and state.last_event_id == online.last_event_id  # only stored events carry ids

    await thermostat.emit_event("temperature_alert", {"temperature": 38.5})
    event = await stream.next_of("event")
    assert (event.data["event"], event.data["data"]["temperature"]) == ("temperature_alert", 38.5)
    assert event.has_id and int(event.last_event_id) == event.data["id"] > online.data["eventId"]

    status, body = await gateway.request("POST", "/api/devices/thermostat-001/commands", headers=AUTH,
                                         json_body={"command": "set_mode", "params": {"mode": "eco"}})
    assert status == 200, body
    command = await stream.next_of("command")
    assert (command.data["requestId"], command.data["status"], command.data["command"]) == (
        body["requestId"], "ok", "set_mode")
    assert command.data["params"] == {"mode": "eco"} and command.data["deviceId"] == "thermostat-001"

    await thermostat.stop()
    offline = await stream.next_of("lifecycle")
    assert (offline.data["status"], offline.data["reason"]) == ("offline", "device reported offline")
    stream.response.close()


async def test_filters_by_product_device_and_kind(gateway: RunningDaemon, sims: Sims) -> None:
    light_states = await open_stream(gateway, "?productId=light&kind=state")
    one_device = await open_stream(gateway, "?deviceId=thermostat-002,light-009&kind=lifecycle&kind=event")
    await light_states.ready()
    await one_device.ready()
    light = await sims.start("light", "light-001")
    thermostat = await sims.start("thermostat", "thermostat-002")
    await thermostat.report_state(temperature=19)
    await thermostat.emit_event("temperature_alert", {"temperature": 40})
    await light.report_state(brightness=33)

    got = await light_states.next_of("state", brightness=33)
    assert got.data["deviceId"] == "light-001"
    seen = [(await one_device.reader.next()), (await one_device.reader.next())]
    assert [(e.name, e.data["deviceId"]) for e in seen] == [("lifecycle", "thermostat-002"),
                                                          ("event", "thermostat-002")]
    # Nothing else arrived for either: the next thing each sees is this later change.
    await thermostat.emit_event("door_opened", {"by": "test"})
    await light.report_state(brightness=34)
    assert (await one_device.reader.next()).data["event"] == "door_opened"
    nxt = await light_states.reader.next()
    assert (nxt.name, nxt.data["deviceId"]) == ("state", "light-001")
    light_states.response.close()
    one_device.response.close()


async def test_bad_filters_and_ids_are_refused(gateway: RunningDaemon) -> None:
    for query, status, code, field in (
        ("?kind=states", 400, "invalid_request", "kind"),
        ("?productId=fridge", 404, "product_not_found", None),
        ("?lastEventId=ten", 400, "invalid_request", "lastEventId"),
        ("?lastEventId=-1", 400, "invalid_request", "lastEventId"),
        ("?deviceId=" + ",".join(f"d{i}" for i in range(routes_stream.MAX_FILTER_VALUES + 1)), 400,
         "invalid_request", "deviceId"),
    ):
        got, body = await gateway.request("GET", f"/api/stream{query}", headers=AUTH)
        assert got == status, (query, body)
        assert body["error"]["code"] == code
        if field:
            assert body["error"]["details"][0]["field"] == field
    got, body = await gateway.request("GET", "/api/stream", headers={**AUTH, "Last-Event-ID": "1e3"})
    assert got == 400 and body["error"]["details"][0]["field"] == "Last-Event-ID"
    got, body = await gateway.request("GET", "/api/stream")
    assert got == 401
    assert stream_clients(gateway) == 0  # a refused stream leaves nothing open


async def test_resume_replays_the_stored_events_missed_then_goes_live(gateway: RunningDaemon, sims: Sims) -> None:
    thermostat = await sims.start("thermostat", "thermostat-001")
    stream = await open_stream(gateway)
    ready, _ = await stream.ready()
    await thermostat.emit_event("temperature_alert", {"temperature": 31})
    first = await stream.next_of("event")
    resume_from = first.last_event_id
    stream.response.close()

    # While nobody listens: three events, a light coming online, and state that is not replayed.
    for n in range(3):
        await thermostat.emit_event("temperature_alert", {"temperature": 32 + n})
    light = await sims.start("light", "light-001")
    await thermostat.report_state(temperature=25)
    await wait_until(lambda: gateway.daemon.store.stats().pending_rows == 0 and len(
        gateway.daemon.registry.devices(online=True)) == 2, WAIT_S)

    resumed = await open_stream(gateway, headers={"Last-Event-ID": resume_from})
    ready, replayed = await resumed.ready()
    assert [(e.name, e.data.get("event") or e.data.get("status")) for e in replayed] == [
        ("event", "temperature_alert"), ("event", "temperature_alert"), ("event", "temperature_alert"),
        ("lifecycle", "online")]
    assert [e.data["data"]["temperature"] for e in replayed[:3]] == [32, 33, 34]
    ids = [int(e.last_event_id) for e in replayed]
    assert ids == sorted(ids) and ids[0] > int(resume_from)
    assert ready.data == {"resumed": True, "replayed": 4, "lastEventId": ids[-1]}
    assert ready.last_event_id == str(ids[-1])

    # Live again, nothing twice; the query form of the id (clients that cannot set headers) works too.
    await light.emit_event("bulb_failure", {})
    live = await resumed.next_of("event")
    assert live.data["event"] == "bulb_failure" and int(live.last_event_id) > ids[-1]
    by_query = await open_stream(gateway, f"?lastEventId={ids[-1]}&kind=event")
    ready, replayed = await by_query.ready()
    assert [e.data["event"] for e in replayed] == ["bulb_failure"] and ready.data["replayed"] == 1
    resumed.response.close()
    by_query.response.close()


async def _events_stored(gateway: RunningDaemon, count: int) -> None:
    """Wait until the gateway holds `count` events (committed or waiting for their commit)."""
    async with asyncio.timeout(WAIT_S):
        while len(await gateway.daemon.store.query_events(None, limit=count)) < count:
            await asyncio.sleep(0.02)


async def test_a_fresh_stream_resumes_from_its_ready_id(gateway: RunningDaemon, sims: Sims) -> None:
    """Its `ready` carries the newest stored id, so a client that drops before any event still
    resumes without a gap."""
    thermostat = await sims.start("thermostat", "thermostat-001")
    # The simulator is connected before the gateway has heard it: wait for its stored online
    # event, or a loaded machine opens the stream first and `ready` has no id yet.
    await _events_stored(gateway, 1)
    stream = await open_stream(gateway)
    ready, _ = await stream.ready()
    assert ready.has_id and ready.data["lastEventId"] == int(ready.last_event_id) > 0
    stream.response.close()
    await thermostat.emit_event("temperature_alert", {"temperature": 35})
    # Stored (or waiting for its commit) before the client comes back: then it is history.
    await _events_stored(gateway, 2)
    again = await open_stream(gateway, headers={"Last-Event-ID": ready.last_event_id})
    _, replayed = await again.ready()
    assert [e.data["event"] for e in replayed] == ["temperature_alert"]
    again.response.close()


async def test_a_long_absence_is_replayed_over_several_connections(
        gateway: RunningDaemon, sims: Sims, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(routes_stream, "REPLAY_PAGE", 4)
    monkeypatch.setattr(routes_stream, "REPLAY_MAX", 8)
    thermostat = await sims.start("thermostat", "thermostat-001")
    await wait_until(lambda: gateway.daemon.registry.total == 1, WAIT_S)
    for n in range(13):
        await thermostat.emit_event("temperature_alert", {"temperature": n})
    await wait_until(lambda: gateway.daemon.store.stats().pending_rows == 0, WAIT_S)

    temperatures: list[int] = []
    last_id = "0"
    for _ in range(3):
        stream = await open_stream(gateway, headers={"Last-Event-ID": last_id})
        try:
            while True:
                event = await stream.reader.next()
                if event.name == "ready":
                    break
                if event.name == "event":
                    temperatures.append(event.data["data"]["temperature"])
                last_id = event.last_event_id
        except EOFError:
            continue  # the server ended this connection after REPLAY_MAX: go on from last_id
        finally:
            stream.response.close()
        break
    assert temperatures == list(range(13))


async def test_a_slow_reader_is_told_what_it_missed(gateway: RunningDaemon) -> None:
    stream = await open_stream(gateway, "?kind=state")
    await stream.ready()
    feed = gateway.daemon.registry.feed
    burst = 2 * DEFAULT_RING_SIZE + 7  # more than the ring holds, in one go of the loop
    for n in range(burst):
        feed.publish(SiteChange(ChangeKind.STATE, "d-1", "thermostat", 1, {"n": n}))
    missed = await stream.reader.next()
    assert missed.name == "missed"
    kept = []
    while len(kept) + missed.data["changes"] < burst:
        kept.append((await stream.reader.next()).data["state"]["n"])
    assert kept == list(range(burst - len(kept), burst))  # the newest ones, in order
    _, body = await gateway.request("GET", "/metrics", headers=AUTH)
    assert f"deviceagentd_stream_missed_total {missed.data['changes']}" in body
    assert "deviceagentd_stream_clients 1" in body
    stream.response.close()


async def test_a_client_that_stops_reading_is_cut_off(
        gateway: RunningDaemon, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(routes_stream, "WRITE_TIMEOUT_S", 0.5)
    host, port = gateway.base_url.removeprefix("http://").split(":")
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect((host, int(port)))
    sock.sendall(f"GET /api/stream HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n\r\n".encode())
    feed = gateway.daemon.registry.feed
    await wait_until(lambda: stream_clients(gateway) == 1, WAIT_S)
    big = {"blob": "x" * 4000}
    try:
        # Never read: the socket buffers fill, the write waits, and the gateway gives up on us.
        async def flood() -> None:
            while stream_clients(gateway):
                for _ in range(50):
                    feed.publish(SiteChange(ChangeKind.STATE, "d-1", "thermostat", 1, big))
                await asyncio.sleep(0.01)

        await asyncio.wait_for(flood(), WAIT_S)
    finally:
        sock.close()
    assert stream_clients(gateway) == 0


async def test_shutdown_ends_open_streams(broker: MosquittoBroker, tmp_path: Path) -> None:
    gw = await start_daemon(broker.url, tmp_path / "state")
    response = await gw.session.get(f"{gw.base_url}/api/stream")
    stream = SseReader(response)
    await stream.until("ready")
    stopping = asyncio.create_task(gw.daemon.stop())
    with pytest.raises((EOFError, aiohttp.ClientPayloadError)):
        await stream.next(timeout=5)
    await asyncio.wait_for(stopping, 10)
    await gw.session.close()


async def test_the_hub_subscribes_only_while_streams_are_open() -> None:
    feed = SiteFeed()
    hub = LiveHub(feed, ring_size=4)
    assert not feed.listening
    states = hub.open(StreamFilter(kinds=frozenset({ChangeKind.STATE})))
    lights = hub.open(StreamFilter(products=frozenset({"light"})))
    assert feed.listening and hub.clients == 2
    for n in range(6):
        feed.publish(SiteChange(ChangeKind.STATE, "t-1", "thermostat", 1, {"n": n}))
    feed.publish(SiteChange(ChangeKind.EVENT, "l-1", "light", 1, {"id": 9}, event_id=9))
    data, missed = hub.take(states)
    # The ring holds 4 of the 7 changes: 3 went by unread; of the 4 kept, the 3 states are this stream's.
    assert (data.count(b"event: state\n"), missed) == (3, 3)
    assert data.endswith(b'"state":{"n":5}}\n\n')
    data, missed = hub.take(lights)
    assert data.startswith(b"id: 9\nevent: event\ndata: ") and data.count(b"event:") == 1 and missed == 3
    assert hub.take(states) == (b"", 0)
    # Streams without a filter that take the same changes share one encoded chunk.
    everything = [hub.open(StreamFilter()) for _ in range(2)]
    feed.publish(SiteChange(ChangeKind.STATE, "t-1", "thermostat", 1, {"n": 6}))
    first, second = (hub.take(stream)[0] for stream in everything)
    assert first is second and first.count(b"event: state\n") == 1
    # After a resume, the stored events already replayed are not sent again.
    resumed = hub.open(StreamFilter())
    resumed.skip_upto = 9
    feed.publish(SiteChange(ChangeKind.EVENT, "l-1", "light", 1, {"id": 9}, event_id=9))
    feed.publish(SiteChange(ChangeKind.EVENT, "l-1", "light", 1, {"id": 10}, event_id=10))
    assert hub.take(resumed)[0].count(b"event: event\n") == 1
    for stream in (*everything, resumed):
        hub.close(stream)
    assert hub.missed_total == 6
    hub.take(states)
    assert await hub.wait(states, 0.01) is False  # nothing new
    waiting = asyncio.create_task(hub.wait(states, 5))
    await asyncio.sleep(0)
    feed.publish(SiteChange(ChangeKind.STATE, "t-1", "thermostat", 1, {"n": 7}))
    assert await waiting is True
    hub.close(states)
    assert feed.listening and await hub.wait(states, 5) is True  # closed: the writer stops
    hub.close_all()
    assert not feed.listening and hub.clients == 0 and hub.missed_total == 6


def test_state_changes_are_encoded_as_any_event_and_never_fail() -> None:
    from deviceagentd.http.live import ChangeEncoder, sse_event

    encoder = ChangeEncoder()
    for change in (SiteChange(ChangeKind.STATE, "t-1", "thermostat", 1778493600123, {"temperature": 21.5}),
                   SiteChange(ChangeKind.STATE, 'odd "id"\\\u2028', "p\n", 0, {"mode": "自动", "x": None, "l": [1]})):
        for _ in range(2):  # the device's cached head the second time
            assert encoder.encode(change) == sse_event("state", encoder.change_json(change))
    # A lone surrogate (legal in a device's JSON) has no UTF-8 form: escaped, not an exception.
    lone = SiteChange(ChangeKind.STATE, "t-1", "thermostat", 1, {"name": "a\ud800b"})
    data = encoder.encode(lone).decode("utf-8").split("data: ", 1)[1]
    assert json.loads(data)["state"]["name"] == "a\ud800b"
