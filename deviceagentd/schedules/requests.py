"""A request to create a schedule (HTTP body, MCP or agent tool arguments) → its parts, checked.

Every problem is an InvalidInput whose details name the field, like the command route's: a time
in the past or more than five years ahead, a local time that does not exist (DST gap), a rule
that never runs, an unknown device, command, scene, room or parameter.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import tzinfo
from typing import TYPE_CHECKING, Any

from deviceagentd.core.commands import CommandService
from deviceagentd.core.errors import InvalidInput, NotFound
from deviceagentd.core.values import FieldError
from deviceagentd.schedules import timing
from deviceagentd.schedules.model import (
    LANGUAGES,
    MAX_ID_CHARS,
    MAX_NAME_CHARS,
    MAX_TEXT_CHARS,
    Action,
    CommandAction,
    SayAction,
    SceneAction,
)
from deviceagentd.schedules.timing import Recurrence, TimingError

if TYPE_CHECKING:
    from deviceagentd.voiceplatform.rooms import Rooms

FIELDS = frozenset({"name", "inSeconds", "at", "repeat", "cron", "action"})
ACTION_FIELDS = {
    "command": frozenset({"type", "deviceId", "command", "params"}),
    "scene": frozenset({"type", "sceneId"}),
    "say": frozenset({"type", "text", "speaker", "room", "language"}),
    "alarm": frozenset({"type", "text", "speaker", "room", "language"}),
}
MAX_IN_SECONDS = timing.MAX_AHEAD_DAYS * 86_400


@dataclass(frozen=True)
class Request:
    name: str
    once_ms: int | None
    recurrence: Recurrence | None
    action: Action


@dataclass(frozen=True)
class Context:
    """What checking a request needs to know about the site and the moment."""

    zone: tzinfo
    now_ms: int
    commands: CommandService
    rooms: Rooms | None
    # The speaker a conversation came from: where a say or alarm without speaker/room plays.
    default_speaker: str | None = None


def parse(body: Mapping[str, Any], context: Context) -> Request:
    """The checked request; raises InvalidInput naming every bad field it found."""
    errors: list[FieldError] = [FieldError(name, "is not a known field") for name in sorted(set(body) - FIELDS)]
    name = body.get("name", "")
    if not isinstance(name, str) or len(name) > MAX_NAME_CHARS or not name.isprintable():
        errors.append(FieldError("name", f"must be printable text of at most {MAX_NAME_CHARS} characters"))
        name = ""
    once_ms, recurrence = _when(body, context, errors)
    action = _action(body.get("action"), context, errors)
    if errors or action is None or (once_ms is None and recurrence is None):
        if not errors:  # pragma: no cover - every None above comes with an error
            errors.append(FieldError("action", "is required"))
        first = errors[0]
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise InvalidInput(f"{first.field} {first.reason}{more}", [e.to_json() for e in errors])
    return Request(name.strip(), once_ms, recurrence, action)


def _when(body: Mapping[str, Any], context: Context, errors: list[FieldError]) -> tuple[int | None, Recurrence | None]:
    given = [key for key in ("inSeconds", "at", "cron") if body.get(key) is not None]
    if len(given) != 1:
        errors.append(FieldError("at", "give exactly one of inSeconds, at or cron" + (
            f" (got {', '.join(given)})" if given else "")))
        return None, None
    repeat = body.get("repeat")
    if repeat is not None and given[0] != "at":
        errors.append(FieldError("repeat", "goes with at (a time of day, HH:MM)"))
        return None, None
    key = given[0]
    value = body[key]
    try:
        if key == "inSeconds":
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_IN_SECONDS:
                errors.append(FieldError("inSeconds", f"must be a whole number of seconds from 1 to {MAX_IN_SECONDS}"))
                return None, None
            return context.now_ms + value * 1000, None
        if not isinstance(value, str) or not value.strip():
            errors.append(FieldError(key, "must be a non-empty string"))
            return None, None
        if key == "cron":
            recurrence = timing.parse_cron(value)
            return None, _runs(recurrence, context, errors, "cron")
        if repeat is not None:
            if not isinstance(repeat, str):
                errors.append(FieldError("repeat", "must be daily, weekdays, weekends or days like \"mon,wed,fri\""))
                return None, None
            return None, _runs(timing.repeating(repeat, value), context, errors, "repeat")
        if ":" in value and "-" not in value and "T" not in value.upper():
            return timing.next_time_of_day(value, context.now_ms, context.zone), None
        at_ms = timing.parse_local(value, context.zone)
    except TimingError as exc:
        errors.append(FieldError(key if key != "at" or repeat is None else "repeat", str(exc)))
        return None, None
    if at_ms <= context.now_ms:
        errors.append(FieldError("at", f"{value} is in the past (now is "
                                       f"{timing.local_iso(context.now_ms, context.zone)})"))
        return None, None
    if at_ms > context.now_ms + MAX_IN_SECONDS * 1000:
        errors.append(FieldError("at", f"must be within {timing.MAX_AHEAD_DAYS} days"))
        return None, None
    return at_ms, None


def _runs(recurrence: Recurrence, context: Context, errors: list[FieldError], key: str) -> Recurrence | None:
    if timing.next_run(recurrence, context.now_ms, context.zone) is None:
        errors.append(FieldError(key, f"never runs (no matching day in the next {timing.HORIZON_YEARS} years)"))
        return None
    return recurrence


def _action(raw: Any, context: Context, errors: list[FieldError]) -> Action | None:
    if not isinstance(raw, Mapping):
        errors.append(FieldError("action", "is required: an object with type command, scene, say or alarm"))
        return None
    kind = raw.get("type")
    if not isinstance(kind, str) or kind not in ACTION_FIELDS:
        errors.append(FieldError("action.type", "must be command, scene, say or alarm"))
        return None
    for name in sorted(set(raw) - ACTION_FIELDS[kind]):
        errors.append(FieldError(f"action.{name}", f"is not a field of a {kind} action"))
    if kind == "command":
        return _command(raw, context, errors)
    if kind == "scene":
        return _scene(raw, context, errors)
    return _say(raw, kind == "alarm", context, errors)


def _command(raw: Mapping[str, Any], context: Context, errors: list[FieldError]) -> Action | None:
    device_id, command, params = raw.get("deviceId"), raw.get("command"), raw.get("params", {})
    if not isinstance(device_id, str) or not device_id:
        errors.append(FieldError("action.deviceId", "is required (a device id)"))
        return None
    if not isinstance(command, str) or not command:
        errors.append(FieldError("action.command", "is required (a command of the device's product)"))
        return None
    if params is None:
        params = {}
    if not isinstance(params, dict):
        errors.append(FieldError("action.params", "must be an object"))
        return None
    try:
        context.commands.check(device_id, command, params)
    except NotFound as exc:
        errors.append(FieldError("action.deviceId", exc.message))
        return None
    except InvalidInput as exc:
        details = exc.details if isinstance(exc.details, list) else []
        for item in details:
            errors.append(FieldError(f"action.{item['field']}", item["reason"]))
        return None
    return CommandAction(device_id, command, dict(params))


def _scene(raw: Mapping[str, Any], context: Context, errors: list[FieldError]) -> Action | None:
    scene_id = raw.get("sceneId")
    if not isinstance(scene_id, str) or not scene_id:
        errors.append(FieldError("action.sceneId", "is required (a scene of the rooms file, SCENE#<id>)"))
        return None
    scene = context.rooms.scene(scene_id) if context.rooms is not None else None
    if scene is None:
        known = sorted(s for room in context.rooms.rooms.values() for s in room.scenes) if context.rooms else []
        errors.append(FieldError("action.sceneId", f"no scene {scene_id!r} (scenes: {', '.join(known) or 'none'})"))
        return None
    return SceneAction(scene.scene_id)


def _say(raw: Mapping[str, Any], alarm: bool, context: Context, errors: list[FieldError]) -> Action | None:
    text = raw.get("text")
    if text is None and alarm:
        text = ""
    if not isinstance(text, str) or not (text.strip() or alarm) or len(text) > MAX_TEXT_CHARS:
        errors.append(FieldError("action.text", f"is required: the words to say (at most {MAX_TEXT_CHARS} "
                                                "characters)"))
        return None
    language = raw.get("language")
    if language is not None and language not in LANGUAGES:
        errors.append(FieldError("action.language", f"must be one of {', '.join(LANGUAGES)}"))
        return None
    speaker, room = raw.get("speaker"), raw.get("room")
    if speaker is not None and room is not None:
        errors.append(FieldError("action.speaker", "give speaker or room, not both"))
        return None
    if speaker is not None and (not isinstance(speaker, str) or not speaker or len(speaker) > MAX_ID_CHARS
                                or not speaker.isprintable()):
        errors.append(FieldError("action.speaker", f"must be a speaker's Device-Id (1 to {MAX_ID_CHARS} "
                                                   "printable characters)"))
        return None
    if room is not None:
        rooms = context.rooms
        known_room = rooms.rooms.get(room) if rooms is not None and isinstance(room, str) else None
        if known_room is None or not known_room.voice_device_ids:
            with_speakers = sorted(r.room_id for r in rooms.rooms.values() if r.voice_device_ids) if rooms else []
            errors.append(FieldError("action.room", f"no room {room!r} with a speaker (rooms with speakers: "
                                                    f"{', '.join(with_speakers) or 'none'})"))
            return None
    if speaker is None and room is None:
        speaker = context.default_speaker
        if speaker is None:
            errors.append(FieldError("action.speaker", "say which speaker (its Device-Id) or room should speak"))
            return None
    return SayAction(text.strip(), speaker, room, language, alarm)
