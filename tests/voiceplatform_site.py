"""A hotel room for voice platform tests: a real daemon with a rooms file, simulated devices
of every example product on a real broker, and a speaker client speaking the Tuya wire format."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from daemon_harness import PRODUCTS_DIR, RunningDaemon, start_daemon, wait_until
from test_mqtt_support import forget_session
from test_openapi import assert_valid, document

from deviceagentd.core.spec import load_spec_file
from deviceagentd.simulator import SimulatedDevice, SimulatorOptions

WAIT_S = 10.0
BRAND = "acme-voice"
# Every answer a test gets is checked against the OpenAPI document's schema for it.
OPENAPI = document()


def answer_schema(method: str, path: str) -> Any:
    if path.startswith("/v1.0/voice/devices/"):
        path = "/v1.0/voice/devices/{voice_id}/token"
    elif path.startswith("/v1.0/token/"):
        path = "/v1.0/token/{refresh_token}"
    return OPENAPI["paths"][path][method.lower()]["responses"]["200"]["content"]["application/json"]["schema"]


@dataclass
class Site:
    gw: RunningDaemon
    suffix: str
    devices: dict[str, SimulatedDevice] = field(default_factory=dict)
    client_id: str = ""
    secret: str = ""

    def id(self, name: str) -> str:
        return f"{name}-{self.suffix}"

    @property
    def speaker(self) -> str:
        return self.id("speaker")

    @property
    def other_speaker(self) -> str:
        return self.id("speaker-b")

    def sign_headers(self, method: str, path: str, query: Mapping[str, str], body: bytes,
                     access_token: str = "", t_ms: int | None = None, nonce: str = "") -> dict[str, str]:
        """Tuya's recipe, written out here independently of the daemon's signing module."""
        t = str(t_ms if t_ms is not None else time.time_ns() // 1_000_000)
        url = path + ("?" + "&".join(f"{k}={query[k]}" for k in sorted(query)) if query else "")
        to_sign = "\n".join([method.upper(), hashlib.sha256(body).hexdigest(), "", url])
        message = self.client_id + access_token + t + nonce + to_sign
        sign = hmac.new(self.secret.encode(), message.encode(), hashlib.sha256).hexdigest().upper()
        headers = {"client_id": self.client_id, "sign": sign, "sign_method": "HMAC-SHA256", "t": t}
        if nonce:
            headers["nonce"] = nonce
        if access_token:
            headers["access_token"] = access_token
        return headers

    async def call(self, method: str, path: str, query: Mapping[str, str] | None = None, body: Any = None,
                   access_token: str = "", headers: Mapping[str, str] | None = None,
                   raw: bytes | None = None, signed: bool = True) -> dict[str, Any]:
        """One voice platform call, signed when the site has a client id (and `signed`); returns the
        envelope. `signed=False` sends exactly the headers given, e.g. hand-made signatures."""
        query = dict(query or {})
        data = raw if raw is not None else (b"" if body is None else json.dumps(body).encode())
        sent: dict[str, str] = {}
        if signed and self.client_id:
            sent.update(self.sign_headers(method, path, query, data, access_token, nonce=uuid.uuid4().hex))
        elif access_token:
            sent["access_token"] = access_token
        if data:
            sent["Content-Type"] = "application/json"
        sent.update(headers or {})
        url = path + ("?" + urlencode(query) if query else "")
        status, answer = await self.gw.request(method, url, data=data or None, headers=sent)
        assert status == 200, (status, answer)
        assert isinstance(answer, dict), answer
        assert isinstance(answer["t"], int) and len(str(answer["t"])) == 13, answer
        assert_valid(OPENAPI, answer_schema(method, path), answer, f"{method} {path}")
        return answer

    async def obtain(self, voice_id: str | None = None, code: str = BRAND) -> dict[str, Any]:
        voice_id = voice_id or self.speaker
        answer = await self.call("GET", f"/v1.0/voice/devices/{voice_id}/token",
                                 {"code": code, "industry_type": "hotel"})
        assert answer["success"] is True, answer
        result: dict[str, Any] = answer["result"]
        return result

    async def token(self, voice_id: str | None = None) -> str:
        return str((await self.obtain(voice_id))["token"])

    async def execute(self, token: str, interface: str, intent: str, endpoint: dict[str, Any] | None = None,
                      value: Any = None, message_id: str | None = None) -> dict[str, Any]:
        command: dict[str, Any] = {"interface": interface, "intent": intent}
        if value is not None:
            command["value"] = value
        body: dict[str, Any] = {"message_id": message_id or uuid.uuid4().hex, "version": "1.0", "command": command}
        if endpoint is not None:
            body["endpoint"] = endpoint
        return await self.call("POST", "/v1.0/voice/execute", body=body, access_token=token)

    async def control(self, token: str, target: str, intent: str, value: Any = None,
                      message_id: str | None = None) -> dict[str, Any]:
        return await self.execute(token, "Tuya.Voice.Platform.Control", intent, {"instance_id": target}, value,
                                  message_id)

    async def query(self, token: str, device_id: str) -> dict[str, Any]:
        return await self.execute(token, "Tuya.Voice.Platform.Query", "Query", {"device_id": device_id})

    async def discover(self, token: str) -> dict[str, Any]:
        return await self.execute(token, "Tuya.Voice.Platform.Discovery", "Discover")


def rooms_toml(suffix: str) -> str:
    """Room 101 with one device of each example product and two scenes; room 202 with a light."""
    def d(name: str) -> str:
        return f"{name}-{suffix}"

    return f"""
[[rooms]]
id = "101"
name = "Room 101"
  [[rooms.devices]]
  device_id = "{d('light')}"
  product = "light"
  name = "bedside lamp"
  aliases = ["reading light", "lamp"]
  position = "bedroom"
  [[rooms.devices]]
  device_id = "{d('curtain')}"
  product = "curtain"
  name = "curtain"
  [[rooms.devices]]
  device_id = "{d('ac')}"
  product = "air_conditioner"
  name = "air conditioner"
  aliases = ["AC"]
  [[rooms.devices]]
  device_id = "{d('thermostat')}"
  product = "thermostat"
  name = "thermostat"
  [[rooms.devices]]
  device_id = "{d('switch')}"
  product = "switch"
  name = "desk socket"
  [[rooms.devices]]
  device_id = "{d('ghost')}"
  product = "light"
  name = "ceiling light"
  [[rooms.scenes]]
  id = "sleep-{suffix}"
  name = "Sleep mode"
  steps = [
    {{ device_id = "{d('light')}", command = "turn_off" }},
    {{ device_id = "{d('curtain')}", command = "close" }},
    {{ device_id = "{d('ac')}", command = "set_target_temperature", params = {{ target_temperature = 24 }} }},
  ]
  [[rooms.scenes]]
  id = "welcome-{suffix}"
  name = "Welcome"
  parallel = true
  steps = [
    {{ device_id = "{d('light')}", command = "set_brightness", params = {{ brightness = 80 }} }},
    {{ device_id = "{d('curtain')}", command = "open" }},
  ]
  [[rooms.scenes]]
  id = "lights-out-{suffix}"
  name = "Lights out"
  steps = [
    {{ device_id = "{d('light')}", command = "turn_off" }},
    {{ device_id = "{d('ghost')}", command = "turn_off" }},
  ]

[[rooms]]
id = "202"
name = "Room 202"
  [[rooms.devices]]
  device_id = "{d('light202')}"
  product = "light"
  name = "lamp"
  [[rooms.scenes]]
  id = "sleep202-{suffix}"
  name = "Sleep mode"
  steps = [{{ device_id = "{d('light202')}", command = "turn_off" }}]

[[speakers]]
voice_id = "{d('speaker')}"
code = "{BRAND}"
industry_type = "hotel"
room = "101"

[[speakers]]
voice_id = "{d('speaker-b')}"
code = "{BRAND}"
room = "202"
"""


SIMULATED = {"light": "light", "curtain": "curtain", "ac": "air_conditioner", "thermostat": "thermostat",
             "switch": "switch", "light202": "light"}


async def start_device(site: Site, broker_url: str, name: str, product: str, **options: Any) -> SimulatedDevice:
    spec = load_spec_file(PRODUCTS_DIR / f"{product}.json")
    values: dict[str, Any] = {"url": broker_url, "heartbeat_s": 0, "seed": 7}
    values.update(options)
    device = SimulatedDevice(spec, site.id(name), SimulatorOptions(**values))
    await asyncio.wait_for(device.start(), WAIT_S)
    registry = site.gw.daemon.registry
    await wait_until(lambda: (d := registry.get(device.device_id)) is not None and d.online, WAIT_S)
    site.devices[name] = device
    return device


@asynccontextmanager
async def running_site(broker_url: str, tmp_path: Path, *, devices: Mapping[str, str] | None = None,
                       signing: bool = False, state_dir: Path | None = None, suffix: str | None = None,
                       **overrides: Any) -> AsyncIterator[Site]:
    suffix = suffix or uuid.uuid4().hex[:8]
    rooms_file = tmp_path / f"rooms-{suffix}.toml"
    rooms_file.write_text(rooms_toml(suffix))
    settings: dict[str, Any] = {"voiceplatform_rooms_file": str(rooms_file), "commands_default_timeout_ms": 5000}
    client_id, secret = "", ""
    if signing:
        client_id, secret = f"client-{suffix}", uuid.uuid4().hex
        settings.update(voiceplatform_client_id=client_id, voiceplatform_client_secret=secret)
    settings.update(overrides)
    gw = await start_daemon(broker_url, state_dir or tmp_path / "state", **settings)
    site = Site(gw, suffix, client_id=client_id, secret=secret)
    try:
        for name, product in (SIMULATED if devices is None else devices).items():
            await start_device(site, broker_url, name, product)
        yield site
    finally:
        for device in site.devices.values():
            await device.stop()
        await gw.stop()
        await forget_session(broker_url, gw.config.mqtt.client_id)
