"""
MCP Server Implementation for Python
Reference: https://modelcontextprotocol.io/specification/2024-11-05
"""

import json
from collections.abc import Callable
from typing import Any

from src.constants.system import SystemConstants
from src.logging import get_logger
from src.mcp.tooling import McpTool, PropertyList

logger = get_logger()


class McpServer:
    """
    MCP服务器实现.

    由 ServiceContainer 创建，经 McpPlugin 注入。
    """

    def __init__(self):
        self.tools: list[McpTool] = []
        self._send_callback: Callable | None = None
        self._camera = None
        # 外挂插件 tool_name -> plugin_id
        self._plugin_tool_owner: dict[str, str] = {}

    def set_send_callback(self, callback: Callable | None):
        """
        设置发送消息的回调函数；传 None 表示解绑。
        """
        self._send_callback = callback

    def set_camera(self, camera) -> None:
        """注入摄像头（vision 配置 / take_photo 共用）."""
        self._camera = camera

    def get_camera(self):
        return self._camera

    def detach(self) -> None:
        """容器关闭时解绑运行时依赖，保留工具列表便于同进程再启动."""
        self._send_callback = None
        self._camera = None

    def add_tool(
        self, tool: McpTool | tuple[str, str, PropertyList, Callable]
    ):
        """
        添加工具.
        """
        if isinstance(tool, tuple):
            # 从参数创建McpTool
            name, description, properties, callback = tool
            tool = McpTool(name, description, properties, callback)

        # 检查是否已存在
        if any(t.name == tool.name for t in self.tools):
            logger.warning(f"Tool {tool.name} already added（拒绝重复注册）")
            return

        logger.info(f"Add tool: {tool.name}")
        self.tools.append(tool)

    def remove_tools_by_names(self, names: set[str] | list[str]) -> int:
        """按名称移除工具，返回移除数量."""
        name_set = set(names)
        if not name_set:
            return 0
        before = len(self.tools)
        self.tools = [t for t in self.tools if t.name not in name_set]
        return before - len(self.tools)

    def unload_plugin(self, plugin_id: str) -> int:
        """卸载外挂插件已注册的工具."""
        from src.mcp.plugins.registry import PluginRegistry

        reg = PluginRegistry(tool_owner=self._plugin_tool_owner)
        return reg.unload_plugin(self, plugin_id)

    def reload_external_plugins(
        self, music_player=None, volume_controller=None
    ) -> list:
        """仅重载外挂：先卸掉已知外挂工具，再按配置扫描加载.

        注意：不会重新 register 内置工具；内置应已在 tools 中。
        """
        # 卸掉当前登记的全部外挂工具
        if self._plugin_tool_owner:
            names = set(self._plugin_tool_owner.keys())
            self.remove_tools_by_names(names)
            self._plugin_tool_owner.clear()

        from src.mcp.plugins.loader import load_mcp_plugins_from_config

        capabilities = {}
        if music_player is not None:
            capabilities["music_player"] = music_player
        try:
            from src.utils.config_manager import get_config

            capabilities["config_readonly"] = get_config()
        except Exception:
            pass

        return load_mcp_plugins_from_config(
            self.add_tool,
            capabilities=capabilities,
            tool_owner=self._plugin_tool_owner,
        )

    def add_common_tools(self, music_player=None, volume_controller=None):
        """
        添加通用工具（全部经 register_* 显式挂载）.

        music_player: 容器注入的 MusicPlayer；提供时注册音乐工具。
        volume_controller: 可选注入的 VolumeController；未提供时由 register 内创建。
        camera / screenshot 由 McpPlugin 在 setup 中单独 register。
        """
        # 备份原有工具列表
        original_tools = self.tools.copy()
        self.tools.clear()

        if music_player is not None:
            from src.mcp.tools.music import register_music_tools

            register_music_tools(self.add_tool, music_player)

        from src.mcp.tools.app import register_app_tools
        from src.mcp.tools.volume import register_volume_tools
        from src.mcp.tools.weather import register_weather_tools

        register_volume_tools(self.add_tool, volume_controller)
        register_app_tools(self.add_tool)
        register_weather_tools(self.add_tool)

        # 外挂：用户目录插件包（自带 lib/），失败隔离
        try:
            from src.mcp.plugins.loader import load_mcp_plugins_from_config

            capabilities = {}
            if music_player is not None:
                capabilities["music_player"] = music_player
            try:
                from src.utils.config_manager import get_config

                capabilities["config_readonly"] = get_config()
            except Exception:
                pass

            load_mcp_plugins_from_config(
                self.add_tool,
                capabilities=capabilities,
                tool_owner=self._plugin_tool_owner,
            )
        except Exception as e:
            logger.error(f"加载外挂 MCP 插件失败: {e}", exc_info=True)

        # 恢复原有工具
        self.tools.extend(original_tools)

    async def parse_message(self, message: str | dict[str, Any]):
        """
        解析MCP消息.
        """
        request_id = None
        try:
            if isinstance(message, str):
                data = json.loads(message)
            else:
                data = message

            logger.info(
                f"[MCP] 解析消息: {json.dumps(data, ensure_ascii=False, indent=2)}"
            )

            # 检查JSONRPC版本
            if data.get("jsonrpc") != "2.0":
                logger.error(f"Invalid JSONRPC version: {data.get('jsonrpc')}")
                return

            method = data.get("method")
            if not method:
                logger.error("Missing method")
                return

            # 忽略通知
            if method.startswith("notifications"):
                logger.info(f"[MCP] 忽略通知消息: {method}")
                return

            params = data.get("params", {})
            request_id = data.get("id")

            if request_id is None:
                logger.error(f"Invalid id for method: {method}")
                return

            logger.info(
                f"[MCP] 处理方法: {method}, ID: {request_id}, 参数: {params}"
            )

            # 处理不同的方法
            if method == "initialize":
                await self._handle_initialize(request_id, params)
            elif method == "tools/list":
                await self._handle_tools_list(request_id, params)
            elif method == "tools/call":
                await self._handle_tool_call(request_id, params)
            else:
                logger.error(f"Method not implemented: {method}")
                await self._reply_error(
                    request_id, f"Method not implemented: {method}"
                )

        except Exception as e:
            logger.error(f"Error parsing MCP message: {e}", exc_info=True)
            if request_id is not None:
                await self._reply_error(request_id, str(e))

    async def _handle_initialize(
        self, request_id: int, params: dict[str, Any]
    ):
        """
        处理初始化请求.
        """
        # 解析capabilities
        capabilities = params.get("capabilities", {})
        await self._parse_capabilities(capabilities)

        # 返回服务器信息
        result = {
            "protocolVersion": "2024-11-05",
            "capabilities": {"tools": {}},
            "serverInfo": {
                "name": SystemConstants.APP_NAME,
                "version": SystemConstants.APP_VERSION,
            },
        }

        await self._reply_result(request_id, result)

    def _disabled_tool_names(self) -> set[str]:
        """从配置读取 MCP_TOOLS.DISABLED（黑名单）."""
        try:
            from src.mcp.tool_catalog import normalize_disabled
            from src.utils.config_manager import get_config

            raw = get_config().get_config("MCP_TOOLS.DISABLED", []) or []
            return set(normalize_disabled(raw))
        except Exception:
            return set()

    def _iter_enabled_tools(self):
        disabled = self._disabled_tool_names()
        for tool in self.tools:
            if tool.name not in disabled:
                yield tool

    async def _handle_tools_list(
        self, request_id: int, params: dict[str, Any]
    ):
        """
        处理工具列表请求（已按 MCP_TOOLS.DISABLED 过滤）.
        """
        cursor = params.get("cursor", "")
        max_payload_size = 8000

        tools_json = []
        total_size = 0
        found_cursor = not cursor
        next_cursor = ""

        for tool in self._iter_enabled_tools():
            # 如果还没找到起始位置，继续搜索
            if not found_cursor:
                if tool.name == cursor:
                    found_cursor = True
                else:
                    continue

            # 检查大小
            tool_json = tool.to_json()
            tool_size = len(json.dumps(tool_json))

            if total_size + tool_size + 100 > max_payload_size:
                next_cursor = tool.name
                break

            tools_json.append(tool_json)
            total_size += tool_size

        result = {"tools": tools_json}
        if next_cursor:
            result["nextCursor"] = next_cursor

        await self._reply_result(request_id, result)

    async def _handle_tool_call(
        self, request_id: int, params: dict[str, Any]
    ):
        """
        处理工具调用请求.
        """
        logger.info(
            f"[MCP] 收到工具调用请求! ID={request_id}, 参数={params}"
        )

        tool_name = params.get("name")
        if not tool_name:
            await self._reply_error(request_id, "Missing tool name")
            return

        logger.info(f"[MCP] 尝试调用工具: {tool_name}")

        if tool_name in self._disabled_tool_names():
            await self._reply_error(
                request_id, f"Tool disabled: {tool_name}"
            )
            return

        # 查找工具
        tool = None
        for t in self.tools:
            if t.name == tool_name:
                tool = t
                break

        if not tool:
            await self._reply_error(
                request_id, f"Unknown tool: {tool_name}"
            )
            return

        # 获取参数
        arguments = params.get("arguments", {})

        logger.info(f"[MCP] 开始执行工具 {tool_name}, 参数: {arguments}")

        # 异步调用工具
        try:
            result = await tool.call(arguments)
            logger.info(f"[MCP] 工具 {tool_name} 执行成功，结果: {result}")
            await self._reply_result(request_id, json.loads(result))
        except Exception as e:
            logger.error(
                f"[MCP] 工具 {tool_name} 执行失败: {e}", exc_info=True
            )
            await self._reply_error(request_id, str(e))

    async def _parse_capabilities(self, capabilities):
        """
        解析capabilities.
        """
        vision = capabilities.get("vision", {})
        if vision and isinstance(vision, dict):
            url = vision.get("url")
            token = vision.get("token")
            if url:
                camera = self._camera
                if camera is None:
                    from src.mcp.tools.camera import create_camera

                    camera = create_camera()
                    self._camera = camera
                camera.set_explain_url(url)
                if token:
                    camera.set_explain_token(token)
                logger.info(f"Vision service configured with URL: {url}")

    async def _reply_result(self, request_id: int, result: Any):
        """
        发送成功响应.
        """
        payload = {
            "jsonrpc": "2.0",
            "id": request_id,
            "result": result,
        }

        result_len = len(json.dumps(result))
        logger.info(
            f"[MCP] 发送成功响应: ID={request_id}, 结果长度={result_len}"
        )

        if self._send_callback:
            await self._send_callback(json.dumps(payload))
        else:
            logger.error("[MCP] 发送回调未设置!")

    async def _reply_error(self, request_id: int, message: str):
        """
        发送错误响应.
        """
        payload = {
            "jsonrpc": "2.0",
            "id": request_id,
            "error": {"code": -32603, "message": message},
        }

        logger.error(
            f"[MCP] 发送错误响应: ID={request_id}, 错误={message}"
        )

        if self._send_callback:
            await self._send_callback(json.dumps(payload))
