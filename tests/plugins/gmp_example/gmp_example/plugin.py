"""Every extension hook, used once, the way an enterprise plugin uses it.

What the example does, so that each hook has a reason to exist:

- a settings section ``example`` (``GMP_EXAMPLE_VERP_DOMAIN``, ``GMP_EXAMPLE_TENANT_TOKEN``);
- its own table ``example_notes`` (migration branch ``example``);
- a tenant setting ``example_labels`` (a label, and a secret kept sealed) and an account field
  ``example_region``;
- an event type ``example_noted``, recorded when a note is added and reported to the client;
- a message step: refuses subjects with ``[blocked]``, accepts an ``example_priority_hint``
  field, labels messages of tenants with a label, and sets a VERP envelope sender;
- routes ``/example/...``, a CLI command ``mail-proxy example-verp``, a service, an
  ``authenticate`` for one configured tenant token, ``on_event`` counters and tenant
  lifecycle clean-up.

Light to import: the pieces are imported when the hooks are called.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from mail_proxy.core.plugins import hookimpl

if TYPE_CHECKING:
    from aiohttp import web

    from mail_proxy.core.contracts.commands import CommandRegistry
    from mail_proxy.core.contracts.extensions import (
        AccountFields,
        Event,
        EventType,
        MessageStep,
        MigrationBranch,
        SettingsSection,
        TenantSetting,
    )
    from mail_proxy.core.contracts.model import Principal
    from mail_proxy.core.contracts.routes import RouteTable
    from mail_proxy.core.engine.runtime import Runtime, ServiceFactory
    from mail_proxy.core.plugins.registry import Registry

PLUGIN = "example"


@hookimpl
def plugin_info() -> dict[str, Any]:
    return {"description": "Worked example of every extension hook", "edition": "test"}


@hookimpl
def register_settings(sections: Registry[SettingsSection]) -> None:
    from mail_proxy.core.contracts.extensions import SettingsSection

    from .parts import ExampleSettings

    sections.register("example", SettingsSection("example", ExampleSettings, PLUGIN), plugin=PLUGIN)


@hookimpl
def register_migrations(branches: Registry[MigrationBranch]) -> None:
    from mail_proxy.core.contracts.extensions import MigrationBranch

    from .tables import metadata

    versions = str(Path(__file__).parent / "migrations")
    branches.register(
        "example", MigrationBranch("example", versions, metadata, PLUGIN), plugin=PLUGIN
    )


@hookimpl
def register_tenant_settings(settings: Registry[TenantSetting]) -> None:
    from mail_proxy.core.contracts.extensions import TenantSetting

    from .parts import Labels

    settings.register(
        "example_labels",
        TenantSetting(
            "example_labels",
            Labels,
            secret_fields=("api_secret",),
            admin_only=False,
            doc="A label added to the tenant's messages (X-Example-Label).",
            plugin=PLUGIN,
        ),
        plugin=PLUGIN,
    )


@hookimpl
def register_account_fields(fields: Registry[AccountFields]) -> None:
    from mail_proxy.core.contracts.extensions import AccountFields

    from .parts import Region

    fields.register("example", AccountFields("example", Region, plugin=PLUGIN), plugin=PLUGIN)


@hookimpl
def register_event_types(event_types: Registry[EventType]) -> None:
    from .parts import NOTED

    event_types.register(NOTED.name, NOTED, plugin=PLUGIN)


@hookimpl
def register_message_steps(steps: Registry[MessageStep]) -> None:
    from .parts import ExampleStep

    steps.register("example", ExampleStep(), plugin=PLUGIN)


@hookimpl
def register_routes(routes: RouteTable) -> None:
    from .web import register

    register(routes, PLUGIN)


@hookimpl
def register_commands(commands: CommandRegistry) -> None:
    commands.add(
        "example-verp",
        "gmp_example.cli:verp",
        help="Print the VERP envelope sender the example plugin would use.",
        plugin=PLUGIN,
    )


@hookimpl
def register_services(services: Registry[ServiceFactory]) -> None:
    from .parts import Heartbeat

    services.register("example-heartbeat", Heartbeat.create, plugin=PLUGIN)


@hookimpl
def authenticate(request: web.Request, token: str, runtime: Runtime) -> Principal | None:
    from .parts import tenant_token_principal

    return tenant_token_principal(token, runtime)


@hookimpl
def on_event(event: Event, runtime: Runtime) -> None:
    from .parts import Counters

    runtime.local(Counters).seen(event)


@hookimpl
def tenant_changed(tenant_id: str, runtime: Runtime) -> None:
    from .parts import Counters

    runtime.local(Counters).changed.append(tenant_id)


@hookimpl
async def tenant_deleted(tenant_id: str, runtime: Runtime) -> None:
    from .tables import delete_tenant_notes

    await delete_tenant_notes(runtime, tenant_id)
