"""The console in a real headless Chromium against a real daemon, real Mosquitto and simulated
devices: what an installer sees and does, and that the page uses nothing but the public API.

Marked slow: each test drives a browser for a few seconds.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from bench_lib.browser import Browser, chromium_missing
from daemon_harness import REPO, RunningDaemon, start_daemon, wait_until
from mosquitto_broker import MosquittoBroker
from simulated_site import Sims
from voice_doubles import OpenAiAudioDouble

pytestmark = [pytest.mark.slow, pytest.mark.skipif(chromium_missing() is not None, reason=str(chromium_missing()))]
TOKEN = "console-test-token-0123456789"
ROOMS_FILE = REPO / "etc" / "deviceagentd" / "voice-platform.toml"
WAIT_S = 15.0


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    b = await Browser.start()
    try:
        yield b
    finally:
        await b.close()


@pytest.fixture
async def gateway(broker: MosquittoBroker, tmp_path: Path) -> AsyncIterator[RunningDaemon]:
    gw = await start_daemon(broker.url, tmp_path / "state", voiceplatform_rooms_file=ROOMS_FILE)
    try:
        yield gw
    finally:
        await gw.stop()


async def test_an_installer_sees_the_thermostat_and_drives_it(
        gateway: RunningDaemon, sims: Sims, browser: Browser) -> None:
    thermostat = await sims.start("thermostat", "thermostat-001")
    await sims.start("light", "light-101")
    await wait_until(lambda: gateway.daemon.registry.online_count == 2, WAIT_S)

    await browser.get(gateway.base_url + "/")
    await browser.until_text("main", "2 / 2")  # the overview: online / registered
    await browser.until_text("#live", "live")
    await browser.click('a[data-page="devices"]')
    row = 'tr[data-id="thermostat-001"]'
    await browser.until_text(row, "online")
    assert "Thermostat" in await browser.text_of(row)

    # The table follows the device live, and its filters work.
    await thermostat.report_state(temperature=31.5)
    await browser.until_text(f"{row} td.state", "temperature 31.5")
    await browser.type("#filter-search", "light")
    await browser.wait(lambda d: not d.find_element("css selector", row).is_displayed(),
                       what="the thermostat filtered out")
    await browser.until_text("#device-count", "1 of 2 devices")
    await browser.type("#filter-search", "")
    await browser.select("#filter-product", "Thermostat")
    await browser.until_text("#device-count", "1 of 2 devices")
    assert await browser.js("return document.querySelector('tr[data-id=\"light-101\"]').hidden") is True
    await browser.select("#filter-product", "All products")
    await browser.until_text("#device-count", "2 of 2 devices")

    await browser.click(f'{row} a')
    await browser.until_text("h1", "thermostat-001")
    await browser.until_text('#state td[data-field="temperature"]', "31.5")

    # A command through the form generated from the DeviceSpec: the device answers, the state
    # and the command log follow live.
    form = 'form[data-command="set_target_temperature"]'
    await browser.type(f"{form} input[name=target_temperature]", "24")
    await browser.click(f"{form} button[type=submit]")
    await browser.until_text(f"{form} .result", "ok")
    await browser.until_text('#state td[data-field="target_temperature"]', "24")
    await browser.until_text("#command-log tbody", "set_target_temperature")
    assert "ok" in await browser.text_of("#command-log tbody tr")
    assert await browser.text_of("#command-log tbody tr td.origin") == "API"
    assert thermostat.state["target_temperature"] == 24
    # A command the agent sent for a chat turn says so, and hovering shows the session.
    status, _ = await gateway.request("POST", "/api/chat", json_body={
        "message": "set the target temperature to 23", "stream": True, "sessionId": "console-origin",
        "metadata": {"deviceId": "thermostat-001"}})
    assert status == 200
    await browser.until_text("#command-log tbody tr td.origin", "agent")
    assert await browser.js("return document.querySelector('#command-log tbody tr td.origin').title") == (
        "console-origin")
    await browser.until_text('#state td[data-field="target_temperature"]', "23")

    # An enum parameter is a list to choose from.
    await browser.select('form[data-command="set_mode"] select[name=mode]', "eco")
    await browser.click('form[data-command="set_mode"] button[type=submit]')
    await browser.until_text('#state td[data-field="mode"]', "eco")

    # A value the spec does not allow: the gateway's reason, next to the field; nothing sent.
    sent = len(thermostat.commands_received)
    await browser.type(f"{form} input[name=target_temperature]", "99")
    await browser.click(f"{form} button[type=submit]")
    error = await browser.until_text("#param-set_target_temperature-target_temperature-error", "target_temperature")
    assert "35" in error
    await browser.type(f"{form} input[name=target_temperature]", "warm")
    await browser.click(f"{form} button[type=submit]")
    await browser.until_text("#param-set_target_temperature-target_temperature-error", "number")
    assert len(thermostat.commands_received) == sent

    # A device event appears in the events table as it happens.
    await thermostat.emit_event("temperature_alert", {"temperature": 38.5})
    await browser.until_text("#events tbody", "temperature_alert")
    assert "38.5" in await browser.text_of("#events tbody tr")

    # Going offline shows at once.
    await thermostat.stop()
    await browser.until_text("#device-status", "offline")
    assert await browser.errors(expected=("/commands - Failed to load resource: the server responded with a status "
                                          "of 400",)) == []


async def test_the_page_loads_only_from_the_gateway_and_stays_small(
        gateway: RunningDaemon, sims: Sims, browser: Browser) -> None:
    await sims.start("thermostat", "thermostat-001")
    for page in ("overview", "devices", "devices/thermostat-001", "chat", "voice", "voice-platform"):
        await browser.get(f"{gateway.base_url}/#/{page}")
        await browser.wait(lambda d: "Loading…" not in d.find_element("css selector", "main").text, what=page)
        await asyncio.sleep(0.3)
        resources = await browser.js(
            "return performance.getEntriesByType('resource').map(e => [e.name, e.transferSize]);")
        for name, _ in resources:
            assert name.startswith(gateway.base_url), f"{page}: a request left the gateway: {name}"
    await browser.get(gateway.base_url + "/")
    await browser.until_text("#live", "live")
    transferred = await browser.js(
        "const nav = performance.getEntriesByType('navigation')[0];"
        "return nav.transferSize + performance.getEntriesByType('resource')"
        ".reduce((n, e) => n + e.transferSize, 0);")
    assert 0 < transferred <= 150 * 1024, transferred


async def test_leaving_pages_lets_go_of_their_streams(gateway: RunningDaemon, browser: Browser) -> None:
    """Browsers allow six connections per site; each page's live stream holds one. Going back
    and forth more often than that must not leave the console waiting for a free connection."""
    for round_ in range(8):
        page = ("overview", "devices", "voice-platform", "chat")[round_ % 4]
        await browser.get("about:blank")
        await browser.get(f"{gateway.base_url}/#/{page}")
        await browser.until_text("#live", "live")
        await browser.wait(lambda d: "Loading…" not in d.find_element("css selector", "main").text, what=page)
    await wait_until(lambda: gateway.daemon.live.clients == 1, WAIT_S)


async def test_sign_in_keeps_the_token_in_this_tab_only(
        broker: MosquittoBroker, tmp_path: Path, browser: Browser) -> None:
    gw = await start_daemon(broker.url, tmp_path / "state", http_tokens=[TOKEN])
    try:
        await browser.get(gw.base_url + "/")
        await browser.wait(lambda d: d.find_element("css selector", "#sign-in").get_attribute("open") is not None,
                           what="the sign-in dialog")
        await browser.type("#token", "wrong-token-wrong-token")
        await browser.click("#sign-in-form button")
        await browser.until_text("#sign-in-error", "not accepted")
        await browser.type("#token", TOKEN)
        await browser.click("#sign-in-form button")
        await browser.until_text("main", "Devices per product")
        await browser.until_text("#live", "live")
        stored = await browser.js("return [sessionStorage.getItem('deviceagentd.token'), localStorage.length, "
                                  "document.cookie];")
        assert stored == [TOKEN, 0, ""]
        # Another tab (a new session) must sign in again.
        await browser.js("sessionStorage.clear(); location.reload();")
        await browser.wait(lambda d: d.find_element("css selector", "#sign-in").get_attribute("open") is not None,
                           what="the sign-in dialog again")
        await browser.type("#token", TOKEN)
        await browser.click("#sign-in-form button")
        await browser.until_text("main", "Devices per product")
        await browser.click("#sign-out")
        await browser.wait(lambda d: d.execute_script("return sessionStorage.length") == 0, what="the token gone")
    finally:
        await gw.stop()


async def test_chat_shows_the_reply_and_its_tool_calls(gateway: RunningDaemon, sims: Sims, browser: Browser) -> None:
    await sims.start("thermostat", "thermostat-001")
    await wait_until(lambda: gateway.daemon.registry.online_count == 1, WAIT_S)
    await browser.get(gateway.base_url + "/#/chat")
    await browser.type("#chat-input", "what is the current temperature of thermostat-001")
    await browser.click("#chat-send")
    reply = await browser.until_text("#chat-log .bubble.assistant", "28")
    assert "temperature" in reply
    tool = '#chat-log details.tool[data-tool="get_device_state"]'
    await browser.wait(lambda d: d.find_elements("css selector", tool), what="the tool call")
    await browser.type("#chat-input", "你好")
    await browser.click("#chat-send")
    await browser.wait(lambda d: len(d.find_elements("css selector", "#chat-log .bubble.assistant")) == 2
                       and d.find_elements("css selector", "#chat-log .bubble.assistant")[1].text.strip(),
                       what="the second reply")
    # The conversation is the gateway's session: reloading shows it again.
    await browser.get(gateway.base_url + "/#/chat")
    await browser.until_text("#chat-log", "你好")


async def test_voice_platform_page_shows_speakers_and_runs_a_scene(
        gateway: RunningDaemon, sims: Sims, browser: Browser) -> None:
    light = await sims.start("light", "light-101")
    curtain = await sims.start("curtain", "curtain-101")
    await wait_until(lambda: gateway.daemon.registry.online_count == 2, WAIT_S)
    await browser.get(gateway.base_url + "/#/voice-platform")
    await browser.until_text("#speakers", "no token")
    status, body = await gateway.request(
        "GET", "/v1.0/voice/devices/speaker-101/token?code=demo-brand&industry_type=hotel")
    assert status == 200 and body["success"], body
    await browser.js("location.reload()")
    await browser.until_text("#speakers", "live token")
    page = await browser.call(lambda: browser.driver.page_source)
    assert body["result"]["token"] not in page and body["result"]["refresh_token"] not in page
    await browser.click('button[data-scene="welcome-101"]')
    await browser.until_text('[data-room="101"]', "done")
    assert light.state["brightness"] == 80 and curtain.state["position"] == 100
    # The scene's commands are in the device's command log, marked as the scene's steps.
    await browser.get(gateway.base_url + "/#/devices/light-101")
    await browser.until_text("#command-log tbody tr td.origin", "API · scene welcome-101")


async def test_the_voice_test_says_why_the_microphone_is_unavailable(gateway: RunningDaemon) -> None:
    # A LAN name over plain http: not a secure context, so no microphone.
    other = await Browser.start(("--host-resolver-rules=MAP gateway.test 127.0.0.1",))
    try:
        port = gateway.base_url.rsplit(":", 1)[1]
        await other.get(f"http://gateway.test:{port}/#/voice")
        notice = await other.until_text("#voice-unavailable", "https://")
        assert "localhost" in notice and "tls_cert_file" in notice
        assert await other.js("return document.getElementById('voice-connect').disabled") is True
    finally:
        await other.close()


def _speech_wav(path: Path, text: str) -> Path:
    subprocess.run(["espeak-ng", "-w", str(path), text], check=True, capture_output=True)
    return path


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng makes the speech")
async def test_the_voice_test_talks_to_the_gateway_and_plays_the_reply(
        broker: MosquittoBroker, tmp_path: Path, sims: Sims) -> None:
    wav = _speech_wav(tmp_path / "question.wav", "what is the current temperature")
    async with OpenAiAudioDouble(api_key=None) as speech:
        speech.transcription.text = "what is the current temperature of thermostat-001"
        gw = await start_daemon(broker.url, tmp_path / "state", voice_openai_base_url=speech.base_url,
                                http_tokens=[TOKEN])
        b = await Browser.start(("--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
                                 f"--use-file-for-fake-audio-capture={wav}",
                                 "--autoplay-policy=no-user-gesture-required"))
        try:
            await sims.start("thermostat", "thermostat-001")
            await wait_until(lambda: gw.daemon.registry.online_count == 1, WAIT_S)
            await b.get(gw.base_url + "/#/voice")
            await b.type("#token", TOKEN)  # the voice port takes the same token as the API
            await b.click("#sign-in-form button")
            await b.click("#voice-connect")
            await b.until_text("#voice-state", "connected")
            # The microphone runs (its level meter moves) before the button is pressed.
            await b.wait(lambda d: d.execute_script(
                "return parseFloat(document.querySelector('.meter span').style.width || '0') > 0"),
                timeout=30, what="the microphone level")
            talk = await b.element("#voice-talk")
            await b.call(lambda: b.driver.execute_script(
                "arguments[0].dispatchEvent(new PointerEvent('pointerdown', {bubbles: true}))", talk))
            await asyncio.sleep(2.0)
            await b.call(lambda: b.driver.execute_script(
                "arguments[0].dispatchEvent(new PointerEvent('pointerup', {bubbles: true}))", talk))
            await b.until_text("#voice-log", "what is the current temperature", timeout=30)
            await b.until_text("#voice-log .bubble.assistant", "28", timeout=30)
            await b.until_text("#voice-audio", "played", timeout=30)
            # What reached the speech service was the microphone: 16 kHz PCM with the question's sound in it.
            [request] = speech.transcriptions
            assert request.sample_rate == 16000 and request.channels == 1
            assert len(request.pcm) >= 16000 * 2  # at least a second of audio
            samples = memoryview(request.pcm).cast("h")
            assert max(abs(s) for s in samples) > 2000, "the microphone's speech did not arrive"
            assert speech.speeches and speech.problems == []
            assert await b.errors(expected=("status of 401",)) == []  # before signing in
        finally:
            await b.close()
            await gw.stop()
