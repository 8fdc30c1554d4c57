"""The plugin manager: a facade over pluggy that checks plugins against the hook specs and
lists them. Built by :func:`mail_proxy.core.plugins.loader.create_plugin_manager`."""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pluggy

from mail_proxy.core.plugins import hookspecs

if TYPE_CHECKING:
    from aiohttp import web

    from mail_proxy.core.contracts.commands import CommandRegistry
    from mail_proxy.core.contracts.extensions import Event
    from mail_proxy.core.contracts.routes import RouteTable
    from mail_proxy.core.engine.runtime import Runtime

ENTRY_POINT_GROUP = "mail_proxy"
log = logging.getLogger(__name__)
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
    """A typed facade over :class:`pluggy.PluginManager`: one method per hook, so callers
    never touch ``pluggy`` and implementations that return awaitables are awaited here."""

    def __init__(self, pm: pluggy.PluginManager, disabled: set[str]) -> None:
        self._pm = pm
        self.disabled = disabled
        self._dists: dict[str, tuple[str | None, str | None]] = {}
        #: Each hook's implementations in call order, read once (``register`` clears it).
        self._impls: dict[str, list[_Impl]] = {}

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
        self._impls.clear()

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

    # -- one method per hook ------------------------------------------------------------
    def fill(self, hook_name: str, argument: str, target: Any) -> None:
        """Call the ``register_*`` hook ``hook_name`` with ``target`` as ``argument``."""
        getattr(self._pm.hook, hook_name)(**{argument: target})

    def register_commands(self, commands: CommandRegistry) -> None:
        self._pm.hook.register_commands(commands=commands)

    def register_routes(self, routes: RouteTable) -> None:
        self._pm.hook.register_routes(routes=routes)

    async def authenticate(self, request: web.Request, token: str, runtime: Runtime) -> Any:
        """The first non-None :class:`Principal` in hook order; later implementations are not
        called (the admin token never costs a key lookup)."""
        return await self._first("authenticate", request=request, token=token, runtime=runtime)

    def on_event(self, event: Event, runtime: Runtime) -> None:
        """Tell every plugin about a committed event; one failing plugin does not stop the
        others (it is logged)."""
        for impl in self._implementations("on_event"):
            try:
                impl.call(event=event, runtime=runtime)
            except Exception:
                log.exception("plugin %s: on_event failed", impl.plugin)

    async def tenant_changed(self, tenant_id: str, runtime: Runtime) -> None:
        await self._all("tenant_changed", tenant_id=tenant_id, runtime=runtime)

    async def tenant_deleted(self, tenant_id: str, runtime: Runtime) -> None:
        await self._all("tenant_deleted", tenant_id=tenant_id, runtime=runtime)

    async def reencrypt_secrets(
        self, transform: Callable[[str, str], str], runtime: Runtime
    ) -> int:
        """Every plugin re-encrypts its own secrets; the number of values changed."""
        total = 0
        for impl in self._implementations("reencrypt_secrets"):
            result: Any = impl.call(transform=transform, runtime=runtime)
            if inspect.isawaitable(result):
                result = await result
            total += int(result or 0)
        return total

    async def _all(self, hook_name: str, **kwargs: Any) -> None:
        """Call every implementation, awaiting those that return awaitables."""
        for impl in self._implementations(hook_name):
            result = impl.call(**kwargs)
            if inspect.isawaitable(result):
                await result

    async def _first(self, hook_name: str, **kwargs: Any) -> Any:
        for impl in self._implementations(hook_name):
            result = impl.call(**kwargs)
            if inspect.isawaitable(result):
                result = await result
            if result is not None:
                return result
        return None

    def _implementations(self, hook_name: str) -> list[_Impl]:
        """``hook_name``'s implementations in pluggy's call order (``tryfirst`` first)."""
        found = self._impls.get(hook_name)
        if found is None:
            hook = getattr(self._pm.hook, hook_name)
            found = [
                _Impl(impl.plugin_name, impl.function, tuple(impl.argnames))
                for impl in reversed(hook.get_hookimpls())
            ]
            self._impls[hook_name] = found
        return found


@dataclass(frozen=True)
class _Impl:
    """One hook implementation: its plugin, its function and the arguments it takes (pluggy
    lets an implementation take a subset of the specification's)."""

    plugin: str
    function: Callable[..., Any]
    argnames: tuple[str, ...]

    def call(self, **available: Any) -> Any:
        return self.function(**{name: available[name] for name in self.argnames})
