"""`GET /api/stream`: the site's changes as Server-Sent Events, for the console and for programs.

Events: `state` (telemetry fields whose value changed), `lifecycle` (online/offline), `event`
(a device event), `command` (a command finished: answered, failed, timed out, answered late),
`ready` once the stream is live, `missed` when this client read too slowly and changes were
dropped. Filters: `productId`, `deviceId`, `kind` (each repeatable or comma separated).

Stored events (`lifecycle`, `event`) carry an SSE `id:` (the event id), and so does `ready`
(the newest stored event then). A client that reconnects with `Last-Event-ID` (EventSource does
by itself; `?lastEventId=` for clients that cannot set headers) first gets every stored event
it missed, then the live ones, none twice. State changes and command outcomes are not stored
as events: after a reconnect or a `missed`, re-read the devices (`GET /api/devices`).
"""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web

from deviceagentd.core.events import event_to_json
from deviceagentd.core.feed import ChangeKind
from deviceagentd.http.context import EventQueries, context_of
from deviceagentd.http.errors import ApiError, bad_field
from deviceagentd.http.live import LiveHub, LiveStream, StreamFilter, parse_list, sse_event, stored_event

log = logging.getLogger("deviceagentd.http")

LIVE = web.AppKey("live", LiveHub)
KEEPALIVE_S = 15.0
# A client whose socket takes no data for this long is gone or stuck: its stream ends.
WRITE_TIMEOUT_S = 10.0
# After a write, changes gather until the next tick of this period: a busy site's stream goes
# out in a few larger writes a second instead of one per change (20 streams at 10,000 changes/s
# would otherwise be 200,000 writes/s on the event loop the devices share), and every busy
# stream writes on the same tick, so unfiltered ones share one encoded chunk. A lone change
# still leaves at once.
WRITE_EVERY_S = 0.05
# What a reconnecting client asks EventSource to wait before it tries again.
RETRY_MS = 2000
REPLAY_PAGE = 500
# Stored events replayed on one connection; past it the stream ends and the client resumes
# (with the Last-Event-ID of the last one it got) on its next connection.
REPLAY_MAX = 10_000
MAX_FILTER_VALUES = 100


def _filter(request: web.Request) -> StreamFilter:
    ctx = context_of(request)
    products = parse_list(request.query.getall("productId", []))
    for product_id in products:
        if product_id not in ctx.catalog:
            raise ApiError(404, "product_not_found", f"product {product_id!r} is not configured",
                           {"productId": product_id})
    devices = parse_list(request.query.getall("deviceId", []))
    kinds = parse_list(request.query.getall("kind", []))
    known = [kind.value for kind in ChangeKind]
    for kind in kinds:
        if kind not in known:
            raise bad_field("kind", f"must be one of {', '.join(known)} (got {kind!r})")
    for name, values in (("productId", products), ("deviceId", devices)):
        if len(values) > MAX_FILTER_VALUES:
            raise bad_field(name, f"lists at most {MAX_FILTER_VALUES} values")
    return StreamFilter(
        products=frozenset(products) if products else None,
        devices=frozenset(devices) if devices else None,
        kinds=frozenset(ChangeKind(kind) for kind in kinds) if kinds else frozenset(ChangeKind),
    )


def _last_event_id(request: web.Request) -> int | None:
    raw = request.headers.get("Last-Event-ID")
    name = "Last-Event-ID"
    if raw is None:
        raw, name = request.query.get("lastEventId"), "lastEventId"
    if raw is None or raw.strip() == "":
        return None
    raw = raw.strip()
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 18:
        raise bad_field(name, "must be the id of a stored event (a whole number)")
    return int(raw)


async def _write(response: web.StreamResponse, data: bytes) -> None:
    await asyncio.wait_for(response.write(data), WRITE_TIMEOUT_S)


async def _replay(response: web.StreamResponse, store: EventQueries, stream_filter: StreamFilter,
                  after: int) -> tuple[int, int, bool]:
    """Send the stored events after `after` that the filter wants: (the last id sent or read,
    how many were sent, whether more remain than one connection replays)."""
    upto, sent = after, 0
    while sent < REPLAY_MAX:
        page = await store.events_after(upto, limit=REPLAY_PAGE, device_ids=stream_filter.devices,
                                        product_ids=stream_filter.products)
        chunks = []
        for event in page:
            kind, encoded = stored_event(event, event_to_json(event))
            upto = event.id
            if kind in stream_filter.kinds:
                chunks.append(encoded)
                sent += 1
        if chunks:
            await _write(response, b"".join(chunks))
        if len(page) < REPLAY_PAGE:
            return upto, sent, False
    return upto, sent, True


async def stream(request: web.Request) -> web.StreamResponse:
    ctx = context_of(request)
    hub = request.app[LIVE]
    stream_filter = _filter(request)
    last_id = _last_event_id(request)
    # Open before the stored events are read, so nothing falls between the two.
    live = hub.open(stream_filter)
    response = web.StreamResponse(status=200, headers={
        "Content-Type": "text/event-stream; charset=utf-8",
        "Cache-Control": "no-cache",
        "X-Accel-Buffering": "no",
    })
    try:
        await response.prepare(request)
        await _write(response, f"retry: {RETRY_MS}\n\n".encode())
        if last_id is None:
            # Live from now: stored events up to the newest are history (GET .../events).
            newest = await ctx.store.query_events(None, limit=1)
            upto, replayed, more = (newest[0].id if newest else 0), 0, False
        else:
            upto, replayed, more = await _replay(response, ctx.store, stream_filter, last_id)
        if more:
            return response  # the client reconnects with the last id it got, and goes on
        live.skip_upto = upto
        await _write(response, sse_event("ready", {"resumed": last_id is not None, "replayed": replayed,
                                                   "lastEventId": upto or None}, upto or None))
        await _pump(response, hub, live)
    except ConnectionError:
        pass  # the client went away
    except TimeoutError:
        log.info("live stream to %s closed: the client took no data for %.0f s", request.remote, WRITE_TIMEOUT_S)
    finally:
        hub.close(live)
    return response


async def _pump(response: web.StreamResponse, hub: LiveHub, live: LiveStream) -> None:
    loop = asyncio.get_running_loop()
    while True:
        if not await hub.wait(live, KEEPALIVE_S):
            await _write(response, b": keep-alive\n\n")
            continue
        if live.closed:
            return  # the gateway is shutting down
        data, missed = hub.take(live)
        if missed:
            data = sse_event("missed", {"changes": missed}) + data
        if data:
            await _write(response, data)
            await asyncio.sleep(WRITE_EVERY_S - loop.time() % WRITE_EVERY_S)


def add_routes(app: web.Application, hub: LiveHub) -> None:
    app[LIVE] = hub
    # No HEAD: a stream has no end, so a HEAD request would never be answered.
    app.router.add_get("/api/stream", stream, allow_head=False)

    async def end_streams(_app: web.Application) -> None:
        hub.close_all()

    app.on_shutdown.append(end_streams)
