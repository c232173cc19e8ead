"""The agent's tools, built from the DeviceSpecs and the live registry.

Commands go through CommandService.send, the same validated path as the HTTP command route,
so the agent cannot send anything the spec does not declare. Every failure comes back as a
ToolResult with a sentence a person understands, never as an exception.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from deviceagentd.agent.types import ToolCall, ToolFailure, ToolResult, ToolSpec, TurnContext
from deviceagentd.core.clock import Clock, iso_ms
from deviceagentd.core.commands import CommandService
from deviceagentd.core.errors import (
    BrokerUnavailable,
    CommandTimeout,
    Conflict,
    CoreError,
    DeviceOffline,
    InvalidInput,
    NotFound,
)
from deviceagentd.core.events import event_to_json
from deviceagentd.core.origin import Origin
from deviceagentd.core.registry import Device, DeviceRegistry
from deviceagentd.store.records import EventRecord

if TYPE_CHECKING:
    from deviceagentd.agent.schedule_tools import ScheduleTools
    from deviceagentd.schedules.lazy import LazySchedules

LIST_DEVICES = "list_devices"
GET_DEVICE_STATE = "get_device_state"
SEND_COMMAND = "send_command"
GET_RECENT_EVENTS = "get_recent_events"
# Timers, alarms and recurring actions (agent/schedule_tools.py).
CREATE_SCHEDULE = "create_schedule"
LIST_SCHEDULES = "list_schedules"
CANCEL_SCHEDULE = "cancel_schedule"
SCHEDULE_TOOLS = (CREATE_SCHEDULE, LIST_SCHEDULES, CANCEL_SCHEDULE)

EVENT_LEVELS = ("info", "alert", "warning", "error")
MAX_EVENTS = 100
# Commands from a conversation should not leave a person waiting as long as an API client may.
AGENT_COMMAND_TIMEOUT_MS = 10_000


class EventReader(Protocol):
    async def query_events(self, device_id: str | None, *, limit: int, before: int | None = None,
                           event: str | None = None, since_ms: int | None = None,
                           levels: frozenset[str] | None = None) -> list[EventRecord]: ...


def device_label(device: Device, registry: DeviceRegistry) -> str:
    """How the agent names a device to a person: "the Thermostat thermostat-001"."""
    spec = registry.catalog.get(device.product_id)
    name = spec.name if spec is not None else device.product_id
    return f"the {name} {device.device_id}"


@dataclass
class DeviceTools:
    registry: DeviceRegistry
    commands: CommandService
    events: EventReader
    clock: Clock
    # Timers, alarms and recurring actions; set by the daemon once the schedule service exists.
    schedules: LazySchedules | None = None
    _scheduling: ScheduleTools | None = field(default=None, init=False, repr=False)

    def specs(self) -> list[ToolSpec]:
        specs = self._device_specs()
        scheduling = self._schedule_tools()
        if scheduling is not None:
            specs.extend(scheduling.specs())
        return specs

    def _schedule_tools(self) -> ScheduleTools | None:
        # Loaded with the first turn, like the offline engine: an idle gateway does not carry it.
        if self.schedules is not None and self._scheduling is None:
            from deviceagentd.agent.schedule_tools import ScheduleTools

            self._scheduling = ScheduleTools(self.schedules)
        return self._scheduling

    def _device_specs(self) -> list[ToolSpec]:
        products = sorted(self.registry.catalog.products)
        command_lines = []
        for spec in self.registry.catalog.products.values():
            for command in spec.commands.values():
                params = ", ".join(
                    f"{p.name}: {p.type}" + (f" {list(p.enum)}" if p.enum else "")
                    + (f" {_fmt(p.min)}..{_fmt(p.max)}" if p.min is not None and p.max is not None else "")
                    + (" (required)" if p.required else "")
                    for p in command.params.values()
                )
                command_lines.append(f"- {spec.product_id}.{command.name}({params}): {command.description}")
        return [
            ToolSpec(
                LIST_DEVICES,
                "List the devices of this site with their product, online status and current state.",
                {
                    "type": "object",
                    "properties": {
                        "product_id": {"type": "string", "enum": products,
                                       "description": "Only devices of this product."},
                        "status": {"type": "string", "enum": ["online", "offline"]},
                    },
                    "additionalProperties": False,
                },
            ),
            ToolSpec(
                GET_DEVICE_STATE,
                "Read one device's current state (its latest reported values) and whether it is online.",
                {
                    "type": "object",
                    "properties": {"device_id": {"type": "string"}},
                    "required": ["device_id"],
                    "additionalProperties": False,
                },
            ),
            ToolSpec(
                SEND_COMMAND,
                "Send a command to a device and wait for its answer. Only these commands exist "
                "(product.command(parameters)):\n" + "\n".join(command_lines),
                {
                    "type": "object",
                    "properties": {
                        "device_id": {"type": "string"},
                        "command": {"type": "string"},
                        "params": {"type": "object", "description": "The command's parameters."},
                    },
                    "required": ["device_id", "command"],
                    "additionalProperties": False,
                },
            ),
            ToolSpec(
                GET_RECENT_EVENTS,
                "Read recent device events (alerts, warnings, online/offline changes), newest first.",
                {
                    "type": "object",
                    "properties": {
                        "device_id": {"type": "string", "description": "One device; omit for all devices."},
                        "since_hours": {"type": "number", "minimum": 0, "description": "Default 24."},
                        "levels": {"type": "array", "items": {"type": "string", "enum": list(EVENT_LEVELS)}},
                        "limit": {"type": "integer", "minimum": 1, "maximum": MAX_EVENTS},
                    },
                    "additionalProperties": False,
                },
            ),
        ]

    async def call(self, call: ToolCall, context: TurnContext) -> ToolResult:
        args = call.arguments if isinstance(call.arguments, dict) else {}
        try:
            if call.name == LIST_DEVICES:
                result = self._list_devices(args)
            elif call.name == GET_DEVICE_STATE:
                result = self._device_state(_device_arg(args, context))
            elif call.name == SEND_COMMAND:
                result = await self._send_command(call, args, context)
            elif call.name == GET_RECENT_EVENTS:
                result = await self._recent_events(args)
            elif call.name in SCHEDULE_TOOLS and (scheduling := self._schedule_tools()) is not None:
                result = await scheduling.call(call.name, args, context)
            else:
                known = ", ".join(spec.name for spec in self.specs())
                return ToolResult(call.id, call.name, False, error=f"there is no tool {call.name!r} (tools: {known})")
        except ToolRefused as exc:
            return ToolResult(call.id, call.name, False, error=exc.words, failure=exc.failure)
        return ToolResult(call.id, call.name, True, result=result)

    # ------------------------------------------------------------------ the tools

    def _list_devices(self, args: dict[str, Any]) -> dict[str, Any]:
        product_id = args.get("product_id")
        status = args.get("status")
        if product_id is not None and product_id not in self.registry.catalog:
            raise ToolRefused(f"there is no product {product_id!r} on this gateway")
        if status not in (None, "online", "offline"):
            raise ToolRefused("status must be online or offline")
        online = None if status is None else status == "online"
        devices = sorted(self.registry.devices(product_id=product_id, online=online), key=lambda d: d.device_id)
        return {"devices": [self._device_json(d) for d in devices]}

    def _device_state(self, device_id: str) -> dict[str, Any]:
        return self._device_json(self._device(device_id))

    async def _send_command(self, call: ToolCall, args: dict[str, Any], context: TurnContext) -> dict[str, Any]:
        device = self._device(_device_arg(args, context))
        command = args.get("command")
        if not isinstance(command, str) or not command:
            raise ToolRefused("a command name is needed")
        params = args.get("params") or {}
        if not isinstance(params, dict):
            raise ToolRefused("the command's parameters must be an object")
        label = device_label(device, self.registry)

        def failure(kind: str, code: int | None = None, detail: str | None = None) -> ToolFailure:
            return ToolFailure(kind, device.device_id, device.product_id, command, code, detail)

        try:
            outcome = await self.commands.send(device.device_id, command, params, AGENT_COMMAND_TIMEOUT_MS,
                                               origin=Origin("agent", context.session_id, context.speaker_id).to_json())
        except CommandTimeout:
            raise ToolRefused(f"{label} did not answer within {AGENT_COMMAND_TIMEOUT_MS // 1000} seconds",
                              failure("timeout", AGENT_COMMAND_TIMEOUT_MS // 1000)) from None
        except DeviceOffline:
            raise ToolRefused(f"{label} is offline, so it cannot {command.replace('_', ' ')} now",
                              failure("device_offline")) from None
        except BrokerUnavailable:
            raise ToolRefused("the gateway has lost its connection to the devices' broker; try again shortly",
                              failure("broker_down")) from None
        except InvalidInput as exc:
            raise ToolRefused(f"{label} cannot do that: {exc.message}",
                              failure("invalid_params", detail=exc.message)) from None
        except (NotFound, Conflict, CoreError) as exc:
            raise ToolRefused(exc.message, failure("other", detail=exc.message)) from None
        if not outcome.ok:
            raise ToolRefused(f"{label} refused {command}: {outcome.msg or f'error code {outcome.code}'}",
                              failure("refused", outcome.code, outcome.msg or None))
        return {"deviceId": device.device_id, "command": command, "params": params, "code": outcome.code,
                "msg": outcome.msg, "data": outcome.data, "state": dict(device.state)}

    async def _recent_events(self, args: dict[str, Any]) -> dict[str, Any]:
        device_id = args.get("device_id")
        if device_id is not None:
            self._device(device_id)
        since_hours = args.get("since_hours", 24)
        if isinstance(since_hours, bool) or not isinstance(since_hours, int | float) or since_hours < 0:
            raise ToolRefused("since_hours must be a positive number")
        levels_arg = args.get("levels")
        levels: frozenset[str] | None = None
        if levels_arg is not None:
            if not isinstance(levels_arg, list) or not all(level in EVENT_LEVELS for level in levels_arg):
                raise ToolRefused(f"levels must be a list of {', '.join(EVENT_LEVELS)}")
            levels = frozenset(levels_arg)
        limit = args.get("limit", 20)
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_EVENTS:
            raise ToolRefused(f"limit must be between 1 and {MAX_EVENTS}")
        since_ms = self.clock.wall_ms() - int(since_hours * 3_600_000)
        events = await self.events.query_events(device_id, limit=limit, since_ms=since_ms, levels=levels)
        return {"events": [event_to_json(e) for e in events]}

    # ------------------------------------------------------------------ helpers

    def _device(self, device_id: str) -> Device:
        device = self.registry.get(device_id)
        if device is None:
            known = ", ".join(sorted(d.device_id for d in self.registry.devices())) or "none yet"
            raise ToolRefused(f"there is no device {device_id!r} (devices: {known})",
                              ToolFailure("no_device", device_id=device_id))
        return device

    def _device_json(self, device: Device) -> dict[str, Any]:
        spec = self.registry.catalog.get(device.product_id)
        return {
            "deviceId": device.device_id,
            "productId": device.product_id,
            "productName": spec.name if spec is not None else device.product_id,
            "online": device.online,
            "state": dict(device.state),
            "lastSeen": iso_ms(device.last_seen_ms),
        }


class ToolRefused(Exception):
    def __init__(self, words: str, failure: ToolFailure | None = None) -> None:
        super().__init__(words)
        self.words = words
        self.failure = failure or ToolFailure("other", detail=words)


def _device_arg(args: dict[str, Any], context: TurnContext) -> str:
    device_id = args.get("device_id") or context.device_id
    if not isinstance(device_id, str) or not device_id:
        raise ToolRefused("which device? name a device id")
    return device_id


def _fmt(value: float | None) -> str:
    if value is None:
        return ""
    return str(int(value)) if float(value).is_integer() else str(value)
