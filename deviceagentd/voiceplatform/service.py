"""The voice platform's business logic: tokens for speakers, and execute (Discovery, Query,
Control, scenes), independent of HTTP so it can be tested and benchmarked directly.

Every answer is the Tuya envelope `{success, t, code?, msg?, result?}` plus, for execute, the
echoed `message_id`, `version`, `command` and `endpoint` (seeds/003, SPEC §6).
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import math
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from deviceagentd import strictjson
from deviceagentd.core.clock import Clock
from deviceagentd.core.commands import CommandService
from deviceagentd.core.errors import (
    BrokerUnavailable,
    CommandTimeout,
    CoreError,
    DeviceOffline,
    InvalidInput,
    NotFound,
)
from deviceagentd.core.metrics import Metrics
from deviceagentd.core.registry import Device, DeviceRegistry
from deviceagentd.voiceplatform import errors as codes
from deviceagentd.voiceplatform.errors import VoicePlatformError
from deviceagentd.voiceplatform.idempotency import IdempotencyCache
from deviceagentd.voiceplatform.profile import VoiceProfile, canonical_intent
from deviceagentd.voiceplatform.rooms import SCENE_PREFIX, Room, RoomDevice, Rooms, Scene, Speaker
from deviceagentd.voiceplatform.signing import RequestVerifier
from deviceagentd.voiceplatform.throttle import FailureThrottle
from deviceagentd.voiceplatform.tokens import TokenService

log = logging.getLogger("deviceagentd.voiceplatform")

DISCOVERY = "Tuya.Voice.Platform.Discovery"
QUERY = "Tuya.Voice.Platform.Query"
CONTROL = "Tuya.Voice.Platform.Control"
MAX_MESSAGE_ID_CHARS = 128
# Failed token requests (obtain, refresh, invalidate) allowed per speaker and per client
# address in FAILURE_WINDOW_S before further ones are refused unchecked (throttle.py).
SPEAKER_FAILURES = 5
CLIENT_FAILURES = 20
FAILURE_WINDOW_S = 60.0
# The `api` label of the requests metric.
_API_NAMES = {DISCOVERY: "discovery", QUERY: "query", CONTROL: "control"}

Envelope = dict[str, Any]


@dataclass(frozen=True)
class SignedRequest:
    """What signature checks need from an HTTP request, without aiohttp."""

    method: str
    path: str
    query: Mapping[str, str]
    headers: Mapping[str, str]
    body: bytes
    remote: str = ""
    """The client's address, for throttling failed token requests per client."""


@dataclass
class VoicePlatformSettings:
    command_timeout_ms: int = 5000


class VoicePlatform:
    def __init__(
        self,
        rooms: Rooms,
        profiles: Mapping[str, VoiceProfile],
        registry: DeviceRegistry,
        commands: CommandService,
        tokens: TokenService,
        verifier: RequestVerifier | None,
        idempotency: IdempotencyCache,
        metrics: Metrics,
        settings: VoicePlatformSettings | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.rooms = rooms
        self.profiles = profiles
        self.registry = registry
        self.commands = commands
        self.tokens = tokens
        self.verifier = verifier
        self.idempotency = idempotency
        self.metrics = metrics
        self.settings = settings or VoicePlatformSettings()
        self.clock = clock or Clock()
        self._speaker_failures = FailureThrottle(SPEAKER_FAILURES, FAILURE_WINDOW_S, self.clock.monotonic)
        self._client_failures = FailureThrottle(CLIENT_FAILURES, FAILURE_WINDOW_S, self.clock.monotonic)
        # Compared against when a voice_id is unknown, so that case takes as long as a wrong code.
        self._decoy_code = secrets.token_hex(16)

    # ------------------------------------------------------------------------- envelopes

    def ok(self, result: Any, echo: Mapping[str, Any] | None = None) -> Envelope:
        body: Envelope = {"success": True, "t": self.clock.wall_ms()}
        if echo:
            body.update(echo)
        body["result"] = result
        return body

    def failure(self, error: VoicePlatformError, echo: Mapping[str, Any] | None = None,
                result: Any = None) -> Envelope:
        body: Envelope = {"success": False, "t": self.clock.wall_ms(), "code": error.code, "msg": error.msg}
        if echo:
            body.update(echo)
        if result is not None:
            body["result"] = result
        return body

    def _count(self, api: str, code: int) -> None:
        self.metrics.voiceplatform_requests.inc({"api": api, "code": str(code)})

    # ------------------------------------------------------------------------- tokens

    def _verify(self, request: SignedRequest, business: bool) -> None:
        if self.verifier is not None:
            self.verifier.verify(method=request.method, path=request.path, query=request.query,
                                 headers=request.headers, body=request.body, business=business)

    def _speaker(self, voice_id: str, query: Mapping[str, str]) -> Speaker:
        code = query.get("code", "")
        industry_type = query.get("industry_type", "")
        if not code:
            raise VoicePlatformError(codes.PARAM_EMPTY, "code (the voice brand code) is required")
        if not industry_type:
            raise VoicePlatformError(codes.PARAM_EMPTY, "industry_type is required")
        speaker = self.rooms.speakers.get(voice_id)
        # One answer for an unknown voice_id and a wrong code, and a comparison that takes as
        # long either way: neither may tell a guesser which half was right.
        expected = speaker.code if speaker is not None else self._decoy_code
        matches = hmac.compare_digest(code.encode("utf-8", "surrogatepass"), expected.encode("utf-8"))
        if speaker is None or not matches:
            raise VoicePlatformError(codes.PERMISSION_DENY, "voice_id and code do not name a speaker of this gateway")
        if industry_type != speaker.industry_type:
            raise VoicePlatformError(codes.PARAM_ILLEGAL,
                                     f"industry_type must be {speaker.industry_type!r}, got {industry_type!r}")
        return speaker

    def _throttled(self, voice_id: str | None, request: SignedRequest) -> None:
        """Refuse a token request, unchecked, while its speaker or its client failed too often."""
        waits = [self._client_failures.retry_after(request.remote)]
        if voice_id is not None:
            waits.append(self._speaker_failures.retry_after(voice_id))
        wait = max((w for w in waits if w is not None), default=None)
        if wait is not None:
            raise VoicePlatformError(codes.PERMISSION_DENY,
                                     f"too many failed token requests; try again in {math.ceil(wait)} s")

    def _token_failed(self, api: str, voice_id: str | None, request: SignedRequest, exc: VoicePlatformError,
                      *, throttled: bool) -> None:
        if not throttled and exc.code != codes.SYSTEM_ERROR:
            self._client_failures.failed(request.remote)
            if voice_id is not None:
                self._speaker_failures.failed(voice_id)
        # Rate-limited with every other line of its kind (deviceagentd.lograte).
        log.warning("voice platform: %s request for speaker %s from %s refused (%d): %s", api,
                    (voice_id or "?")[:64], request.remote or "?", exc.code, exc.msg)

    async def obtain_token(self, voice_id: str, request: SignedRequest) -> Envelope:
        throttled = False
        try:
            try:
                self._throttled(voice_id, request)
            except VoicePlatformError:
                throttled = True
                raise
            self._verify(request, business=False)
            speaker = self._speaker(voice_id, request.query)
            issued = await self.tokens.issue(speaker.voice_id)
        except VoicePlatformError as exc:
            self._count("token", exc.code)
            self._token_failed("token", voice_id, request, exc, throttled=throttled)
            return self.failure(exc)
        self._count("token", 0)
        log.info("voice platform: token issued to speaker %s (room %s)", speaker.voice_id, speaker.room_id)
        return self.ok({"token": issued.access_token, "refresh_token": issued.refresh_token,
                        "expire_time": issued.expires_in_s})

    async def refresh_token(self, refresh_token: str, request: SignedRequest) -> Envelope:
        throttled = False
        try:
            try:
                self._throttled(None, request)
            except VoicePlatformError:
                throttled = True
                raise
            self._verify(request, business=False)
            voice_id, issued = await self.tokens.refresh(refresh_token)
            if voice_id not in self.rooms.speakers:
                await self.tokens.revoke(voice_id)
                raise VoicePlatformError(codes.TOKEN_INVALID, f"speaker {voice_id!r} is no longer configured")
        except VoicePlatformError as exc:
            self._count("refresh", exc.code)
            self._token_failed("refresh", None, request, exc, throttled=throttled)
            return self.failure(exc)
        self._count("refresh", 0)
        # The voice-token call names it `token`, Tuya's generic token API `access_token`:
        # speaker SDKs read either, so both are sent.
        return self.ok({"token": issued.access_token, "access_token": issued.access_token,
                        "refresh_token": issued.refresh_token, "expire_time": issued.expires_in_s,
                        "uid": voice_id})

    async def invalidate_token(self, voice_id: str, request: SignedRequest) -> Envelope:
        throttled = False
        try:
            try:
                self._throttled(voice_id, request)
            except VoicePlatformError:
                throttled = True
                raise
            self._verify(request, business=True)
            speaker = self._speaker(voice_id, request.query)
            token_owner = self._access(request.headers)
            if token_owner != speaker.voice_id:
                raise VoicePlatformError(codes.PERMISSION_DENY, "the access_token belongs to another speaker")
            await self.tokens.revoke(speaker.voice_id)
        except VoicePlatformError as exc:
            self._count("invalidate", exc.code)
            self._token_failed("invalidate", voice_id, request, exc, throttled=throttled)
            return self.failure(exc)
        self._count("invalidate", 0)
        log.info("voice platform: tokens of speaker %s invalidated", voice_id)
        return self.ok(True)

    def _access(self, headers: Mapping[str, str]) -> str:
        token = headers.get("access_token", "")
        if not token:
            raise VoicePlatformError(codes.ACCESS_TOKEN_NULL, "send the voice token in the access_token header")
        return self.tokens.check_access(token)

    # ------------------------------------------------------------------------- execute

    async def execute(self, request: SignedRequest) -> Envelope:
        echo: dict[str, Any] = {}
        api = "execute"
        try:
            self._verify(request, business=True)
            voice_id = self._access(request.headers)
            speaker = self.rooms.speakers.get(voice_id)
            if speaker is None:
                raise VoicePlatformError(codes.TOKEN_INVALID, f"speaker {voice_id!r} is no longer configured")
            body = _json_object(request.body)
            echo = _echo(body)
            message_id, interface, intent = _check_envelope(body)
            api = _API_NAMES[interface]

            async def produce() -> Envelope:
                return await self._execute(speaker, body, interface, intent, echo)

            answer = await self.idempotency.run((voice_id, message_id), produce)
        except VoicePlatformError as exc:
            self._count(api, exc.code)
            return self.failure(exc, echo)
        # A replay gets the first answer with its own time.
        return {**answer, "t": self.clock.wall_ms()}

    async def _execute(self, speaker: Speaker, body: Mapping[str, Any], interface: str, intent: str,
                       echo: Mapping[str, Any]) -> Envelope:
        api = _API_NAMES[interface]
        result: Any = None
        try:
            room = self.rooms.room_of(speaker)
            if interface == DISCOVERY:
                if intent != "Discover":
                    raise VoicePlatformError(codes.COMMAND_OR_VALUE_NOT_SUPPORT,
                                             f"{DISCOVERY} supports the intent Discover, not {intent!r}")
                result = self.discover(room)
            elif interface == QUERY:
                if intent != "Query":
                    raise VoicePlatformError(codes.COMMAND_OR_VALUE_NOT_SUPPORT,
                                             f"{QUERY} supports the intent Query, not {intent!r}")
                target = _endpoint_id(body)
                if target.startswith(SCENE_PREFIX):
                    self._scene(room, target)
                    raise VoicePlatformError(codes.FUNCTION_NOT_SUPPORT, "scenes cannot be queried")
                result = self.query(self._device(room, target))
            else:
                target = _endpoint_id(body)
                if target.startswith(SCENE_PREFIX):
                    api = "scene"
                    scene = self._scene(room, target)
                    if canonical_intent(intent) != "TurnOn":
                        raise VoicePlatformError(codes.COMMAND_OR_VALUE_NOT_SUPPORT,
                                                 f"a scene can only be triggered with TurnOn, not {intent!r}")
                    result, failed = await self.run_scene(scene, _origin(speaker, body))
                    if failed:
                        raise VoicePlatformError(codes.COMMAND_ISSUE_ERROR,
                                                 f"{failed} of {len(scene.steps)} steps of {scene.name!r} failed")
                else:
                    command = body.get("command")
                    value = command.get("value") if isinstance(command, dict) else None
                    result = await self.control(self._device(room, target), intent, value, _origin(speaker, body))
        except VoicePlatformError as exc:
            self._count(api, exc.code)
            return self.failure(exc, echo, result)
        self._count(api, 0)
        return self.ok(result, echo)

    def _device(self, room: Room, device_id: str) -> RoomDevice:
        device = room.devices.get(device_id)
        if device is not None:
            return device
        if self.rooms.known_device(device_id) or self.registry.get(device_id) is not None:
            raise VoicePlatformError(codes.PERMISSION_DENY, f"device {device_id!r} is not in this speaker's room")
        raise VoicePlatformError(codes.DEVICE_NOT_EXIST, f"no device {device_id!r}")

    def _scene(self, room: Room, scene_id: str) -> Scene:
        scene = room.scenes.get(scene_id)
        if scene is not None:
            return scene
        if self.rooms.known_scene(scene_id):
            raise VoicePlatformError(codes.PERMISSION_DENY, f"scene {scene_id!r} is not in this speaker's room")
        raise VoicePlatformError(codes.DEVICE_NOT_EXIST, f"no scene {scene_id!r}")

    def _profile(self, device: RoomDevice, registered: Device | None) -> VoiceProfile:
        if registered is not None and registered.product_id != device.product_id:
            raise VoicePlatformError(codes.SYSTEM_ERROR, f"device {device.device_id!r} reports product "
                                     f"{registered.product_id!r}, the rooms file says {device.product_id!r}")
        return self.profiles[device.product_id]

    def discover(self, room: Room) -> dict[str, Any]:
        devices = []
        for device in room.devices.values():
            profile = self.profiles[device.product_id]
            registered = self.registry.get(device.device_id)
            devices.append({
                "device_id": device.device_id,
                "category": profile.category,
                "device_name": device.name,
                "device_alias_list": list(device.aliases),
                "position": device.position,
                "supported_intents": [*profile.supported_intents(), "Query"],
                "online": bool(registered is not None and registered.online),
            })
        scenes = [{"scene_id": scene.scene_id, "scene_name": scene.name, "supported_intents": ["TurnOn"]}
                  for scene in room.scenes.values()]
        return {"devices": devices, "scenes": scenes}

    def query(self, device: RoomDevice) -> dict[str, Any]:
        registered = self.registry.get(device.device_id)
        profile = self._profile(device, registered)
        if registered is None or not registered.online:
            raise VoicePlatformError(codes.DEVICE_OFFLINE, f"{device.name} ({device.device_id}) is offline")
        return {"properties": profile.query(registered.state)}

    async def control(self, device: RoomDevice, intent: str, value: Any, origin: dict[str, Any]) -> dict[str, Any]:
        registered = self.registry.get(device.device_id)
        profile = self._profile(device, registered)
        planned = profile.plan(intent, value, registered.state if registered is not None else {})
        if registered is None or not registered.online:
            raise VoicePlatformError(codes.DEVICE_OFFLINE, f"{device.name} ({device.device_id}) is offline")
        error = await self._send(device.device_id, planned.command, planned.params, origin)
        if error is not None:
            raise error
        # The device's state report follows its answer; the planned values are what it applied.
        properties = {p["name"]: p["value"] for p in profile.query(registered.state)}
        properties.update(planned.expected)
        return {"properties": [{"name": name, "value": value} for name, value in properties.items()]}

    async def run_scene(self, scene: Scene, origin: dict[str, Any]) -> tuple[dict[str, Any], int]:
        """Run every step (in order, or all at once); the result lists each step's outcome."""
        step_origin = {**origin, "sceneId": scene.scene_id}
        if scene.parallel:
            outcomes = await asyncio.gather(*(self._send(s.device_id, s.command, s.params, step_origin)
                                              for s in scene.steps))
        else:
            outcomes = [await self._send(s.device_id, s.command, s.params, step_origin) for s in scene.steps]
        steps = []
        for step, error in zip(scene.steps, outcomes, strict=True):
            entry: dict[str, Any] = {"device_id": step.device_id, "command": step.command, "success": error is None}
            if error is not None:
                entry.update(code=error.code, msg=error.msg)
            steps.append(entry)
        failed = sum(1 for error in outcomes if error is not None)
        if failed:
            log.info("voice platform: scene %s: %d of %d steps failed", scene.scene_id, failed, len(scene.steps))
        return {"scene_id": scene.scene_id, "steps": steps}, failed

    async def _send(self, device_id: str, command: str, params: dict[str, Any],
                    origin: dict[str, Any]) -> VoicePlatformError | None:
        """One command through the same validated path as the HTTP route; None if the device did it."""
        try:
            outcome = await self.commands.send(device_id, command, params,
                                               timeout_ms=self.settings.command_timeout_ms, origin=origin)
        except DeviceOffline:
            return VoicePlatformError(codes.DEVICE_OFFLINE, device_id)
        except CommandTimeout as exc:
            return VoicePlatformError(codes.SYSTEM_ERROR, exc.message)
        except BrokerUnavailable:
            return VoicePlatformError(codes.SYSTEM_ERROR, "the gateway's MQTT broker is not connected")
        except NotFound:
            return VoicePlatformError(codes.DEVICE_OFFLINE, f"{device_id} has never connected")
        except InvalidInput as exc:
            return VoicePlatformError(codes.PARAM_RANGE_INVALID, str(exc))
        except CoreError as exc:
            return VoicePlatformError(codes.SYSTEM_ERROR, str(exc))
        if not outcome.ok:
            return VoicePlatformError(codes.COMMAND_ISSUE_ERROR,
                                      f"{device_id} answered code {outcome.code}: {outcome.msg}")
        return None


# ----------------------------------------------------------------------------- request checks


def _json_object(raw: bytes) -> dict[str, Any]:
    try:
        body = strictjson.loads(raw)
    except strictjson.JsonInputError as exc:
        raise VoicePlatformError(codes.PARAM_ILLEGAL, f"the body is not valid JSON: {exc.detail}") from None
    if not isinstance(body, dict):
        raise VoicePlatformError(codes.PARAM_ILLEGAL, "the body must be a JSON object")
    return body


def _origin(speaker: Speaker, body: Mapping[str, Any]) -> dict[str, Any]:
    """Who sent a command, for the command log: the speaker and the platform's message."""
    return {"channel": "voiceplatform", "voiceId": speaker.voice_id, "messageId": body["message_id"]}


def _echo(body: Mapping[str, Any]) -> dict[str, Any]:
    """message_id, version, command (interface, intent) and endpoint as the request gave them."""
    echo: dict[str, Any] = {}
    for key in ("message_id", "version"):
        if key in body:
            echo[key] = body[key]
    command = body.get("command")
    if isinstance(command, dict):
        echo["command"] = {k: command[k] for k in ("interface", "intent") if k in command}
    elif command is not None:
        echo["command"] = command
    if "endpoint" in body:
        echo["endpoint"] = body["endpoint"]
    return echo


def _check_envelope(body: Mapping[str, Any]) -> tuple[str, str, str]:
    message_id = _required_text(body, "message_id")
    if len(message_id) > MAX_MESSAGE_ID_CHARS:
        raise VoicePlatformError(codes.PARAM_ILLEGAL, f"message_id must be at most {MAX_MESSAGE_ID_CHARS} characters")
    _required_text(body, "version")
    command = body.get("command")
    if command is None:
        raise VoicePlatformError(codes.PARAM_EMPTY, "command is required")
    if not isinstance(command, dict):
        raise VoicePlatformError(codes.TYPE_INCORRECT, "command must be an object")
    interface = _required_text(command, "interface", "command.interface")
    intent = _required_text(command, "intent", "command.intent")
    if interface not in (DISCOVERY, QUERY, CONTROL):
        raise VoicePlatformError(codes.PARAM_ILLEGAL,
                                 f"command.interface must be {DISCOVERY}, {QUERY} or {CONTROL}, not {interface!r}")
    return message_id, interface, intent


def _required_text(table: Mapping[str, Any], key: str, name: str | None = None) -> str:
    value = table.get(key)
    if value is None or value == "":
        raise VoicePlatformError(codes.PARAM_EMPTY, f"{name or key} is required")
    if not isinstance(value, str):
        raise VoicePlatformError(codes.TYPE_INCORRECT, f"{name or key} must be a string")
    return value


def _endpoint_id(body: Mapping[str, Any]) -> str:
    """The target: exactly one of endpoint.device_id and endpoint.instance_id."""
    endpoint = body.get("endpoint")
    if endpoint is None:
        raise VoicePlatformError(codes.PARAM_EMPTY, "endpoint is required")
    if not isinstance(endpoint, dict):
        raise VoicePlatformError(codes.TYPE_INCORRECT, "endpoint must be an object")
    given = [key for key in ("device_id", "instance_id") if endpoint.get(key) not in (None, "")]
    if len(given) != 1:
        raise VoicePlatformError(codes.PARAM_ILLEGAL,
                                 "endpoint needs exactly one of device_id and instance_id"
                                 + (", got both" if given else ", got neither"))
    value = endpoint[given[0]]
    if not isinstance(value, str):
        raise VoicePlatformError(codes.TYPE_INCORRECT, f"endpoint.{given[0]} must be a string")
    return value

