"""The large-files plugin (entry point ``large_files`` in the ``mail_proxy`` group).

Light to import: the hooks import their pieces when called (fsspec, SQLAlchemy and the
storage drivers are not loaded by ``mail-proxy --help``).

- ``register_settings``: the ``large_files`` section (:mod:`.settings`);
- ``register_migrations``: the branch ``largefiles`` (:mod:`.tables`, ``migrations/``);
- ``register_tenant_settings``: ``large_file_config`` (:mod:`.config`; ``storage_options``
  sealed; the storage checked before it is stored);
- ``register_event_types``: ``attachment_offloaded``, ``attachment_over_limit``;
- ``register_message_steps``: the size policy at enqueue and at send time (:mod:`.steps`);
- ``register_routes``: ``/instance/large-files``, ``/large-files``, ``/files/{token}``;
- ``register_commands``: ``mail-proxy NAME large-files list|purge|test``;
- ``register_services``: the cleanup of expired files;
- ``tenant_deleted``: the tenant's files are deleted; ``reencrypt_secrets``: key rotation.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mail_proxy.core.plugins import hookimpl

if TYPE_CHECKING:
    from mail_proxy.core.contracts.commands import CommandRegistry
    from mail_proxy.core.contracts.extensions import (
        EventType,
        MessageStep,
        MigrationBranch,
        SettingsSection,
        TenantSetting,
    )
    from mail_proxy.core.contracts.routes import RouteTable
    from mail_proxy.core.engine.runtime import Runtime, ServiceFactory
    from mail_proxy.core.plugins.registry import Registry

PLUGIN = "large_files"
MIGRATIONS = Path(__file__).parent / "migrations"


@hookimpl
def plugin_info() -> dict[str, Any]:
    return {
        "description": "Large files: attachments over a tenant's limit refused, warned about, "
        "or offloaded to object storage (fsspec) and replaced by expiring download links",
        "edition": "ee",
    }


@hookimpl
def register_settings(sections: Registry[SettingsSection]) -> None:
    from mail_proxy.core.contracts.extensions import SettingsSection

    from .settings import SECTION, LargeFilesSettings

    sections.register(SECTION, SettingsSection(SECTION, LargeFilesSettings, PLUGIN), plugin=PLUGIN)


@hookimpl
def register_migrations(branches: Registry[MigrationBranch]) -> None:
    from mail_proxy.core.contracts.extensions import MigrationBranch

    from .tables import metadata

    branches.register(
        "largefiles",
        MigrationBranch("largefiles", str(MIGRATIONS), metadata, PLUGIN),
        plugin=PLUGIN,
    )


@hookimpl
def register_tenant_settings(settings: Registry[TenantSetting]) -> None:
    from mail_proxy.core.contracts.extensions import TenantSetting

    from .config import NAME, LargeFileConfig
    from .routes import check_config

    settings.register(
        NAME,
        TenantSetting(
            NAME,
            LargeFileConfig,
            secret_fields=("storage_options",),
            admin_only=True,
            doc="Attachments over max_size_mb: warn, reject, or rewrite (offload to "
            "storage_url and link). docs/large-files.md",
            plugin=PLUGIN,
            check=check_config,
        ),
        plugin=PLUGIN,
    )


@hookimpl
def register_event_types(event_types: Registry[EventType]) -> None:
    from .events import EVENT_TYPES

    for event_type in EVENT_TYPES:
        event_types.register(event_type.name, event_type, plugin=PLUGIN)


@hookimpl
def register_message_steps(steps: Registry[MessageStep]) -> None:
    from .steps import LargeFilesStep

    steps.register(LargeFilesStep.name, LargeFilesStep(), plugin=PLUGIN)


@hookimpl
def register_routes(routes: RouteTable) -> None:
    from .routes import register

    register(routes, PLUGIN)


@hookimpl
def register_commands(commands: CommandRegistry) -> None:
    commands.add(
        "large-files",
        "mail_proxy.ee.largefiles.cli:app",
        help="Offloaded attachments: list, purge, test the storage.",
        level="instance",
        plugin=PLUGIN,
    )


@hookimpl
def register_services(services: Registry[ServiceFactory]) -> None:
    from .cleanup import Cleanup

    services.register(Cleanup.name, Cleanup.create, plugin=PLUGIN)


@hookimpl
async def tenant_deleted(tenant_id: str, runtime: Runtime) -> None:
    from .cleanup import delete_tenant_files

    await delete_tenant_files(runtime, tenant_id)


@hookimpl
async def reencrypt_secrets(transform: Callable[[str, str], str], runtime: Runtime) -> int:
    from .records import Records

    return await runtime.local(Records).reencrypt(transform)
