"""Cutting a reply that streams in as text deltas into clauses TTS can speak at once.

TTS starts on the first complete clause, not after the whole reply (SPEC §5), so every delta is
pushed here and each clause that is complete comes back. Rules (English and Chinese):

- A clause ends at a sentence mark: `. ! ? ; : …` (Latin) when whitespace follows it, or
  when it ends the text received so far (an LLM streams "room." and then " The"); full-width
  `。！？；：` at once; and at a line break.
- A period, colon or comma right after a digit at the end of the text waits for the next delta
  ("21." may become "21.5", "10:" "10:30", "1," "1,000"); inside the text "3.5", "e.g",
  "10:30" and "1,000" never split, and neither does the "1." of a numbered list.
- The first clause of a reply may also end at a comma (`,` `，` `、`) once it is at least
  `first_comma_min` units long (a CJK character counts as two), so the first audio comes
  sooner; later clauses end at sentence marks only (as xiaozhi-esp32-server does).
- Text longer than `max_chars` without a mark is cut at its last space (or at `max_chars` for
  CJK text), so a model that never punctuates still gets spoken.
- `flush()` returns the rest at the end of the reply (or before a tool call runs).

Clauses are cleaned for speech (`speakable`): Markdown emphasis, code ticks, headings, list
bullets and emoji are removed; a clause with no letter or digit left is dropped.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from typing import Final

SENTENCE_MARKS: Final = frozenset(".!?;:…")
CJK_SENTENCE_MARKS: Final = frozenset("。！？；：")
COMMA_MARKS: Final = frozenset(",")
CJK_COMMA_MARKS: Final = frozenset("，、")
# Closing quotes and brackets stay with the clause they close.
CLOSERS: Final = frozenset("\"')]}”’」』）】》")
# Marks that may be part of a number when a digit precedes them.
NUMERIC_MARKS: Final = frozenset(".:,")
_INVISIBLE: Final = frozenset("\u200d\ufe0e\ufe0f")  # zero-width joiner, variation selectors
_MARKDOWN: Final = str.maketrans("", "", "*`")


def is_cjk(ch: str) -> bool:
    """A Han character, a CJK symbol or full-width punctuation."""
    code = ord(ch)
    return (0x4E00 <= code <= 0x9FFF or 0x3400 <= code <= 0x4DBF or 0x3000 <= code <= 0x303F
            or 0xFF00 <= code <= 0xFFEF or 0x20000 <= code <= 0x2FA1F)


def units(text: str) -> int:
    """Length for the comma rule: a CJK character says as much as two Latin letters."""
    return sum(2 if is_cjk(ch) else 1 for ch in text)


def speakable(text: str) -> str:
    """What TTS should read: no Markdown markers, emoji or runs of whitespace."""
    lines = []
    for line in text.splitlines():
        line = line.strip().lstrip("#").strip()
        if line[:2] in ("- ", "• ", "* ", "+ "):
            line = line[2:]
        lines.append(line)
    text = " ".join(lines).translate(_MARKDOWN).replace("__", "")
    text = "".join(ch for ch in text if ch not in _INVISIBLE and unicodedata.category(ch) != "So")
    return " ".join(text.split())


@dataclass
class ClauseSplitter:
    """One per reply: `push()` each delta, `flush()` at the end."""

    first_comma_min: int = 8
    max_chars: int = 200
    _buffer: str = ""
    _emitted: int = 0  # clauses returned so far

    def push(self, text: str) -> list[str]:
        self._buffer += text
        clauses: list[str] = []
        while (cut := self._find_cut()) is not None:
            self._take(cut, clauses)
        return clauses

    def flush(self) -> list[str]:
        """Everything still buffered, as clauses (the reply ended, or a tool call starts)."""
        clauses = self.push("")
        self._take(len(self._buffer), clauses)
        return clauses

    def _take(self, cut: int, clauses: list[str]) -> None:
        clause, self._buffer = self._buffer[:cut], self._buffer[cut:]
        clause = speakable(clause)
        if any(ch.isalnum() for ch in clause):
            clauses.append(clause)
            self._emitted += 1

    def _find_cut(self) -> int | None:
        """Where the first complete clause ends (exclusive), or None if none is complete yet."""
        buf = self._buffer
        n = len(buf)
        first = self._emitted == 0
        i = 0
        while i < n:
            ch = buf[i]
            if ch == "\n":
                if buf[:i].strip():
                    return i + 1
                i += 1
                continue
            comma_ok = first and units(buf[:i].strip()) >= self.first_comma_min
            if ch in CJK_SENTENCE_MARKS or (ch in CJK_COMMA_MARKS and comma_ok):
                return self._past_closers(i + 1)
            if ch in SENTENCE_MARKS or (ch in COMMA_MARKS and comma_ok):
                j = i + 1
                while j < n and (buf[j] in SENTENCE_MARKS or buf[j] in COMMA_MARKS):
                    j += 1  # "?!", "..."
                j = self._past_closers(j)
                numeric = j - i == 1 and ch in NUMERIC_MARKS and i > 0 and buf[i - 1].isdigit()
                if j == n:
                    return None if numeric else j
                follower = buf[j]
                if (follower.isspace() or is_cjk(follower)) and not buf[:i].strip().isdigit():
                    return j
                i = j  # "3.5", "e.g", "10:30", a list's "1. "
                continue
            i += 1
        if n > self.max_chars:
            space = buf.rfind(" ", 0, self.max_chars)
            return space + 1 if space > 0 else self.max_chars
        return None

    def _past_closers(self, j: int) -> int:
        buf = self._buffer
        while j < len(buf) and buf[j] in CLOSERS:
            j += 1
        return j
