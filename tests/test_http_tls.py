"""HTTPS on the HTTP port and wss:// on the voice port from configured PEM files: a client that
trusts the CA gets the API, the console and the voice WebSocket; one that does not is refused
at the handshake; plain HTTP is not answered; bad files are config errors naming the key."""

from __future__ import annotations

import json
import ssl
from pathlib import Path

import aiohttp
import pytest
from daemon_harness import start_daemon
from mosquitto_broker import MosquittoBroker
from test_mqtt_tls_auth import make_ca_and_server_cert

from deviceagentd.config import ConfigError, load_config


async def test_both_ports_serve_tls_from_the_configured_certificate(broker: MosquittoBroker, tmp_path: Path) -> None:
    ca, cert, key = make_ca_and_server_cert(tmp_path / "pki")
    gw = await start_daemon(broker.url, tmp_path / "state", http_tls_cert_file=cert, http_tls_key_file=key,
                            voice_tls_cert_file=cert, voice_tls_key_file=key)
    trusted = ssl.create_default_context(cafile=str(ca))
    https = gw.base_url.replace("http://", "https://")
    wss = gw.voice_url.replace("http://", "wss://")
    try:
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{https}/api/health", ssl=trusted) as resp:
                assert resp.status == 200
                assert (await resp.json())["status"] == "ok"
            async with session.ws_connect(f"{wss}/ws/voice", ssl=trusted) as ws:
                await ws.send_str(json.dumps({"type": "hello", "version": 1,
                                              "audio_params": {"format": "pcm", "sample_rate": 16000}}))
                answer = json.loads((await ws.receive(timeout=10)).data)
                # The voice session answers over wss (hello, or which speech provider is missing).
                assert answer["type"] == "hello" or answer.get("code") == "asr_not_configured", answer
            with pytest.raises(aiohttp.ClientConnectorCertificateError):
                await session.get(f"{https}/api/health")  # the system's CAs do not know ours
            with pytest.raises(aiohttp.ClientError):
                await session.get(f"{gw.base_url}/api/health")  # plain HTTP on a TLS port
    finally:
        await gw.stop()


def test_tls_files_are_checked_with_the_config(tmp_path: Path) -> None:
    _, cert, key = make_ca_and_server_cert(tmp_path / "pki")
    _, other_cert, _ = make_ca_and_server_cert(tmp_path / "other", "other")
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    cases = {
        "DEVICEAGENTD_HTTP_TLS_CERT_FILE": ({"DEVICEAGENTD_HTTP_TLS_CERT_FILE": str(cert)}, "needs both"),
        "missing": ({"DEVICEAGENTD_VOICE_TLS_CERT_FILE": str(tmp_path / "nope.crt"),
                     "DEVICEAGENTD_VOICE_TLS_KEY_FILE": str(key)}, "does not exist"),
        "garbage": ({"DEVICEAGENTD_HTTP_TLS_CERT_FILE": str(garbage),
                     "DEVICEAGENTD_HTTP_TLS_KEY_FILE": str(key)}, "not a usable PEM"),
        "mismatch": ({"DEVICEAGENTD_HTTP_TLS_CERT_FILE": str(other_cert),
                      "DEVICEAGENTD_HTTP_TLS_KEY_FILE": str(key)}, "not a usable PEM"),
    }
    for name, (env, words) in cases.items():
        with pytest.raises(ConfigError) as caught:
            load_config(None, env)
        [problem] = caught.value.problems
        assert problem.key.endswith(".tls_cert_file") and words in problem.message, (name, problem)
    good = load_config(None, {"DEVICEAGENTD_HTTP_TLS_CERT_FILE": str(cert), "DEVICEAGENTD_HTTP_TLS_KEY_FILE": str(key)})
    assert good.http.tls_cert_file == str(cert)


def test_relative_tls_paths_are_relative_to_the_config_file(tmp_path: Path) -> None:
    make_ca_and_server_cert(tmp_path / "etc" / "pki")
    config_file = tmp_path / "etc" / "gateway.toml"
    config_file.write_text('[voice]\ntls_cert_file = "pki/server.crt"\ntls_key_file = "pki/server.key"\n')
    config = load_config(config_file, {})
    assert config.voice.tls_cert_file == str(tmp_path / "etc" / "pki" / "server.crt")
