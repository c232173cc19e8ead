"""Routes for health, products, devices, commands and events (SPEC §3)."""

from __future__ import annotations

import time

from aiohttp import web

from deviceagentd import __version__
from deviceagentd.core.command_request import parse_command_request
from deviceagentd.core.commands import command_to_json
from deviceagentd.core.events import event_to_json
from deviceagentd.core.registry import Device
from deviceagentd.core.spec import ProductSpec
from deviceagentd.http.context import context_of
from deviceagentd.http.errors import ApiError, bad_field, int_query, read_json_object
from deviceagentd.http.responses import json_response

MAX_SEARCH_CHARS = 128


async def health(request: web.Request) -> web.Response:
    ctx = context_of(request)
    mqtt_ok = ctx.broker.is_connected
    storage_ok = ctx.store.healthy
    detail = ctx.storage_detail()
    ok = mqtt_ok and storage_ok and bool(detail.pop("ok", True))
    body = {
        "status": "ok" if ok else "degraded",
        "version": __version__,
        "uptimeS": round(time.monotonic() - ctx.started_monotonic, 1),
        "mqtt": {"connected": mqtt_ok, **ctx.broker_detail()},
        "storage": {"healthy": storage_ok, **detail},
        "devices": {"total": ctx.registry.total, "online": ctx.registry.online_count},
    }
    if ctx.uplink_detail is not None:
        # A WAN loss does not make the gateway degraded: the site works, the outbox keeps the rest.
        body["uplink"] = ctx.uplink_detail()
    return json_response(body, status=200 if ok else 503)



async def list_products(request: web.Request) -> web.Response:
    ctx = context_of(request)
    products = [
        {
            "productId": spec.product_id,
            "name": spec.name,
            "description": spec.description,
            "commands": sorted(spec.commands),
            "devices": len(ctx.registry.devices(product_id=spec.product_id)),
        }
        for spec in ctx.catalog.products.values()
    ]
    return json_response({"products": products})


def _product(request: web.Request) -> ProductSpec:
    ctx = context_of(request)
    product_id = request.match_info["productId"]
    spec = ctx.catalog.get(product_id)
    if spec is None:
        raise ApiError(404, "product_not_found", f"product {product_id!r} is not configured",
                       {"productId": product_id})
    return spec


async def get_product(request: web.Request) -> web.Response:
    return json_response(_product(request).to_json())


def _status_filter(request: web.Request) -> bool | None:
    status = request.query.get("status")
    if status not in (None, "", "online", "offline"):
        raise bad_field("status", "must be online or offline")
    return None if not status else status == "online"



async def list_product_devices(request: web.Request) -> web.Response:
    ctx = context_of(request)
    spec = _product(request)
    devices = ctx.registry.devices(product_id=spec.product_id, online=_status_filter(request))
    devices.sort(key=lambda d: d.device_id)
    return json_response({"devices": [d.to_json() for d in devices]})


async def list_devices(request: web.Request) -> web.Response:
    """Devices of every product, by id, filtered and paged (`after` = the last id of the previous page)."""
    ctx = context_of(request)
    product_id = request.query.get("productId") or None
    if product_id is not None and product_id not in ctx.catalog:
        raise ApiError(404, "product_not_found", f"product {product_id!r} is not configured",
                       {"productId": product_id})
    online = _status_filter(request)
    search = request.query.get("q", "").strip().casefold()
    if len(search) > MAX_SEARCH_CHARS:
        raise bad_field("q", f"must be at most {MAX_SEARCH_CHARS} characters")
    limit = int_query(request, "limit", 100, 1, 1000)
    assert limit is not None
    after = request.query.get("after") or None
    devices = [d for d in ctx.registry.devices(product_id=product_id, online=online)
               if not search or search in d.device_id.casefold() or search in _name(d).casefold()]
    devices.sort(key=lambda d: d.device_id)
    total = len(devices)
    if after is not None:
        devices = [d for d in devices if d.device_id > after]
    page = devices[:limit]
    next_after = page[-1].device_id if len(devices) > limit else None
    return json_response({"devices": [d.to_json() for d in page], "total": total, "nextAfter": next_after})


def _name(device: Device) -> str:
    name = device.metadata.get("name")
    return name if isinstance(name, str) else ""



def _device(request: web.Request) -> Device:
    ctx = context_of(request)
    device_id = request.match_info["deviceId"]
    device = ctx.registry.get(device_id)
    if device is None:
        raise ApiError(404, "device_not_found", f"device {device_id!r} is not registered", {"deviceId": device_id})
    return device


async def get_device(request: web.Request) -> web.Response:
    return json_response(_device(request).to_json())


async def send_command(request: web.Request) -> web.Response:
    ctx = context_of(request)
    device = _device(request)
    body = await read_json_object(request, ctx.max_body_bytes)
    fields = parse_command_request(body)
    outcome = await ctx.commands.send(device.device_id, fields.command, fields.params, fields.timeout_ms,
                                      fields.request_id)
    return json_response(outcome.to_json())


async def list_events(request: web.Request) -> web.Response:
    ctx = context_of(request)
    device = _device(request)
    limit = int_query(request, "limit", 50, 1, 1000)
    before = int_query(request, "before", None, 1, 2**62)
    event_name = request.query.get("event") or None
    assert limit is not None
    events = await ctx.store.query_events(device.device_id, limit=limit, before=before, event=event_name)
    next_before = events[-1].id if len(events) == limit else None
    return json_response({"events": [event_to_json(e) for e in events], "nextBefore": next_before})


async def list_commands(request: web.Request) -> web.Response:
    """A device's command log, newest first; `before` is the previous page's `nextBefore`."""
    ctx = context_of(request)
    device = _device(request)
    limit = int_query(request, "limit", 50, 1, 1000)
    assert limit is not None
    before = _command_cursor(request.query.get("before"))
    commands = await ctx.store.device_commands(device.device_id, limit=limit, before=before)
    next_before = f"{commands[-1].sent_at_ms}:{commands[-1].request_id}" if len(commands) == limit else None
    return json_response({"commands": [command_to_json(c) for c in commands], "nextBefore": next_before})


def _command_cursor(raw: str | None) -> tuple[int, str] | None:
    """`<sent at, epoch ms>:<requestId>` of the last command already seen."""
    if not raw:
        return None
    millis, _, request_id = raw.partition(":")
    if not (millis.isascii() and millis.isdigit() and len(millis) <= 15 and request_id):
        raise bad_field("before", "must be the nextBefore of the previous page")
    return int(millis), request_id



def add_routes(router: web.UrlDispatcher) -> None:
    router.add_get("/api/health", health)
    router.add_get("/api/products", list_products)
    router.add_get("/api/products/{productId}", get_product)
    router.add_get("/api/products/{productId}/devices", list_product_devices)
    router.add_get("/api/devices", list_devices)
    router.add_get("/api/devices/{deviceId}", get_device)
    router.add_post("/api/devices/{deviceId}/commands", send_command)
    router.add_get("/api/devices/{deviceId}/commands", list_commands)
    router.add_get("/api/devices/{deviceId}/events", list_events)
