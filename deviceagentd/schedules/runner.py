"""Doing what a schedule says: a device command, a scene, or words on a speaker.

Commands go through `CommandService.send` (the one validated path to a device), scenes through
`SceneRunner`, words through the voice service's `announce` on the speaker's open voice session.
Every outcome comes back as a `RunResult`; nothing here raises for a device, a scene or a
speaker that cannot do it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, tzinfo
from typing import TYPE_CHECKING, Any, Protocol

from deviceagentd.core.commands import CommandService
from deviceagentd.core.errors import CoreError, NotFound
from deviceagentd.core.registry import DeviceRegistry
from deviceagentd.schedules.model import (
    DEVICE_GONE,
    FAILED,
    NO_SPEAKER,
    OK,
    CommandAction,
    SayAction,
    SceneAction,
    Schedule,
)

if TYPE_CHECKING:
    from deviceagentd.voiceplatform.rooms import Rooms


class Announcer(Protocol):
    """Speaks on a speaker's open voice session (VoiceService.announce). False when nothing was
    said: that speaker has no session open (or it could not speak: no TTS, aborted, gone)."""

    async def announce(self, device_id: str, text: str, language: str | None = None) -> bool: ...


@dataclass(frozen=True)
class RunResult:
    outcome: str  # ok | failed | device_gone | no_speaker
    detail: str
    # Where the firing event is filed: the device, the scene, or the speaker it concerns.
    device_id: str
    product_id: str
    result: dict[str, Any] = field(default_factory=dict)


@dataclass
class ActionRunner:
    commands: CommandService
    registry: DeviceRegistry
    announcer: Announcer
    rooms: Rooms | None
    zone: tzinfo
    command_timeout_ms: int = 10_000

    async def run(self, schedule: Schedule, now_ms: int) -> RunResult:
        action = schedule.action
        if isinstance(action, CommandAction):
            return await self._command(schedule, action)
        if isinstance(action, SceneAction):
            return await self._scene(schedule, action)
        return await self._say(action, now_ms)

    async def _command(self, schedule: Schedule, action: CommandAction) -> RunResult:
        device = self.registry.get(action.device_id)
        product_id = device.product_id if device is not None else ""
        try:
            answer = await self.commands.send(action.device_id, action.command, action.params,
                                              timeout_ms=self.command_timeout_ms, origin=_origin(schedule))
        except NotFound as exc:
            return RunResult(DEVICE_GONE, exc.message, action.device_id, product_id)
        except CoreError as exc:
            return RunResult(FAILED, exc.message, action.device_id, product_id)
        detail = answer.msg or ("ok" if answer.ok else f"error code {answer.code}")
        return RunResult(OK if answer.ok else FAILED, detail, action.device_id, product_id, answer.to_json())

    async def _scene(self, schedule: Schedule, action: SceneAction) -> RunResult:
        scene = self.rooms.scene(action.scene_id) if self.rooms is not None else None
        if scene is None:
            return RunResult(FAILED, f"scene {action.scene_id} is no longer in the rooms file", action.scene_id,
                             "scene")
        from deviceagentd.scenes import SceneRunner

        outcome = await SceneRunner(self.commands, self.command_timeout_ms).run(scene, _origin(schedule))
        detail = "every step done" if outcome.ok else f"{outcome.failed} of {len(outcome.steps)} steps failed"
        return RunResult(OK if outcome.ok else FAILED, detail, scene.scene_id, "scene", outcome.to_json())

    async def _say(self, action: SayAction, now_ms: int) -> RunResult:
        text = action.text or alarm_text(now_ms, self.zone, action.language)
        speakers = self._speakers(action)
        where = action.speaker or f"room:{action.room}"
        for speaker in speakers:
            try:
                said = await self.announcer.announce(speaker, text, action.language)
            except Exception as exc:  # a speaker failing mid-sentence is the speaker's problem
                return RunResult(FAILED, f"speaker {speaker} failed: {exc}", speaker, "speaker", {"text": text})
            if said:
                return RunResult(OK, f"said on {speaker}", speaker, "speaker", {"text": text})
        nobody = ("no speaker of the room is connected (or none could speak)" if action.room
                  else f"speaker {where} is not connected (or could not speak)")
        return RunResult(NO_SPEAKER, nobody, where, "speaker", {"text": text})

    def _speakers(self, action: SayAction) -> tuple[str, ...]:
        if action.speaker is not None:
            return (action.speaker,)
        room = self.rooms.rooms.get(action.room or "") if self.rooms is not None else None
        return room.voice_device_ids if room is not None else ()


def _origin(schedule: Schedule) -> dict[str, Any]:
    """Who sent a scheduled command, for the command log."""
    return {"channel": "schedule", "scheduleId": schedule.schedule_id}


def alarm_text(now_ms: int, zone: tzinfo, language: str | None) -> str:
    """What an alarm without words of its own says: the time, and that it is time to get up."""
    local = datetime.fromtimestamp(now_ms / 1000, tz=zone)
    if language == "zh":
        minutes = f"{local.minute}分" if local.minute else ""
        return f"现在是{local.hour}点{minutes}，该起床了！"
    return f"It's {local.hour}:{local.minute:02d}. Time to wake up!"
