"""Back-pressure to the broker: device messages wait, unacknowledged, while storage has no room.

The daemon acknowledges a QoS 1 message only after handling it (mqtt/link.py). When the store
falls behind (a slow SD card) or cannot commit (a full disk), telemetry and events that would
add rows wait here instead of being accepted into memory without bound or dropped. The broker
sends at most the Receive Maximum of unacknowledged messages (link.RECEIVE_MAXIMUM, or
Mosquitto's max_inflight_messages for MQTT 3.1.1) and queues the rest in our session, so
memory stays bounded and nothing acknowledged is lost. Messages are let through in arrival
order as commits make room.

If the connection drops, or the daemon stops, while messages wait, they are let go without
being handled: they were never acknowledged, so the broker delivers them again.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from typing import Protocol


class StorageRoom(Protocol):
    """What the gate needs from the store (deviceagentd.store.Store has it)."""

    @property
    def has_room(self) -> bool: ...

    async def wait_for_room(self) -> bool: ...


class AckGate:
    def __init__(self, room: StorageRoom) -> None:
        self._room = room
        self._waiting: deque[asyncio.Future[bool]] = deque()
        self._pump: asyncio.Task[None] | None = None
        self._closed = False

    @property
    def held(self) -> int:
        """Messages waiting now (their acknowledgement held)."""
        return len(self._waiting)

    @property
    def holding(self) -> bool:
        return bool(self._waiting) or not self._room.has_room

    def open_now(self) -> bool:
        """True when a message may go on at once: nothing waits before it and there is room."""
        return not self._closed and not self._waiting and self._room.has_room

    async def wait(self) -> bool:
        """Wait for room in arrival order. True: handle the message now. False: leave it
        unhandled and unacknowledged (connection lost or stopping; the broker redelivers)."""
        if self._closed:
            return False
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._waiting.append(future)
        if self._pump is None:
            self._pump = asyncio.ensure_future(self._release())
        return await future

    def let_go(self) -> None:
        """Every waiting message goes unhandled (the connection they came on is gone)."""
        while self._waiting:
            future = self._waiting.popleft()
            if not future.done():
                future.set_result(False)

    def close(self) -> None:
        """Stop letting messages through (shutdown). Call let_go() once the connection is closed."""
        self._closed = True
        if self._pump is not None:
            self._pump.cancel()

    async def _release(self) -> None:
        try:
            while self._waiting and not self._closed:
                if not await self._room.wait_for_room():
                    # The store is closed: nothing more can be stored.
                    self._closed = True
                    return
                while self._waiting and self._room.has_room and not self._closed:
                    future = self._waiting.popleft()
                    if not future.done():
                        future.set_result(True)
                        # Let that message add its rows before room is measured again.
                        await asyncio.sleep(0)
        finally:
            self._pump = None

    async def stop(self) -> None:
        self.close()
        pump = self._pump
        if pump is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await pump
