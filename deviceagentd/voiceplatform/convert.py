"""Conversions between a voice property's value (what speakers send and hear: percent, °C,
on/off, HSV 0–360/0–100) and the value of the device's telemetry field (docs/voice-mapping.md).

Each conversion checks a voice value the way the voice platform answers (1104 wrong JSON type,
1101 out of range, 2008 unknown name) and never returns a device value outside the field.
"""

from __future__ import annotations

import json
import math
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from deviceagentd.voiceplatform import errors as codes
from deviceagentd.voiceplatform.errors import VoicePlatformError
from deviceagentd.voiceplatform.intents import PropertyKind

VOICE_HSV_MAX: dict[str, int] = {"h": 360, "s": 100, "v": 100}


def is_number(value: Any) -> bool:
    # bool is an int in Python, but `true` is not a brightness.
    return not isinstance(value, bool) and isinstance(value, int | float) and math.isfinite(value)


def round_half_up(value: float) -> int:
    # Python's round() rounds halves to even (2.5 -> 2); people expect 2.5 -> 3.
    return math.floor(value + 0.5)


def tidy(value: float) -> int | float:
    """Whole numbers as int, so a speaker says "22 degrees", not "22.0"."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def num(value: float) -> str:
    return str(tidy(value))


def show(value: Any) -> str:
    """A request value as JSON, the way the speaker platform sent it."""
    try:
        return json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        return repr(value)


def same_value(a: Any, b: Any) -> bool:
    # `True == 1` in Python; a table of booleans must not match the number 1.
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    return bool(a == b)


def _clamp(value: float, low: float | None, high: float | None) -> float:
    if low is not None and value < low:
        return low
    if high is not None and value > high:
        return high
    return value


def _range_text(low: float | None, high: float | None) -> str:
    if low is not None and high is not None:
        return f"{num(low)}..{num(high)}"
    if low is not None:
        return f"at least {num(low)}"
    if high is not None:
        return f"at most {num(high)}"
    return "any number"


class Conversion(ABC):
    kind: ClassVar[PropertyKind]

    @abstractmethod
    def to_voice(self, device: Any) -> Any:
        """The voice value of a device value, or None when the device value does not fit."""

    @abstractmethod
    def to_device(self, voice: Any, name: str) -> Any:
        """The device value for a voice value; raises VoicePlatformError when it is not valid."""

    @abstractmethod
    def describe(self) -> str:
        """The valid voice values, for messages: "1..100", "one of on, off"."""

    @abstractmethod
    def limits(self) -> list[Any]:
        """Voice values at the edges, to check at load time that the command accepts them."""

    def shift(self, current: Any, delta: float, name: str) -> Any:
        """`current` moved by `delta` (voice units, or table entries), clamped at the limits."""
        raise VoicePlatformError(codes.FUNCTION_NOT_SUPPORT, f"{name} cannot be changed step by step")


@dataclass(frozen=True)
class NumberIdentity(Conversion):
    """Voice and device use the same unit (°C, curtain %); the range is the field's min..max."""

    low: float | None
    high: float | None
    whole: bool  # the field is an int: values are rounded
    kind: ClassVar[PropertyKind] = PropertyKind.NUMBER

    def to_voice(self, device: Any) -> Any:
        # A reading outside the field's range is still the reading (a 61 °C room is news).
        return tidy(device) if is_number(device) else None

    def to_device(self, voice: Any, name: str) -> Any:
        _check_number(voice, name)
        if (self.low is not None and voice < self.low) or (self.high is not None and voice > self.high):
            raise VoicePlatformError(codes.PARAM_RANGE_INVALID, f"{name} must be {self.describe()}, got {show(voice)}")
        if not self.whole:
            return tidy(voice)
        low = None if self.low is None else math.ceil(self.low)
        high = None if self.high is None else math.floor(self.high)
        return int(_clamp(round_half_up(voice), low, high))

    def describe(self) -> str:
        return _range_text(self.low, self.high)

    def limits(self) -> list[Any]:
        return [tidy(x) for x in (self.low, self.high) if x is not None]

    def shift(self, current: Any, delta: float, name: str) -> Any:
        return tidy(_clamp(current + delta, self.low, self.high))


@dataclass(frozen=True)
class LinearRange(Conversion):
    """Voice low..high (whole numbers, e.g. percent) mapped linearly onto the field's min..max."""

    low: int
    high: int
    device_min: float
    device_max: float
    whole: bool
    kind: ClassVar[PropertyKind] = PropertyKind.NUMBER

    def to_voice(self, device: Any) -> Any:
        if not is_number(device):
            return None
        share = (device - self.device_min) / (self.device_max - self.device_min)
        # The voice scale is a contract with the speaker: never report 0 % on a 1..100 scale.
        return int(_clamp(round_half_up(self.low + share * (self.high - self.low)), self.low, self.high))

    def to_device(self, voice: Any, name: str) -> Any:
        _check_number(voice, name)
        if not self.low <= voice <= self.high:
            raise VoicePlatformError(codes.PARAM_RANGE_INVALID, f"{name} must be {self.describe()}, got {show(voice)}")
        share = (voice - self.low) / (self.high - self.low)
        device = self.device_min + share * (self.device_max - self.device_min)
        if self.whole:
            return int(_clamp(round_half_up(device), math.ceil(self.device_min), math.floor(self.device_max)))
        # Six decimals: enough for any sensor, and no 21.999999999999996 on the wire.
        return tidy(_clamp(round(device, 6), self.device_min, self.device_max))

    def describe(self) -> str:
        return f"{self.low}..{self.high}"

    def limits(self) -> list[Any]:
        return [self.low, self.high]

    def shift(self, current: Any, delta: float, name: str) -> Any:
        return tidy(_clamp(current + delta, self.low, self.high))


@dataclass(frozen=True)
class NameTable(Conversion):
    """Voice names mapped onto device values (on/off -> true/false, mid -> medium).

    `order` is the scale relative intents walk along (by default every name, in table order).
    """

    table: Mapping[str, Any]
    order: tuple[str, ...]
    kind: ClassVar[PropertyKind] = PropertyKind.NAMED

    def to_voice(self, device: Any) -> Any:
        for name, value in self.table.items():
            if same_value(value, device):
                return name
        return None

    def to_device(self, voice: Any, name: str) -> Any:
        if not isinstance(voice, str):
            raise VoicePlatformError(codes.TYPE_INCORRECT,
                                     f"{name} must be a name ({self.describe()}), got {show(voice)}")
        if voice not in self.table:
            raise VoicePlatformError(codes.COMMAND_OR_VALUE_NOT_SUPPORT,
                                     f"{name} must be {self.describe()}, got {show(voice)}")
        return self.table[voice]

    def describe(self) -> str:
        return "one of " + ", ".join(self.table)

    def limits(self) -> list[Any]:
        return list(self.table)

    def shift(self, current: Any, delta: float, name: str) -> Any:
        if current not in self.order:
            raise VoicePlatformError(
                codes.COMMAND_ISSUE_ERROR,
                f"{name} is {current}, which is not on the scale {', '.join(self.order)}: set a {name} instead")
        index = self.order.index(current) + int(delta)
        return self.order[max(0, min(len(self.order) - 1, index))]


@dataclass(frozen=True)
class HsvColor(Conversion):
    """A colour object: voice h 0–360, s 0–100, v 0–100; the device's maxima are given.

    A whole-number device maximum gives whole-number device components (Tuya's 0–1000);
    a fractional one (1.0) gives fractions.
    """

    device_max: Mapping[str, float]
    kind: ClassVar[PropertyKind] = PropertyKind.COLOR

    def to_voice(self, device: Any) -> Any:
        if not isinstance(device, dict) or not all(is_number(device.get(k)) for k in VOICE_HSV_MAX):
            return None
        return {
            k: int(_clamp(round_half_up(device[k] * top / self.device_max[k]), 0, top))
            for k, top in VOICE_HSV_MAX.items()
        }

    def to_device(self, voice: Any, name: str) -> Any:
        if not isinstance(voice, dict) or set(voice) != set(VOICE_HSV_MAX):
            raise VoicePlatformError(codes.TYPE_INCORRECT,
                                     f"{name} must be an object with h, s and v, got {show(voice)}")
        for key, top in VOICE_HSV_MAX.items():
            part = voice[key]
            if not is_number(part):
                raise VoicePlatformError(codes.TYPE_INCORRECT, f"{name}.{key} must be a number, got {show(part)}")
            if not 0 <= part <= top:
                raise VoicePlatformError(codes.PARAM_RANGE_INVALID, f"{name}.{key} must be 0..{top}, got {show(part)}")
        out: dict[str, int | float] = {}
        for key, top in VOICE_HSV_MAX.items():
            maximum = self.device_max[key]
            scaled = voice[key] * maximum / top
            out[key] = round_half_up(scaled) if isinstance(maximum, int) else tidy(round(scaled, 6))
        return out

    def describe(self) -> str:
        return "an object with h 0..360, s 0..100 and v 0..100"

    def limits(self) -> list[Any]:
        return [{"h": 0, "s": 0, "v": 0}, dict(VOICE_HSV_MAX)]


def _check_number(voice: Any, name: str) -> None:
    if not is_number(voice):
        raise VoicePlatformError(codes.TYPE_INCORRECT, f"{name} must be a number, got {show(voice)}")
