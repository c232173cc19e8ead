"""Clients that are slow or malformed on purpose (issue 13, findings 8, 9 and 14): they get
timeouts and one quiet log line each, never a hold on the gateway or a journal full of
tracebacks; a flood of one kind of log line is cut down globally."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from daemon_harness import RunningDaemon, wait_until
from mosquitto_broker import MosquittoBroker
from test_mqtt_support import WAIT_S, raw_device, rejects, running_gateway

from deviceagentd.http import app as http_app
from deviceagentd.http import errors as http_errors
from deviceagentd.lograte import RateLimitFilter
from deviceagentd.mqtt.topics import TopicKind

SHORT_S = 1.0


@pytest.fixture
async def gw(broker: MosquittoBroker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[RunningDaemon]:
    # The real timeouts are 15 s; the behaviour is the same at 1 s.
    monkeypatch.setattr(http_app, "IDLE_TIMEOUT_S", SHORT_S)
    monkeypatch.setattr(http_errors, "BODY_TIMEOUT_S", SHORT_S)
    async with running_gateway(broker.url, tmp_path / "state") as daemon:
        yield daemon


def port_of(gw: RunningDaemon) -> int:
    return gw.daemon.http_port


async def open_raw(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", port)


async def closed_within(reader: asyncio.StreamReader, seconds: float) -> bytes:
    """Everything the server sent until it closed the connection (fails if it stays open)."""
    return await asyncio.wait_for(reader.read(), seconds)


async def test_headers_sent_a_byte_at_a_time_are_cut_off(gw: RunningDaemon) -> None:
    reader, writer = await open_raw(port_of(gw))
    started = time.monotonic()

    async def trickle() -> None:
        with contextlib.suppress(ConnectionError):
            for byte in b"GET /api/health HTTP/1.1\r\nHost: gateway\r\nX-Slow: " + b"a" * 100:
                writer.write(bytes([byte]))
                await writer.drain()
                await asyncio.sleep(0.1)

    sender = asyncio.ensure_future(trickle())
    try:
        await closed_within(reader, 10 * SHORT_S)
        assert time.monotonic() - started < 10 * SHORT_S
    finally:
        sender.cancel()
        writer.close()


async def test_a_body_trickled_in_gets_408(gw: RunningDaemon) -> None:
    reader, writer = await open_raw(port_of(gw))
    writer.write(b"POST /api/chat HTTP/1.1\r\nHost: gateway\r\nContent-Type: application/json\r\n"
                 b"Content-Length: 200\r\n\r\n{\"message\": ")
    await writer.drain()
    try:
        answer = await closed_within(reader, 10 * SHORT_S)
        assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
        assert b'"request_timeout"' in answer
    finally:
        writer.close()


async def test_hundreds_of_slow_connections_do_not_starve_a_real_client(gw: RunningDaemon) -> None:
    port = port_of(gw)
    slow = [await open_raw(port) for _ in range(300)]
    try:
        for _, writer in slow:
            writer.write(b"GET /api/health HTTP/1.1\r\nHost: g")
        status, body = await gw.request("GET", "/api/health")
        assert status in (200, 503) and body["version"]
        # And they are all gone after the idle timeout.
        results = await asyncio.gather(*(closed_within(reader, 10 * SHORT_S) for reader, _ in slow),
                                       return_exceptions=True)
        assert not [r for r in results if isinstance(r, BaseException)]
    finally:
        for _, writer in slow:
            writer.close()


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GET /api/health HTTP/1.1\r\nHost: gateway\r\nX-Bad: a\x00b\r\n\r\n",
        b"GET /" + b"a" * 8200 + b" HTTP/1.1\r\nHost: gateway\r\n\r\n",
        b"GET /api/health HTTP/1.1\r\nHost: gateway\r\nX-Big: " + b"b" * 9000 + b"\r\n\r\n",
        b"GET /api/health HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello",
    ],
    ids=["nul-in-header", "8kb-request-line", "9kb-header", "two-content-lengths"],
)
async def test_a_malformed_request_is_a_400_and_one_quiet_log_line(gw: RunningDaemon, request_bytes: bytes,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    caplog.clear()
    with caplog.at_level(logging.DEBUG):
        reader, writer = await open_raw(port_of(gw))
        writer.write(request_bytes)
        await writer.drain()
        answer = await closed_within(reader, 5)
        writer.close()
        # aiohttp logs after answering; let it.
        await wait_until(lambda: any("malformed HTTP request" in r.getMessage() for r in caplog.records), 5)
    assert b" 400 " in answer.split(b"\r\n", 1)[0], answer[:100]
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], [r.getMessage() for r in caplog.records]
    assert not [r for r in caplog.records if r.exc_info]
    assert gw.daemon.metrics.http_requests.get({"route": "malformed", "status": "400"}) >= 1


@contextlib.contextmanager
def journal_like_handler() -> Iterator[list[logging.LogRecord]]:
    """What `deviceagentd run` installs on its stderr handler, capturing what would be written."""
    kept: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            kept.append(record)

    handler = Keep()
    handler.addFilter(RateLimitFilter())
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield kept
    finally:
        root.removeHandler(handler)


async def test_rejects_from_a_new_device_id_each_time_are_limited_globally(broker: MosquittoBroker,
                                                                          gw: RunningDaemon) -> None:
    with journal_like_handler() as kept:
        async with raw_device(broker.url, "toaster") as device:
            for index in range(300):
                await device.send(TopicKind.TELEMETRY, {"type": "status", "data": {"status": "online"}},
                                  device_id=f"junk-{index}")
            await wait_until(lambda: rejects(gw, "telemetry", "unknown_product") == 300, WAIT_S)
    lines = [r for r in kept if r.getMessage().startswith("rejected telemetry")]
    assert 1 <= len(lines) <= 10
    # Every one is still counted.
    assert rejects(gw, "telemetry", "unknown_product") == 300


def test_the_first_line_after_a_quiet_spell_says_how_many_were_left_out() -> None:
    now = [0.0]
    limit = RateLimitFilter(burst=2, interval_s=60, clock=lambda: now[0])

    def record(msg: str, *args: object, name: str = "deviceagentd.x") -> logging.LogRecord:
        return logging.LogRecord(name, logging.WARNING, __file__, 1, msg, args, None)

    assert [limit.filter(record("rejected %s", f"d{i}")) for i in range(5)] == [True, True, False, False, False]
    # Another kind (template or logger) is not affected.
    assert limit.filter(record("other %s", "x"))
    assert limit.filter(record("rejected %s", "y", name="deviceagentd.other"))
    now[0] = 61.0
    later = record("rejected %s", "d9")
    assert limit.filter(later)
    assert later.getMessage() == "rejected d9 (3 more like this were left out before it)"
    assert limit.filter(record("rejected %s", "d10"))
    assert not limit.filter(record("rejected %s", "d11"))


def test_the_daemon_log_setup_installs_the_limit() -> None:
    from deviceagentd.cli import setup_logging

    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    try:
        setup_logging("info")
        assert any(isinstance(f, RateLimitFilter) for h in root.handlers for f in h.filters)
    finally:
        root.handlers[:], _ = saved
        root.setLevel(saved[1])
        logging.getLogger("gmqtt").setLevel(logging.NOTSET)
        logging.getLogger("deviceagentd.mqtt.gmqtt").setLevel(logging.NOTSET)

