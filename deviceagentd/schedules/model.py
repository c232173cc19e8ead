"""A schedule: when (a one-off instant or a recurring rule), what (a device command, a scene, or
words spoken on a speaker), who made it, and how its last run went.

The JSON shape is the same for the HTTP API, the MCP tool and the agent's tool:

    {"name"?: str,
     "inSeconds": int | "at": "HH:MM" | "YYYY-MM-DDTHH:MM[:SS][+08:00]" | "cron": "0 23 * * *",
     "repeat"?: "daily" | "weekdays" | "weekends" | "mon,wed,fri"   (with "at": "HH:MM"),
     "action": {"type": "command", "deviceId", "command", "params"?}
             | {"type": "scene", "sceneId"}
             | {"type": "say", "text", "speaker"? | "room"?, "language"?}
             | {"type": "alarm", "text"?, "speaker"? | "room"?, "language"?}}
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from deviceagentd.core.origin import Origin
from deviceagentd.schedules.timing import Recurrence

ActionType = Literal["command", "scene", "say", "alarm"]
LANGUAGES = ("en", "zh")
MAX_NAME_CHARS = 100
MAX_TEXT_CHARS = 500
MAX_ID_CHARS = 128
# Outcomes of a run, as stored in lastRun and in the firing event.
OK = "ok"
FAILED = "failed"
MISSED = "missed"
NO_SPEAKER = "no_speaker"
DEVICE_GONE = "device_gone"


@dataclass(frozen=True, slots=True)
class CommandAction:
    device_id: str
    command: str
    params: dict[str, Any] = field(default_factory=dict, hash=False)

    def to_json(self) -> dict[str, Any]:
        return {"type": "command", "deviceId": self.device_id, "command": self.command, "params": self.params}


@dataclass(frozen=True, slots=True)
class SceneAction:
    scene_id: str

    def to_json(self) -> dict[str, Any]:
        return {"type": "scene", "sceneId": self.scene_id}


@dataclass(frozen=True, slots=True)
class SayAction:
    """Words spoken on a speaker: `speaker` is the Device-Id of its voice session; `room` plays on the
    first connected speaker of that room (rooms file). An alarm is a say action with a default text."""

    text: str
    speaker: str | None = None
    room: str | None = None
    language: str | None = None
    alarm: bool = False

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": "alarm" if self.alarm else "say", "text": self.text}
        if self.speaker is not None:
            out["speaker"] = self.speaker
        if self.room is not None:
            out["room"] = self.room
        if self.language is not None:
            out["language"] = self.language
        return out


Action = CommandAction | SceneAction | SayAction


@dataclass(frozen=True, slots=True)
class LastRun:
    at_ms: int
    outcome: str
    detail: str

    def to_json(self) -> dict[str, Any]:
        return {"at": self.at_ms, "outcome": self.outcome, "detail": self.detail}


@dataclass(slots=True)
class Schedule:
    schedule_id: str
    name: str
    action: Action
    origin: Origin
    created_ms: int
    # One-off: the instant; recurring: None and `recurrence` set.
    once_ms: int | None
    recurrence: Recurrence | None
    next_run_ms: int | None
    last_run: LastRun | None = None

    @property
    def recurring(self) -> bool:
        return self.recurrence is not None

    def owned_by(self, session_id: str | None, speaker: str | None) -> bool:
        """Made in this conversation, or by this speaker (a speaker reconnects with new sessions)."""
        if speaker is not None and self.origin.speaker == speaker:
            return True
        return session_id is not None and self.origin.session_id == session_id
