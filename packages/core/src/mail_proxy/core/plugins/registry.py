"""Typed name → implementation registries filled by plugins through hooks.

Configuration picks implementations by name (``fetch_mode``, ``transport``, the database URL
scheme), never by load order, so a registry refuses duplicates and answers unknown names with
an error that lists what is available.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Generic, TypeVar

T = TypeVar("T")


class RegistryError(ValueError):
    """A duplicate registration or a lookup of a name nobody registered."""


class Registry(Generic[T]):
    """A mapping of names to implementations of one kind (fetchers, transports, ...)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}
        self._owners: dict[str, str] = {}

    def register(self, name: str, item: T, *, plugin: str = "?") -> None:
        """Add ``item`` under ``name``; a second registration of the same name is an error."""
        if not name or not isinstance(name, str):
            raise RegistryError(f"{self.kind}: a name must be a non-empty string, got {name!r}")
        if name in self._items:
            raise RegistryError(
                f"{self.kind} {name!r} is registered twice "
                f"(by {self._owners[name]!r} and by {plugin!r})"
            )
        self._items[name] = item
        self._owners[name] = plugin

    def get(self, name: str) -> T:
        """Return the implementation registered as ``name`` or raise :class:`RegistryError`."""
        try:
            return self._items[name]
        except KeyError:
            known = ", ".join(sorted(self._items)) or "none"
            raise RegistryError(f"unknown {self.kind} {name!r} (known: {known})") from None

    def owner(self, name: str) -> str:
        return self._owners[name]

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._items))

    def __len__(self) -> int:
        return len(self._items)
