"""The Community Edition plugin (entry point ``ce`` in the ``mail_proxy`` group).

Imports nothing heavy at module level: each hook imports its implementation when called, so
``mail-proxy --help`` does not load SQLAlchemy, aiosmtplib or the fetchers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mail_proxy.core.plugins import hookimpl

if TYPE_CHECKING:
    from mail_proxy.core.contracts.commands import CommandRegistry
    from mail_proxy.core.contracts.fetch import Fetcher
    from mail_proxy.core.contracts.reports import ReportSink
    from mail_proxy.core.contracts.routes import RouteTable
    from mail_proxy.core.contracts.storage import Storage
    from mail_proxy.core.contracts.transport import TransportFactory
    from mail_proxy.core.engine.runtime import Runtime, StorageFactory
    from mail_proxy.core.plugins.registry import Registry

PLUGIN = "ce"


@hookimpl
def plugin_info() -> dict[str, Any]:
    return {
        "description": "Community Edition: SQL storage, SMTP/file transports, 4 fetch modes, "
        "HTTP report sink, REST API, CLI",
        "edition": "ce",
    }


def _sql_storage(runtime: Runtime, url: str) -> Storage:
    from .storage.sql import SqlStorage

    return SqlStorage(runtime, url)


@hookimpl
def register_storage_backends(registry: Registry[StorageFactory]) -> None:
    registry.register("sqlite", _sql_storage, plugin=PLUGIN)
    registry.register("postgresql", _sql_storage, plugin=PLUGIN)


@hookimpl
def register_transports(registry: Registry[TransportFactory]) -> None:
    from .transport import register

    register(registry, PLUGIN)


@hookimpl
def register_fetchers(registry: Registry[Fetcher]) -> None:
    from .fetch import register

    register(registry, PLUGIN)


@hookimpl
def register_report_sinks(registry: Registry[ReportSink]) -> None:
    from .reports import register

    register(registry, PLUGIN)


@hookimpl
def register_routes(routes: RouteTable) -> None:
    from .api import register
    from .reports.routes import register as register_report_routes

    register(routes, PLUGIN)
    register_report_routes(routes, PLUGIN)


@hookimpl
def register_commands(commands: CommandRegistry) -> None:
    from .cli import register

    register(commands, PLUGIN)
