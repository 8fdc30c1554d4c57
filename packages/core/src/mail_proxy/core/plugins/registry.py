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
        self._placeholders: set[str] = set()

    def register(self, name: str, item: T, *, plugin: str = "?", placeholder: bool = False) -> None:
        """Add ``item`` under ``name``; a second registration of the same name is an error.

        A ``placeholder`` stands for a name whose plugin may not be installed (to say which
        plugin to install): a real registration replaces it, whatever the order."""
        if not name or not isinstance(name, str):
            raise RegistryError(f"{self.kind}: a name must be a non-empty string, got {name!r}")
        if placeholder and name in self._items:
            return
        if name in self._placeholders:
            self._placeholders.discard(name)
        elif name in self._items:
            raise RegistryError(
                f"{self.kind} {name!r} is registered twice "
                f"(by {self._owners[name]!r} and by {plugin!r})"
            )
        self._items[name] = item
        self._owners[name] = plugin
        if placeholder:
            self._placeholders.add(name)

    def get(self, name: str) -> T:
        """Return the implementation registered as ``name`` or raise :class:`RegistryError`."""
        try:
            return self._items[name]
        except KeyError:
            known = ", ".join(sorted(self._items)) or "none"
            raise RegistryError(f"unknown {self.kind} {name!r} (known: {known})") from None

    def is_placeholder(self, name: str) -> bool:
        """True for a name registered only to say which plugin provides it."""
        return name in self._placeholders

    def owner(self, name: str) -> str:
        return self._owners[name]

    def names(self) -> list[str]:
        return sorted(self._items)

    def items(self) -> list[tuple[str, T]]:
        """``(name, item)`` pairs in name order."""
        return [(name, self._items[name]) for name in sorted(self._items)]

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._items))

    def __len__(self) -> int:
        return len(self._items)
