"""Every hook of genro-mail-proxy, in one file.

Plugins implement these with ``@hookimpl`` (from :mod:`mail_proxy.core.plugins.manager`) and are
found through the ``mail_proxy`` entry-point group. pluggy hooks are synchronous: the
``register_*`` hooks add *objects* to registries at startup, and those objects have async
methods the engine awaits. The built-in behaviour (``mail_proxy.ce.plugin`` and
``mail_proxy.core.plugins.builtin``) uses these same hooks, so every hook has a working example.

A misspelled hook name or an argument that is not in the spec makes startup fail with an
error naming the plugin (see ``create_plugin_manager``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import pluggy

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
    from mail_proxy.core.contracts.fetch import Fetcher
    from mail_proxy.core.contracts.model import Principal
    from mail_proxy.core.contracts.reports import ReportSink
    from mail_proxy.core.contracts.routes import RouteTable
    from mail_proxy.core.contracts.transport import TransportFactory
    from mail_proxy.core.engine.runtime import Runtime, ServiceFactory, StorageFactory
    from mail_proxy.core.plugins.registry import Registry

PROJECT = "mail_proxy"
hookspec = pluggy.HookspecMarker(PROJECT)


@hookspec
def register_storage_backends(registry: Registry[StorageFactory]) -> None:
    """Called once at startup. Register storage factories under the database URL scheme they
    serve (``sqlite``, ``postgresql``). The factory is called with the :class:`Runtime` and
    the URL and returns a :class:`~mail_proxy.core.contracts.storage.Storage` (not yet started)."""


@hookspec
def register_fetchers(registry: Registry[Fetcher]) -> None:
    """Called once at startup. Register attachment fetchers under their ``fetch_mode`` name
    (:class:`~mail_proxy.core.contracts.fetch.Fetcher`)."""


@hookspec
def register_transports(registry: Registry[TransportFactory]) -> None:
    """Called once at startup. Register transport factories under the name an account uses
    in its ``transport`` field (``smtp``, ``file``). A factory receives the runtime and
    returns a :class:`~mail_proxy.core.contracts.transport.Transport`."""


@hookspec
def register_report_sinks(registry: Registry[ReportSink]) -> None:
    """Called once at startup. Register delivery-report sinks
    (:class:`~mail_proxy.core.contracts.reports.ReportSink`). The reporter uses, per tenant, the first
    sink (by name order) that says it is ``configured_for`` that tenant."""


@hookspec
def register_routes(routes: RouteTable) -> None:
    """Called once when the web application is built. Add HTTP routes with their scope and
    request models (:class:`~mail_proxy.core.contracts.routes.RouteTable`)."""


@hookspec
def register_commands(commands: CommandRegistry) -> None:
    """Called when the CLI starts. Add subcommands by import path (loaded only when run)."""


@hookspec
def register_services(services: Registry[ServiceFactory]) -> None:
    """Called once at startup. Register background services (pollers, cleanup jobs) by
    name; a factory receives the runtime and returns a
    :class:`~mail_proxy.core.contracts.services.Service`, or None when it has nothing to do with the
    current configuration."""


@hookspec
def authenticate(
    request: web.Request, token: str, runtime: Runtime
) -> Principal | Awaitable[Principal | None] | None:
    """Called for every request to a non-public route that carries a token. Return a
    :class:`~mail_proxy.core.contracts.model.Principal` for a token you recognise, None otherwise; an
    implementation may be ``async`` (return a coroutine) to look the token up in storage.
    Results are taken in hook order and the first non-None wins. Compare secrets in constant
    time. Raise :class:`~mail_proxy.core.contracts.errors.ApiError` to refuse with a specific code
    (expired key, inactive tenant)."""


@hookspec
def register_settings(sections: Registry[SettingsSection]) -> None:
    """Called once, before the settings are loaded (sync). Declare the plugin's own settings
    section (:class:`~mail_proxy.core.contracts.extensions.SettingsSection`); read it later
    with ``runtime.settings.section(name)``. Example: docs/plugins.md "Settings"."""


@hookspec
def register_migrations(branches: Registry[MigrationBranch]) -> None:
    """Called once at startup, before storage starts (sync). Add the plugin's tables as an
    alembic branch (:class:`~mail_proxy.core.contracts.extensions.MigrationBranch`); every
    installed branch is upgraded to its head. Example: docs/plugins.md "Tables"."""


@hookspec
def register_tenant_settings(settings: Registry[TenantSetting]) -> None:
    """Called once at startup (sync). Declare typed per-tenant configuration fields
    (:class:`~mail_proxy.core.contracts.extensions.TenantSetting`), validated by the
    plugin's model and stored generically. Example: docs/plugins.md "Tenant settings"."""


@hookspec
def register_account_fields(fields: Registry[AccountFields]) -> None:
    """Called once at startup (sync). Declare fields the plugin adds to accounts
    (:class:`~mail_proxy.core.contracts.extensions.AccountFields`), validated by its model,
    stored with the account. Example: docs/plugins.md "Account fields"."""


@hookspec
def register_event_types(event_types: Registry[EventType]) -> None:
    """Called once at startup (sync). Declare the report shape of the event types the plugin
    records (:class:`~mail_proxy.core.contracts.extensions.EventType`). Example:
    docs/plugins.md "Event types"."""


@hookspec
def register_message_steps(steps: Registry[MessageStep]) -> None:
    """Called once at startup (sync). Add
    :class:`~mail_proxy.core.contracts.extensions.MessageStep` objects whose ``async``
    methods run at enqueue, before and after fetching attachments, and before sending (where
    a step may change the message and the envelope). Example: docs/plugins.md "Message
    steps"."""


@hookspec
def on_event(event: Event, runtime: Runtime) -> None:
    """Called (sync, must not block: metrics, audit, waking a service) after an event is
    committed: delivery outcomes (``sent``, ``error``, ``deferred``, ``rate_limited``) and
    the events plugins record (``Runtime.record_events``). ``event`` is a
    :class:`~mail_proxy.core.contracts.extensions.Event`."""


@hookspec
def tenant_changed(tenant_id: str, runtime: Runtime) -> None:
    """Called after a tenant (or one of its accounts or settings) is created or changed:
    clear what you cache of it. May be ``async`` (return a coroutine)."""


@hookspec
def tenant_deleted(tenant_id: str, runtime: Runtime) -> None:
    """Called after a tenant and its core data are deleted: delete what your plugin keeps of
    it (its rows, its files) and drop what you cache. May be ``async``."""


@hookspec
def reencrypt_secrets(
    transform: Callable[[str, str], str], runtime: Runtime
) -> int | Awaitable[int] | None:
    """Called by a key rotation (``POST /instance/rotate-key``) right after the instance
    switched to the new key, and once at startup by the upgrade to place-bound ciphertexts:
    rewrite the secrets your plugin keeps in its own tables with ``new_token =
    transform(old_token, context)``, ``context`` being the place you encrypt that value for
    (``secret_context(table, column, *row_key)``; a token that needs no change comes back
    unchanged) and return how many changed. May be ``async``. Tenant settings and account
    fields are re-encrypted by the storage already; this is for anything else."""


@hookspec
def plugin_info() -> dict[str, Any] | None:  # type: ignore[empty-body]
    """Return ``{"description": ..., "edition": "ce"|"ee"}`` for ``mail-proxy plugins``."""
