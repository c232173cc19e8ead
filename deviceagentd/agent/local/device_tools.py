"""The offline engine and the turn's extra tools (TurnContext.extra_tools: a speaker's own, from
its MCP server). A request that names a tool's one parameter (or the tool) with a value of its
kind becomes a call of that tool: "set the speaker volume to 40", "把音量调到40", "set the screen
brightness to 70%", "turn the theme to dark". Tools with one integer, number, boolean or enum
parameter qualify; the tool itself checks the value (the device's own bounds) before calling.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Final

from deviceagentd.agent.local.text import Language, language_of, normalise, tokenize, words_of
from deviceagentd.agent.types import ToolResult, ToolSpec

# Chinese words of speaker tools that the site lexicon does not know, as canonical English.
ZH_TERMS: Final = {
    "音量": "volume", "声音": "volume", "亮度": "brightness", "屏幕": "screen", "音箱": "speaker",
    "扬声器": "speaker", "喇叭": "speaker", "主题": "theme", "静音": "mute", "灯光": "light", "灯": "light",
}
# Words of tool names that say nothing about what the tool is for.
GENERIC: Final = frozenset({"self", "set", "get", "the", "a", "to", "of", "tool", "change", "adjust", "turn"})
TRUE_WORDS: Final = frozenset({"on", "open", "enable", "true", "start", "yes"})
FALSE_WORDS: Final = frozenset({"off", "close", "disable", "false", "stop", "no"})
_NAME_SPLIT: Final = re.compile(r"[._\-\s]+")


@dataclass(frozen=True)
class ToolMatch:
    name: str
    arguments: dict[str, Any]
    # The person named something only this tool is about ("speaker", "screen"): it wins over
    # the site's devices.
    strong: bool


@dataclass(frozen=True)
class _Said:
    text: str
    words: frozenset[str]
    numbers: tuple[float, ...]


def match(message: str, specs: Iterable[ToolSpec]) -> ToolMatch | None:
    said = _hear(message)
    best: tuple[int, ToolMatch] | None = None
    for spec in specs:
        found = _match_one(said, spec)
        if found is not None and (best is None or found[0] > best[0]):
            best = found
    return best[1] if best is not None else None


def _hear(message: str) -> _Said:
    words: set[str] = set()
    numbers: list[float] = []
    for token in tokenize(message, ()):
        if token.kind == "word":
            words.add(token.word)
        elif token.kind == "number" and token.number is not None:
            numbers.append(token.number)
        elif token.kind == "residue":
            words.update(canonical for term, canonical in ZH_TERMS.items() if term in token.word)
    return _Said(normalise(message), frozenset(words), tuple(numbers))


def single_parameter(spec: ToolSpec) -> tuple[str, dict[str, Any]] | None:
    """The one parameter of a tool the offline engine can fill, or None."""
    properties = spec.parameters.get("properties")
    if not isinstance(properties, dict) or len(properties) != 1:
        return None
    name, schema = next(iter(properties.items()))
    if not isinstance(schema, dict):
        return None
    kind = schema.get("type")
    if kind in ("integer", "number", "boolean") or (kind == "string" and isinstance(schema.get("enum"), list)):
        return name, schema
    return None


def _match_one(said: _Said, spec: ToolSpec) -> tuple[int, ToolMatch] | None:
    param = single_parameter(spec)
    if param is None:
        return None
    name, schema = param
    param_words = frozenset(words_of(name))
    tool_words = frozenset(w for w in _NAME_SPLIT.split(spec.name.lower()) if w) - GENERIC
    own_words = tool_words - param_words
    hit_param = param_words & said.words
    hit_tool = own_words & said.words
    if not hit_param and not (schema.get("type") == "boolean" and hit_tool):
        return None
    value = _value(said, schema)
    if value is None:
        return None
    score = 2 * len(hit_param) + len(hit_tool)
    return score, ToolMatch(spec.name, {name: value}, strong=bool(hit_tool))


def _value(said: _Said, schema: dict[str, Any]) -> Any:
    kind = schema.get("type")
    if kind in ("integer", "number"):
        if not said.numbers:
            return None
        number = said.numbers[0]
        return int(number) if kind == "integer" and float(number).is_integer() else number
    if kind == "boolean":
        if said.words & FALSE_WORDS:
            return False
        if said.words & TRUE_WORDS:
            return True
        return None
    for option in schema.get("enum", []):
        if isinstance(option, str) and re.search(rf"(?<![a-z0-9]){re.escape(option.lower())}(?![a-z0-9])", said.text):
            return option
    return None


def reply(found: ToolMatch, result: ToolResult, message: str) -> str:
    """One sentence saying what was done, in the language of the request."""
    language: Language = language_of(message)
    ((param, value),) = found.arguments.items()
    shown = ("on" if value else "off") if isinstance(value, bool) else str(value)
    words = " ".join(words_of(param)) or param
    if result.ok:
        if language == "zh":
            zh = next((term for term, canonical in ZH_TERMS.items() if canonical == words), words)
            return f"好的，{zh}已设为{shown}。"
        return f"Done, the {words} is set to {shown}."
    if language == "zh":
        return f"没能完成：{result.error}"
    return f"That did not work: {result.error}"
