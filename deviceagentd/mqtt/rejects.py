"""Counting and logging rejected device messages without flooding the journal.

Every rejection is counted by kind and reason; a log line is written at most once per
device (or topic) and reason per interval, with how many were suppressed in between.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from deviceagentd.core.clock import Clock
from deviceagentd.core.metrics import Metrics

log = logging.getLogger("deviceagentd.mqtt.rejects")
MAX_TRACKED_KEYS = 10_000
MAX_SHOWN_CHARS = 80
MAX_DETAIL_CHARS = 300


@dataclass
class RejectReporter:
    metrics: Metrics
    clock: Clock
    interval_s: float = 60.0
    _last: dict[tuple[str, str], tuple[float, int]] = field(default_factory=dict)

    def reject(self, kind: str, reason: str, who: str, detail: str) -> None:
        self.metrics.rejects.inc({"kind": kind, "reason": reason})
        # Ids and topics come from outside, of any length: cut them for the key and the line.
        who = who if len(who) <= MAX_SHOWN_CHARS else who[:MAX_SHOWN_CHARS] + "…"
        detail = detail if len(detail) <= MAX_DETAIL_CHARS else detail[:MAX_DETAIL_CHARS] + "…"
        key = (who, reason)
        now = self.clock.monotonic()
        last = self._last.get(key)
        if last is not None and now - last[0] < self.interval_s:
            self._last[key] = (last[0], last[1] + 1)
            return
        suppressed = last[1] if last is not None else 0
        if len(self._last) >= MAX_TRACKED_KEYS:
            # Many distinct bad senders: forget the oldest rather than grow without bound.
            self._last.pop(next(iter(self._last)))
        self._last[key] = (now, 0)
        more = f" ({suppressed} more like it since the last report)" if suppressed else ""
        log.warning("rejected %s from %s: %s%s", kind, who, detail, more)
