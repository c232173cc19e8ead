"""Speakers, rooms and scenes: who may see and control what (the voice platform's rooms file).

An installer describes each room once (its devices with the names guests say, its scenes) and
binds each speaker (`voice_id` + brand `code`) to a room. Every problem is reported with the
file and the path inside it, like DeviceSpec problems, so a wrong file stops the daemon at start
instead of misbehaving in front of a guest.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from deviceagentd.config import ConfigError, ConfigProblem
from deviceagentd.core.catalog import Catalog
from deviceagentd.core.values import check_params

SCENE_PREFIX = "SCENE#"
INDUSTRY_TYPES = ("hotel",)


@dataclass(frozen=True)
class RoomDevice:
    device_id: str
    product_id: str
    name: str
    aliases: tuple[str, ...] = ()
    # Where in the room ("bedroom", "bathroom"); None = not given (Tuya sends null then).
    position: str | None = None


@dataclass(frozen=True)
class SceneStep:
    device_id: str
    command: str
    params: dict[str, Any]


@dataclass(frozen=True)
class Scene:
    scene_id: str  # with the SCENE# prefix, as speakers send it back
    name: str
    steps: tuple[SceneStep, ...]
    # Run every step at once instead of one after the other.
    parallel: bool = False


@dataclass(frozen=True)
class Room:
    room_id: str
    name: str
    devices: dict[str, RoomDevice]
    scenes: dict[str, Scene]
    # The Device-Id of each speaker in the room that connects to the voice WebSocket (/ws/voice),
    # in order of preference: spoken reminders and alarms for the room play on the first one
    # connected.
    voice_device_ids: tuple[str, ...] = ()


@dataclass(frozen=True)
class Speaker:
    voice_id: str
    code: str
    industry_type: str
    room_id: str


@dataclass(frozen=True)
class Rooms:
    rooms: dict[str, Room] = field(default_factory=dict)
    speakers: dict[str, Speaker] = field(default_factory=dict)

    def room_of(self, speaker: Speaker) -> Room:
        return self.rooms[speaker.room_id]

    def known_device(self, device_id: str) -> bool:
        return any(device_id in room.devices for room in self.rooms.values())

    def known_scene(self, scene_id: str) -> bool:
        return any(scene_id in room.scenes for room in self.rooms.values())

    def scene(self, scene_id: str) -> Scene | None:
        """A scene by id, with or without the SCENE# prefix."""
        wanted = scene_id if scene_id.startswith(SCENE_PREFIX) else SCENE_PREFIX + scene_id
        return next((room.scenes[wanted] for room in self.rooms.values() if wanted in room.scenes), None)

    def room_of_voice_device(self, device_id: str) -> Room | None:
        return next((room for room in self.rooms.values() if device_id in room.voice_device_ids), None)


@dataclass
class _Reader:
    """Collects every problem of the file in one pass."""

    source: str
    problems: list[ConfigProblem] = field(default_factory=list)

    def fail(self, path: str, message: str) -> None:
        self.problems.append(ConfigProblem(f"{self.source}: {path}", message))

    def tables(self, value: Any, path: str) -> list[dict[str, Any]]:
        if value is None:
            return []
        if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
            self.fail(path, "must be an array of tables ([[...]])")
            return []
        return value

    def only(self, table: Mapping[str, Any], allowed: tuple[str, ...], path: str) -> None:
        for key in table:
            if key not in allowed:
                self.fail(f"{path}.{key}", f"unknown key (allowed: {', '.join(allowed)})")

    def text(self, table: Mapping[str, Any], key: str, path: str, required: bool = True) -> str:
        value = table.get(key)
        if value is None:
            if required:
                self.fail(f"{path}.{key}", "is required")
            return ""
        if not isinstance(value, str) or not value.strip():
            self.fail(f"{path}.{key}", "must be a non-empty string")
            return ""
        return value

    def texts(self, table: Mapping[str, Any], key: str, path: str) -> tuple[str, ...]:
        value = table.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
            self.fail(f"{path}.{key}", "must be a list of non-empty strings")
            return ()
        return tuple(value)


def load_rooms(path: Path, catalog: Catalog, voice_products: frozenset[str]) -> Rooms:
    """Read and check the rooms file; raise ConfigError listing every problem.

    `voice_products` are the products whose DeviceSpec has a valid `voice` section: a device
    of any other product cannot be offered to a speaker.
    """
    source = str(path)
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except OSError as exc:
        raise ConfigError([ConfigProblem("voiceplatform.rooms_file", f"cannot read {path}: {exc.strerror}")]) from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([ConfigProblem("voiceplatform.rooms_file", f"{path} is not valid TOML: {exc}")]) from exc
    reader = _Reader(source)
    rooms = parse_rooms(data, catalog, voice_products, reader)
    if reader.problems:
        raise ConfigError(reader.problems)
    return rooms


def parse_rooms(data: Mapping[str, Any], catalog: Catalog, voice_products: frozenset[str], reader: _Reader) -> Rooms:
    reader.only(data, ("rooms", "speakers"), "$")
    rooms: dict[str, Room] = {}
    scene_ids: set[str] = set()
    voice_devices: dict[str, str] = {}
    for index, raw in enumerate(reader.tables(data.get("rooms"), "rooms")):
        path = f"rooms[{index}]"
        room = _room(raw, path, catalog, voice_products, reader, scene_ids)
        if room is None:
            continue
        if room.room_id in rooms:
            reader.fail(f"{path}.id", f"room {room.room_id!r} is defined twice")
            continue
        for device_id in room.voice_device_ids:
            if device_id in voice_devices:
                # A speaker is in one room: where would "wake me up" from it play otherwise?
                reader.fail(f"{path}.voice_device_ids", f"speaker {device_id!r} is already in room "
                                                        f"{voice_devices[device_id]!r}")
            voice_devices.setdefault(device_id, room.room_id)
        rooms[room.room_id] = room
    speakers: dict[str, Speaker] = {}
    for index, raw in enumerate(reader.tables(data.get("speakers"), "speakers")):
        path = f"speakers[{index}]"
        reader.only(raw, ("voice_id", "code", "industry_type", "room"), path)
        voice_id = reader.text(raw, "voice_id", path)
        code = reader.text(raw, "code", path)
        industry_type = raw.get("industry_type", "hotel")
        if industry_type not in INDUSTRY_TYPES:
            reader.fail(f"{path}.industry_type", f"must be one of {', '.join(INDUSTRY_TYPES)}")
        room_id = reader.text(raw, "room", path)
        if room_id and room_id not in rooms:
            reader.fail(f"{path}.room", f"no room {room_id!r} in this file (rooms: {', '.join(rooms) or 'none'})")
        if voice_id in speakers:
            reader.fail(f"{path}.voice_id", f"speaker {voice_id!r} is defined twice")
        elif voice_id and code and room_id:
            speakers[voice_id] = Speaker(voice_id, code, str(industry_type), room_id)
    return Rooms(rooms, speakers)


def _room(raw: dict[str, Any], path: str, catalog: Catalog, voice_products: frozenset[str], reader: _Reader,
          scene_ids: set[str]) -> Room | None:
    reader.only(raw, ("id", "name", "devices", "scenes", "voice_device_ids"), path)
    room_id = reader.text(raw, "id", path)
    name = reader.text(raw, "name", path, required=False) or room_id
    voice_device_ids = reader.texts(raw, "voice_device_ids", path)
    if len(set(voice_device_ids)) != len(voice_device_ids):
        reader.fail(f"{path}.voice_device_ids", "lists a speaker twice")
    devices: dict[str, RoomDevice] = {}
    for index, entry in enumerate(reader.tables(raw.get("devices"), f"{path}.devices")):
        device = _device(entry, f"{path}.devices[{index}]", catalog, voice_products, reader)
        if device is None:
            continue
        if device.device_id in devices:
            reader.fail(f"{path}.devices[{index}].device_id", f"device {device.device_id!r} is listed twice")
            continue
        devices[device.device_id] = device
    scenes: dict[str, Scene] = {}
    for index, entry in enumerate(reader.tables(raw.get("scenes"), f"{path}.scenes")):
        scene = _scene(entry, f"{path}.scenes[{index}]", devices, catalog, reader)
        if scene is None:
            continue
        if scene.scene_id in scene_ids:
            # Speakers send only the scene id back, so it must name one scene on the gateway.
            reader.fail(f"{path}.scenes[{index}].id", f"scene id {scene.scene_id!r} is already used")
            continue
        scene_ids.add(scene.scene_id)
        scenes[scene.scene_id] = scene
    if not room_id:
        return None
    return Room(room_id, name, devices, scenes, tuple(dict.fromkeys(voice_device_ids)))


def _device(raw: dict[str, Any], path: str, catalog: Catalog, voice_products: frozenset[str],
            reader: _Reader) -> RoomDevice | None:
    reader.only(raw, ("device_id", "product", "name", "aliases", "position"), path)
    device_id = reader.text(raw, "device_id", path)
    product_id = reader.text(raw, "product", path)
    name = reader.text(raw, "name", path)
    aliases = reader.texts(raw, "aliases", path)
    position = reader.text(raw, "position", path, required=False) or None
    if product_id and product_id not in catalog:
        reader.fail(f"{path}.product", f"unknown product {product_id!r} (known: {', '.join(catalog.products)})")
        return None
    if product_id and product_id not in voice_products:
        reader.fail(f"{path}.product", f"product {product_id!r} has no voice section, so speakers cannot use it")
        return None
    if not (device_id and product_id and name):
        return None
    return RoomDevice(device_id, product_id, name, aliases, position)


def _scene(raw: dict[str, Any], path: str, devices: Mapping[str, RoomDevice], catalog: Catalog,
           reader: _Reader) -> Scene | None:
    reader.only(raw, ("id", "name", "parallel", "steps"), path)
    scene_id = reader.text(raw, "id", path)
    name = reader.text(raw, "name", path)
    parallel = raw.get("parallel", False)
    if not isinstance(parallel, bool):
        reader.fail(f"{path}.parallel", "must be true or false")
        parallel = False
    steps: list[SceneStep] = []
    raw_steps = reader.tables(raw.get("steps"), f"{path}.steps")
    if not raw_steps:
        reader.fail(f"{path}.steps", "a scene needs at least one step")
    for index, entry in enumerate(raw_steps):
        step_path = f"{path}.steps[{index}]"
        reader.only(entry, ("device_id", "command", "params"), step_path)
        device_id = reader.text(entry, "device_id", step_path)
        command = reader.text(entry, "command", step_path)
        params = entry.get("params", {})
        if not isinstance(params, dict):
            reader.fail(f"{step_path}.params", "must be a table")
            continue
        if not (device_id and command):
            continue
        device = devices.get(device_id)
        if device is None:
            reader.fail(f"{step_path}.device_id", f"device {device_id!r} is not one of this room's devices")
            continue
        spec = catalog.get(device.product_id)
        command_spec = spec.commands.get(command) if spec else None
        if spec is None or command_spec is None:
            known = ", ".join(spec.commands) if spec else "none"
            reader.fail(f"{step_path}.command", f"{command!r} is not a command of {device.product_id} (known: {known})")
            continue
        for problem in check_params(command_spec, params):
            reader.fail(f"{step_path}.{problem.field}", problem.reason)
        steps.append(SceneStep(device_id, command, dict(params)))
    if not (scene_id and name):
        return None
    bare = scene_id.removeprefix(SCENE_PREFIX)
    return Scene(SCENE_PREFIX + bare, name, tuple(steps), parallel)
