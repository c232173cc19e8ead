"""/mcp on the HTTP port: the MCP server, loaded with its first request (docs/mcp.md).

The route checks tokens itself: MCP clients may hold tokens of their own (`mcp.clients`) that
the rest of the API does not accept.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from deviceagentd.mcp.context import McpContext

if TYPE_CHECKING:
    from deviceagentd.mcp.transport import McpEndpoint

MCP_PATH = "/mcp"


class LazyMcp:
    """Builds the MCP endpoint at the first request, so a gateway no assistant talks to does not
    carry the server's code and tool schemas."""

    def __init__(self, context: McpContext, max_body_bytes: int) -> None:
        self._context = context
        self._max_body = max_body_bytes
        self._endpoint: McpEndpoint | None = None

    @property
    def loaded(self) -> bool:
        return self._endpoint is not None

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if self._endpoint is None:
            from deviceagentd.mcp.transport import McpEndpoint

            self._endpoint = McpEndpoint(self._context, self._max_body)
        return await self._endpoint.handle(request)

    async def shutdown(self, _app: web.Application) -> None:
        if self._endpoint is not None:
            self._endpoint.shutdown()


def add_routes(app: web.Application, context: McpContext, max_body_bytes: int) -> LazyMcp:
    lazy = LazyMcp(context, max_body_bytes)
    app.router.add_route("*", MCP_PATH, lazy.handle)
    app.on_shutdown.append(lazy.shutdown)
    return lazy
