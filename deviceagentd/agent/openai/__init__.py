"""The `openai` provider: any OpenAI-compatible chat-completions endpoint."""

from deviceagentd.agent.openai.provider import (
    API_KEY_ENV,
    DEFAULT_SYSTEM_PROMPT,
    OpenAIProvider,
    OpenAISettings,
    resolve_api_key,
)

__all__ = ["API_KEY_ENV", "DEFAULT_SYSTEM_PROMPT", "OpenAIProvider", "OpenAISettings", "resolve_api_key"]
