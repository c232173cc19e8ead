"""The voice platform against someone who is not the speaker (issue 13, findings 6 and 7): HEAD
changes nothing, brand codes cannot be guessed quickly or told apart from unknown voice_ids, an
obtain call does not cut off the speaker holding the live token, and a signed token request
from Tuya's own Python connector cannot be replayed."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from mosquitto_broker import MosquittoBroker
from tuya_connector import TuyaOpenAPI
from voiceplatform_site import BRAND, Site, running_site

from deviceagentd.voiceplatform.service import CLIENT_FAILURES, SPEAKER_FAILURES
from deviceagentd.voiceplatform.throttle import FailureThrottle

QUERY = {"code": BRAND, "industry_type": "hotel"}


def failed(answer: dict[str, Any], code: int) -> str:
    assert answer["success"] is False and answer["code"] == code, answer
    return str(answer["msg"])


def writes_accepted(site: Site) -> int:
    """Every write the daemon hands its store bumps this (devices, events, tokens, commands...)."""
    running = site.gw.daemon.store._running
    assert running is not None
    return running.pending._accepted_seq


async def head(site: Site, path: str) -> int:
    async with site.gw.session.head(site.gw.base_url + path) as resp:
        return resp.status


async def test_head_never_changes_state(broker: MosquittoBroker, tmp_path: Path) -> None:
    async with running_site(broker.url, tmp_path, devices={"light": "light"}) as site:
        pair = await site.obtain()
        platform = site.gw.daemon.voice_platform
        assert platform is not None
        before = writes_accepted(site)
        token_path = f"/v1.0/voice/devices/{site.speaker}/token?code={BRAND}&industry_type=hotel"
        assert await head(site, token_path) == 405
        assert await head(site, f"/v1.0/token/{pair['refresh_token']}") == 405
        # Every other route that answers HEAD, on both ports, routes added later included.
        for runner in site.gw.daemon._runners:
            port = site.gw.daemon.http_port if runner is site.gw.daemon._runners[0] else site.gw.daemon.voice_port
            for route in runner.app.router.routes():
                if route.method != "HEAD":
                    continue
                info = route.resource.get_info() if route.resource is not None else {}
                path = info.get("path") or info.get("formatter", "")
                for name, value in (("deviceId", site.id("light")), ("productId", "light"),
                                    ("sessionId", "s-1"), ("voice_id", site.speaker),
                                    ("refresh_token", pair["refresh_token"])):
                    path = path.replace("{" + name + "}", value)
                async with site.gw.session.head(f"http://127.0.0.1:{port}{path}",
                                                params=QUERY) as resp:
                    assert resp.status < 500, (path, resp.status)
        assert writes_accepted(site) == before
        # The speaker's tokens are untouched: the access token works, the refresh token is unspent.
        assert (await site.discover(pair["token"]))["success"] is True
        assert (await site.call("GET", f"/v1.0/token/{pair['refresh_token']}"))["success"] is True


async def test_guessing_a_brand_code_is_throttled_per_speaker_and_logged(broker: MosquittoBroker, tmp_path: Path,
                                                                        caplog: pytest.LogCaptureFixture) -> None:
    async with running_site(broker.url, tmp_path, devices={}) as site:
        live = await site.token()
        path = f"/v1.0/voice/devices/{site.speaker}/token"
        with caplog.at_level(logging.WARNING, logger="deviceagentd.voiceplatform"):
            for guess in range(SPEAKER_FAILURES):
                failed(await site.call("GET", path, {"code": f"guess-{guess}", "industry_type": "hotel"}), 1106)
        assert len([r for r in caplog.records if "refused" in r.getMessage()]) == SPEAKER_FAILURES
        assert site.speaker in caplog.records[0].getMessage()
        # The right code is not even checked now...
        assert "too many failed token requests" in failed(await site.call("GET", path, QUERY), 1106)
        # ...but the speaker holding the live token goes on, and the other speaker can obtain one.
        assert (await site.discover(live))["success"] is True
        assert (await site.obtain(site.other_speaker))["token"]


async def test_failures_from_one_client_are_throttled_and_other_clients_are_not(broker: MosquittoBroker,
                                                                              tmp_path: Path) -> None:
    async with running_site(broker.url, tmp_path, devices={}) as site:
        for n in range(CLIENT_FAILURES):
            failed(await site.call("GET", f"/v1.0/voice/devices/nobody-{n}/token", QUERY), 1106)
        assert "too many" in failed(await site.call("GET", f"/v1.0/voice/devices/{site.speaker}/token", QUERY),
                                    1106)
        # Another address on the loopback network is another client.
        connector = aiohttp.TCPConnector(local_addr=("127.0.0.2", 0))
        async with aiohttp.ClientSession(connector=connector) as other, other.get(
                f"{site.gw.base_url}/v1.0/voice/devices/{site.speaker}/token", params=QUERY) as resp:
            answer = await resp.json()
        assert answer["success"] is True, answer


def test_the_throttle_forgets_failures_once_they_leave_the_window() -> None:
    now = [0.0]
    throttle = FailureThrottle(3, 60.0, lambda: now[0])
    for at in (0.0, 10.0, 20.0):
        now[0] = at
        assert throttle.retry_after("spk") is None
        throttle.failed("spk")
    now[0] = 30.0
    assert throttle.retry_after("spk") == pytest.approx(30.0)
    assert throttle.retry_after("other") is None
    now[0] = 60.0
    assert throttle.retry_after("spk") is None  # the failure at 0 s left the window


async def test_a_token_obtained_by_someone_else_does_not_cut_off_the_speaker(broker: MosquittoBroker,
                                                                            tmp_path: Path) -> None:
    async with running_site(broker.url, tmp_path, devices={}) as site:
        speaker = await site.obtain()
        for _ in range(3):  # someone who knows the code asks again and again
            await site.obtain()
        assert (await site.discover(speaker["token"]))["success"] is True
        refreshed = await site.call("GET", f"/v1.0/token/{speaker['refresh_token']}")
        assert refreshed["success"] is True
        assert (await site.discover(refreshed["result"]["token"]))["success"] is True


def connector_for(site: Site) -> tuple[TuyaOpenAPI, list[dict[str, Any]]]:
    """Tuya's Python connector pointed at the gateway, recording what it sends."""
    api = TuyaOpenAPI(site.gw.base_url, site.client_id, site.secret)
    sent: list[dict[str, Any]] = []
    send = api.session.request

    def recording(method: str, url: str, **kwargs: Any) -> Any:
        sent.append({"method": method, "url": url, **kwargs})
        return send(method, url, **kwargs)

    api.session.request = recording  # type: ignore[method-assign]
    return api, sent


async def test_a_signed_token_request_from_tuya_connector_python_cannot_be_replayed(broker: MosquittoBroker,
                                                                                    tmp_path: Path) -> None:
    async with running_site(broker.url, tmp_path, devices={}, signing=True) as site:
        api, sent = connector_for(site)
        path = f"/v1.0/voice/devices/{site.speaker}/token"
        answer = await asyncio.to_thread(api.get, path, QUERY)
        assert answer["success"] is True, answer
        assert "nonce" not in sent[0]["headers"]  # the connector sends none
        live = answer["result"]["token"]

        # The same bytes again, within the skew window: refused, and no token is handed out.
        request = sent[0]
        async with site.gw.session.get(request["url"], params=request["params"],
                                       headers=request["headers"]) as resp:
            replayed = await resp.json()
        assert "replayed" in failed(replayed, 1013)
        # A fresh request, signed anew by the connector, is fine.
        again = await asyncio.to_thread(api.get, path, QUERY)
        assert again["success"] is True and again["result"]["token"] != live
        assert len(sent) == 2
