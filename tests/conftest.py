"""Shared pytest fixtures.

Test helpers live in top-level modules next to this file (``import
mosquitto_broker``), found via ``pythonpath = ["tests"]`` in pyproject.toml.
Do not add ``tests/__init__.py`` and do not import ``tests.xxx``: gmqtt's wheel
ships a top-level ``tests`` package in site-packages.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
from mosquitto_broker import MosquittoBroker, start_broker
from simulated_site import Sims

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
