"""Broker authentication, TLS and MQTT 3.1.1 against a real Mosquitto configured for each."""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from daemon_harness import PRODUCTS_DIR, start_daemon, wait_until
from mosquitto_broker import MosquittoBroker, free_port, start_broker

from deviceagentd.core.spec import load_spec_file
from deviceagentd.simulator import SimulatedDevice, SimulatorOptions


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_ca_and_server_cert(directory: Path, name: str = "ca") -> tuple[Path, Path, Path]:
    """A throwaway CA and a server certificate for 127.0.0.1/localhost signed by it."""
    directory.mkdir(parents=True, exist_ok=True)
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", f"/CN=test {name}",
             "-keyout", f"{name}.key", "-out", f"{name}.crt", cwd=directory)
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost", "-keyout", "server.key",
             "-out", "server.csr", cwd=directory)
    (directory / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    _openssl("x509", "-req", "-in", "server.csr", "-CA", f"{name}.crt", "-CAkey", f"{name}.key",
             "-CAcreateserial", "-days", "2", "-extfile", "san.ext", "-out", "server.crt", cwd=directory)
    return directory / f"{name}.crt", directory / "server.crt", directory / "server.key"


@pytest.fixture()
def tls_broker(tmp_path: Path) -> Iterator[tuple[MosquittoBroker, int, Path]]:
    """A broker with a plain listener (for devices) and a TLS listener (for the gateway)."""
    ca, cert, key = make_ca_and_server_cert(tmp_path / "pki")
    tls_port = free_port()
    extra = f"listener {tls_port} 127.0.0.1\ncafile {ca}\ncertfile {cert}\nkeyfile {key}\n"
    broker = start_broker(tmp_path / "broker", extra_conf=extra)
    try:
        yield broker, tls_port, ca
    finally:
        broker.stop()


async def test_gateway_connects_over_tls_and_receives_device_traffic(
    tls_broker: tuple[MosquittoBroker, int, Path], tmp_path: Path
) -> None:
    broker, tls_port, ca = tls_broker
    running = await start_daemon(f"mqtts://127.0.0.1:{tls_port}", tmp_path / "state", mqtt_tls_ca_file=str(ca))
    device = SimulatedDevice(load_spec_file(PRODUCTS_DIR / "thermostat.json"), "tls-thermo-1",
                             SimulatorOptions(url=broker.url))
    try:
        await device.start()
        await wait_until(lambda: running.daemon.registry.get("tls-thermo-1") is not None)
        status, body = await running.request("GET", "/api/health")
        assert status == 200 and body["mqtt"]["connected"] is True
        status, result = await running.request(
            "POST", "/api/devices/tls-thermo-1/commands",
            json_body={"command": "set_target_temperature", "params": {"target_temperature": 21}})
        assert status == 200 and result["ok"] is True
    finally:
        await device.stop()
        await running.stop()


async def test_untrusted_broker_certificate_is_reported_and_retried(
    tls_broker: tuple[MosquittoBroker, int, Path], tmp_path: Path
) -> None:
    _broker, tls_port, _ca = tls_broker
    other_ca, _, _ = make_ca_and_server_cert(tmp_path / "other-pki", name="other")
    running = await start_daemon(f"mqtts://127.0.0.1:{tls_port}", tmp_path / "state", wait_subscribed=False,
                                 mqtt_tls_ca_file=str(other_ca))
    try:
        await wait_until(lambda: running.daemon.link.status.failures_seen >= 2, timeout=10)
        status, body = await running.request("GET", "/api/health")
        assert status == 503 and body["status"] == "degraded"
        assert "TLS" in body["mqtt"]["lastError"] and "CERTIFICATE_VERIFY_FAILED" in body["mqtt"]["lastError"]
    finally:
        await running.stop()


def _passwd(path: Path, user: str, password: str) -> None:
    flags = ["-b"] if path.exists() else ["-c", "-b"]
    subprocess.run(["mosquitto_passwd", *flags, str(path), user, password], check=True, capture_output=True)


async def test_refused_credentials_are_retried_until_the_broker_accepts_them(tmp_path: Path) -> None:
    passwords = tmp_path / "passwd"
    _passwd(passwords, "device", "device-secret")
    broker = start_broker(tmp_path / "broker", extra_conf=f"allow_anonymous false\npassword_file {passwords}\n")
    running = await start_daemon(broker.url, tmp_path / "state", wait_subscribed=False,
                                 mqtt_username="gateway", mqtt_password="gateway-secret")
    try:
        await wait_until(lambda: running.daemon.link.status.failures_seen >= 2, timeout=10)
        status, body = await running.request("GET", "/api/health")
        assert status == 503
        assert "refused" in body["mqtt"]["lastError"]
        assert "gateway-secret" not in str(body)

        # The installer fixes the broker's password file; no daemon restart is needed.
        _passwd(passwords, "gateway", "gateway-secret")
        assert broker._proc is not None
        broker._proc.send_signal(signal.SIGHUP)
        await wait_until(lambda: running.daemon.link.is_connected, timeout=15)
        await wait_until(lambda: running.daemon.link.subscribed.is_set(), timeout=5)

        device = SimulatedDevice(load_spec_file(PRODUCTS_DIR / "switch.json"), "auth-switch-1",
                                 SimulatorOptions(url=broker.url, username="device", password="device-secret"))
        await device.start()
        try:
            await wait_until(lambda: running.daemon.registry.get("auth-switch-1") is not None)
        finally:
            await device.stop()
    finally:
        await running.stop()
        broker.stop()


async def test_mqtt_311_gateway_serves_devices(broker: MosquittoBroker, tmp_path: Path) -> None:
    running = await start_daemon(broker.url, tmp_path / "state", mqtt_protocol_version=4)
    device = SimulatedDevice(load_spec_file(PRODUCTS_DIR / "light.json"), "v311-light-1",
                             SimulatorOptions(url=broker.url, protocol=4))
    try:
        assert not running.daemon.link.is_mqtt5
        await device.start()
        await wait_until(lambda: running.daemon.registry.get("v311-light-1") is not None)
        status, result = await running.request(
            "POST", "/api/devices/v311-light-1/commands",
            json_body={"command": "set_brightness", "params": {"brightness": 40}})
        assert status == 200 and result["ok"] is True, result
        device_json = running.daemon.registry.get("v311-light-1")
        await wait_until(lambda: device_json is not None and device_json.state.get("brightness") == 40)
    finally:
        await device.stop()
        await running.stop()
