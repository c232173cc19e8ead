"""Shared pytest fixtures.

Test helpers live in top-level modules next to this file (``import
mosquitto_broker``), found via ``pythonpath = ["tests"]`` in pyproject.toml.
Do not add ``tests/__init__.py`` and do not import ``tests.xxx``: gmqtt's wheel
ships a top-level ``tests`` package in site-packages.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from mosquitto_broker import MosquittoBroker, start_broker
from simulated_site import Sims
from uplink_site import CloudBroker, start_cloud

# --------------------------------------------------------------------------
# MQTT brokers (real mosquitto processes, 127.0.0.1, free port, anonymous)
# --------------------------------------------------------------------------


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MosquittoBroker]:
    """One broker shared by the whole session. Do not stop/restart/kill it:
    use ``fresh_broker`` for that. Use unique topics / client ids per test."""
    b = start_broker(tmp_path_factory.mktemp("mosquitto-session"))
    try:
        yield b
    finally:
        b.stop()


@pytest.fixture
def fresh_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MosquittoBroker]:
    """A private broker for one test, free to restart()/kill()/stop()/start()."""
    b = start_broker(tmp_path_factory.mktemp("mosquitto"))
    try:
        yield b
    finally:
        b.stop()


@pytest.fixture
def cloud(tmp_path: Path) -> Iterator[CloudBroker]:
    """A "cloud" broker for the uplink: a plain listener for the test, a TLS one for the gateway."""
    cloud = start_cloud(tmp_path / "cloud")
    try:
        yield cloud
    finally:
        cloud.broker.stop()


# --------------------------------------------------------------------------
# deviceagentd daemon fixtures go below this line.
# --------------------------------------------------------------------------


@pytest.fixture
async def sims(broker: MosquittoBroker) -> AsyncIterator[Sims]:
    """Simulated devices on the session broker (`await sims.start(product, device_id)`), all
    stopped at the end of the test."""
    factory = Sims(broker)
    try:
        yield factory
    finally:
        for sim in reversed(factory.started):
            await sim.stop()
