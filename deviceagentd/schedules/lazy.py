"""The schedule service, built when the site first has a schedule.

At start the daemon asks the store whether any schedule is stored; if so the service is built,
loads them and its timer starts at once. If not, nothing of it is imported until the first
request that needs it (HTTP, MCP or the agent): most gateways never schedule anything, and their
idle footprint should not carry the timer, the rules and the actions (about 0.4 MB).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import tzinfo
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from deviceagentd.schedules.service import ScheduleService


class LazySchedules:
    def __init__(self, zone: tzinfo, build: Callable[[], ScheduleService],
                 started: Callable[[ScheduleService], None]) -> None:
        """`build` makes the service (it may import it); `started` is told once it loaded the stored
        schedules, to start its timer. `zone`: the site's, which times of day are in."""
        self.zone = zone
        self._build = build
        self._started = started
        self._service: ScheduleService | None = None

    @property
    def loaded(self) -> bool:
        return self._service is not None

    @property
    def count(self) -> int:
        return self._service.count if self._service is not None else 0

    def service(self) -> ScheduleService:
        """The service, built, loaded and started on first use."""
        if self._service is None:
            service = self._build()
            service.load()
            self._service = service
            self._started(service)
        return self._service
