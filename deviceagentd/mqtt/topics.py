"""Topic templates (SPEC §2): formatting topics for a device, subscription filters, and parsing
an incoming topic back into (kind, productId, deviceId)."""

from __future__ import annotations

import re
from dataclasses import dataclass, fields
from enum import StrEnum

from deviceagentd.core.ids import device_id_problem

PLACEHOLDERS = ("{productId}", "{deviceId}")
SHOWN_CHARS = 80
FORBIDDEN_ID_CHARS = frozenset("+#/")


class TopicKind(StrEnum):
    PRODUCT_IN = "product_in"
    PRODUCT_OUT = "product_out"
    DEVICE_IN = "device_in"
    DEVICE_OUT = "device_out"
    COMMAND = "command"
    RESPONSE = "response"
    TELEMETRY = "telemetry"
    EVENT = "event"
    NTP_REQUEST = "ntp_request"
    NTP_RESPONSE = "ntp_response"


@dataclass(frozen=True)
class TopicTemplates:
    product_in: str = "device-agent/{productId}/in"
    product_out: str = "device-agent/{productId}/out"
    device_in: str = "device-agent/{productId}/device/{deviceId}/in"
    device_out: str = "device-agent/{productId}/device/{deviceId}/out"
    command: str = "device-agent/{productId}/device/{deviceId}/commands"
    response: str = "device-agent/{productId}/device/{deviceId}/responses"
    telemetry: str = "v1/{productId}/{deviceId}/telemetry"
    event: str = "v1/{productId}/{deviceId}/event"
    ntp_request: str = "device-agent/{productId}/device/{deviceId}/ntp/request"
    ntp_response: str = "device-agent/{productId}/device/{deviceId}/ntp/response"

    def template(self, kind: TopicKind) -> str:
        value: str = getattr(self, kind.value)
        return value

    def format(self, kind: TopicKind, product_id: str, device_id: str = "") -> str:
        return self.template(kind).replace("{productId}", product_id).replace("{deviceId}", device_id)


def template_problems(name: str, template: str) -> list[str]:
    """Why a template cannot work, as sentences; empty when it is fine."""
    problems: list[str] = []
    if not template or template.startswith("/") or template.endswith("/"):
        problems.append("must be a non-empty topic without a leading or trailing /")
    rest = template.replace("{productId}", "").replace("{deviceId}", "")
    if any(c in rest for c in "+#{}"):
        problems.append("may contain only the placeholders {productId} and {deviceId}, no + # or other braces")
    for placeholder in PLACEHOLDERS:
        if template.count(placeholder) > 1:
            problems.append(f"uses {placeholder} more than once")
        idx = template.find(placeholder)
        if idx >= 0:
            before = template[idx - 1] if idx > 0 else "/"
            end = idx + len(placeholder)
            after = template[end] if end < len(template) else "/"
            if before != "/" or after != "/":
                problems.append(f"{placeholder} must fill a whole topic level")
    needs_device = not name.startswith("product_")
    if "{productId}" not in template:
        problems.append("must contain {productId}")
    if needs_device and "{deviceId}" not in template:
        problems.append("must contain {deviceId}")
    return problems


@dataclass(frozen=True)
class ParsedTopic:
    kind: TopicKind
    product_id: str
    device_id: str


class BadTopicId(ValueError):
    """The topic matched a template but an id in it is empty or holds + # /."""


class TopicParser:
    """Turns incoming topic names into ParsedTopic for the kinds the gateway subscribes to.

    Only device→gateway kinds are parsed; matching order is fixed so that overlapping custom
    templates resolve the same way every time.
    """

    INBOUND = (
        TopicKind.TELEMETRY,
        TopicKind.NTP_REQUEST,
        TopicKind.EVENT,
        TopicKind.RESPONSE,
        TopicKind.DEVICE_IN,
        TopicKind.PRODUCT_IN,
    )

    # Devices publish on a few topics each, again and again: remember the parsed ones.
    CACHE_SIZE = 8192

    def __init__(self, templates: TopicTemplates, kinds: tuple[TopicKind, ...] = INBOUND) -> None:
        self._patterns: list[tuple[TopicKind, re.Pattern[str]]] = [
            (kind, _compile(templates.template(kind))) for kind in kinds
        ]
        self._cache: dict[str, ParsedTopic] = {}

    def parse(self, topic: str) -> ParsedTopic | None:
        """None when no template matches; BadTopicId when one matches with an unusable id."""
        cached = self._cache.get(topic)
        if cached is not None:
            return cached
        parsed = self._parse(topic)
        if parsed is not None:
            if len(self._cache) >= self.CACHE_SIZE:
                self._cache.clear()
            self._cache[topic] = parsed
        return parsed

    def _parse(self, topic: str) -> ParsedTopic | None:
        for kind, pattern in self._patterns:
            match = pattern.fullmatch(topic)
            if match is None:
                continue
            groups = match.groupdict()
            product_id = groups.get("productId", "")
            device_id = groups.get("deviceId", "")
            if not product_id or (kind not in (TopicKind.PRODUCT_IN,) and not device_id):
                raise BadTopicId(f"empty id in topic {shown(topic)}")
            if FORBIDDEN_ID_CHARS & set(product_id + device_id):
                raise BadTopicId(f"id with + # or / in topic {shown(topic)}")
            if kind is not TopicKind.PRODUCT_IN:
                problem = device_id_problem(device_id)
                if problem is not None:
                    raise BadTopicId(f"device id {shown(device_id)} {problem}")
            return ParsedTopic(kind, product_id, device_id)
        return None


def shown(text: str) -> str:
    """`text` quoted for a log line, cut to SHOWN_CHARS: ids come from outside, any length."""
    return repr(text if len(text) <= SHOWN_CHARS else text[:SHOWN_CHARS] + "…")


def subscription_filter(template: str) -> str:
    return template.replace("{productId}", "+").replace("{deviceId}", "+")


def _compile(template: str) -> re.Pattern[str]:
    # `[^/]*` (not `+`) so an empty level still matches and is reported as a bad id.
    parts = re.split(r"(\{productId\}|\{deviceId\})", template)
    regex = "".join(
        f"(?P<{p[1:-1]}>[^/]*)" if p in PLACEHOLDERS else re.escape(p) for p in parts
    )
    return re.compile(regex)


def id_problem(value: str) -> str | None:
    """Why an id cannot be used in a topic, or None."""
    if not value:
        return "must not be empty"
    if FORBIDDEN_ID_CHARS & set(value):
        return "must not contain + # or /"
    return None


TEMPLATE_NAMES = tuple(f.name for f in fields(TopicTemplates))
