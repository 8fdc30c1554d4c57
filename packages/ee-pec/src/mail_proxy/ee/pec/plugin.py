"""The PEC plugin (entry point ``pec`` in the ``mail_proxy`` group).

Everything it does goes through the core's hooks; light to import (the pieces are imported
inside the hooks):

- ``register_settings``: the ``pec`` section (``GMP_PEC_*``, :mod:`.settings`);
- ``register_account_fields``: ``pec`` and ``imap_*`` on accounts, validated, the password
  sealed (replaces the Community Edition's "needs the PEC plugin" placeholder);
- ``register_migrations``: its tables (:mod:`.tables`, branch ``pec``);
- ``register_event_types``: ``pec_acceptance``, ``pec_delivery``, ``pec_error``,
  ``pec_taken_in_charge``, ``pec_delivery_warning``, ``pec_timeout`` (:mod:`.events`);
- ``register_message_steps``: notes each message sent through a PEC account (:mod:`.steps`);
- ``register_services``: the mailbox pollers (:mod:`.pollers`) and the acceptance timeout
  (:mod:`.timeouts`);
- ``register_routes``: ``GET /pec/status``; ``register_commands``: ``mail-proxy pec parse``
  and ``mail-proxy NAME [TENANT] pec status|enable|disable``;
- ``tenant_changed`` / ``tenant_deleted``: the pollers follow the accounts; a deleted
  tenant's rows go.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from mail_proxy.core.plugins import hookimpl

if TYPE_CHECKING:
    from mail_proxy.core.contracts.commands import CommandRegistry
    from mail_proxy.core.contracts.extensions import (
        AccountFields,
        EventType,
        MessageStep,
        MigrationBranch,
        SettingsSection,
    )
    from mail_proxy.core.contracts.routes import RouteTable
    from mail_proxy.core.engine.runtime import Runtime, ServiceFactory
    from mail_proxy.core.plugins.registry import Registry

PLUGIN = "pec"


@hookimpl
def plugin_info() -> dict[str, Any]:
    return {
        "description": "PEC (Italian certified mail): PEC accounts, receipts read from their "
        "mailboxes and reported as message events",
        "edition": "ee",
    }


@hookimpl
def register_settings(sections: Registry[SettingsSection]) -> None:
    from mail_proxy.core.contracts.extensions import SettingsSection

    from .settings import SECTION, PecSettings

    sections.register(SECTION, SettingsSection(SECTION, PecSettings, PLUGIN), plugin=PLUGIN)


@hookimpl
def register_account_fields(fields: Registry[AccountFields]) -> None:
    from mail_proxy.core.contracts.extensions import AccountFields

    from .settings import SECTION, PecAccountFields

    fields.register(
        SECTION,
        AccountFields(
            SECTION,
            PecAccountFields,
            secret_fields=("imap_password",),
            doc="A PEC account: pec true and the IMAP mailbox where the receipts arrive.",
            plugin=PLUGIN,
        ),
        plugin=PLUGIN,
    )


@hookimpl
def register_migrations(branches: Registry[MigrationBranch]) -> None:
    from mail_proxy.core.contracts.extensions import MigrationBranch

    from .tables import metadata

    versions = str(Path(__file__).parent / "migrations")
    branches.register(PLUGIN, MigrationBranch(PLUGIN, versions, metadata, PLUGIN), plugin=PLUGIN)


@hookimpl
def register_event_types(event_types: Registry[EventType]) -> None:
    from .events import EVENT_TYPES

    for event_type in EVENT_TYPES:
        event_types.register(event_type.name, event_type, plugin=PLUGIN)


@hookimpl
def register_message_steps(steps: Registry[MessageStep]) -> None:
    from .steps import TrackPecMessages

    steps.register(PLUGIN, TrackPecMessages(), plugin=PLUGIN)


@hookimpl
def register_services(services: Registry[ServiceFactory]) -> None:
    from .pollers import PecPollers
    from .timeouts import PecTimeouts

    services.register("pec-pollers", PecPollers.create, plugin=PLUGIN)
    services.register("pec-timeouts", PecTimeouts.create, plugin=PLUGIN)


@hookimpl
def register_routes(routes: RouteTable) -> None:
    from .routes import register

    register(routes, PLUGIN)


@hookimpl
def register_commands(commands: CommandRegistry) -> None:
    commands.add(
        "pec",
        "mail_proxy.ee.pec.cli:tools",
        help="PEC: pec parse FILE... reads saved receipts; mail-proxy NAME [TENANT] pec "
        "status|enable|disable manages PEC accounts.",
        level="global",
        plugin=PLUGIN,
    )
    commands.add(
        "pec",
        "mail_proxy.ee.pec.cli:app",
        help="PEC accounts: status of their mailboxes, enable, disable.",
        level="tenant",
        plugin=PLUGIN,
    )


@hookimpl
async def tenant_changed(tenant_id: str, runtime: Runtime) -> None:
    from .pollers import PecPollers

    await runtime.local(PecPollers).refresh()


@hookimpl
async def tenant_deleted(tenant_id: str, runtime: Runtime) -> None:
    from .pollers import PecPollers
    from .tables import tables_of

    await runtime.local(PecPollers).refresh()
    if runtime.storage is not None and runtime.storage.database is not None:
        await tables_of(runtime).delete_tenant(tenant_id)
