"""Telling Chinese text from English, by two rules for two questions.

- `written_in_chinese`: which language a person wrote or said a request in, so that a reply, a
  note or an apology comes back in it. Any Han character decides: a Chinese sentence often
  carries English device ids ("关闭 switch-1"), an English one never carries Han.
- `mostly_chinese`: which voice should speak a text. At least half of the letters must be Han: an
  English reply that names a "客厅" lamp is still English to a speaker's ear.
"""

from __future__ import annotations


def is_han(char: str) -> bool:
    """A CJK Unified Ideograph (the basic block, where everyday Chinese lives)."""
    return "\u4e00" <= char <= "\u9fff"


def written_in_chinese(text: str) -> bool:
    """The request was written (or heard) in Chinese: it has a Han character."""
    return any(is_han(char) for char in text)


def mostly_chinese(text: str) -> bool:
    """At least half of the letters are Han characters (picks the Chinese TTS voice)."""
    han = sum(1 for char in text if is_han(char))
    letters = sum(1 for char in text if char.isalpha())
    return han > 0 and han * 2 >= letters
