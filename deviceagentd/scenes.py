"""Running a scene of the rooms file (a list of device commands) for schedules and MCP clients.

Every step goes through `CommandService.send`, the one validated path to a device; every step runs
even when an earlier one failed, and the outcome lists each step. The voice platform answers
speakers with its own codes for the same steps (voiceplatform/service.py).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from deviceagentd.core.commands import CommandService
from deviceagentd.core.errors import CoreError

if TYPE_CHECKING:
    from deviceagentd.voiceplatform.rooms import Scene, SceneStep


@dataclass(frozen=True)
class StepOutcome:
    device_id: str
    command: str
    ok: bool
    # The device's answer (code, message) or why the command could not be sent.
    code: int | None
    message: str

    def to_json(self) -> dict[str, Any]:
        return {"deviceId": self.device_id, "command": self.command, "ok": self.ok, "code": self.code,
                "message": self.message}


@dataclass(frozen=True)
class SceneOutcome:
    scene_id: str
    name: str
    steps: tuple[StepOutcome, ...]

    @property
    def ok(self) -> bool:
        return all(step.ok for step in self.steps)

    @property
    def failed(self) -> int:
        return sum(1 for step in self.steps if not step.ok)

    def to_json(self) -> dict[str, Any]:
        return {"sceneId": self.scene_id, "name": self.name, "ok": self.ok,
                "steps": [step.to_json() for step in self.steps]}


@dataclass
class SceneRunner:
    commands: CommandService
    timeout_ms: int = 10_000

    async def run(self, scene: Scene, origin: dict[str, Any]) -> SceneOutcome:
        """Run every step (in order, or all at once for a parallel scene). Each step's command is
        kept in the command log with the caller's `origin` and the scene's id."""
        step_origin = {**origin, "sceneId": scene.scene_id}
        if scene.parallel:
            outcomes = list(await asyncio.gather(*(self._step(step, step_origin) for step in scene.steps)))
        else:
            outcomes = [await self._step(step, step_origin) for step in scene.steps]
        return SceneOutcome(scene.scene_id, scene.name, tuple(outcomes))

    async def _step(self, step: SceneStep, origin: dict[str, Any]) -> StepOutcome:
        try:
            answer = await self.commands.send(step.device_id, step.command, step.params, timeout_ms=self.timeout_ms,
                                              origin=origin)
        except CoreError as exc:
            return StepOutcome(step.device_id, step.command, False, None, exc.message)
        return StepOutcome(step.device_id, step.command, answer.ok, answer.code,
                           answer.msg or ("ok" if answer.ok else f"error code {answer.code}"))
