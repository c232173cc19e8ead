"""Tools a single turn has besides the site's: a speaker's own tools (volume, screen brightness),
listed by its MCP server over the voice WebSocket. `TurnRequest.tools` carries them; the agent
offers the provider `CombinedTools`, and names them in `TurnContext.extra_tools` so the offline
engine can match requests to them."""

from __future__ import annotations

from dataclasses import dataclass

from deviceagentd.agent.types import ToolCall, ToolResult, Tools, ToolSpec, TurnContext


@dataclass(frozen=True)
class CombinedTools:
    """The site's tools, then the turn's own (an extra tool named like a site tool is left out:
    the site's tool keeps its meaning)."""

    site: Tools
    extra: Tools

    def specs(self) -> list[ToolSpec]:
        site = self.site.specs()
        names = {spec.name for spec in site}
        return [*site, *(spec for spec in self.extra.specs() if spec.name not in names)]

    async def call(self, call: ToolCall, context: TurnContext) -> ToolResult:
        site_names = {spec.name for spec in self.site.specs()}
        if call.name not in site_names and call.name in {spec.name for spec in self.extra.specs()}:
            return await self.extra.call(call, context)
        return await self.site.call(call, context)


def extra_specs(site: Tools, extra: Tools | None) -> tuple[ToolSpec, ...]:
    """The extra tools a turn is offered (for TurnContext.extra_tools)."""
    if extra is None:
        return ()
    names = {spec.name for spec in site.specs()}
    return tuple(spec for spec in extra.specs() if spec.name not in names)
