"""Building the plugin manager: the core's built-in plugin, then every installed plugin.

``create_plugin_manager()`` is the only way to get one (no module-global manager, nothing
happens at import time). It registers the core's own built-in plugin, then every entry point
of the ``mail_proxy`` group (the Community Edition is one of them, enterprise and third-party
packages are others), minus the disabled ones, then verifies that every hook implementation
matches a specification: a misspelled hook or argument is a startup error naming the plugin.
It sits above the engine because the built-in plugin registers the engine's own services.
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Iterable

import pluggy

from mail_proxy.core.plugins import builtin, hookspecs
from mail_proxy.core.plugins.manager import ENTRY_POINT_GROUP, PluginError, PluginManager


def create_plugin_manager(
    *,
    disabled: Iterable[str] = (),
    extra_plugins: Iterable[tuple[str, object]] = (),
    load_entry_points: bool = True,
) -> PluginManager:
    """Build the plugin manager: built-ins, then entry points, then ``extra_plugins``."""
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
