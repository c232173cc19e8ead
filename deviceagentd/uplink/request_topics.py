"""The topics cloud requests come in on and their answers go out on, for one site.

Templates hold `{siteId}` (and `{deviceId}` for a device's commands), each filling a whole topic
level. Incoming topics are matched with any site id so that a request addressed to another site
is recognised and refused rather than ignored.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import Enum

SITE = "{siteId}"
DEVICE = "{deviceId}"
# What MQTT allows in a topic (UTF-8 length prefix of two bytes).
MAX_TOPIC_BYTES = 65535


class TemplateError(ValueError):
    """A template the handler cannot work with; `name` says which (command, command_result, chat,
    chat_result)."""

    def __init__(self, name: str, message: str) -> None:
        super().__init__(message)
        self.name = name


class RequestKind(Enum):
    COMMAND = "command"
    CHAT = "chat"


@dataclass(frozen=True)
class ParsedRequestTopic:
    kind: RequestKind
    site_id: str
    device_id: str  # "" for chat


@dataclass(frozen=True)
class RequestTopics:
    """`site_id` and the request and default reply templates (the uplink's configuration)."""

    site_id: str
    command: str = "sites/{siteId}/devices/{deviceId}/commands"
    command_result: str = "sites/{siteId}/devices/{deviceId}/commands/result"
    chat: str = "sites/{siteId}/gateway/chat"
    chat_result: str = "sites/{siteId}/gateway/chat/result"
    _patterns: tuple[tuple[RequestKind, re.Pattern[str]], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.site_id or any(c in self.site_id for c in "/+#\0"):
            raise ValueError(f"site id {self.site_id!r} must be non-empty, without / + # or NUL")
        for name, template, needs_device in (("command", self.command, True), ("command_result", self.command_result,
                                             True), ("chat", self.chat, False), ("chat_result", self.chat_result,
                                                                                 False)):
            levels = template.split("/")
            if SITE not in levels:
                raise TemplateError(name, f"{name} template {template!r} needs {SITE} as a whole topic level")
            if needs_device and DEVICE not in levels:
                raise TemplateError(name, f"{name} template {template!r} needs {DEVICE} as a whole topic level")
            if not needs_device and DEVICE in template:
                raise TemplateError(name, f"{name} template {template!r} cannot hold {DEVICE}")
            if any(c in template for c in "+#\0") or "" in levels:
                raise TemplateError(name, f"{name} template {template!r} must have no + # and no empty level")
            if _prefix_template(template) != _prefix_template(self.command):
                raise TemplateError(name, f"{name} template {template!r} must start like the command template "
                                 f"({_prefix_template(self.command)}): a site's topics share one prefix")
        object.__setattr__(self, "_patterns", ((RequestKind.COMMAND, _compile(self.command)),
                                               (RequestKind.CHAT, _compile(self.chat))))

    @property
    def site_prefix(self) -> str:
        """`sites/<siteId>/`: every topic of this site, requests and answers, lies under it."""
        return _prefix_template(self.command).replace(SITE, self.site_id)

    def subscriptions(self) -> list[str]:
        return [self.command.replace(SITE, self.site_id).replace(DEVICE, "+"), self.chat.replace(SITE, self.site_id)]

    def parse(self, topic: str) -> ParsedRequestTopic | None:
        """The request a topic carries (whatever its site id), or None."""
        for kind, pattern in self._patterns:
            match = pattern.fullmatch(topic)
            if match is not None:
                groups = match.groupdict()
                return ParsedRequestTopic(kind, groups["siteId"], groups.get("deviceId") or "")
        return None

    def result_topic(self, kind: RequestKind, device_id: str) -> str:
        """Where an answer goes when the caller named no response topic (MQTT 3.1.1), always on
        this site."""
        template = self.command_result if kind is RequestKind.COMMAND else self.chat_result
        return template.replace(SITE, self.site_id).replace(DEVICE, device_id)

    def response_topic_problem(self, topic: str) -> str | None:
        """Why the caller's MQTT 5 response topic cannot be used, or None.

        Only topics under this site's prefix: the broker's ACL confines each gateway to its own
        `sites/<siteId>/#`, so a reply elsewhere would be refused by the broker (EMQX drops it or
        disconnects us, depending on its `deny_action`), and a gateway that published wherever a
        request told it would let anyone who can send it a request write into other sites' topics.
        Our own request topics are refused too: the reply would come back to us as a request.
        """
        if not topic:
            return "is empty"
        if len(topic.encode("utf-8", "surrogatepass")) > MAX_TOPIC_BYTES:
            return f"is longer than {MAX_TOPIC_BYTES} bytes"
        if any(c in topic for c in "+#\0"):
            return "must not contain + # or NUL"
        if not topic.startswith(self.site_prefix):
            return f"must lie under this site's prefix {self.site_prefix}"
        if self.parse(topic) is not None:
            return "is a request topic: the reply would come back as a request"
        return None


def _prefix_template(template: str) -> str:
    """The template up to and including its `{siteId}` level, with a trailing `/`."""
    levels = template.split("/")
    return "/".join(levels[: levels.index(SITE) + 1]) + "/" if SITE in levels else template


def _compile(template: str) -> re.Pattern[str]:
    parts = re.split(r"(\{siteId\}|\{deviceId\})", template)
    return re.compile("".join(f"(?P<{p[1:-1]}>[^/]*)" if p in (SITE, DEVICE) else re.escape(p) for p in parts))
