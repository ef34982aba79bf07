"""Name → spec registries filled from the registration hooks.

A duplicate name is an error naming both plugins; an unknown name is an error
that lists what is available, so the user can fix the config in one go.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Generic, TypeVar

from graftflow.core.errors import PluginError

T = TypeVar("T")


@dataclass(frozen=True)
class Registered(Generic[T]):
    """A spec plus where it came from, for listings and clash messages."""

    spec: T
    plugin: str
    origin: str


class Registry(Generic[T]):
    def __init__(self, kind: str, label: str):
        self.kind = kind  # machine name, e.g. "model_family"
        self.label = label  # human name, e.g. "model family"
        self._items: dict[str, Registered[T]] = {}

    def add(self, spec: T, plugin: str, origin: str) -> None:
        name = getattr(spec, "name", None)
        if not isinstance(name, str) or not name:
            raise PluginError(f"plugin '{plugin}' registered a {self.label} without a name: {spec!r}")
        if name in self._items:
            other = self._items[name].plugin
            raise PluginError(
                f"{self.label} '{name}' is registered twice: by plugin '{other}' and by plugin '{plugin}'"
            )
        self._items[name] = Registered(spec, plugin, origin)

    def get(self, name: str, field: str | None = None) -> T:
        try:
            return self._items[name].spec
        except KeyError:
            where = f"{field}: " if field else ""
            available = ", ".join(sorted(self._items)) or "none"
            raise PluginError(f"{where}unknown {self.label} '{name}'; available: {available}") from None

    def names(self) -> list[str]:
        return sorted(self._items)

    def entries(self) -> Iterator[tuple[str, Registered[T]]]:
        yield from sorted(self._items.items())

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __len__(self) -> int:
        return len(self._items)
