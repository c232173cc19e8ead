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
from mosquitto_broker import MosquittoBroker, free_port
from voiceplatform_site import rooms_toml

pytestmark = pytest.mark.slow

TOKEN = "schemathesis-token-0123456789"
CONFIG = Path(__file__).resolve().parent / "schemathesis" / "schemathesis.toml"
MAX_TIME_S = 60


# Routes the document places on the voice port only (fuzzed there, in a shorter run).
VOICE_ONLY = "/xiaozhi/ota/"
VOICE_MAX_TIME_S = 15


@pytest.fixture
def served(broker: MosquittoBroker, tmp_path: Path) -> Iterator[tuple[DaemonProcess, str]]:
    rooms = tmp_path / "rooms.toml"
    rooms.write_text(rooms_toml("st"))
    voice_port = free_port()
    process = spawn_daemon(broker.url, tmp_path / "state", http_tokens=[TOKEN],
                           voiceplatform_rooms_file=str(rooms), mqtt_client_id="gw-schemathesis",
                           voice_listen=f"127.0.0.1:{voice_port}")
    try:
        process.wait_http(30)
        yield process, f"http://127.0.0.1:{voice_port}"
    finally:
        process.terminate()


def test_schemathesis_finds_nothing(served: tuple[DaemonProcess, str], tmp_path: Path) -> None:
    process, voice_url = served
    # Chat and vision frames name both ports as servers; the main port serves them here.
    run_schemathesis(process, tmp_path, process.base_url, MAX_TIME_S, "--exclude-path", VOICE_ONLY)
    run_schemathesis(process, tmp_path, voice_url, VOICE_MAX_TIME_S, "--include-path", VOICE_ONLY)


def run_schemathesis(process: DaemonProcess, tmp_path: Path, url: str, max_time_s: int, *filters: str) -> None:
    schemathesis = Path(sys.executable).with_name("schemathesis")
    result = subprocess.run(
        [str(schemathesis), "--config-file", str(CONFIG), "run", f"{process.base_url}/api/openapi.json",
         "--url", url, *filters, "--max-time", str(max_time_s), "--workers", "1",
         "--seed", "1", "-H", f"Authorization: Bearer {TOKEN}"],
        capture_output=True, text=True, cwd=tmp_path, timeout=max_time_s * 4)
    report = result.stdout[-6000:] + result.stderr[-2000:]
    assert result.returncode == 0, report
    assert " passed" in report and "generated" in report, report
    assert "Traceback" not in process.log(), process.log()
