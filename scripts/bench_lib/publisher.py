"""Helper process: publishes device messages to the broker (`python -m bench_lib.publisher SPEC`).

SPEC is a JSON object (see `PublishSpec`). Protocol on stdio: the process connects, builds
its payloads, prints `{"ready": true}`, waits for one line on stdin, publishes, and prints one
JSON result line: `sent`, `t_first` and `t_last` (CLOCK_MONOTONIC, comparable across
processes on Linux), `t_broker` (when our own marker message came back from the broker, i.e.
the broker had routed everything before it) and `acked` (QoS 1: every PUBACK received).
With `count` 0 it publishes until SIGTERM.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import time
from dataclasses import dataclass
from itertools import cycle
from typing import Any

import uvloop

from bench_lib.mqttc import BenchClient

BURST = 256  # QoS 0 messages between two looks at the event loop
TICK_S = 0.002  # pacing granularity at a fixed rate
CYCLE = 2000  # distinct payloads in unlimited mode


@dataclass
class PublishSpec:
    url: str
    client_id: str
    kind: str  # "telemetry" | "event"
    topics: list[str]  # one per device, used round robin
    count: int = 0  # 0: until SIGTERM
    rate: float = 0.0  # messages per second; 0: as fast as possible
    qos: int = 0
    window: int = 18  # QoS 1: messages waiting for PUBACK
    event: str = "bench_event"
    first_seq: int = 0
    marker: bool = True


def telemetry_payload(seq: int) -> bytes:
    body = {
        "type": "state",
        "data": {
            "temperature": round(18.0 + (seq % 100) / 10, 1),
            "humidity": 40 + seq % 20,
            "mode": "auto",
            "target_temperature": 22.0,
        },
        "metadata": {"productId": "thermostat", "source": "bench"},
    }
    return json.dumps(body, separators=(",", ":")).encode()


def event_payload(name: str, seq: int) -> bytes:
    body = {"type": "event", "data": {"event": name, "seq": seq, "temperature": 31.5},
            "metadata": {"source": "bench"}}
    return json.dumps(body, separators=(",", ":")).encode()


def build_messages(spec: PublishSpec) -> list[tuple[str, bytes]]:
    total = spec.count or CYCLE
    messages = []
    for i in range(total):
        seq = spec.first_seq + i
        topic = spec.topics[i % len(spec.topics)]
        payload = event_payload(spec.event, seq) if spec.kind == "event" else telemetry_payload(seq)
        messages.append((topic, payload))
    return messages


async def publish(spec: PublishSpec) -> dict[str, Any]:
    marker_topic = f"bench/marker/{spec.client_id}"
    marker_seen = asyncio.Event()
    t_broker = 0.0

    def on_message(topic: str, payload: bytes) -> None:
        nonlocal t_broker
        if topic == marker_topic:
            t_broker = time.monotonic()
            marker_seen.set()

    client = BenchClient(spec.url, spec.client_id, on_message)
    await client.connect()
    if spec.marker:
        await client.subscribe(marker_topic, qos=0)
    messages = build_messages(spec)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    print(json.dumps({"ready": True}), flush=True)
    await loop.run_in_executor(None, sys.stdin.readline)

    source = iter(messages) if spec.count else cycle(messages)
    limit = spec.count or 1 << 62
    sent = 0
    t_first = time.monotonic()
    while sent < limit and not stop.is_set():
        if spec.rate > 0:
            due = min(limit, int((time.monotonic() - t_first) * spec.rate) + 1)
            if sent >= due:
                await asyncio.sleep(TICK_S)
                continue
        else:
            due = min(limit, sent + BURST)
        while sent < due:
            topic, payload = next(source)
            if spec.qos:
                await client.publish1(topic, payload, spec.window)
            else:
                client.publish0(topic, payload)
            sent += 1
        if not spec.qos:
            await client.drain()
            await asyncio.sleep(0)
    t_last = time.monotonic()
    acked = True
    if spec.qos:
        try:
            await client.wait_acked(30.0)
        except TimeoutError:
            acked = False
    if spec.marker:
        client.publish0(marker_topic, b"{}")
        try:
            await asyncio.wait_for(marker_seen.wait(), 60.0)
        except TimeoutError:
            t_broker = 0.0
    await client.disconnect()
    return {"sent": sent, "t_first": t_first, "t_last": t_last, "t_broker": t_broker or None, "acked": acked}


def main() -> None:
    spec = PublishSpec(**json.loads(sys.argv[1]))
    result = uvloop.run(publish(spec))
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
