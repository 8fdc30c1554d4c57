"""The bounce plugin (entry point ``bounce`` in the ``mail_proxy`` group).

It only registers things through the core's hooks (docs/bounce.md):

- ``register_settings``: the ``bounce`` section (``GMP_BOUNCE_*``, :mod:`.config`);
- ``register_migrations``: its tables (:mod:`.schema`, ``migrations/versions``);
- ``register_tenant_settings``: the ``bounce`` setting (instance = the default tenant's; the
  IMAP password sealed);
- ``register_event_types``: ``bounce`` and ``complaint`` (:mod:`.events`);
- ``register_message_steps``: VERP at ``before_send`` (:mod:`.verp`), the suppression check
  at enqueue (:mod:`.suppression`);
- ``register_services``: the pollers (:mod:`.service`);
- ``register_routes``: ``/instance/bounce``, ``/instance/reload-bounce``, ``/suppressions``;
- ``register_commands``: ``mail-proxy bounce parse``, ``mail-proxy NAME bounce
  show|set|test``, ``mail-proxy NAME [TENANT] suppressions list|add|remove``;
- ``tenant_changed`` / ``tenant_deleted``: apply a changed setting, drop a tenant's list;
- ``reencrypt_secrets``: key rotation re-encrypts the VERP secret.

Light to import: the hook marker and the standard library at module level only.
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

PLUGIN = "bounce"
VERSIONS = Path(__file__).parent / "migrations" / "versions"


@hookimpl
def plugin_info() -> dict[str, Any]:
    return {
        "description": "Bounce detection over IMAP: DSN parsing, explained hard/soft "
        "classification, VERP correlation, suppression list",
        "edition": "ee",
    }


@hookimpl
def register_settings(sections: Registry[SettingsSection]) -> None:
    from mail_proxy.core.contracts.extensions import SettingsSection

    from .config import SECTION, BounceSettings

    sections.register(SECTION, SettingsSection(SECTION, BounceSettings, PLUGIN), plugin=PLUGIN)


@hookimpl
def register_migrations(branches: Registry[MigrationBranch]) -> None:
    from mail_proxy.core.contracts.extensions import MigrationBranch

    from .schema import metadata

    branches.register(
        PLUGIN, MigrationBranch(PLUGIN, str(VERSIONS), metadata, PLUGIN), plugin=PLUGIN
    )


@hookimpl
def register_tenant_settings(settings: Registry[TenantSetting]) -> None:
    from mail_proxy.core.contracts.extensions import TenantSetting

    from .config import NAME, BounceConfig

    settings.register(
        NAME,
        TenantSetting(
            NAME,
            BounceConfig,
            secret_fields=("password",),
            admin_only=True,
            doc="Bounce mailbox (IMAP) and return path; the default tenant's is the "
            "instance's (docs/bounce.md)",
            plugin=PLUGIN,
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
    from .suppression import SuppressionStep
    from .verp import VerpStep

    for step in (SuppressionStep(), VerpStep()):
        steps.register(step.name, step, plugin=PLUGIN)


@hookimpl
def register_services(services: Registry[ServiceFactory]) -> None:
    from .service import BounceService

    services.register(PLUGIN, BounceService.create, plugin=PLUGIN)


@hookimpl
def register_routes(routes: RouteTable) -> None:
    from .routes import register

    register(routes, PLUGIN)


@hookimpl
def register_commands(commands: CommandRegistry) -> None:
    commands.add(
        "bounce",
        "mail_proxy.ee.bounce.cli.parse:app",
        help="Bounce files: parse and classify (bounce plugin).",
        level="global",
        plugin=PLUGIN,
    )
    commands.add(
        "bounce",
        "mail_proxy.ee.bounce.cli.mailbox:app",
        help="Bounce mailbox of the instance: show, set, test (bounce plugin).",
        level="instance",
        plugin=PLUGIN,
    )
    commands.add(
        "suppressions",
        "mail_proxy.ee.bounce.cli.suppressions:app",
        help="Suppressed addresses: list, add, remove (bounce plugin).",
        level="tenant",
        plugin=PLUGIN,
    )


@hookimpl
async def tenant_changed(tenant_id: str, runtime: Runtime) -> None:
    from .service import tenant_changed as apply

    await apply(runtime, tenant_id)


@hookimpl
async def reencrypt_secrets(transform: Callable[[str, str], str], runtime: Runtime) -> int:
    """Key rotation: the VERP secret (the IMAP passwords are tenant settings: the storage
    re-encrypts them)."""
    from .verp import reencrypt

    return await reencrypt(runtime, transform)


@hookimpl
async def tenant_deleted(tenant_id: str, runtime: Runtime) -> None:
    from .config import BounceConfigs
    from .suppression import Suppressions

    runtime.local(BounceConfigs).forget(tenant_id)
    if runtime.storage is not None and runtime.storage.database is not None:
        await runtime.local(Suppressions).delete_tenant(tenant_id)
