"""`scripts/console-screenshots`: the pictures of docs/console.md, taken of a real gateway.

A private Mosquitto, the daemon with the example room (etc/deviceagentd/voice-platform.toml),
the room's devices simulated, a little history (commands, an event, a chat, a speaker token),
then each page of the console in headless Chromium, saved as docs/console/<page>.png.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import aiohttp

from bench_lib.browser import Browser, chromium_missing
from bench_lib.procs import REPO, spawn_daemon, start_broker
from deviceagentd.core.catalog import load_catalog
from deviceagentd.simulator import SimulatedDevice, SimulatorOptions

OUT = REPO / "docs" / "console"
ROOM = (("thermostat", "thermostat-001"), ("light", "light-101"), ("curtain", "curtain-101"),
        ("air_conditioner", "ac-101"))
PAGES = {
    "overview": "#/overview",
    "devices": "#/devices",
    "device": "#/devices/thermostat-001",
    "chat": "#/chat",
    "voice": "#/voice",
    "voice-platform": "#/voice-platform",
}


async def history(base: str, thermostat: SimulatedDevice) -> None:
    async with aiohttp.ClientSession() as http:
        for body in ({"command": "set_target_temperature", "params": {"target_temperature": 24}},
                     {"command": "set_mode", "params": {"mode": "eco"}}):
            async with http.post(f"{base}/api/devices/thermostat-001/commands", json=body) as resp:
                await resp.read()
        async with http.post(f"{base}/api/devices/light-101/commands",
                             json={"command": "set_brightness", "params": {"brightness": 60}}) as resp:
            await resp.read()
        await thermostat.emit_event("temperature_alert", {"temperature": 31.5})
        async with http.get(f"{base}/v1.0/voice/devices/speaker-101/token?code=demo-brand&industry_type=hotel") as r:
            await r.read()


async def shoot() -> int:
    missing = chromium_missing()
    if missing:
        print(f"console-screenshots: {missing}", file=sys.stderr)
        return 1
    work = Path(tempfile.mkdtemp(prefix="deviceagentd-shots-"))
    broker = start_broker(work / "mosquitto")
    daemon = spawn_daemon(broker.url, work / "state",
                          voiceplatform_rooms_file=REPO / "etc" / "deviceagentd" / "voice-platform.toml")
    sims: list[SimulatedDevice] = []
    browser: Browser | None = None
    try:
        await asyncio.to_thread(daemon.wait_http, 30.0)
        catalog = load_catalog(REPO / "etc" / "deviceagentd" / "products")
        for product, device_id in ROOM:
            sim = SimulatedDevice(catalog.products[product], device_id, SimulatorOptions(
                url=broker.url, client_id=f"shot-{device_id}-{uuid.uuid4().hex[:6]}", heartbeat_s=0, seed=1))
            await sim.start()
            sims.append(sim)
        await asyncio.sleep(1.0)
        await history(daemon.base_url, sims[0])
        browser = await Browser.start(("--window-size=1280,860", "--force-device-scale-factor=1"))
        OUT.mkdir(parents=True, exist_ok=True)
        for name, hash_route in PAGES.items():
            await browser.get("about:blank")
            await browser.get(f"{daemon.base_url}/{hash_route}")
            await browser.until_text("#live", "live", timeout=30)
            await browser.wait(lambda d: "Loading…" not in d.find_element("css selector", "main").text,
                               timeout=30, what=f"the {name} page")
            if name == "chat":
                await browser.type("#chat-input", "你好")
                await browser.click("#chat-send")
                await browser.wait(lambda d: len(d.find_elements("css selector", "#chat-log .bubble.assistant")) >= 1
                                   and d.find_elements("css selector", "#chat-log .bubble.assistant")[-1].text,
                                   what="a reply")
                await browser.type("#chat-input", "what is the current temperature of thermostat-001")
                await browser.click("#chat-send")
                await browser.wait(lambda d: len(d.find_elements("css selector", "#chat-log .bubble.assistant")) >= 2,
                                   what="the second reply")
            await asyncio.sleep(2.5 if name == "overview" else 1.0)  # the overview's rates need two reads
            await browser.screenshot(OUT / f"{name}.png")
            print(f"console-screenshots: {OUT / name}.png")
        print(json.dumps({"pages": list(PAGES)}))
        return 0
    finally:
        if browser is not None:
            await browser.close()
        for sim in sims:
            await sim.stop()
        await asyncio.to_thread(daemon.terminate)
        broker.stop()
        shutil.rmtree(work, ignore_errors=True)


def main() -> int:
    fonts = subprocess.run(["fc-list", ":lang=zh"], capture_output=True, text=True, check=False).stdout
    if not fonts.strip():
        print("console-screenshots: no Chinese font installed (apt-get install fonts-wqy-microhei): "
              "Chinese text would show as boxes", file=sys.stderr)
    return asyncio.run(shoot())


if __name__ == "__main__":
    raise SystemExit(main())
