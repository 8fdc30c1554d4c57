"""The plugin manager: finds plugins, checks them against the hook specs, lists them.

``create_plugin_manager()`` is the only way to get one (no module-global manager, nothing
happens at import time). It registers the core's own built-in plugin, then every entry point
of the ``mail_proxy`` group (the Community Edition is one of them, enterprise and third-party
packages are others), minus the disabled ones, then verifies that every hook implementation
matches a specification: a misspelled hook or argument is a startup error naming the plugin.
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import pluggy

from . import hookspecs

ENTRY_POINT_GROUP = "mail_proxy"
hookimpl = pluggy.HookimplMarker(hookspecs.PROJECT)


class PluginError(Exception):
    """A plugin could not be loaded or does not match the hook specifications."""


@dataclass
class PluginInfo:
    name: str
    distribution: str | None
    version: str | None
    hooks: list[str] = field(default_factory=list)
    description: str = ""
    edition: str = ""

    def public(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "distribution": self.distribution,
            "version": self.version,
            "hooks": self.hooks,
            "description": self.description,
            "edition": self.edition,
        }


class PluginManager:
    """A typed facade over :class:`pluggy.PluginManager`."""

    def __init__(self, pm: pluggy.PluginManager, disabled: set[str]) -> None:
        self._pm = pm
        self.disabled = disabled
        self._dists: dict[str, tuple[str | None, str | None]] = {}

    @property
    def hook(self) -> Any:
        return self._pm.hook

    def register(
        self, plugin: object, name: str, dist: tuple[str | None, str | None] = (None, None)
    ) -> None:
        if name in self.disabled:
            return
        try:
            self._pm.register(plugin, name=name)
        except pluggy.PluginValidationError as exc:
            raise PluginError(
                f"plugin {name!r} does not match the hook specifications: {exc}"
            ) from None
        except ValueError as exc:
            raise PluginError(f"plugin {name!r}: {exc}") from None
        self._dists[name] = dist

    def check(self) -> None:
        """Fail on hook implementations that match no specification (misspelled names)."""
        for name, plugin in self._pm.list_name_plugin():
            for impl in self._pm.get_hookcallers(plugin) or []:
                if impl.spec is None:
                    raise PluginError(
                        f"plugin {name!r} implements unknown hook {impl.name!r} "
                        "(misspelled? see mail_proxy.core.hookspecs)"
                    )

    def names(self) -> list[str]:
        return [name for name, _ in self._pm.list_name_plugin()]

    def plugins(self) -> list[PluginInfo]:
        infos = []
        for name, plugin in self._pm.list_name_plugin():
            dist, version = self._dists.get(name, (None, None))
            hooks = sorted(c.name for c in self._pm.get_hookcallers(plugin) or [])
            info = PluginInfo(name, dist, version, hooks)
            meta = getattr(plugin, "plugin_info", None)
            if callable(meta):
                data = meta() or {}
                info.description = str(data.get("description", ""))
                info.edition = str(data.get("edition", ""))
            infos.append(info)
        return sorted(infos, key=lambda i: i.name)


def create_plugin_manager(
    *,
    disabled: Iterable[str] = (),
    extra_plugins: Iterable[tuple[str, object]] = (),
    load_entry_points: bool = True,
) -> PluginManager:
    """Build the plugin manager: built-ins, then entry points, then ``extra_plugins``."""
    from . import builtin

    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    manager = PluginManager(pm, set(disabled))
    manager.register(builtin, "core", ("genro-mail-proxy-core", _version("genro-mail-proxy-core")))
    if load_entry_points:
        for ep in sorted(
            importlib.metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name
        ):
            if ep.name in manager.disabled or pm.has_plugin(ep.name):
                continue
            try:
                plugin = ep.load()
            except Exception as exc:
                raise PluginError(
                    f"plugin {ep.name!r} ({ep.value}) failed to import: {exc}"
                ) from exc
            dist = ep.dist.name if ep.dist else None
            manager.register(plugin, ep.name, (dist, ep.dist.version if ep.dist else None))
    for name, plugin in extra_plugins:
        manager.register(plugin, name)
    manager.check()
    return manager


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None
