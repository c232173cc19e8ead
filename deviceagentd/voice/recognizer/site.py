"""The site as the offline recogniser's grammar sees it: the catalog, and how people name each
device — its metadata (name, label, alias; room, location, area, zone, floor) and, when the voice
platform's rooms file is configured, the names, aliases and positions given there.

Light on purpose: the daemon imports it at start; the grammar and pocketsphinx load only when a
speaker talks.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from deviceagentd.core.catalog import Catalog
from deviceagentd.core.registry import DeviceRegistry

NAME_KEYS = ("name", "label", "alias")
PLACE_KEYS = ("room", "location", "area", "zone", "floor")


@dataclass(frozen=True)
class DeviceNames:
    """How people name one device, and where it is."""

    product_id: str
    names: tuple[str, ...] = ()
    places: tuple[str, ...] = ()


@dataclass(frozen=True)
class Site:
    """What the grammar is built from; `version` changes whenever any of it does (the device
    names are listed only when the grammar is rebuilt)."""

    version: object
    catalog: Catalog
    devices: Callable[[], Iterable[DeviceNames]]


SiteSource = Callable[[], Site]
# Extra names from outside the registry (the rooms file): a version, and the names.
ExtraNames = Callable[[], tuple[object, Iterable[DeviceNames]]]


def registry_site(registry: DeviceRegistry, extra: ExtraNames | None = None) -> SiteSource:
    def snapshot() -> Site:
        extra_version, extra_names = extra() if extra is not None else (None, ())

        def devices() -> Iterator[DeviceNames]:
            for device in registry.devices():
                meta = device.metadata
                names = tuple(v for k in NAME_KEYS if isinstance(v := meta.get(k), str) and v)
                places = tuple(v for k in PLACE_KEYS if isinstance(v := meta.get(k), str) and v)
                yield DeviceNames(device.product_id, names, places)
            yield from extra_names

        catalog = registry.catalog
        return Site((registry.version, id(catalog), extra_version), catalog, devices)

    return snapshot
