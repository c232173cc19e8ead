"""Cloud requests end to end (issue 15 §4): a cloud client on a "cloud" Mosquitto publishes requests,
the gateway (built with its default request handler, nothing injected) takes them over its TLS
uplink, a simulated device on the site Mosquitto answers, and the reply comes back through the
outbox. Also: publishes the cloud broker refuses (its ACL) are counted, logged and dropped.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from daemon_harness import RunningDaemon, start_daemon, wait_until
from mosquitto_broker import MosquittoBroker
from node_peers import run_node
from simulated_site import Sims
from test_mqtt_support import WAIT_S, unique
from uplink_site import CloudBroker, CloudSubscriber, LanDevices, Received, start_cloud
from uplink_site import uplink_settings as site_uplink_settings

from deviceagentd.agent.runner import TurnFailed, TurnOutcome
from deviceagentd.uplink import presence
from deviceagentd.uplink.requests import _chat_answer

SITE = "site-c"
REPLY_S = 10.0



def uplink_settings(cloud: CloudBroker, **more: Any) -> dict[str, Any]:
    return site_uplink_settings(cloud, SITE, **more)


async def subscribed(running: RunningDaemon) -> None:
    """Connected to the cloud, and its request subscriptions in place."""
    uplink = running.daemon.uplink
    assert uplink is not None
    await wait_until(lambda: uplink.connection.is_connected, timeout=10)
    await asyncio.sleep(0.3)  # the SUBSCRIBE goes out with the CONNACK; let the SUBACK come back


@pytest.fixture()
async def gw(broker: MosquittoBroker, cloud: CloudBroker, tmp_path: Path) -> AsyncIterator[RunningDaemon]:
    running = await start_daemon(broker.url, tmp_path / "state", **uplink_settings(cloud))
    try:
        await subscribed(running)
        yield running
    finally:
        await running.stop()


@pytest.fixture()
async def cloud5(cloud: CloudBroker) -> AsyncIterator[CloudSubscriber]:
    client = CloudSubscriber(cloud.broker.port)
    await client.connect()
    try:
        yield client
    finally:
        await client.disconnect()


async def online(sims: Sims, gw: RunningDaemon, **options: Any) -> Any:
    sim = await sims.start("thermostat", unique("thermostat"), **options)
    await wait_until(lambda: (d := gw.daemon.registry.get(sim.device_id)) is not None and d.online, WAIT_S)
    return sim


def commands(device_id: str, site: str = SITE) -> str:
    return f"sites/{site}/devices/{device_id}/commands"


def replies(client: CloudSubscriber, topic: str) -> list[Received]:
    """Replies to requests on `topic` (the result topic also carries forwarded command outcomes,
    which have no httpStatus)."""
    return [m for m in client.messages if m.topic == topic and isinstance(m.body, dict) and "httpStatus" in m.body]


async def reply_on(client: CloudSubscriber, topic: str, count: int = 1) -> list[Received]:
    return await wait_until(lambda: (found := replies(client, topic)) and len(found) >= count and found, REPLY_S)


# ------------------------------------------------------------------------------------ commands


async def test_an_mqtt5_command_is_answered_on_its_response_topic_with_the_http_apis_body(
        gw: RunningDaemon, sims: Sims, cloud5: CloudSubscriber) -> None:
    sim = await online(sims, gw)
    body = {"command": "set_target_temperature", "params": {"target_temperature": 22.5}, "requestId": "cloud-5"}
    response_topic = f"sites/{SITE}/replies/console-1"
    cloud5.publish(commands(sim.device_id), body, response_topic=response_topic, correlation_data=b"\x01corr-5")
    [reply] = await reply_on(cloud5, response_topic)
    assert reply.properties.get("correlation_data") == [b"\x01corr-5"]
    assert reply.properties.get("content_type") == ["application/json"]
    [received] = sim.commands_received
    assert (received.cmd, received.params, received.request_id) == (
        "set_target_temperature", {"target_temperature": 22.5}, "cloud-5")
    # The same command over HTTP: the same body, with httpStatus beside it.
    status, http = await gw.request("POST", f"/api/devices/{sim.device_id}/commands",
                                    json_body={**body, "requestId": "http-5"})
    assert status == 200
    answer = dict(reply.body)
    assert answer.pop("httpStatus") == 200
    for varying in ("latencyMs", "requestId"):
        answer.pop(varying), http.pop(varying)
    assert answer == http
    assert reply.body["requestId"] == "cloud-5"
    # The command log knows where it came from, and its outcome is forwarded as for any command.
    record = await gw.daemon.store.get_command("cloud-5")
    assert (record.status, record.extra.get("origin")) == ("ok", {"channel": "uplink"})
    await wait_until(lambda: any(m.body.get("requestId") == "cloud-5" and m.body.get("status") == "ok"
                                 for m in cloud5.on(f"/devices/{sim.device_id}/commands/result")), REPLY_S)


async def test_an_mqtt311_command_is_answered_on_the_result_topic_with_its_request_id(
        gw: RunningDaemon, sims: Sims, cloud: CloudBroker) -> None:
    sim = await online(sims, gw)
    client = CloudSubscriber(cloud.broker.port, protocol=4)
    await client.connect()
    try:
        client.publish(commands(sim.device_id), {"command": "set_mode", "params": {"mode": "heat"},
                                                 "requestId": "v311-1"})
        [reply] = await reply_on(client, f"sites/{SITE}/devices/{sim.device_id}/commands/result")
        assert reply.properties.get("correlation_data") is None
        assert reply.body["requestId"] == "v311-1"
        assert (reply.body["httpStatus"], reply.body["ok"], reply.body["data"]) == (200, True, {"mode": "heat"})
        assert [c.request_id for c in sim.commands_received] == ["v311-1"]
    finally:
        await client.disconnect()


async def test_a_command_the_devicespec_refuses_gets_a_400_and_never_reaches_the_device(
        gw: RunningDaemon, sims: Sims, cloud5: CloudSubscriber) -> None:
    sim = await online(sims, gw)
    result_topic = f"sites/{SITE}/devices/{sim.device_id}/commands/result"
    cloud5.publish(commands(sim.device_id), {"command": "set_target_temperature",
                                             "params": {"target_temperature": 99}, "requestId": "bad-1"})
    [reply] = await reply_on(cloud5, result_topic)
    assert reply.body["httpStatus"] == 400 and reply.body["requestId"] == "bad-1"
    assert reply.body["error"]["code"] == "invalid_request"
    assert reply.body["error"]["details"][0]["field"] == "params.target_temperature"
    assert sim.commands_received == []
    assert gw.daemon.metrics.rejects.get({"kind": "cloud_command", "reason": "invalid_request"}) == 1


async def test_commands_for_another_site_or_a_device_not_here_are_never_run(
        gw: RunningDaemon, sims: Sims, cloud5: CloudSubscriber) -> None:
    sim = await online(sims, gw)
    # Another site's topic naming this site's device: the gateway does not even subscribe to it.
    cloud5.publish(commands(sim.device_id, site="site-other"), {"command": "set_mode", "params": {"mode": "eco"},
                                                                "requestId": "other-site"})
    # A device that is not on this site: refused with the HTTP API's 404.
    cloud5.publish(commands("ghost-1"), {"command": "set_mode", "params": {"mode": "eco"}, "requestId": "ghost"},
                   response_topic=f"sites/{SITE}/replies/r", correlation_data=b"g")
    [ghost] = await reply_on(cloud5, f"sites/{SITE}/replies/r")
    assert (ghost.body["httpStatus"], ghost.body["error"]["code"], ghost.body["requestId"]) == (
        404, "device_not_found", "ghost")
    # A response topic outside this site: refused, answered on the default result topic.
    cloud5.publish(commands(sim.device_id), {"command": "set_mode", "params": {"mode": "eco"}, "requestId": "esc"},
                   response_topic="sites/site-other/replies/r", correlation_data=b"e")
    [escape] = await reply_on(cloud5, f"sites/{SITE}/devices/{sim.device_id}/commands/result")
    assert (escape.body["httpStatus"], escape.body["error"]["code"]) == (403, "forbidden")
    # Requests are taken in order on one connection: by now the other site's one would have run.
    cloud5.publish(commands(sim.device_id), {"command": "set_mode", "params": {"mode": "heat"}, "requestId": "ok"})
    await wait_until(lambda: any(m.body.get("requestId") == "ok"
                                 for m in replies(cloud5, f"sites/{SITE}/devices/{sim.device_id}/commands/result")),
                     REPLY_S)
    assert [c.request_id for c in sim.commands_received] == ["ok"]
    assert not [m for m in cloud5.messages if m.topic.startswith("sites/site-other/") and "/replies/" in m.topic]
    assert await gw.daemon.store.get_command("other-site") is None


# ------------------------------------------------------------------------------------ chat


async def test_a_chat_request_gets_the_offline_agents_reply(
        gw: RunningDaemon, sims: Sims, cloud5: CloudSubscriber) -> None:
    sim = await online(sims, gw)
    cloud5.publish(f"sites/{SITE}/gateway/chat", {"text": "list the devices", "requestId": "chat-1"})
    [reply] = await reply_on(cloud5, f"sites/{SITE}/gateway/chat/result")
    assert (reply.body["httpStatus"], reply.body["requestId"]) == (200, "chat-1")
    assert sim.device_id in reply.body["text"] and reply.body["sessionId"]


# ------------------------------------------------------------------------------------ WAN loss


async def test_a_reply_ready_while_the_cloud_is_away_is_delivered_after_reconnect(
        gw: RunningDaemon, sims: Sims, cloud: CloudBroker, cloud5: CloudSubscriber,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "deviceagentd.uplink.requests")
    sim = await online(sims, gw, answer_delay_ms=1500)
    uplink = gw.daemon.uplink
    assert uplink is not None
    response_topic = f"sites/{SITE}/replies/wan"
    cloud5.publish(commands(sim.device_id), {"command": "set_mode", "params": {"mode": "eco"}, "requestId": "wan-1"},
                   response_topic=response_topic, correlation_data=b"wan")
    await wait_until(lambda: sim.commands_received, REPLY_S)
    await cloud5.disconnect()  # its persistent session keeps what arrives meanwhile
    cloud.broker.stop()
    await wait_until(lambda: not uplink.connection.is_connected, 5)
    # The device answers while the cloud is away: the reply waits in the outbox.
    await in_outbox(gw, response_topic)
    cloud.broker.start()
    await cloud5.connect()
    [reply] = await reply_on(cloud5, response_topic)
    assert reply.properties.get("correlation_data") == [b"wan"]
    assert (reply.body["httpStatus"], reply.body["requestId"], reply.body["data"]) == (200, "wan-1", {"mode": "eco"})
    # The broker delivers the request again (it never got our PUBACK): not run twice, and not
    # answered twice (the answer was already in the outbox).
    await wait_until(lambda: gw.daemon.store.outbox_stats().rows == 0, REPLY_S)
    await asyncio.sleep(0.5)
    assert [c.request_id for c in sim.commands_received] == ["wan-1"]
    assert len(replies(cloud5, response_topic)) == 1
    assert any("wan-1 delivered again by the broker: already answered" in r.getMessage() for r in caplog.records)
    assert gw.daemon.metrics.rejects.get({"kind": "cloud_command", "reason": "conflict"}) == 0


async def in_outbox(gw: RunningDaemon, topic: str) -> None:
    for _ in range(int(REPLY_S / 0.05)):
        if any(row.topic == topic for row in await gw.daemon.store.outbox_after(0, limit=1000)):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"nothing for {topic} in the outbox")


# ------------------------------------------------------------------------------------ refused by the broker


async def test_messages_the_cloud_acl_refuses_are_counted_logged_once_and_do_not_block_the_outbox(
        broker: MosquittoBroker, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    acl = tmp_path / "cloud.acl"
    # Anonymous clients (the gateway and the test's subscriber): everything but one device's events.
    acl.write_text(f"topic readwrite #\ntopic deny sites/{SITE}/devices/denied-1/events\n")
    cloud = start_cloud(tmp_path / "cloud", extra_conf=f"acl_file {acl}\n")
    caplog.set_level(logging.INFO, "deviceagentd.uplink")
    running = await start_daemon(broker.url, tmp_path / "state", **uplink_settings(cloud))
    sub = CloudSubscriber(cloud.broker.port)
    lan = LanDevices(broker.port)
    try:
        await subscribed(running)
        await sub.connect()
        await lan.connect()
        for n in range(6):
            for device in ("denied-1", "allowed-1"):
                await lan.room()
                lan.event(device, n)
        await wait_until(lambda: len(sub.event_numbers("allowed-1")) >= 6, REPLY_S)
        uplink = running.daemon.uplink
        assert uplink is not None
        await wait_until(lambda: uplink.refusals.total >= 6, REPLY_S)
        await wait_until(lambda: running.daemon.store.outbox_stats().rows == 0, REPLY_S)
        assert sub.event_numbers("allowed-1") == list(range(6))
        assert sub.event_numbers("denied-1") == []
        assert sub.on("/devices/denied-1/lifecycle")  # its other topics are allowed
        _, metrics = await running.request("GET", "/metrics")
        assert 'deviceagentd_uplink_refused_total{reason="not authorized"} 6' in metrics
        _, health = await running.request("GET", "/api/health")
        refused = health["uplink"]["refused"]
        assert refused["total"] == 6 and refused["byReason"] == {"not authorized": 6}
        assert refused["last"]["topic"] == f"sites/{SITE}/devices/denied-1/events"
        assert f"ACL must let this gateway publish to sites/{SITE}/#" in health["uplink"]["warning"]
        assert uplink.forwarder.acked < uplink.forwarder.published
        lines = [r.getMessage() for r in caplog.records if "refused a message" in r.getMessage()]
        assert len(lines) == 1, lines
        assert "denied-1/events" in lines[0] and "not authorized" in lines[0]
    finally:
        await lan.disconnect()
        await sub.disconnect()
        await running.stop()
        cloud.broker.stop()


async def test_a_refused_request_subscription_is_logged_and_shown_in_health(
        gw: RunningDaemon, caplog: pytest.LogCaptureFixture) -> None:
    """EMQX answers a subscription its ACL denies with SUBACK 0x87; Mosquitto 2.0's acl_file grants
    it and filters on delivery instead, so the SUBACK is handed to the uplink here as gmqtt would."""
    uplink = gw.daemon.uplink
    assert uplink is not None
    _, health = await gw.request("GET", "/api/health")
    assert "warning" not in health["uplink"] and uplink.subscriptions_refused == []
    caplog.set_level(logging.WARNING, "deviceagentd.uplink")
    uplink._on_subscribed(uplink.connection._client, 1, (1, 0x87), {})
    assert uplink.subscriptions_refused == [f"sites/{SITE}/gateway/chat"]
    _, health = await gw.request("GET", "/api/health")
    assert f"refused the subscription to sites/{SITE}/gateway/chat" in health["uplink"]["warning"]
    [line] = [r.getMessage() for r in caplog.records if "refused the subscription" in r.getMessage()]
    assert f"subscribe to sites/{SITE}/#" in line


# ------------------------------------------------------------------------------------ mqtt.js


async def test_an_mqtt_js_back_end_gets_its_reply_with_its_correlation_data(
        gw: RunningDaemon, sims: Sims, cloud: CloudBroker) -> None:
    """mqtt.js is what many fleet back ends use: its MQTT 5 request/response properties round trip."""
    sim = await online(sims, gw)
    response_topic = f"sites/{SITE}/replies/mqttjs"
    [out] = await run_node("cloud_request.mjs", cloud.broker.url, commands(sim.device_id), response_topic,
                           json.dumps({"command": "set_mode", "params": {"mode": "cool"}, "requestId": "js-7"}))
    assert out.get("timeout") is not True, out
    assert out["topic"] == response_topic and out["correlation"] == out["sent"]
    assert out["contentType"] == "application/json"
    assert (out["body"]["httpStatus"], out["body"]["requestId"], out["body"]["data"]) == (200, "js-7", {"mode": "cool"})
    assert [c.request_id for c in sim.commands_received] == ["js-7"]


# ------------------------------------------------------------------------------------ docs/uplink.md

DOC = Path(__file__).resolve().parent.parent / "docs" / "uplink.md"
# Values that are maps of their own (device fields, params, error details): not named in the docs.
FREE_FORM = frozenset({"state", "data", "params", "details", "origin"})


def doc_fields(cell: str) -> tuple[set[str], set[str]]:
    """The field names in a table cell's `{…}` code spans: (always there, all). `"x"?` is optional."""
    always: set[str] = set()
    every: set[str] = set()
    for span in re.findall(r"`(\{[^`]*\})`", cell):
        for name, optional in re.findall(r'[{,]\s*"(\w+)"(\?)?', span):
            every.add(name)
            if not optional:
                always.add(name)
    return always, every


def doc_rows(heading: str) -> dict[str, str]:
    """The first column → the last, of the table under `heading` in docs/uplink.md."""
    text = DOC.read_text()
    section = text[text.index(heading):]
    section = section[: section.find("\n#", 1)] if "\n#" in section[1:] else section
    rows: dict[str, str] = {}
    for line in section.splitlines():
        cells = re.split(r"(?<!\\)\|", line)[1:-1]
        if len(cells) >= 2 and "`{" in cells[-1]:  # not the header or the separator
            rows[cells[0].strip().strip("`")] = cells[-1]
    return rows


def message_fields(value: Any) -> set[str]:
    if not isinstance(value, dict):
        return set()
    names = set(value)
    for key, inner in value.items():
        if key not in FREE_FORM:
            names |= message_fields(inner)
    return names


def assert_documented(what: str, cell: str, bodies: list[dict[str, Any]]) -> None:
    always, every = doc_fields(cell)
    assert bodies, f"nothing was sent for {what}"
    seen = set().union(*(message_fields(b) for b in bodies))
    assert seen <= every, f"{what}: sent but not in docs/uplink.md: {sorted(seen - every)}"
    assert always <= seen, f"{what}: in docs/uplink.md but never sent: {sorted(always - seen)}"


async def test_the_payload_fields_in_docs_uplink_md_are_what_the_gateway_sends(
        broker: MosquittoBroker, cloud: CloudBroker, sims: Sims, tmp_path: Path) -> None:
    sub = CloudSubscriber(cloud.broker.port)
    await sub.connect()
    running = await start_daemon(broker.url, tmp_path / "state",
                                 **uplink_settings(cloud, uplink_state_min_interval_s=0, uplink_health_interval_s=1))
    try:
        await subscribed(running)
        sim = await online(sims, running)
        device = sim.device_id
        await sim.report_state(target_temperature=21)
        await sim.emit_event("temperature_alert")
        await running.request("POST", f"/api/devices/{device}/commands",
                              json_body={"command": "set_mode", "params": {"mode": "heat"}})
        sub.publish(commands(device), {"command": "set_mode", "params": {"mode": "eco"}, "requestId": "d-1"})
        sub.publish(commands(device), {"command": "set_mode", "params": {"mode": "turbo"}, "requestId": "d-2"})
        sub.publish(f"sites/{SITE}/gateway/chat", {"text": "list the devices", "requestId": "d-3"})
        result_topic = f"sites/{SITE}/devices/{device}/commands/result"
        await reply_on(sub, result_topic, 2)
        await reply_on(sub, f"sites/{SITE}/gateway/chat/result")
        await wait_until(lambda: sub.on("/gateway/health") and sub.on(f"/devices/{device}/events"), REPLY_S)
        await sim.stop()
        await wait_until(lambda: any(m.body.get("status") == "offline" for m in sub.on(f"/devices/{device}/lifecycle")),
                         REPLY_S)
    finally:
        await running.stop()
    await wait_until(lambda: any(m.body.get("reason") == "shutdown" for m in sub.on("/gateway/status")), REPLY_S)
    await sub.disconnect()

    def bodies(topic: str, replies_too: bool = False) -> list[dict[str, Any]]:
        return [m.body for m in sub.messages if m.topic == topic and ("httpStatus" in m.body) == replies_too]

    sent = doc_rows("## Gateway → cloud")
    for template in ("lifecycle", "state", "events", "commands/result"):
        assert_documented(template, sent[f"sites/{{siteId}}/devices/{{deviceId}}/{template}"],
                          bodies(f"sites/{SITE}/devices/{device}/{template}"))
    will = json.loads(presence.will("1.0"))  # published by the broker, not the gateway
    assert_documented("gateway/status", sent["sites/{siteId}/gateway/status"],
                      [*bodies(f"sites/{SITE}/gateway/status"), will])
    assert_documented("gateway/health", sent["sites/{siteId}/gateway/health"], bodies(f"sites/{SITE}/gateway/health"))

    reply_rows = list(doc_rows("### Reply payloads").values())
    command_replies = bodies(result_topic, replies_too=True)
    assert_documented("a command reply", reply_rows[0], [b for b in command_replies if "error" not in b])
    assert_documented("a refused request", reply_rows[1], [b for b in command_replies if "error" in b])
    assert_documented("a chat reply", reply_rows[2], bodies(f"sites/{SITE}/gateway/chat/result", replies_too=True))
    # A chat turn that fails (reply_rows[3]) needs a provider that fails: the body is built by
    # requests._chat_answer, checked here without one.
    failed = _chat_answer(TurnOutcome(session_id="s", text="", failure=TurnFailed("turn_timeout", "too slow")))
    assert_documented("a failed chat turn", reply_rows[3], [{**failed, "requestId": None}])
