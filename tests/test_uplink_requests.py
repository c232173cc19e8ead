"""Cloud requests over the uplink (issue 15 §4), driven through `CloudRequests.handle` against the
real daemon: its CommandService on a real site Mosquitto, simulated devices answering, its agent.

Every bad-input rule sends the bad input; command errors are compared with what the HTTP API
answers for the same body, since the uplink must take the same validated path. The round trip
through a cloud broker is tested with the uplink connection itself.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from daemon_harness import RunningDaemon, wait_until
from mosquitto_broker import MosquittoBroker
from simulated_site import Sims
from test_mqtt_support import WAIT_S, running_gateway, unique

from deviceagentd.agent.runner import Agent
from deviceagentd.agent.types import Delta, Tools, TurnContext, TurnEvent
from deviceagentd.uplink.request_topics import RequestKind, RequestTopics
from deviceagentd.uplink.requests import CloudRequests, RequestLimits
from deviceagentd.uplink.requests_api import CloudReply, CloudRequestHandler

SITE = "site-a"
HANDLE_S = 10.0  # every request is answered well within this, or handle() hangs


@pytest.fixture
async def gw(broker: MosquittoBroker, tmp_path: Path) -> AsyncIterator[RunningDaemon]:
    async with running_gateway(broker.url, tmp_path / "state") as daemon:
        yield daemon


def handler(gw: RunningDaemon, agent: Agent | str | None = "daemon", **limits: Any) -> CloudRequests:
    return CloudRequests(RequestTopics(SITE), gw.daemon.registry, gw.daemon.commands,
                         gw.daemon.agent if agent == "daemon" else agent,  # type: ignore[arg-type]
                         gw.daemon.rejects, RequestLimits(**limits))


async def online(sims: Sims, gw: RunningDaemon, product: str = "thermostat", **options: Any) -> Any:
    sim = await sims.start(product, unique(product), **options)
    await wait_until(lambda: (d := gw.daemon.registry.get(sim.device_id)) is not None and d.online, WAIT_S)
    return sim


def command_topic(device_id: str, site: str = SITE) -> str:
    return f"sites/{site}/devices/{device_id}/commands"


async def ask(requests: CloudRequests, topic: str, body: Any, properties: dict[str, Any] | None = None
              ) -> tuple[CloudReply, dict[str, Any]]:
    payload = body if isinstance(body, bytes) else json.dumps(body).encode()
    reply = await asyncio.wait_for(requests.handle(topic, payload, properties or {}), HANDLE_S)
    assert reply is not None
    assert reply.content_type == "application/json"
    return reply, json.loads(reply.payload)


async def http_answer(gw: RunningDaemon, device_id: str, payload: bytes) -> tuple[int, dict[str, Any]]:
    return await gw.request("POST", f"/api/devices/{device_id}/commands", data=payload,
                            headers={"Content-Type": "application/json"})


# ------------------------------------------------------------------------------------ topics


def test_the_handler_is_what_the_uplink_expects(gw: RunningDaemon) -> None:
    requests: CloudRequestHandler = handler(gw)
    assert requests.subscriptions() == ["sites/site-a/devices/+/commands", "sites/site-a/gateway/chat"]


def test_request_topics_parse_any_site_and_render_this_one() -> None:
    topics = RequestTopics("s1")
    parsed = topics.parse("sites/other/devices/d-1/commands")
    assert parsed is not None and (parsed.kind, parsed.site_id, parsed.device_id) == (
        RequestKind.COMMAND, "other", "d-1")
    chat = topics.parse("sites/s1/gateway/chat")
    assert chat is not None and (chat.kind, chat.site_id, chat.device_id) == (RequestKind.CHAT, "s1", "")
    assert topics.parse("sites/s1/devices/d-1/commands/result") is None
    assert topics.parse("sites/s1/devices/a/b/commands") is None
    assert topics.result_topic(RequestKind.COMMAND, "d-1") == "sites/s1/devices/d-1/commands/result"
    assert topics.result_topic(RequestKind.CHAT, "") == "sites/s1/gateway/chat/result"
    assert topics.site_prefix == "sites/s1/"
    custom = RequestTopics("s1", command="fleet/{siteId}/cmd/{deviceId}", command_result="fleet/{siteId}/r/{deviceId}",
                           chat="fleet/{siteId}/chat", chat_result="fleet/{siteId}/chat/r")
    assert custom.subscriptions() == ["fleet/s1/cmd/+", "fleet/s1/chat"]
    assert custom.site_prefix == "fleet/s1/"


@pytest.mark.parametrize(("site", "templates", "fragment"), [
    ("", {}, "non-empty"),
    ("a/b", {}, "without / + #"),
    ("a+", {}, "without / + #"),
    ("a#", {}, "without / + #"),
    ("s", {"command": "sites/{siteId}/devices/commands"}, "needs {deviceId}"),
    ("s", {"command": "sites/x{siteId}/devices/{deviceId}/commands"}, "needs {siteId}"),
    ("s", {"chat": "sites/{siteId}/{deviceId}/chat"}, "cannot hold {deviceId}"),
    ("s", {"chat_result": "sites/{siteId}/gateway/+/result"}, "no + #"),
    ("s", {"chat": "sites/{siteId}//chat"}, "empty level"),
    ("s", {"chat": "other/{siteId}/chat"}, "share one prefix"),
])
def test_bad_request_topics_are_refused(site: str, templates: dict[str, str], fragment: str) -> None:
    with pytest.raises(ValueError) as info:
        RequestTopics(site, **templates)
    assert fragment in str(info.value)


async def test_a_topic_that_carries_no_request_gets_no_answer(gw: RunningDaemon) -> None:
    requests = handler(gw)
    assert await requests.handle("sites/site-a/gateway/status", b"{}", {}) is None
    assert gw.daemon.metrics.rejects.get({"kind": "cloud_request", "reason": "unknown_topic"}) == 1


# ------------------------------------------------------------------------ commands that run


async def test_a_cloud_command_round_trip_answers_on_the_default_result_topic(
        gw: RunningDaemon, sims: Sims) -> None:
    """MQTT 3.1.1 callers: no properties, the answer on the result topic, matched by requestId."""
    sim = await online(sims, gw)
    reply, answer = await ask(handler(gw), command_topic(sim.device_id), {
        "command": "set_target_temperature", "params": {"target_temperature": 23.5}, "requestId": "cloud-1"})
    assert reply.topic == f"sites/site-a/devices/{sim.device_id}/commands/result"
    assert reply.correlation_data is None
    assert reply.device_id == sim.device_id
    assert answer.pop("latencyMs") >= 0
    assert answer == {"requestId": "cloud-1", "code": 0, "msg": "ok", "data": {"target_temperature": 23.5},
                      "ok": True, "httpStatus": 200}
    [received] = sim.commands_received
    assert (received.cmd, received.params, received.request_id) == (
        "set_target_temperature", {"target_temperature": 23.5}, "cloud-1")
    record = await gw.daemon.store.get_command("cloud-1")
    assert (record.status, record.extra.get("origin")) == ("ok", {"channel": "uplink"})
    assert gw.daemon.metrics.commands.get({"outcome": "ok"}) == 1


async def test_an_mqtt5_caller_gets_its_response_topic_and_correlation_data(gw: RunningDaemon, sims: Sims) -> None:
    sim = await online(sims, gw)
    correlation = b"\x00\x01corr-\xff"
    reply, answer = await ask(handler(gw), command_topic(sim.device_id),
                              {"command": "set_mode", "params": {"mode": "heat"}},
                              {"response_topic": ["sites/site-a/replies/console-7"], "correlation_data": [correlation],
                               "content_type": ["application/json; charset=utf-8"], "dup": 0, "retain": 0})
    assert reply.topic == "sites/site-a/replies/console-7"
    assert reply.correlation_data == correlation
    assert (answer["httpStatus"], answer["ok"], answer["data"]) == (200, True, {"mode": "heat"})
    # No requestId given: the one the gateway made is in the answer, as over HTTP.
    assert answer["requestId"] == sim.commands_received[0].request_id
    assert answer["requestId"].startswith("req-")


async def test_a_device_that_never_answers_gets_the_timeout_answer(gw: RunningDaemon, sims: Sims) -> None:
    sim = await online(sims, gw, answer=False)
    body = {"command": "set_mode", "params": {"mode": "eco"}, "timeoutMs": 300}
    _, answer = await ask(handler(gw), command_topic(sim.device_id), body)
    status, http = await http_answer(gw, sim.device_id, json.dumps(body).encode())
    assert status == 504
    request_id = answer["requestId"]
    assert request_id == sim.commands_received[0].request_id
    assert answer == {"error": {"code": "command_timeout",
                                "message": f"device {sim.device_id!r} did not answer set_mode within 300 ms",
                                "details": {"requestId": request_id}},
                      "requestId": request_id, "httpStatus": 504}
    assert http["error"]["code"] == "command_timeout"
    assert http["error"]["message"] == answer["error"]["message"]
    assert (await gw.daemon.store.get_command(request_id)).status == "timeout"
    # A timeout is an outcome, not a refused request.
    assert gw.daemon.metrics.rejects.get({"kind": "cloud_command", "reason": "command_timeout"}) == 0


async def test_a_requestid_still_pending_is_refused_and_not_sent_twice(gw: RunningDaemon, sims: Sims) -> None:
    """Also what a QoS 1 redelivery of a request meets: it never runs twice."""
    sim = await online(sims, gw, answer=False)
    requests = handler(gw)
    body = {"command": "set_mode", "params": {"mode": "cool"}, "requestId": "dup-1", "timeoutMs": 3000}
    first = asyncio.ensure_future(ask(requests, command_topic(sim.device_id), body))
    await wait_until(lambda: sim.commands_received, WAIT_S)
    _, answer = await ask(requests, command_topic(sim.device_id), body)
    assert answer == {"error": {"code": "conflict", "message": "requestId 'dup-1' was already used",
                                "details": {"requestId": "dup-1"}}, "requestId": "dup-1", "httpStatus": 409}
    _, timed_out = await first
    assert timed_out["error"]["code"] == "command_timeout"
    assert len(sim.commands_received) == 1
    # Once finished, the id stays taken.
    _, again = await ask(requests, command_topic(sim.device_id), body)
    assert again["error"]["code"] == "conflict"
    assert len(sim.commands_received) == 1


async def test_too_many_waiting_cloud_commands_answer_busy(gw: RunningDaemon, sims: Sims) -> None:
    sim = await online(sims, gw, answer=False)
    requests = handler(gw, max_pending_commands=1)
    body = {"command": "set_mode", "params": {"mode": "cool"}, "timeoutMs": 2000}
    first = asyncio.ensure_future(ask(requests, command_topic(sim.device_id), body))
    await wait_until(lambda: sim.commands_received, WAIT_S)
    _, answer = await ask(requests, command_topic(sim.device_id), {**body, "requestId": "second"})
    assert (answer["httpStatus"], answer["error"]["code"], answer["requestId"]) == (503, "busy", "second")
    await first
    assert len(sim.commands_received) == 1
    # The slot is free again.
    _, later = await ask(requests, command_topic(sim.device_id), {**body, "timeoutMs": 100})
    assert later["error"]["code"] == "command_timeout"


async def test_an_offline_device_is_refused_as_over_http(gw: RunningDaemon, sims: Sims) -> None:
    sim = await online(sims, gw)
    await sim.stop()
    await wait_until(lambda: not gw.daemon.registry.get(sim.device_id).online, WAIT_S)
    payload = json.dumps({"command": "set_mode", "params": {"mode": "off"}, "requestId": "off-1"}).encode()
    _, answer = await ask(handler(gw), command_topic(sim.device_id), payload)
    status, http = await http_answer(gw, sim.device_id, payload)
    assert answer == {**http, "httpStatus": status, "requestId": "off-1"}
    assert (status, answer["error"]["code"]) == (409, "device_offline")


# ---------------------------------------------------------------- requests that are refused


async def test_a_request_for_another_site_is_refused_and_never_run(gw: RunningDaemon, sims: Sims) -> None:
    sim = await online(sims, gw)
    reply, answer = await ask(handler(gw), command_topic(sim.device_id, site="site-b"),
                              {"command": "set_mode", "params": {"mode": "heat"}, "requestId": "x-1"})
    # Answered on this site's topic: a gateway writes only under its own prefix.
    assert reply.topic == f"sites/site-a/devices/{sim.device_id}/commands/result"
    assert (answer["httpStatus"], answer["error"]["code"], answer["requestId"]) == (403, "forbidden", "x-1")
    assert answer["error"]["details"] == {"siteId": "site-b"}
    assert sim.commands_received == []
    assert gw.daemon.metrics.rejects.get({"kind": "cloud_command", "reason": "forbidden"}) == 1


async def test_a_device_not_on_this_site_is_not_found(gw: RunningDaemon) -> None:
    payload = json.dumps({"command": "set_mode", "params": {"mode": "heat"}, "requestId": "nf-1"}).encode()
    _, answer = await ask(handler(gw), command_topic("thermostat-elsewhere"), payload)
    status, http = await http_answer(gw, "thermostat-elsewhere", payload)
    assert status == 404
    assert answer == {**http, "httpStatus": 404, "requestId": "nf-1"}
    assert answer["error"]["code"] == "device_not_found"


@pytest.mark.parametrize("response_topic", [
    "sites/site-b/replies/1",  # another site's
    "sites/site-a-evil/replies/1",  # starts like ours, is not under it
    "$SYS/broker/x",
    "replies/1",
    "sites/site-a/replies/+",
    "sites/site-a/replies/#",
    "",
    "sites/site-a/gateway/chat",  # our own request topics: the answer would come back as a request
    "sites/site-a/devices/thermostat-1/commands",
])
async def test_a_response_topic_outside_the_site_is_refused(gw: RunningDaemon, sims: Sims,
                                                            response_topic: str) -> None:
    sim = await online(sims, gw)
    reply, answer = await ask(handler(gw), command_topic(sim.device_id),
                              {"command": "set_mode", "params": {"mode": "heat"}, "requestId": "rt-1"},
                              {"response_topic": [response_topic], "correlation_data": [b"c-1"]})
    assert reply.topic == f"sites/site-a/devices/{sim.device_id}/commands/result"
    assert reply.correlation_data == b"c-1"
    assert (answer["httpStatus"], answer["error"]["code"], answer["requestId"]) == (403, "forbidden", "rt-1")
    assert answer["error"]["details"] == {"responseTopic": response_topic}
    assert sim.commands_received == []


async def test_odd_properties_do_not_escape_handle(gw: RunningDaemon, sims: Sims) -> None:
    sim = await online(sims, gw)
    body = {"command": "set_mode", "params": {"mode": "heat"}}
    # A response topic that is not text is refused; correlation data that is not bytes is left out.
    reply, answer = await ask(handler(gw), command_topic(sim.device_id), body,
                              {"response_topic": [b"sites/site-a/r"], "correlation_data": ["text"]})
    assert (reply.correlation_data, answer["error"]["code"]) == (None, "forbidden")
    # Bare values instead of gmqtt's lists are read too.
    reply, answer = await ask(handler(gw), command_topic(sim.device_id), body,
                              {"response_topic": "sites/site-a/r", "correlation_data": b"c"})
    assert (reply.topic, reply.correlation_data, answer["httpStatus"]) == ("sites/site-a/r", b"c", 200)


@pytest.mark.parametrize(("payload", "content_type", "code"), [
    (b"{not json", None, "invalid_json"), (b"", None, "invalid_json"),
    (b'{"command": "set_mode"}', "text/plain", "unsupported_media_type"),
    (b'{"command": "' + b"x" * 2000 + b'"}', None, "payload_too_large")])
async def test_a_payload_that_cannot_be_read_is_answered_on_the_callers_response_topic(
        gw: RunningDaemon, sims: Sims, payload: bytes, content_type: str | None, code: str) -> None:
    """The caller waits on its response topic: the answer to what it could not send right goes there."""
    sim = await online(sims, gw)
    properties: dict[str, Any] = {"response_topic": ["sites/site-a/r/1"], "correlation_data": [b"c-1"]}
    if content_type is not None:
        properties["content_type"] = [content_type]
    reply, answer = await ask(handler(gw, max_payload_bytes=1024), command_topic(sim.device_id), payload, properties)
    assert (reply.topic, reply.correlation_data) == ("sites/site-a/r/1", b"c-1")
    assert answer["error"]["code"] == code and answer["requestId"] is None
    assert sim.commands_received == []


# The same bytes to the HTTP route and as a cloud request: the same error, code and details.
BAD_BODIES: list[tuple[str, bytes, str]] = [
    ("empty", b"", "invalid_json"),
    ("not json", b"{command: set_mode}", "invalid_json"),
    ("not utf-8", b'{"command": "\xff"}', "invalid_json"),
    ("not an object", b'["set_mode"]', "invalid_json"),
    ("a string", b'"set_mode"', "invalid_json"),
    ("nested too deep", b'{"command": "set_mode", "params": {"mode": ' + b"[" * 40 + b"]" * 40 + b"}}",
     "invalid_json"),
    ("lone surrogate", b'{"command": "set_mode", "params": {"mode": "\\ud800"}}', "invalid_json"),
    ("NaN", b'{"command": "set_mode", "params": {"mode": NaN}}', "invalid_json"),
    ("integer beyond 64 bits", b'{"command": "set_mode", "timeoutMs": 99999999999999999999999}', "invalid_json"),
    ("unknown field", b'{"command": "set_mode", "params": {"mode": "heat"}, "device": "x"}', "invalid_request"),
    ("no command", b'{"params": {"mode": "heat"}}', "invalid_request"),
    ("command not a string", b'{"command": 5}', "invalid_request"),
    ("empty command", b'{"command": ""}', "invalid_request"),
    ("params not an object", b'{"command": "set_mode", "params": ["heat"]}', "invalid_request"),
    ("timeoutMs a string", b'{"command": "set_mode", "params": {"mode": "heat"}, "timeoutMs": "300"}',
     "invalid_request"),
    ("timeoutMs a boolean", b'{"command": "set_mode", "params": {"mode": "heat"}, "timeoutMs": true}',
     "invalid_request"),
    ("timeoutMs too small", b'{"command": "set_mode", "params": {"mode": "heat"}, "timeoutMs": 99}',
     "invalid_request"),
    ("timeoutMs too large", b'{"command": "set_mode", "params": {"mode": "heat"}, "timeoutMs": 120001}',
     "invalid_request"),
    ("requestId a number", b'{"command": "set_mode", "params": {"mode": "heat"}, "requestId": 7}',
     "invalid_request"),
    ("requestId too long", b'{"command": "set_mode", "params": {"mode": "heat"}, "requestId": "' + b"r" * 129 + b'"}',
     "invalid_request"),
    ("requestId empty", b'{"command": "set_mode", "params": {"mode": "heat"}, "requestId": ""}', "invalid_request"),
    ("unknown command", b'{"command": "explode"}', "invalid_request"),
    ("param out of range", b'{"command": "set_target_temperature", "params": {"target_temperature": 99}}',
     "invalid_request"),
    ("param of the wrong type", b'{"command": "set_target_temperature", "params": {"target_temperature": "hot"}}',
     "invalid_request"),
    ("required param missing", b'{"command": "set_target_temperature", "params": {}}', "invalid_request"),
    ("enum value not allowed", b'{"command": "set_mode", "params": {"mode": "turbo"}}', "invalid_request"),
    ("undeclared param", b'{"command": "set_mode", "params": {"mode": "heat", "speed": 3}}', "invalid_request"),
]


@pytest.mark.parametrize(("payload", "code"), [(p, c) for _, p, c in BAD_BODIES], ids=[n for n, _, _ in BAD_BODIES])
async def test_a_bad_command_gets_the_http_apis_400_answer(gw: RunningDaemon, sims: Sims, payload: bytes,
                                                           code: str) -> None:
    sim = await online(sims, gw)
    requests = handler(gw)
    reply, answer = await ask(requests, command_topic(sim.device_id), payload)
    status, http = await http_answer(gw, sim.device_id, payload)
    assert status == 400, http
    assert http["error"]["code"] == code
    echoed = answer.pop("requestId")
    assert echoed in (None, 7), echoed  # only a requestId a caller could match on is sent back
    assert answer.pop("httpStatus") == 400
    if code == "invalid_json":
        # Same code and reason; the message says "payload" where HTTP says "(request) body".
        assert answer["error"]["code"] == "invalid_json"
        http_words = http["error"]["message"].replace("request body", "payload").replace("body", "payload")
        assert answer["error"]["message"] == http_words
    else:
        assert answer == http
    assert reply.topic == f"sites/site-a/devices/{sim.device_id}/commands/result"
    assert sim.commands_received == []
    assert gw.daemon.metrics.rejects.get({"kind": "cloud_command", "reason": code}) == 1


async def test_a_payload_over_the_limit_is_refused_unread(gw: RunningDaemon, sims: Sims) -> None:
    sim = await online(sims, gw)
    payload = json.dumps({"command": "set_mode", "params": {"mode": "heat"}, "pad": "x" * 2000}).encode()
    _, answer = await ask(handler(gw, max_payload_bytes=1024), command_topic(sim.device_id), payload)
    assert answer == {"error": {"code": "payload_too_large",
                                "message": "the payload is larger than the limit of 1024 bytes"},
                      "requestId": None, "httpStatus": 413}
    assert sim.commands_received == []


@pytest.mark.parametrize("content_type", ["application/cbor", "text/plain", ""])
async def test_a_payload_that_is_not_json_by_content_type_is_refused(gw: RunningDaemon, sims: Sims,
                                                                     content_type: str) -> None:
    sim = await online(sims, gw)
    _, answer = await ask(handler(gw), command_topic(sim.device_id),
                          {"command": "set_mode", "params": {"mode": "heat"}}, {"content_type": [content_type]})
    assert (answer["httpStatus"], answer["error"]["code"]) == (415, "unsupported_media_type")
    assert sim.commands_received == []


def test_request_limits_are_checked() -> None:
    for bad in ({"max_payload_bytes": 100}, {"chat_concurrency": 0}, {"chat_queue_limit": -1},
                {"max_pending_commands": 0}):
        with pytest.raises(ValueError):
            RequestLimits(**bad)


# ---------------------------------------------------------------------------------------- chat


def chat_topic(site: str = SITE) -> str:
    return f"sites/{site}/gateway/chat"


async def test_a_chat_request_gets_the_agents_reply(gw: RunningDaemon, sims: Sims) -> None:
    sim = await online(sims, gw)
    requests = handler(gw)
    reply, answer = await ask(requests, chat_topic(), {"text": "list the devices", "requestId": "chat-1"},
                              {"response_topic": ["sites/site-a/replies/chat"], "correlation_data": [b"k"]})
    assert (reply.topic, reply.correlation_data, reply.device_id) == ("sites/site-a/replies/chat", b"k", "")
    assert (answer["httpStatus"], answer["requestId"]) == (200, "chat-1")
    assert sim.device_id in answer["text"]
    session_id = answer["sessionId"]
    # Named session: the turn goes into its history, the next request continues it.
    reply, again = await ask(requests, chat_topic(), {"text": "list the devices", "sessionId": session_id})
    assert reply.topic == "sites/site-a/gateway/chat/result"
    assert (again["httpStatus"], again["sessionId"], again["requestId"]) == (200, session_id, None)
    history = await gw.daemon.sessions.history(session_id, 10)
    assert [m.role for m in history] == ["user", "assistant", "user", "assistant"]


@pytest.mark.parametrize(("body", "field"), [
    ({}, "text"),
    ({"text": "   "}, "text"),
    ({"text": 5}, "text"),
    ({"text": "x" * 4001}, "text"),
    ({"text": "hi", "sessionId": ""}, "sessionId"),
    ({"text": "hi", "sessionId": 5}, "sessionId"),
    ({"text": "hi", "sessionId": "s" * 129}, "sessionId"),
    ({"text": "hi", "sessionId": "bad\nid"}, "sessionId"),
    ({"text": "hi", "requestId": 7}, "requestId"),
    ({"text": "hi", "requestId": ""}, "requestId"),
    ({"text": "hi", "message": "hi"}, "message"),
])
async def test_a_bad_chat_request_is_refused_naming_the_field(gw: RunningDaemon, body: dict[str, Any],
                                                              field: str) -> None:
    reply, answer = await ask(handler(gw), chat_topic(), body)
    assert reply.topic == "sites/site-a/gateway/chat/result"
    assert (answer["httpStatus"], answer["error"]["code"]) == (400, "invalid_request")
    assert answer["error"]["details"][0]["field"] == field
    assert gw.daemon.agent.running_turns == 0


async def test_chat_for_another_site_and_bad_json_are_refused(gw: RunningDaemon) -> None:
    _, answer = await ask(handler(gw), chat_topic("site-b"), {"text": "list the devices", "requestId": "c-9"})
    assert (answer["httpStatus"], answer["error"]["code"], answer["requestId"]) == (403, "forbidden", "c-9")
    _, answer = await ask(handler(gw), chat_topic(), b'{"text": "\\udfff"}')
    assert (answer["httpStatus"], answer["error"]["code"]) == (400, "invalid_json")
    assert "lone UTF-16 surrogate" in answer["error"]["message"]
    assert gw.daemon.metrics.rejects.get({"kind": "cloud_chat", "reason": "forbidden"}) == 1


async def test_chat_without_an_agent_is_unavailable(gw: RunningDaemon) -> None:
    _, answer = await ask(handler(gw, agent=None), chat_topic(), {"text": "hello"})
    assert (answer["httpStatus"], answer["error"]["code"]) == (503, "agent_unavailable")


class GatedProvider:
    """Answers "done" once `gate` opens; counts the turns that started."""

    name = "gated"

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.started = 0

    async def run(self, context: TurnContext, tools: Tools) -> AsyncIterator[TurnEvent]:
        self.started += 1
        await self.gate.wait()
        yield Delta("done")


def gated_agent(gw: RunningDaemon, provider: GatedProvider, **kwargs: Any) -> Agent:
    daemon = gw.daemon
    return Agent(provider, provider, daemon.agent_tools, daemon.sessions, daemon.frames,  # type: ignore[arg-type]
                 **kwargs)


async def test_a_full_chat_queue_answers_busy_and_the_queued_ones_are_answered(gw: RunningDaemon) -> None:
    provider = GatedProvider()
    requests = handler(gw, gated_agent(gw, provider), chat_concurrency=1, chat_queue_limit=1)
    running = asyncio.ensure_future(ask(requests, chat_topic(), {"text": "one", "requestId": "q-1"}))
    waiting = asyncio.ensure_future(ask(requests, chat_topic(), {"text": "two", "requestId": "q-2"}))
    await wait_until(lambda: provider.started == 1 and requests.chats_in_progress == 2, WAIT_S)
    _, busy = await ask(requests, chat_topic(), {"text": "three", "requestId": "q-3"})
    assert (busy["httpStatus"], busy["error"]["code"], busy["requestId"]) == (503, "busy", "q-3")
    assert provider.started == 1  # one at a time
    provider.gate.set()
    answers = [answer for _, answer in await asyncio.gather(running, waiting)]
    assert [(a["httpStatus"], a["text"], a["requestId"]) for a in answers] == [
        (200, "done", "q-1"), (200, "done", "q-2")]
    assert requests.chats_in_progress == 0
    assert gw.daemon.metrics.rejects.get({"kind": "cloud_chat", "reason": "busy"}) == 1


async def test_a_chat_turn_that_does_not_end_is_answered_with_a_timeout(gw: RunningDaemon) -> None:
    provider = GatedProvider()  # never opened
    requests = handler(gw, gated_agent(gw, provider, turn_timeout_s=0.3))
    _, answer = await ask(requests, chat_topic(), {"text": "hello?", "sessionId": "cloud-slow", "requestId": "t-1"})
    assert answer == {"error": {"code": "turn_timeout", "message": "no answer within 0.3 s"},
                      "sessionId": "cloud-slow", "requestId": "t-1", "httpStatus": 504}
    assert requests.chats_in_progress == 0


# ------------------------------------------------------------------------------------ redelivery


async def test_a_redelivered_command_is_neither_run_nor_answered_again_but_a_reused_id_is_a_conflict(
        gw: RunningDaemon, sims: Sims) -> None:
    """The broker sends a request again (DUP) when our PUBACK was lost with the connection."""
    sim = await online(sims, gw, answer_delay_ms=300)
    requests = CloudRequests(RequestTopics(SITE), gw.daemon.registry, gw.daemon.commands, gw.daemon.agent,
                             gw.daemon.rejects, command_log=gw.daemon.store.get_command)
    body = {"command": "set_mode", "params": {"mode": "eco"}, "requestId": "dup-1"}
    first = asyncio.ensure_future(ask(requests, command_topic(sim.device_id), body))
    await wait_until(lambda: sim.commands_received, WAIT_S)
    # While the first delivery still waits for the device: its answer will come, not a second one.
    assert await requests.handle(command_topic(sim.device_id), json.dumps(body).encode(), {"dup": 1}) is None
    _, answer = await first
    assert answer["httpStatus"] == 200
    # After it was answered: that answer is in the outbox already.
    assert await requests.handle(command_topic(sim.device_id), json.dumps(body).encode(), {"dup": 1}) is None
    # A gateway restarted since (a new handler): the command log's outcome is sent again.
    restarted = CloudRequests(RequestTopics(SITE), gw.daemon.registry, gw.daemon.commands, gw.daemon.agent,
                              gw.daemon.rejects, command_log=gw.daemon.store.get_command)
    _, replayed = await ask(restarted, command_topic(sim.device_id), body, {"dup": 1})
    assert {k: v for k, v in replayed.items() if k != "latencyMs"} == {
        k: v for k, v in answer.items() if k != "latencyMs"}
    # Not a redelivery: the same requestId used again is a conflict, as over HTTP.
    _, again = await ask(requests, command_topic(sim.device_id), body)
    assert (again["httpStatus"], again["error"]["code"]) == (409, "conflict")
    assert [c.request_id for c in sim.commands_received] == ["dup-1"]


async def test_a_redelivered_command_of_another_channel_is_a_conflict(gw: RunningDaemon, sims: Sims) -> None:
    sim = await online(sims, gw)
    status, _ = await gw.request("POST", f"/api/devices/{sim.device_id}/commands",
                                 json_body={"command": "set_mode", "params": {"mode": "eco"}, "requestId": "http-9"})
    assert status == 200
    requests = CloudRequests(RequestTopics(SITE), gw.daemon.registry, gw.daemon.commands, gw.daemon.agent,
                             gw.daemon.rejects, command_log=gw.daemon.store.get_command)
    _, answer = await ask(requests, command_topic(sim.device_id),
                          {"command": "set_mode", "params": {"mode": "eco"}, "requestId": "http-9"}, {"dup": 1})
    assert (answer["httpStatus"], answer["error"]["code"]) == (409, "conflict")
    assert len(sim.commands_received) == 1
