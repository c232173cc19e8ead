"""The idle-footprint helpers: when the heap is trimmed, the malloc arena cap, and aiohttp
imported with its CA bundle deferred (TLS verification must still work)."""

from __future__ import annotations

import asyncio
import json
import os
import ssl
import subprocess
import sys
from pathlib import Path

from aiohttp import web
from test_mqtt_tls_auth import make_ca_and_server_cert

from deviceagentd.memory import HeapTrimmer, limit_malloc_arenas, trim_heap

REPO = Path(__file__).resolve().parents[1]


class CountingTrim:
    def __init__(self) -> None:
        self.calls = 0

    def __call__(self) -> bool:
        self.calls += 1
        return True


def test_trimmer_trims_every_interval_and_not_between() -> None:
    trim = CountingTrim()
    trimmer = HeapTrimmer(every_s=300.0, trim=trim)
    assert trimmer.tick(0.0, 10) is False  # the first tick only starts the clock
    assert trimmer.tick(299.0, 10) is False
    assert trimmer.tick(300.0, 10) is True
    assert trimmer.tick(300.5, 10) is False
    assert trimmer.tick(599.0, 10) is False
    assert trimmer.tick(600.0, 10) is True
    assert trim.calls == 2


def test_trimmer_trims_once_a_registration_burst_has_settled() -> None:
    trim = CountingTrim()
    trimmer = HeapTrimmer(every_s=300.0, burst_devices=100, trim=trim)
    trimmer.tick(0.0, 0)
    assert trimmer.tick(0.5, 60) is False
    assert trimmer.tick(1.0, 150) is False  # still growing
    assert trimmer.tick(1.5, 1000) is False
    assert trimmer.tick(2.0, 1000) is True  # settled
    assert trimmer.tick(2.5, 1000) is False  # once per burst
    assert trimmer.tick(3.0, 1050) is False
    assert trimmer.tick(3.5, 1050) is False  # settled, but fewer than 100 new since the trim
    assert trim.calls == 1


def test_trimmer_counts_deletions_as_a_burst() -> None:
    trim = CountingTrim()
    trimmer = HeapTrimmer(every_s=300.0, burst_devices=100, trim=trim)
    trimmer.tick(0.0, 500)
    assert trimmer.tick(0.5, 350) is False
    assert trimmer.tick(1.0, 350) is True
    assert trim.calls == 1


def test_heap_trim_and_arena_cap_reach_glibc() -> None:
    # The test machines run glibc, where both exist; elsewhere they would return False.
    assert limit_malloc_arenas(8) is True
    assert isinstance(trim_heap(), bool)


CLIENT = """
import asyncio, json, os, sys
from deviceagentd.memory import deferred_ca_bundle
with deferred_ca_bundle() as deferred:
    import aiohttp
import aiohttp.connector

loaded = aiohttp.connector._SSL_CONTEXT_VERIFIED.cert_store_stats()["x509_ca"]

async def fetch(url):
    try:
        async with aiohttp.ClientSession() as session:
            async with session.get(url) as response:
                return response.status
    except aiohttp.ClientConnectorCertificateError:
        return "certificate refused"

statuses = [asyncio.run(fetch(url)) for url in sys.argv[1:]]
print(json.dumps({
    "deferred": deferred,
    "loaded": loaded,
    "cert_file": os.environ.get("SSL_CERT_FILE"),
    "statuses": statuses,
}))
"""


def _hash_name(cert: Path) -> str:
    out = subprocess.run(["openssl", "x509", "-hash", "-noout", "-in", str(cert)], check=True,
                         capture_output=True, text=True)
    return out.stdout.strip() + ".0"


def _trust_dir(directory: Path, ca: Path, bundle: Path) -> None:
    """A hashed CA directory holding `ca`, and a bundle file of it at `bundle`."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / _hash_name(ca)).write_bytes(ca.read_bytes())
    bundle.parent.mkdir(parents=True, exist_ok=True)
    bundle.write_bytes(ca.read_bytes())


async def _serve_tls(cert: Path, key: Path) -> tuple[web.AppRunner, str]:
    app = web.Application()

    async def hello(_request: web.Request) -> web.Response:
        return web.Response(text="hi")

    app.router.add_get("/", hello)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
    await site.start()
    port = runner.addresses[0][1]
    return runner, f"https://localhost:{port}/"


async def _client(cert_file: Path, cert_dir: Path, *urls: str) -> dict[str, object]:
    env = {**os.environ, "SSL_CERT_FILE": str(cert_file), "SSL_CERT_DIR": str(cert_dir)}
    proc = await asyncio.create_subprocess_exec(sys.executable, "-c", CLIENT, *urls, env=env, cwd=REPO,
                                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    result: dict[str, object] = json.loads(out)
    return result


async def test_deferred_bundle_still_verifies_through_the_hashed_directory(tmp_path: Path) -> None:
    ca, cert, key = make_ca_and_server_cert(tmp_path / "pki")
    _, other_cert, other_key = make_ca_and_server_cert(tmp_path / "other", "untrusted")
    certs = tmp_path / "certs"
    _trust_dir(certs, ca, certs / "bundle.pem")
    trusted, trusted_url = await _serve_tls(cert, key)
    untrusted, untrusted_url = await _serve_tls(other_cert, other_key)
    try:
        result = await _client(certs / "bundle.pem", certs, trusted_url, untrusted_url)
    finally:
        await trusted.cleanup()
        await untrusted.cleanup()
    assert result["deferred"] is True
    assert result["loaded"] == 0  # nothing parsed at import...
    assert result["statuses"] == [200, "certificate refused"]  # ...and verification unchanged
    assert result["cert_file"] == str(certs / "bundle.pem")  # the environment is restored


async def test_bundle_outside_the_hashed_directory_is_loaded_as_usual(tmp_path: Path) -> None:
    ca, cert, key = make_ca_and_server_cert(tmp_path / "pki")
    certs = tmp_path / "certs"
    _trust_dir(certs, ca, tmp_path / "elsewhere" / "bundle.pem")
    trusted, url = await _serve_tls(cert, key)
    try:
        result = await _client(tmp_path / "elsewhere" / "bundle.pem", certs, url)
    finally:
        await trusted.cleanup()
    assert result["deferred"] is False
    assert result["loaded"] == 1
    assert result["statuses"] == [200]


async def test_directory_missing_some_of_the_bundle_is_not_trusted_alone(tmp_path: Path) -> None:
    ca, cert, key = make_ca_and_server_cert(tmp_path / "pki")
    extra_ca, _, _ = make_ca_and_server_cert(tmp_path / "extra", "extra")
    certs = tmp_path / "certs"
    _trust_dir(certs, ca, certs / "bundle.pem")
    # The bundle names a CA the directory lacks: deferring would lose it.
    (certs / "bundle.pem").write_bytes(ca.read_bytes() + extra_ca.read_bytes())
    trusted, url = await _serve_tls(cert, key)
    try:
        result = await _client(certs / "bundle.pem", certs, url)
    finally:
        await trusted.cleanup()
    assert result["deferred"] is False
    assert result["loaded"] == 2
    assert result["statuses"] == [200]
