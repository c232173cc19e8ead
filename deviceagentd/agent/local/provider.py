"""Provider `local`: the offline agent. Plans the message, runs each tool call through the
site's Tools, and answers with one sentence per step in the language of the question."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, tzinfo

from deviceagentd.agent.local import device_tools
from deviceagentd.agent.local.planner import plan
from deviceagentd.agent.local.replies import Replies
from deviceagentd.agent.local.schedule_replies import schedule_result
from deviceagentd.agent.local.steps import Cancelling, Plan, Say, ScheduleListing, Scheduling
from deviceagentd.agent.local.vocabulary import Vocabulary
from deviceagentd.agent.types import Delta, ToolCall, ToolCallFinished, ToolCallStarted, Tools, TurnContext, TurnEvent
from deviceagentd.core.catalog import Catalog
from deviceagentd.core.clock import Clock
from deviceagentd.core.registry import DeviceRegistry


class LocalProvider:
    name = "local"

    def __init__(self, registry: DeviceRegistry, zone: tzinfo = UTC, clock: Clock | None = None) -> None:
        self._registry = registry
        # The site's time zone: "tomorrow at 7" is the site's 7 o'clock; event times are said in
        # it, "today" and "yesterday" by its calendar.
        self._zone = zone
        self._clock = clock or Clock()
        self._catalog: Catalog | None = None
        self._vocabulary: Vocabulary | None = None

    def vocabulary(self) -> Vocabulary:
        # Built once; rebuilt only if the registry is given another catalog.
        if self._vocabulary is None or self._catalog is not self._registry.catalog:
            self._catalog = self._registry.catalog
            self._vocabulary = Vocabulary.build(self._catalog)
        return self._vocabulary

    async def run(self, context: TurnContext, tools: Tools) -> AsyncIterator[TurnEvent]:
        now = datetime.fromtimestamp(self._clock.wall_ms() / 1000, self._zone)
        steps = plan(context.message, context, self._registry, self.vocabulary(), now)
        if context.extra_tools:
            # A speaker's own tool ("set the speaker volume to 40") unless the site's devices
            # are what the person meant.
            found = device_tools.match(context.message, context.extra_tools)
            if found is not None and (found.strong or not _understood(steps)):
                call = ToolCall("local-1", found.name, found.arguments)
                yield ToolCallStarted(call)
                result = await tools.call(call, context)
                yield ToolCallFinished(result)
                yield Delta(device_tools.reply(found, result, context.message))
                return
        replies = Replies(self._registry.catalog, steps.language, context.device_id, self._zone,
                          self._clock.wall_ms())
        separator = "" if replies.zh else " "
        for index, step in enumerate(steps.steps):
            if isinstance(step, Say):
                text = step.text
            else:
                name, arguments = step.tool_call()
                call = ToolCall(f"local-{index + 1}", name, arguments)
                yield ToolCallStarted(call)
                result = await tools.call(call, context)
                yield ToolCallFinished(result)
                if isinstance(step, Scheduling | ScheduleListing | Cancelling):
                    text = schedule_result(replies, step, result)
                else:
                    text = replies.result(step, result)
            yield Delta(text if index == 0 else separator + text)


def _understood(steps: Plan) -> bool:
    """The site plan does something or says something it understood."""
    return any(not isinstance(step, Say) or step.understood for step in steps.steps)
