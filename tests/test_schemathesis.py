"""Schemathesis (the OpenAPI fuzzer) against the document the daemon serves at /api/openapi.json,
with every check (tests/schemathesis/schemathesis.toml turns them all on): no 5xx, every answer
as documented (the /api/chat stream event by event), invalid input refused, valid input
accepted (issue 13). A bounded run; the config holds the few exceptions, each with its reason."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from daemon_harness import DaemonProcess, spawn_daemon
from mosquitto_broker import MosquittoBroker
from voiceplatform_site import rooms_toml

pytestmark = pytest.mark.slow

TOKEN = "schemathesis-token-0123456789"
CONFIG = Path(__file__).resolve().parent / "schemathesis" / "schemathesis.toml"
MAX_TIME_S = 60


@pytest.fixture
def served(broker: MosquittoBroker, tmp_path: Path) -> Iterator[DaemonProcess]:
    rooms = tmp_path / "rooms.toml"
    rooms.write_text(rooms_toml("st"))
    process = spawn_daemon(broker.url, tmp_path / "state", http_tokens=[TOKEN],
                           voiceplatform_rooms_file=str(rooms), mqtt_client_id="gw-schemathesis")
    try:
        process.wait_http(30)
        yield process
    finally:
        process.terminate()


def test_schemathesis_finds_nothing(served: DaemonProcess, tmp_path: Path) -> None:
    schemathesis = Path(sys.executable).with_name("schemathesis")
    result = subprocess.run(
        [str(schemathesis), "--config-file", str(CONFIG), "run", f"{served.base_url}/api/openapi.json",
         # Chat and vision frames name both ports as servers; here everything is on one.
         "--url", served.base_url, "--max-time", str(MAX_TIME_S), "--workers", "1",
         "--seed", "1", "-H", f"Authorization: Bearer {TOKEN}"],
        capture_output=True, text=True, cwd=tmp_path, timeout=MAX_TIME_S * 4)
    report = result.stdout[-6000:] + result.stderr[-2000:]
    assert result.returncode == 0, report
    assert " passed" in report and "generated" in report, report
    assert "Traceback" not in served.log(), served.log()
