"""The voice intent catalogue (reference/tuya-voice.md §6) and the aliases speakers send.

Product files and discovery use only the canonical names; aliases are accepted in requests
because speaker platforms differ in wording (AliGenie says AdjustUp…, some say Stop).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class IntentKind(Enum):
    ACTION = "action"  # no request value: TurnOn, Open, Pause …
    SET = "set"  # absolute value from the request: SetBrightness 60
    RELATIVE = "relative"  # a step from the current state: IncrementBrightness (10)


class PropertyKind(Enum):
    NUMBER = "number"
    NAMED = "named"
    COLOR = "color"


@dataclass(frozen=True)
class IntentInfo:
    name: str
    kind: IntentKind
    # Which properties suit the intent (empty for actions: any property may be reported).
    accepts: frozenset[PropertyKind] = frozenset()
    # +1 for Increment…, -1 for Decrement…, 0 otherwise.
    direction: int = 0


_NUMBER = frozenset({PropertyKind.NUMBER})
_NAMED = frozenset({PropertyKind.NAMED})
_COLOR = frozenset({PropertyKind.COLOR})
_FAN = frozenset({PropertyKind.NAMED, PropertyKind.NUMBER})


def _family(noun: str, accepts: frozenset[PropertyKind]) -> list[IntentInfo]:
    return [
        IntentInfo(f"Set{noun}", IntentKind.SET, accepts),
        IntentInfo(f"Increment{noun}", IntentKind.RELATIVE, accepts, +1),
        IntentInfo(f"Decrement{noun}", IntentKind.RELATIVE, accepts, -1),
    ]


CATALOGUE: dict[str, IntentInfo] = {
    info.name: info
    for info in [
        IntentInfo("TurnOn", IntentKind.ACTION),
        IntentInfo("TurnOff", IntentKind.ACTION),
        *_family("Brightness", _NUMBER),
        *_family("ColorTemperature", _NUMBER),
        IntentInfo("SetColor", IntentKind.SET, _COLOR),
        IntentInfo("Open", IntentKind.ACTION),
        IntentInfo("Close", IntentKind.ACTION),
        IntentInfo("Pause", IntentKind.ACTION),
        *_family("Percentage", _NUMBER),
        *_family("Temperature", _NUMBER),
        IntentInfo("SetMode", IntentKind.SET, _NAMED),
        *_family("FanSpeed", _FAN),
    ]
}

_PREFIX_ALIASES = (("AdjustUp", "Increment"), ("AdjustDown", "Decrement"))
_NAME_ALIASES = {
    "Stop": "Pause",
    "SetWindSpeed": "SetFanSpeed",
    "IncrementWindSpeed": "IncrementFanSpeed",
    "DecrementWindSpeed": "DecrementFanSpeed",
}


def canonical_intent(name: str) -> str | None:
    """The catalogue name for a canonical name or an alias; None for anything else."""
    if name in CATALOGUE:
        return name
    candidate = name
    for alias, canonical in _PREFIX_ALIASES:
        if candidate.startswith(alias):
            candidate = canonical + candidate[len(alias):]
            break
    candidate = _NAME_ALIASES.get(candidate, candidate)
    return candidate if candidate in CATALOGUE else None
