"""The Community Edition plugin (entry point ``ce`` in the ``mail_proxy`` group).

Imports nothing heavy at module level: each hook imports its implementation when called, so
``mail-proxy --help`` does not load SQLAlchemy, aiosmtplib or the fetchers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mail_proxy.core.plugins import hookimpl

if TYPE_CHECKING:
    from mail_proxy.core.contracts.commands import CommandRegistry
    from mail_proxy.core.contracts.extensions import AccountFields, SettingsSection, TenantSetting
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
    from .console import register as register_console
    from .reports.routes import register as register_report_routes

    register(routes, PLUGIN)
    register_report_routes(routes, PLUGIN)
    register_console(routes, PLUGIN)


@hookimpl
def register_commands(commands: CommandRegistry) -> None:
    from .cli import register

    register(commands, PLUGIN)


@hookimpl
def register_settings(sections: Registry[SettingsSection]) -> None:
    from mail_proxy.core.contracts.extensions import SettingsSection

    from .settings import FETCH, REPORT_SINK, SMTP, FetchSettings, ReportSinkSettings, SmtpSettings

    for name, cls in (
        (SMTP, SmtpSettings),
        (FETCH, FetchSettings),
        (REPORT_SINK, ReportSinkSettings),
    ):
        sections.register(name, SettingsSection(name, cls, PLUGIN), plugin=PLUGIN)


@hookimpl
def tenant_changed(tenant_id: str, runtime: Runtime) -> None:
    from .api.directory import directory_of

    directory_of(runtime).invalidate(tenant_id)


@hookimpl
def tenant_deleted(tenant_id: str, runtime: Runtime) -> None:
    from .api.directory import directory_of

    directory_of(runtime).invalidate(tenant_id)


#: Tenant settings of the enterprise plugins, for a clear answer when one is not installed.
OPTIONAL_TENANT_SETTINGS = {
    "large_file_config": ("large-files", "genro-mail-proxy[large-files]"),
    "bounce": ("bounce", "genro-mail-proxy[bounce]"),
}


@hookimpl
def register_tenant_settings(settings: Registry[TenantSetting]) -> None:
    from mail_proxy.core.contracts.extensions import TenantSetting

    for name, (plugin, extra) in OPTIONAL_TENANT_SETTINGS.items():
        hint = f"needs the {plugin} plugin (pip install '{extra}')"
        settings.register(
            name, TenantSetting(name, None, doc=hint), plugin=PLUGIN, placeholder=True
        )


#: Account fields of the enterprise plugins, for a clear answer when one is not installed.
OPTIONAL_ACCOUNT_FIELDS = {
    "pec": "pec accounts need the PEC plugin (pip install 'genro-mail-proxy[pec]')"
}


@hookimpl
def register_account_fields(fields: Registry[AccountFields]) -> None:
    from mail_proxy.core.contracts.extensions import AccountFields

    for name, hint in OPTIONAL_ACCOUNT_FIELDS.items():
        fields.register(name, AccountFields(name, None, doc=hint), plugin=PLUGIN, placeholder=True)
