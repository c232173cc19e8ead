"""Messages the cloud broker refused: a PUBACK with a reason code of 0x80 or more (MQTT 5).

A refused row is deleted from the outbox like a delivered one, but counted by reason, logged and
shown in health. Keeping it would not bring it through: the broker's answer (an ACL that does
not allow the topic, a payload it will not take) holds for every resend, so a kept row would be
sent again after every reconnect for as long as the outbox keeps it, and a forwarder that held a
device's later rows behind it would lose all of that device's messages instead of one. A quota
refusal (0x97) may pass later, but the broker decides what its quota is, and a resend loop is what
it is defending against. So: one loud count per row, never a silent loss, never a retry loop.

The journal gets one line when a topic starts being refused for a reason and one when the broker
takes that topic again (an episode), not one per row: a gateway whose ACL is wrong would otherwise
write a line per message. Past a handful of topics refused at once, one line says there are more.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from deviceagentd.core.metrics import Counter
from deviceagentd.mqtt.connection import puback_reason

log = logging.getLogger("deviceagentd.uplink")

REFUSED = 0x80
NOT_AUTHORIZED = 0x87
TOPIC_NAME_INVALID = 0x90
QUOTA_EXCEEDED = 0x97
PAYLOAD_FORMAT_INVALID = 0x99
# Topics logged one by one while refused at once; beyond: one line for all the others.
LOGGED_TOPICS = 5
# Open episodes remembered (each is one topic); past this, refusals are only counted.
MAX_OPEN = 10_000


def is_refusal(code: int) -> bool:
    return code >= REFUSED


@dataclass
class _Episode:
    reason: str
    rows: int = 0


@dataclass(frozen=True)
class LastRefusal:
    topic: str
    code: int
    at_ms: int


class Refusals:
    def __init__(self, counter: Counter, site_prefix: str, clock_ms: Callable[[], int]) -> None:
        self._counter = counter
        self._site_prefix = site_prefix
        self._clock_ms = clock_ms
        self._open: dict[str, _Episode] = {}
        self._said_more = False
        self.total = 0
        self.by_reason: dict[str, int] = {}
        self.last: LastRefusal | None = None

    def hint(self, code: int) -> str:
        if code == NOT_AUTHORIZED:
            return f"the cloud broker's ACL must let this gateway publish to {self._site_prefix}#"
        if code == TOPIC_NAME_INVALID:
            return "the broker does not accept the topic's name: check uplink.topics"
        if code == QUOTA_EXCEEDED:
            return "the broker's quota for this client is used up (its rate or message limits)"
        if code == PAYLOAD_FORMAT_INVALID:
            return "the broker rejected the payload's format"
        return "see the cloud broker's log for why"

    def refused(self, topic: str, code: int) -> None:
        reason = puback_reason(code)
        self.total += 1
        self.by_reason[reason] = self.by_reason.get(reason, 0) + 1
        self._counter.inc({"reason": reason})
        self.last = LastRefusal(topic, code, self._clock_ms())
        episode = self._open.get(topic)
        if episode is not None and episode.reason == reason:
            episode.rows += 1
            return
        if len(self._open) >= MAX_OPEN and episode is None:
            return
        self._open[topic] = _Episode(reason, 1)
        if len(self._open) <= LOGGED_TOPICS:
            log.warning("uplink: the cloud broker refused a message on %s (%s); it is dropped and counted in "
                        "deviceagentd_uplink_refused_total, and so is every further one until the broker takes "
                        "this topic again: %s", topic, reason, self.hint(code))
        elif not self._said_more:
            self._said_more = True
            log.warning("uplink: the cloud broker refuses messages on more than %d topics (%s on %s); each is "
                        "dropped and counted in deviceagentd_uplink_refused_total: %s", LOGGED_TOPICS, reason, topic,
                        self.hint(code))

    def accepted(self, topic: str) -> None:
        if not self._open:
            return
        episode = self._open.pop(topic, None)
        if episode is None:
            return
        log.info("uplink: the cloud broker takes messages on %s again (%d refused with %s before)", topic,
                 episode.rows, episode.reason)
        if not self._open:
            self._said_more = False

    def detail(self) -> dict[str, Any]:
        """Health's `uplink.refused`."""
        last = self.last
        return {"total": self.total, "byReason": dict(self.by_reason),
                "last": None if last is None else {"topic": last.topic, "reason": puback_reason(last.code),
                                                   "ts": last.at_ms}}

    def warning(self) -> str | None:
        last = self.last
        if last is None:
            return None
        return (f"the cloud broker refused {self.total} messages since start, which were dropped (last: "
                f"{puback_reason(last.code)} on {last.topic}): {self.hint(last.code)}")
