"""Helper process: `count` readers of /api/stream (`python -m bench_lib.stream_reader SPEC`).

Plain sockets and one selector, so reading 20 streams costs the machine (which the daemon under
test shares) as little as a real remote client would: no HTTP library, no parsing, only counting
`event: state` and `event: missed` in what arrives. Prints `{"ready": true}` once every stream
has sent `ready`, then, after a line on stdin, one JSON result line: `states` and `missed` per
reader.
"""

from __future__ import annotations

import json
import selectors
import socket
import sys
from typing import Any
from urllib.parse import urlsplit

READY = b"event: ready\n"
STATE = b"event: state\n"
MISSED = b"event: missed\n"


def read_streams(url: str, count: int) -> dict[str, Any]:
    parts = urlsplit(url)
    selector = selectors.DefaultSelector()
    request = f"GET {parts.path} HTTP/1.1\r\nHost: {parts.netloc}\r\nAccept: text/event-stream\r\n\r\n".encode()
    readers: list[dict[str, Any]] = []
    for _ in range(count):
        sock = socket.create_connection((parts.hostname, parts.port or 80))
        sock.sendall(request)
        sock.setblocking(False)
        reader = {"sock": sock, "tail": b"", "ready": False, "states": 0, "missed": 0}
        readers.append(reader)
        selector.register(sock, selectors.EVENT_READ, reader)
    selector.register(sys.stdin, selectors.EVENT_READ, None)
    announced = False
    while True:
        for key, _ in selector.select(timeout=1.0):
            if key.data is None:  # the go-ahead to report
                sys.stdin.readline()
                return {"states": [r["states"] for r in readers], "missed": [r["missed"] for r in readers]}
            reader = key.data
            chunk = reader["sock"].recv(1 << 20)
            if not chunk:
                selector.unregister(reader["sock"])
                continue
            # Count whole events only; an event cut between two reads waits for its end.
            data = reader["tail"] + chunk
            cut = data.rfind(b"\n\n") + 2
            whole, reader["tail"] = data[:cut], data[cut:]
            reader["states"] += whole.count(STATE)
            reader["missed"] += whole.count(MISSED)
            if not reader["ready"] and READY in whole:
                reader["ready"] = True
        if not announced and all(r["ready"] for r in readers):
            announced = True
            print(json.dumps({"ready": True}), flush=True)


def main() -> None:
    spec = json.loads(sys.argv[1])
    result = read_streams(spec["url"], spec["count"])
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
