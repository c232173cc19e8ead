"""The offline provider, loaded at the first turn rather than at boot.

Its lexicon and vocabulary cost about a megabyte; a gateway that never chats (most of them,
most of the time) should not carry them in its idle footprint.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, tzinfo

from deviceagentd.agent.types import Provider, Tools, TurnContext, TurnEvent
from deviceagentd.core.registry import DeviceRegistry


@dataclass
class LazyLocalProvider:
    registry: DeviceRegistry
    # The site's time zone: times of day in requests ("wake me up at 7") and in event summaries.
    zone: tzinfo = UTC
    name: str = "local"
    _provider: Provider | None = field(default=None, repr=False)

    def run(self, context: TurnContext, tools: Tools) -> AsyncIterator[TurnEvent]:
        if self._provider is None:
            from deviceagentd.agent.local import LocalProvider

            self._provider = LocalProvider(self.registry, self.zone)
        return self._provider.run(context, tools)
