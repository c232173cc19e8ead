"""Helper process: the ingest baseline (`python -m bench_lib.subscriber SPEC`).

A bare gmqtt 0.8.0 + uvloop subscriber that only `json.loads` each message: the ceiling a
Python MQTT consumer on this machine reaches, to compare the daemon's ingest rate with. Prints
`{"ready": true}` once subscribed, then one JSON result line when `count` messages arrived or
nothing arrived for `idle_s`: `received`, `t_done` (CLOCK_MONOTONIC of the count-th message,
or of the last one), `decode_errors`, `cpu_s` (CPU time of this process from subscribed to done).
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

import uvloop

from bench_lib.mqttc import BenchClient

START_TIMEOUT_S = 60.0


async def subscribe(url: str, client_id: str, topic: str, count: int, idle_s: float) -> dict[str, Any]:
    received = 0
    errors = 0
    t_done = 0.0
    done = asyncio.Event()

    def on_message(_topic: str, payload: bytes) -> None:
        nonlocal received, errors, t_done
        try:
            json.loads(payload)
        except ValueError:
            errors += 1
        received += 1
        t_done = time.monotonic()
        if received >= count:
            done.set()

    client = BenchClient(url, client_id, on_message)
    await client.connect()
    await client.subscribe(topic, qos=1)
    print(json.dumps({"ready": True}), flush=True)
    cpu_start = time.process_time()
    # Stop at `count`, or when no message came for idle_s (the broker dropped some), or when
    # the publisher never started.
    seen = 0
    deadline = time.monotonic() + START_TIMEOUT_S
    while not done.is_set():
        try:
            await asyncio.wait_for(done.wait(), idle_s)
        except TimeoutError:
            if received == seen and (received > 0 or time.monotonic() > deadline):
                break
        seen = received
    cpu_s = time.process_time() - cpu_start
    await client.disconnect()
    return {"received": received, "t_done": t_done, "decode_errors": errors, "cpu_s": cpu_s}


def main() -> None:
    spec = json.loads(sys.argv[1])
    result = uvloop.run(subscribe(spec["url"], spec["client_id"], spec["topic"], spec["count"], spec["idle_s"]))
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
