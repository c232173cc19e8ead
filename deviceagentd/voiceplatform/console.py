"""What the gateway's console shows of the voice platform, and its scene button.

Speakers with their rooms and whether each holds a live token pair (never a token, never the
brand code a speaker proves itself with), the rooms' devices and scenes; scenes run through
the same `VoicePlatform.run_scene` as a speaker's Control call.
"""

from __future__ import annotations

from typing import Any

from deviceagentd.core.clock import iso_ms
from deviceagentd.core.origin import Origin
from deviceagentd.voiceplatform.rooms import SCENE_PREFIX, Room, Scene
from deviceagentd.voiceplatform.service import VoicePlatform


class VoicePlatformConsole:
    def __init__(self, platform: VoicePlatform) -> None:
        self._platform = platform

    def overview(self) -> dict[str, Any]:
        platform = self._platform
        now_ms = platform.clock.wall_ms()
        speakers = []
        for speaker in sorted(platform.rooms.speakers.values(), key=lambda s: s.voice_id):
            pair = platform.tokens.pair_of(speaker.voice_id)
            token: dict[str, Any] = {"live": pair is not None, "accessValid": False, "issuedAt": None,
                                     "accessExpiresAt": None}
            if pair is not None:
                token.update(accessValid=now_ms < pair.expires_at_ms, issuedAt=iso_ms(pair.issued_at_ms),
                             accessExpiresAt=iso_ms(pair.expires_at_ms))
            speakers.append({"voiceId": speaker.voice_id, "roomId": speaker.room_id,
                             "industryType": speaker.industry_type, "token": token})
        rooms = [self._room(room) for room in sorted(platform.rooms.rooms.values(), key=lambda r: r.room_id)]
        return {"enabled": True, "speakers": speakers, "rooms": rooms}

    def _room(self, room: Room) -> dict[str, Any]:
        devices = []
        for device in room.devices.values():
            registered = self._platform.registry.get(device.device_id)
            devices.append({"deviceId": device.device_id, "productId": device.product_id, "name": device.name,
                            "aliases": list(device.aliases), "position": device.position,
                            "registered": registered is not None,
                            "online": bool(registered is not None and registered.online)})
        return {"roomId": room.room_id, "name": room.name, "devices": devices,
                "scenes": [_scene_json(scene) for scene in room.scenes.values()]}

    def scene(self, scene_id: str) -> Scene | None:
        """A scene by its id in the rooms file (with or without the SCENE# prefix speakers use)."""
        wanted = scene_id if scene_id.startswith(SCENE_PREFIX) else SCENE_PREFIX + scene_id
        for room in self._platform.rooms.rooms.values():
            if wanted in room.scenes:
                return room.scenes[wanted]
        return None

    async def run_scene(self, scene: Scene) -> dict[str, Any]:
        """Run a scene for POST /api/voice-platform/scenes/{id}/run (the console's button): its
        commands are logged with channel `http`, as a schedule made over HTTP is, and the scene's id."""
        result, failed = await self._platform.run_scene(scene, Origin("http").to_json())
        steps = []
        for step in result["steps"]:
            entry: dict[str, Any] = {"deviceId": step["device_id"], "command": step["command"], "ok": step["success"]}
            if not step["success"]:
                entry.update(code=step["code"], msg=step["msg"])
            steps.append(entry)
        return {"sceneId": _plain_id(scene), "name": scene.name, "ok": failed == 0, "steps": steps}


def _plain_id(scene: Scene) -> str:
    return scene.scene_id.removeprefix(SCENE_PREFIX)


def _scene_json(scene: Scene) -> dict[str, Any]:
    return {"sceneId": _plain_id(scene), "name": scene.name, "parallel": scene.parallel,
            "steps": [{"deviceId": s.device_id, "command": s.command, "params": s.params} for s in scene.steps]}
