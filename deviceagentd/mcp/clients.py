"""`mcp.clients`: assistants with a token of their own, limited to some tools.

Each entry is `"<name>:<token>:<tools>"`: a name for the logs and the call log, a token (16
characters or more, no colon) that works only on /mcp, and the tools it may call — a comma
separated list, `read` for every tool that only reads, or `*` for all of them. Tokens in
`http.tokens` may call every tool (both are still subject to `mcp.read_only`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from deviceagentd.mcp.names import ALL_TOOLS, READ_TOOLS

MIN_TOKEN_CHARS = 16
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


@dataclass(frozen=True)
class ClientSpec:
    name: str
    token: str
    tools: frozenset[str]


class ClientSpecError(ValueError):
    def __init__(self, index: int, reason: str) -> None:
        super().__init__(f"mcp.clients[{index}]: {reason}")
        self.index = index
        self.reason = reason


def parse_clients(entries: Sequence[str]) -> list[ClientSpec]:
    """Every entry checked; raises ClientSpecError for the first bad one (never echoing a token)."""
    clients: list[ClientSpec] = []
    names: set[str] = set()
    tokens: set[str] = set()
    for index, entry in enumerate(entries):
        name, sep, rest = entry.partition(":")
        token, sep2, tools_text = rest.rpartition(":")
        if not (sep and sep2):
            raise ClientSpecError(index, "must be \"<name>:<token>:<tools>\" (tools: a comma list, read or *)")
        if not _NAME.fullmatch(name):
            raise ClientSpecError(index, "the name must be 1 to 64 letters, digits, _ . or - (starting with "
                                         "a letter or digit)")
        if len(token) < MIN_TOKEN_CHARS or token != token.strip() or ":" in token:
            raise ClientSpecError(index, f"the token of {name!r} must be at least {MIN_TOKEN_CHARS} characters, "
                                         "without colons or surrounding spaces")
        if name in names:
            raise ClientSpecError(index, f"the name {name!r} is used twice")
        if token in tokens:
            raise ClientSpecError(index, f"the token of {name!r} is also another client's")
        clients.append(ClientSpec(name, token, _tools(index, tools_text)))
        names.add(name)
        tokens.add(token)
    return clients


def _tools(index: int, text: str) -> frozenset[str]:
    words = [word.strip() for word in text.split(",") if word.strip()]
    if not words:
        raise ClientSpecError(index, "lists no tools (use a comma list of tool names, read or *)")
    tools: set[str] = set()
    for word in words:
        if word == "*":
            tools.update(ALL_TOOLS)
        elif word == "read":
            tools.update(READ_TOOLS)
        elif word in ALL_TOOLS:
            tools.add(word)
        else:
            raise ClientSpecError(index, f"{word!r} is not a tool (tools: {', '.join(ALL_TOOLS)}; or read, *)")
    return frozenset(tools)
