"""Speech providers for the voice channel: streaming ASR and TTS clients behind one interface
(base.py). `aliyun` = DashScope realtime ASR + CosyVoice, `openai` = the OpenAI-compatible audio
endpoints, `espeak` = local espeak-ng (TTS only)."""

from deviceagentd.voice.providers.base import (
    AsrProvider,
    AsrResult,
    AsrStream,
    TtsProvider,
    TtsStream,
    VoiceProviderError,
)
from deviceagentd.voice.providers.dashscope_asr import DashScopeAsr, DashScopeAsrSettings
from deviceagentd.voice.providers.dashscope_tts import DashScopeTts, DashScopeTtsSettings
from deviceagentd.voice.providers.espeak import EspeakSettings, EspeakTts
from deviceagentd.voice.providers.openai_audio import OpenAiAsr, OpenAiAsrSettings, OpenAiTts, OpenAiTtsSettings

__all__ = [
    "AsrProvider",
    "AsrResult",
    "AsrStream",
    "DashScopeAsr",
    "DashScopeAsrSettings",
    "DashScopeTts",
    "DashScopeTtsSettings",
    "EspeakSettings",
    "EspeakTts",
    "OpenAiAsr",
    "OpenAiAsrSettings",
    "OpenAiTts",
    "OpenAiTtsSettings",
    "TtsProvider",
    "TtsStream",
    "VoiceProviderError",
]
