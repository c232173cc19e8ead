"""The two rules for Chinese text: the language a request was written in, the voice for a text."""

from __future__ import annotations

import pytest

from deviceagentd.core.language import is_han, mostly_chinese, written_in_chinese


@pytest.mark.parametrize(("text", "chinese"), [
    ("现在温度是多少", True),
    ("关闭 switch-1", True),  # an English device id inside a Chinese request
    ("把 living room 的 light 打开", True),
    ("turn off the light", False),
    ("set it to 24°C, ２４％", False),  # full-width digits and symbols are not Han
    ("こんにちは", False),  # kana only
    ("", False),
    ("   ", False),
])
def test_a_request_is_chinese_when_it_has_a_han_character(text: str, chinese: bool) -> None:
    assert written_in_chinese(text) is chinese


@pytest.mark.parametrize(("text", "chinese"), [
    ("客厅的灯已经打开了", True),
    ("客厅的灯 lamp", True),  # four Han against four Latin letters: half is enough
    ("The 客厅 lamp is on now", False),  # an English reply naming a Chinese room
    ("温度 24 °C", True),  # digits and symbols are not letters
    ("turn off the light", False),
    ("", False),
    ("24 °C", False),
])
def test_a_text_is_spoken_in_chinese_when_half_its_letters_are_han(text: str, chinese: bool) -> None:
    assert mostly_chinese(text) is chinese


def test_han_is_the_unified_ideographs_block() -> None:
    assert is_han("一") and is_han("鿿") and is_han("温")
    assert not is_han("〇") and not is_han("。") and not is_han("あ") and not is_han("a")
