"""The plugin manager: a facade over pluggy that checks plugins against the hook specs and
lists them. Built by :func:`mail_proxy.core.plugins.loader.create_plugin_manager`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pluggy

from mail_proxy.core.plugins import hookspecs

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
                        "(misspelled? see mail_proxy.core.plugins.hookspecs)"
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
