"""The MCP server at /mcp: the site's devices, scenes and schedules as a few generic tools for any
AI client (docs/mcp.md). Loaded with the first request to /mcp, so a gateway nobody connects an
assistant to does not carry it."""
