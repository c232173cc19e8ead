"""What a simulated device knows and does, without MQTT: its state, how a command changes it,
and the payloads it sends (SPEC §2). Kept apart from the network so it is unit-tested alone.

The simulator has no per-product code. A command changes the state by these rules, in order:

1. Named commands without parameters (table `NAMED_COMMANDS`): `turn_on`/`turn_off` set the
   first boolean power field (`power`, `on`, `switch`, `powerstate`); `open`/`close` move the
   first position field (`position`, `percent`, `percentage`, `open_percent`) to its max/min
   (100/0 when the spec gives no range) and set a motion field (`motion`, `movement`) to
   `stopped`; `pause`/`stop` set the motion field to `stopped`. A rule is skipped when the
   product has no such field or the value does not fit the field.
2. A parameter whose name is a telemetry field sets that field.
3. `set_<field>` with exactly one parameter that is not itself a field (the EMQX example style
   `set_target_temperature {value}`) sets `<field>`.

Commands move the device at once: a real curtain takes seconds, a test wants the new state in
the answer.
"""

from __future__ import annotations

import random
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from deviceagentd.core.spec import CommandSpec, FieldSpec, ProductSpec
from deviceagentd.core.values import FieldError, check_params, check_value
from deviceagentd.mqtt.codec import Encoding

POWER_FIELDS = ("power", "on", "switch", "powerstate")
POSITION_FIELDS = ("position", "percent", "percentage", "open_percent")
MOTION_FIELDS = ("motion", "movement")
# Fields the EMQX simulator sets true while connected (reference/emqx-device-agent.md §3.6).
CONNECTION_FIELDS = ("online", "connected")

TOP = "<max>"  # stands for the field's max (100 without one)
BOTTOM = "<min>"  # stands for the field's min (0 without one)


@dataclass(frozen=True)
class Effect:
    """Set the first of `fields` that the product has, and that accepts `value`, to `value`."""

    fields: tuple[str, ...]
    value: Any


NAMED_COMMANDS: dict[str, tuple[Effect, ...]] = {
    "turn_on": (Effect(POWER_FIELDS, True),),
    "power_on": (Effect(POWER_FIELDS, True),),
    "turn_off": (Effect(POWER_FIELDS, False),),
    "power_off": (Effect(POWER_FIELDS, False),),
    "open": (Effect(POSITION_FIELDS, TOP), Effect(MOTION_FIELDS, "stopped")),
    "close": (Effect(POSITION_FIELDS, BOTTOM), Effect(MOTION_FIELDS, "stopped")),
    "pause": (Effect(MOTION_FIELDS, "stopped"),),
    "stop": (Effect(MOTION_FIELDS, "stopped"),),
}

# How many answers are kept to re-send for a repeated requestId (SPEC §2, EMQX demo advice).
ANSWER_CACHE_SIZE = 256


@dataclass(frozen=True)
class ReceivedCommand:
    """One command message as it arrived; `request_id` is never empty."""

    cmd: Any
    params: Any
    request_id: Any
    ts: Any
    encoding: Encoding


@dataclass(frozen=True)
class Reply:
    code: int
    msg: str
    data: dict[str, Any] | None = None


def zero_value(spec: FieldSpec) -> Any:
    """The value a field has when the spec gives no defaultValue (EMQX simulator convention)."""
    if spec.enum:
        return spec.enum[0]
    if spec.type in ("int", "float"):
        low = spec.min if spec.min is not None else 0
        high = spec.max if spec.max is not None else low
        value = min(max(0, low), high)
        return int(value) if spec.type == "int" else value
    return {"bool": False, "string": "", "object": {}, "array": []}.get(spec.type)


def initial_state(spec: ProductSpec) -> dict[str, Any]:
    return {
        name: field.default if field.default is not None else zero_value(field)
        for name, field in spec.telemetry.items()
    }


def settable_fields(spec: ProductSpec) -> set[str]:
    """Fields some command can set; the simulator never lets them drift on their own."""
    names: set[str] = set()
    for command in spec.commands.values():
        names.update(command.params)
        if command.name.startswith("set_"):
            names.add(command.name[len("set_") :])
        for effect in NAMED_COMMANDS.get(command.name, ()):
            names.update(effect.fields)
    return names & set(spec.telemetry)


def normalise(spec: FieldSpec, value: Any) -> Any:
    # 24.0 passes an int check (JSON has one number type); keep the state an int.
    if spec.type == "int" and isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def describe_errors(errors: list[FieldError]) -> str:
    return "; ".join(f"{e.field} {e.reason}" for e in errors)


class DeviceModel:
    """State and command logic of one simulated device."""

    def __init__(self, spec: ProductSpec, rng: random.Random, source: str = "simulator") -> None:
        self.spec = spec
        self.rng = rng
        self.source = source
        self.state: dict[str, Any] = initial_state(spec)
        self._answers: OrderedDict[str, dict[str, Any]] = OrderedDict()

    # --- payloads -------------------------------------------------------------------------

    def metadata(self) -> dict[str, Any]:
        return {"productId": self.spec.product_id, "source": self.source}

    def status_payload(self, status: str, with_state: bool = True) -> dict[str, Any]:
        data: dict[str, Any] = {"status": status}
        if with_state:
            data["state"] = dict(self.state)
        return {"type": "status", "data": data, "metadata": self.metadata()}

    def state_payload(self) -> dict[str, Any]:
        return {"type": "state", "data": dict(self.state), "metadata": self.metadata()}

    def event_payload(self, name: str, fields: dict[str, Any]) -> dict[str, Any]:
        data: dict[str, Any] = {"event": name, **fields}
        event = self.spec.events.get(name)
        # The spec's eventType is the level unless the caller chose one (SPEC §2 Events).
        if event is not None and "level" not in data:
            data["level"] = event.event_type
        return {"type": "event", "data": data, "metadata": self.metadata()}

    def response_payload(self, request_id: Any, reply: Reply) -> dict[str, Any]:
        out: dict[str, Any] = {"code": reply.code, "msg": reply.msg, "requestId": request_id}
        if reply.data is not None:
            out["data"] = reply.data
        out["metadata"] = self.metadata()
        return out

    # --- commands ---------------------------------------------------------------------------

    @staticmethod
    def read_command(message: dict[str, Any], encoding: Encoding) -> ReceivedCommand | str:
        """The command in a decoded message, or why it is ignored (no requestId to answer to)."""
        request_id = message.get("requestId")
        if request_id is None or request_id == "" or isinstance(request_id, dict | list | bool):
            return "has no requestId, so it cannot be answered"
        return ReceivedCommand(
            cmd=message.get("cmd"),
            params=message.get("params"),
            request_id=request_id,
            ts=message.get("ts"),
            encoding=encoding,
        )

    def cached_answer(self, request_id: Any) -> dict[str, Any] | None:
        return self._answers.get(str(request_id))

    def execute(self, command: ReceivedCommand) -> dict[str, Any]:
        """Check, apply and answer a command; the answer is kept for a repeated requestId."""
        reply = self.run(command.cmd, command.params)
        answer = self.response_payload(command.request_id, reply)
        key = str(command.request_id)
        self._answers[key] = answer
        self._answers.move_to_end(key)
        while len(self._answers) > ANSWER_CACHE_SIZE:
            self._answers.popitem(last=False)
        return answer

    def run(self, cmd: Any, params: Any) -> Reply:
        if not isinstance(cmd, str) or not cmd:
            return Reply(400, "cmd must be a non-empty string")
        command = self.spec.commands.get(cmd)
        if command is None:
            return Reply(404, f"Unknown command: {cmd}")
        errors = check_params(command, params)
        if errors:
            return Reply(400, describe_errors(errors))
        return Reply(0, "ok", self.apply(command, params or {}))

    def apply(self, command: CommandSpec, params: dict[str, Any]) -> dict[str, Any]:
        """Change the state for a valid command; returns the fields it set (the answer's data)."""
        applied: dict[str, Any] = {}
        for effect in NAMED_COMMANDS.get(command.name, ()):
            target = self._effect_target(effect)
            if target is not None:
                applied[target[0]] = target[1]
        implied = command.name[len("set_") :] if command.name.startswith("set_") else ""
        for name, value in params.items():
            field_name = name
            if name not in self.spec.telemetry and len(params) == 1 and implied in self.spec.telemetry:
                field_name = implied
            field = self.spec.telemetry.get(field_name)
            if field is not None and check_value(field, value) is None:
                applied[field_name] = normalise(field, value)
        self.state.update(applied)
        return applied

    def _effect_target(self, effect: Effect) -> tuple[str, Any] | None:
        for name in effect.fields:
            field = self.spec.telemetry.get(name)
            if field is None:
                continue
            value = effect.value
            if value == TOP:
                value = field.max if field.max is not None else 100
            elif value == BOTTOM:
                value = field.min if field.min is not None else 0
            value = normalise(field, value)
            if check_value(field, value) is None:
                return name, value
        return None

    # --- state ------------------------------------------------------------------------------

    def update_state(self, fields: dict[str, Any]) -> list[str]:
        """Set fields as given (a test may want wrong ones); returns what the spec would reject."""
        problems: list[str] = []
        for name, value in fields.items():
            field = self.spec.telemetry.get(name)
            if field is None:
                problems.append(f"{name} is not a telemetry field of {self.spec.product_id}")
                continue
            reason = check_value(field, value)
            if reason:
                problems.append(f"{name} {reason}")
            else:
                value = normalise(field, value)
            self.state[name] = value
        return problems

    def set_connected(self, connected: bool) -> None:
        for name in CONNECTION_FIELDS:
            field = self.spec.telemetry.get(name)
            if field is not None and field.type == "bool":
                self.state[name] = connected

    def drift(self) -> dict[str, Any]:
        """Move read-only numeric readings a little, as sensors do; returns what changed."""
        changed: dict[str, Any] = {}
        settable = settable_fields(self.spec)
        for name, field in self.spec.telemetry.items():
            value = self.state.get(name)
            if (
                name in settable
                or field.type not in ("int", "float")
                or field.enum is not None
                or isinstance(value, bool)
                or not isinstance(value, int | float)
            ):
                continue
            if field.type == "int":
                new: float = value + self.rng.choice((-1, 0, 1))
            else:
                span = (field.max - field.min) if field.min is not None and field.max is not None else 100
                step = span * 0.005
                new = round(value + self.rng.uniform(-step, step), 1)
            if field.min is not None:
                new = max(new, field.min)
            if field.max is not None:
                new = min(new, field.max)
            new_value = int(new) if field.type == "int" else new
            if new_value != value:
                self.state[name] = new_value
                changed[name] = new_value
        return changed

    # --- events -----------------------------------------------------------------------------

    def event_fields(self, name: str, given: dict[str, Any] | None = None) -> dict[str, Any]:
        """`given` completed with a value for every missing output field of the spec's event:
        the current state when it has a fitting field of that name, else a sample value."""
        fields = dict(given or {})
        event = self.spec.events.get(name)
        if event is None:
            return fields
        for out_name, out in event.output.items():
            if out_name in fields:
                continue
            current = self.state.get(out_name)
            if out_name in self.state and check_value(out, current) is None:
                fields[out_name] = current
            else:
                fields[out_name] = self.sample_value(out)
        return fields

    def random_event(self) -> tuple[str, dict[str, Any]] | None:
        if not self.spec.events:
            return None
        name = self.rng.choice(sorted(self.spec.events))
        return name, self.event_fields(name)

    def sample_value(self, field: FieldSpec) -> Any:
        if field.enum:
            return self.rng.choice(field.enum)
        if field.type in ("int", "float") and field.min is not None and field.max is not None:
            if field.type == "int":
                return self.rng.randint(int(field.min), int(field.max))
            return round(self.rng.uniform(field.min, field.max), 1)
        if field.type == "bool":
            return self.rng.random() < 0.5
        if field.type == "string":
            return f"simulated {field.name}"
        return zero_value(field)
