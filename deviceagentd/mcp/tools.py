"""The MCP tools: few and generic, their JSON Schemas generated from the DeviceSpecs, results
trimmed to what was asked.

Eight tools whatever the size of the site (one tool per device floods a model's tool limit):
list_devices, get_state, get_events, list_schedules (read); send_command, run_scene,
create_schedule, delete_schedule (change something). Commands go through `CommandService.send`,
the one validated path to a device, and carry the MCP client's name into the command log.

A tool that cannot do what was asked (unknown device, wrong argument, device offline) answers
with `isError: true` and a sentence a model can act on; an unknown or forbidden tool is a
JSON-RPC error (the transport's business).
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from deviceagentd.core.clock import iso_ms
from deviceagentd.core.commands import MAX_TIMEOUT_MS, MIN_TIMEOUT_MS
from deviceagentd.core.errors import CommandTimeout, Conflict, CoreError, DeviceOffline, InvalidInput
from deviceagentd.core.origin import Origin
from deviceagentd.core.registry import Device
from deviceagentd.core.spec import EVENT_TYPES, FieldSpec, ProductSpec
from deviceagentd.mcp import names
from deviceagentd.mcp.context import McpContext
from deviceagentd.scenes import SceneRunner
from deviceagentd.schedules.schema import request_schema

MAX_DEVICES_PAGE = 200
MAX_EVENTS_PAGE = 100
MAX_SCHEDULES_PAGE = 200
# An assistant waits for the device; a model's turn should not hang on a silent one.
DEFAULT_COMMAND_TIMEOUT_MS = 10_000
MAX_MCP_TIMEOUT_MS = min(MAX_TIMEOUT_MS, 60_000)
_JSON_TYPES = {"int": "integer", "float": "number", "bool": "boolean", "string": "string", "object": "object",
               "array": "array", "enum": "string"}


class ToolFailed(Exception):
    """The tool ran and could not do it: answered with isError and this sentence."""

    def __init__(self, words: str, data: Any = None) -> None:
        super().__init__(words)
        self.words = words
        self.data = data


@dataclass(frozen=True)
class Caller:
    """Who calls: the client's name (for the logs) and the tools it may use."""

    name: str
    tools: frozenset[str]


Handler = Callable[[dict[str, Any], Caller], Coroutine[Any, Any, dict[str, Any]]]


class McpTools:
    def __init__(self, context: McpContext) -> None:
        self._ctx = context
        self._handlers: dict[str, Handler] = {
            names.LIST_DEVICES: self._list_devices,
            names.GET_STATE: self._get_state,
            names.GET_EVENTS: self._get_events,
            names.LIST_SCHEDULES: self._list_schedules,
            names.SEND_COMMAND: self._send_command,
            names.RUN_SCENE: self._run_scene,
            names.CREATE_SCHEDULE: self._create_schedule,
            names.DELETE_SCHEDULE: self._delete_schedule,
        }
        self._definitions = self._define()

    # ------------------------------------------------------------------ what exists

    def offered(self) -> tuple[str, ...]:
        """The tools this site offers at all, in a stable order (read-only mode and scenes decide)."""
        offered = [name for name in names.ALL_TOOLS if name in self._definitions]
        if self._ctx.config.read_only:
            offered = [name for name in offered if name in names.READ_TOOLS]
        return tuple(offered)

    def definitions(self, caller: Caller) -> list[dict[str, Any]]:
        return [self._definitions[name] for name in self.offered() if name in caller.tools]

    async def call(self, name: str, arguments: dict[str, Any], caller: Caller) -> dict[str, Any]:
        """Run a tool the caller may use (the transport checked that); raises ToolFailed."""
        return await self._handlers[name](arguments, caller)

    # ------------------------------------------------------------------ schemas

    def _define(self) -> dict[str, dict[str, Any]]:
        catalog = self._ctx.registry.catalog
        products = sorted(catalog.products)
        rooms = self._ctx.rooms
        scene_names = ({s.scene_id: s.name for room in rooms.rooms.values() for s in room.scenes.values()}
                       if rooms is not None else {})
        scenes = sorted(scene_names)
        read = {"readOnlyHint": True, "destructiveHint": False, "idempotentHint": True, "openWorldHint": False}
        act = {"readOnlyHint": False, "destructiveHint": False, "idempotentHint": False, "openWorldHint": False}
        tools = {
            names.LIST_DEVICES: _tool(
                names.LIST_DEVICES, "List devices",
                "List the site's devices (id, product, online), sorted by id, a page at a time. Products: "
                + "; ".join(f"{p} ({catalog.products[p].name})" for p in products) + ".",
                {
                    "product": {"type": "string", "enum": products, "description": "Only this product."},
                    "status": {"type": "string", "enum": ["online", "offline"]},
                    "search": {"type": "string", "description": "Only ids containing this text."},
                    "includeState": {"type": "boolean", "description": "Add each device's current state."},
                    **_paging(MAX_DEVICES_PAGE, 50),
                }, [], read),
            names.GET_STATE: _tool(
                names.GET_STATE, "Read a device's state",
                "A device's current state (its latest reported values), online status and last report. "
                "Fields by product:\n" + "\n".join(_telemetry_line(catalog.products[p]) for p in products),
                {
                    "deviceId": {"type": "string"},
                    "fields": {"type": "array", "items": {"type": "string"},
                               "description": "Only these state fields (default: all)."},
                }, ["deviceId"], read),
            names.GET_EVENTS: _tool(
                names.GET_EVENTS, "Read events",
                "Device events (alerts, warnings, online/offline, schedule runs), newest first, a page at a time.",
                {
                    "deviceId": {"type": "string", "description": "One device; omit for all."},
                    "since": {"type": "string", "format": "date-time",
                              "description": "Only events received at or after this ISO 8601 time."},
                    "event": {"type": "string", "description": "Only events of this name."},
                    "levels": {"type": "array", "items": {"type": "string", "enum": list(EVENT_TYPES)}},
                    **_paging(MAX_EVENTS_PAGE, 20),
                }, [], read),
            names.LIST_SCHEDULES: _tool(
                names.LIST_SCHEDULES, "List schedules",
                f"Timers, alarms and recurring actions, soonest first (times in {self._ctx.schedules.zone}).",
                {
                    **_paging(MAX_SCHEDULES_PAGE, 50),
                }, [], read),
            names.SEND_COMMAND: _tool(
                names.SEND_COMMAND, "Send a device command",
                "Send a command to a device and wait for its answer. The commands (product.command(params)):\n"
                + "\n".join(line for p in products for line in _command_lines(catalog.products[p])),
                {
                    "deviceId": {"type": "string"},
                    "command": {"type": "string", "enum": sorted({c for p in products
                                                                  for c in catalog.products[p].commands})},
                    "params": _params_schema([catalog.products[p] for p in products]),
                    "timeoutMs": {"type": "integer", "minimum": MIN_TIMEOUT_MS, "maximum": MAX_MCP_TIMEOUT_MS,
                                  "default": DEFAULT_COMMAND_TIMEOUT_MS},
                }, ["deviceId", "command"], act),
            names.CREATE_SCHEDULE: {
                "name": names.CREATE_SCHEDULE,
                "title": "Schedule an action",
                "description": "Do something later or again and again: a device command, a scene, words on a "
                               f"speaker or an alarm. Times are local to the site ({self._ctx.schedules.zone}).",
                "inputSchema": request_schema(),
                "annotations": {**act, "title": "Schedule an action"},
            },
            names.DELETE_SCHEDULE: _tool(
                names.DELETE_SCHEDULE, "Delete a schedule", "Delete a schedule by id (list_schedules shows them).",
                {"scheduleId": {"type": "string"}}, ["scheduleId"], {**act, "destructiveHint": True,
                                                                     "idempotentHint": True}),
        }
        if scenes:
            tools[names.RUN_SCENE] = _tool(
                names.RUN_SCENE, "Run a scene",
                "Run a scene (a list of device commands) and report each step. Scenes: "
                + "; ".join(f"{s} ({scene_names[s]})" for s in scenes) + ".",
                {"sceneId": {"type": "string", "enum": scenes}}, ["sceneId"], act)
        return tools

    # ------------------------------------------------------------------ reading

    async def _list_devices(self, args: dict[str, Any], caller: Caller) -> dict[str, Any]:
        _known(args, {"product", "status", "search", "includeState", "limit", "cursor"})
        registry = self._ctx.registry
        product = _optional_text(args, "product")
        if product is not None and product not in registry.catalog:
            known = ", ".join(sorted(registry.catalog.products))
            raise ToolFailed(f"there is no product {product!r} (products: {known})")
        status = _optional_text(args, "status")
        if status not in (None, "online", "offline"):
            raise ToolFailed("status must be online or offline")
        search = _optional_text(args, "search")
        include_state = _optional_bool(args, "includeState", False)
        limit = _int_arg(args, "limit", 50, 1, MAX_DEVICES_PAGE)
        cursor = _optional_text(args, "cursor")
        online = None if status is None else status == "online"
        devices = sorted(registry.devices(product_id=product, online=online), key=lambda d: d.device_id)
        if search:
            needle = search.lower()
            devices = [d for d in devices if needle in d.device_id.lower()]
        if cursor is not None:
            devices = [d for d in devices if d.device_id > cursor]
        page = devices[:limit]
        out: dict[str, Any] = {"devices": [_device_json(d, include_state) for d in page], "total": len(devices)}
        if len(devices) > limit:
            out["nextCursor"] = page[-1].device_id
        return out

    async def _get_state(self, args: dict[str, Any], caller: Caller) -> dict[str, Any]:
        _known(args, {"deviceId", "fields"})
        device = self._device(_text(args, "deviceId"))
        fields = args.get("fields")
        state = dict(device.state)
        if fields is not None:
            if not isinstance(fields, list) or not all(isinstance(f, str) for f in fields):
                raise ToolFailed("fields must be a list of state field names")
            spec = self._ctx.registry.catalog.get(device.product_id)
            known = set(state) | (set(spec.telemetry) if spec is not None else set())
            unknown = [f for f in fields if f not in known]
            if unknown:
                raise ToolFailed(f"{device.device_id} has no field {', '.join(unknown)} (fields: "
                                 f"{', '.join(sorted(known)) or 'none reported yet'})")
            state = {f: state.get(f) for f in fields}
        return {**_device_json(device, False), "state": state}

    async def _get_events(self, args: dict[str, Any], caller: Caller) -> dict[str, Any]:
        _known(args, {"deviceId", "since", "event", "levels", "limit", "cursor"})
        device_id = _optional_text(args, "deviceId")
        if device_id is not None:
            self._device(device_id)
        since_ms = None
        since = _optional_text(args, "since")
        if since is not None:
            try:
                moment = datetime.fromisoformat(since.replace("Z", "+00:00"))
            except ValueError:
                raise ToolFailed(f"since must be an ISO 8601 date-time like 2026-12-08T07:00:00Z, not "
                                 f"{since!r}") from None
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=self._ctx.schedules.zone)
            since_ms = int(moment.timestamp() * 1000)
        event = _optional_text(args, "event")
        levels_arg = args.get("levels")
        levels = None
        if levels_arg is not None:
            if not isinstance(levels_arg, list) or not all(level in EVENT_TYPES for level in levels_arg):
                raise ToolFailed(f"levels must be a list of {', '.join(EVENT_TYPES)}")
            levels = frozenset(levels_arg)
        limit = _int_arg(args, "limit", 20, 1, MAX_EVENTS_PAGE)
        cursor = _optional_text(args, "cursor")
        before = None
        if cursor is not None:
            if not cursor.isdigit():
                raise ToolFailed("cursor must be the nextCursor of a previous page")
            before = int(cursor)
        events = await self._ctx.store.query_events(device_id, limit=limit, before=before, event=event,
                                                    since_ms=since_ms, levels=levels)
        out: dict[str, Any] = {"events": [
            {"id": e.id, "deviceId": e.device_id, "event": e.event, "level": e.level, "ts": iso_ms(e.ts_ms),
             "data": e.data} for e in events]}
        if len(events) == limit:
            out["nextCursor"] = str(events[-1].id)
        return out

    async def _list_schedules(self, args: dict[str, Any], caller: Caller) -> dict[str, Any]:
        _known(args, {"limit", "cursor"})
        service = self._ctx.schedules.service()
        limit = _int_arg(args, "limit", 50, 1, MAX_SCHEDULES_PAGE)
        cursor = _optional_text(args, "cursor")
        schedules = service.schedules()
        if cursor is not None:
            ids = [s.schedule_id for s in schedules]
            if cursor not in ids:
                raise ToolFailed(f"cursor {cursor!r} is not a schedule any more; list again from the start")
            schedules = schedules[ids.index(cursor) + 1:]
        page = schedules[:limit]
        out: dict[str, Any] = {"schedules": [service.to_json(s) for s in page], "total": service.count}
        if len(schedules) > limit:
            out["nextCursor"] = page[-1].schedule_id
        return out

    # ------------------------------------------------------------------ acting

    async def _send_command(self, args: dict[str, Any], caller: Caller) -> dict[str, Any]:
        _known(args, {"deviceId", "command", "params", "timeoutMs"})
        device = self._device(_text(args, "deviceId"))
        command = _text(args, "command")
        params = args.get("params") or {}
        if not isinstance(params, dict):
            raise ToolFailed("params must be an object of the command's parameters")
        timeout_ms = _int_arg(args, "timeoutMs", DEFAULT_COMMAND_TIMEOUT_MS, MIN_TIMEOUT_MS, MAX_MCP_TIMEOUT_MS)
        try:
            answer = await self._ctx.commands.send(device.device_id, command, params, timeout_ms,
                                                   origin=Origin("mcp", client=caller.name).to_json())
        except InvalidInput as exc:
            raise ToolFailed(f"{device.device_id} cannot do that: {exc.message}", {"details": exc.details}) from None
        except DeviceOffline:
            raise ToolFailed(f"{device.device_id} is offline, so it cannot {command} now") from None
        except CommandTimeout as exc:
            raise ToolFailed(f"{device.device_id} did not answer within {timeout_ms} ms (the command was sent; "
                             f"requestId {exc.request_id})") from None
        except CoreError as exc:
            raise ToolFailed(exc.message) from None
        result = answer.to_json()
        if not answer.ok:
            raise ToolFailed(f"{device.device_id} refused {command}: {answer.msg or f'error code {answer.code}'}",
                             result)
        return result

    async def _run_scene(self, args: dict[str, Any], caller: Caller) -> dict[str, Any]:
        _known(args, {"sceneId"})
        scene_id = _text(args, "sceneId")
        scene = self._ctx.rooms.scene(scene_id) if self._ctx.rooms is not None else None
        if scene is None:
            raise ToolFailed(f"there is no scene {scene_id!r}")
        outcome = await SceneRunner(self._ctx.commands, DEFAULT_COMMAND_TIMEOUT_MS).run(
            scene, Origin("mcp", client=caller.name).to_json())
        if not outcome.ok:
            raise ToolFailed(f"{outcome.failed} of {len(outcome.steps)} steps of {scene.name!r} failed",
                             outcome.to_json())
        return outcome.to_json()

    async def _create_schedule(self, args: dict[str, Any], caller: Caller) -> dict[str, Any]:
        service = self._ctx.schedules.service()
        try:
            schedule = await service.create(args, Origin("mcp", client=caller.name))
        except InvalidInput as exc:
            raise ToolFailed(f"cannot schedule that: {exc.message}", {"details": exc.details}) from None
        except Conflict as exc:
            raise ToolFailed(exc.message) from None
        return service.to_json(schedule)

    async def _delete_schedule(self, args: dict[str, Any], caller: Caller) -> dict[str, Any]:
        _known(args, {"scheduleId"})
        schedule_id = _text(args, "scheduleId")
        if not await self._ctx.schedules.service().delete(schedule_id):
            raise ToolFailed(f"there is no schedule {schedule_id!r} (a one-off schedule is gone once it ran)")
        return {"deleted": True, "id": schedule_id}

    def _device(self, device_id: str) -> Device:
        device = self._ctx.registry.get(device_id)
        if device is None:
            raise ToolFailed(f"there is no device {device_id!r}; list_devices shows the devices")
        return device


# ----------------------------------------------------------------------------- schemas


def _tool(name: str, title: str, description: str, properties: dict[str, Any], required: list[str],
          annotations: dict[str, Any]) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "properties": properties, "additionalProperties": False}
    if required:
        schema["required"] = required
    return {"name": name, "title": title, "description": description, "inputSchema": schema,
            "annotations": {**annotations, "title": title}}


def _paging(maximum: int, default: int) -> dict[str, Any]:
    return {"limit": {"type": "integer", "minimum": 1, "maximum": maximum, "default": default},
            "cursor": {"type": "string", "description": "nextCursor of the previous page."}}


def field_schema(spec: FieldSpec) -> dict[str, Any]:
    """A DeviceSpec field as JSON Schema: type, enum, range, unit and description."""
    schema: dict[str, Any] = {}
    if spec.type != "enum":
        schema["type"] = _JSON_TYPES.get(spec.type, "string")
    elif spec.enum is not None and all(isinstance(v, str) for v in spec.enum):
        schema["type"] = "string"
    if spec.enum is not None:
        schema["enum"] = list(spec.enum)
    if spec.min is not None:
        schema["minimum"] = spec.min
    if spec.max is not None:
        schema["maximum"] = spec.max
    words = [spec.description] if spec.description else []
    if spec.unit:
        words.append(f"unit: {spec.unit}")
    if words:
        schema["description"] = "; ".join(words)
    return schema


def _params_schema(products: list[ProductSpec]) -> dict[str, Any]:
    """Every parameter any command takes, typed from the DeviceSpecs; which command takes which is
    in send_command's description, and the gateway checks the exact set for the device."""
    by_name: dict[str, list[dict[str, Any]]] = {}
    for product in products:
        for command in product.commands.values():
            for param in command.params.values():
                schema = field_schema(param)
                if schema not in by_name.setdefault(param.name, []):
                    by_name[param.name].append(schema)
    properties = {name: options[0] if len(options) == 1 else {"anyOf": options}
                  for name, options in sorted(by_name.items())}
    return {"type": "object", "properties": properties, "additionalProperties": False,
            "description": "The command's parameters (see the command list)."}


def _command_lines(product: ProductSpec) -> list[str]:
    lines = []
    for command in product.commands.values():
        params = ", ".join(_param_text(p) for p in command.params.values())
        lines.append(f"- {product.product_id}.{command.name}({params}): {command.description}")
    return lines


def _param_text(param: FieldSpec) -> str:
    text = f"{param.name}: {_JSON_TYPES.get(param.type, param.type)}"
    if param.enum is not None:
        text += " " + "|".join(str(v) for v in param.enum)
    if param.min is not None and param.max is not None:
        text += f" {_num(param.min)}..{_num(param.max)}"
    if param.unit:
        text += f" {param.unit}"
    return text + (" required" if param.required else "")


def _telemetry_line(product: ProductSpec) -> str:
    fields = ", ".join(f"{f.name}{' (' + f.unit + ')' if f.unit else ''}" for f in product.telemetry.values())
    return f"- {product.product_id}: {fields or 'none declared'}"


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


# ----------------------------------------------------------------------------- results and arguments


def _device_json(device: Device, include_state: bool) -> dict[str, Any]:
    out: dict[str, Any] = {"deviceId": device.device_id, "productId": device.product_id, "online": device.online,
                           "lastSeen": iso_ms(device.last_seen_ms)}
    if include_state:
        out["state"] = dict(device.state)
    return out


def _known(args: dict[str, Any], allowed: set[str]) -> None:
    extra = sorted(set(args) - allowed)
    if extra:
        raise ToolFailed(f"unknown argument(s) {', '.join(extra)} (arguments: {', '.join(sorted(allowed))})")


def _text(args: dict[str, Any], name: str) -> str:
    value = args.get(name)
    if not isinstance(value, str) or not value:
        raise ToolFailed(f"{name} is required and must be a non-empty string")
    return value


def _optional_text(args: dict[str, Any], name: str) -> str | None:
    value = args.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise ToolFailed(f"{name} must be a non-empty string")
    return value


def _optional_bool(args: dict[str, Any], name: str, default: bool) -> bool:
    value = args.get(name, default)
    if not isinstance(value, bool):
        raise ToolFailed(f"{name} must be true or false")
    return value


def _int_arg(args: dict[str, Any], name: str, default: int, low: int, high: int) -> int:
    value = args.get(name, default)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ToolFailed(f"{name} must be an integer from {low} to {high}")
    return value
