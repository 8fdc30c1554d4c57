"""The Community Edition REST routes (API.md "Authenticated routes").

:func:`register` adds every route to the route table with its scope and request models;
authentication, scope, tenant binding, JSON parsing, validation and the audit entry are done
once for all routes by the core's guard (:mod:`mail_proxy.core.web.app`). Handlers live in small
modules: ``messages``, ``commands``, ``accounts``, ``instance``, ``status``, ``overview``;
request models in ``models``; the enqueue validator in ``validation``.
"""

from __future__ import annotations

from mail_proxy.core.contracts.routes import RouteTable

from . import accounts, commands, instance, messages, overview, status, tenant_settings
from .models import (
    AccountBody,
    AddMessagesBody,
    CleanupBody,
    CommandLogQuery,
    DeleteMessagesBody,
    ExportQuery,
    InstanceUpdate,
    MessagesQuery,
    OverviewQuery,
    RequeueMessagesBody,
    SuspendBody,
    TenantBody,
    TenantQuery,
)


def register(routes: RouteTable, plugin: str) -> None:
    """Add the Community Edition routes to ``routes``."""
    add = routes.add
    add(
        "GET",
        "/status",
        status.status,
        scope="any",
        plugin=plugin,
        summary="Scheduler state, version, plugins, pending messages, database",
    )

    # -- commands ------------------------------------------------------------------------
    add(
        "POST",
        "/commands/add-messages",
        messages.add_messages,
        scope="tenant",
        body=AddMessagesBody,
        query=TenantQuery,
        plugin=plugin,
        summary="Queue messages; invalid entries are listed in rejected, never block others",
    )
    add(
        "POST",
        "/commands/run-now",
        commands.run_now,
        scope="tenant",
        body=TenantBody,
        plugin=plugin,
        summary="Wake dispatch and delivery reports now",
    )
    add(
        "POST",
        "/commands/suspend",
        commands.suspend,
        scope="tenant",
        body=SuspendBody,
        query=TenantQuery,
        plugin=plugin,
        summary="Stop dispatching a tenant or one batch_code (admin, no tenant: the scheduler)",
    )
    add(
        "POST",
        "/commands/activate",
        commands.activate,
        scope="tenant",
        body=SuspendBody,
        query=TenantQuery,
        plugin=plugin,
        summary="Resume a tenant or one batch_code (admin, no tenant: the scheduler)",
    )
    add(
        "POST",
        "/commands/delete-messages",
        messages.delete_messages,
        scope="tenant",
        body=DeleteMessagesBody,
        query=TenantQuery,
        plugin=plugin,
        summary="Remove unsent messages by id",
    )
    add(
        "POST",
        "/commands/requeue-messages",
        messages.requeue_messages,
        scope="tenant",
        body=RequeueMessagesBody,
        query=TenantQuery,
        plugin=plugin,
        summary="Queue failed messages again by id (delivered recipients are not sent again)",
    )
    add(
        "GET",
        "/suspended-batches",
        overview.suspended_batches,
        scope="tenant",
        query=TenantQuery,
        plugin=plugin,
        summary="Suspended tenants and batches (admin, no tenant: every tenant)",
    )
    add(
        "GET",
        "/overview",
        overview.overview,
        scope="tenant",
        query=OverviewQuery,
        plugin=plugin,
        summary="Queue by status, recent outcomes, oldest pending age, report backlog",
    )
    add(
        "POST",
        "/commands/cleanup-messages",
        messages.cleanup_messages,
        scope="tenant",
        body=CleanupBody,
        query=TenantQuery,
        plugin=plugin,
        summary="Purge finished, fully reported messages older than a threshold",
    )

    # -- messages --------------------------------------------------------------------------
    add(
        "GET",
        "/messages",
        messages.list_messages,
        scope="tenant",
        query=MessagesQuery,
        plugin=plugin,
        summary="List messages (paginated: limit, cursor → next_cursor)",
    )
    add(
        "GET",
        "/messages/{id}",
        messages.get_message,
        scope="tenant",
        query=TenantQuery,
        plugin=plugin,
        summary="One message with subject, addresses and attachment names",
    )
    add(
        "GET",
        "/messages/{id}/events",
        messages.message_events,
        scope="tenant",
        query=TenantQuery,
        plugin=plugin,
        summary="The events of one message, in order",
    )

    # -- accounts ----------------------------------------------------------------------------
    add(
        "POST",
        "/account",
        accounts.save_account,
        scope="tenant",
        body=AccountBody,
        query=TenantQuery,
        plugin=plugin,
        summary="Add or update an account (no secrets back)",
    )
    add(
        "GET",
        "/accounts",
        accounts.list_accounts,
        scope="tenant",
        query=TenantQuery,
        plugin=plugin,
        summary="List the tenant's accounts",
    )
    add(
        "POST",
        "/account/{account_id}/test",
        accounts.probe_account,
        scope="tenant",
        query=TenantQuery,
        plugin=plugin,
        summary="Test the account's connection now (connect, TLS, login; nothing sent)",
    )
    add(
        "DELETE",
        "/account/{account_id}",
        accounts.delete_account,
        scope="tenant",
        query=TenantQuery,
        plugin=plugin,
        summary="Delete an account (409 account_has_messages while it has queued messages)",
    )

    # -- instance and audit --------------------------------------------------------------------
    add(
        "GET",
        "/instance",
        instance.get_instance,
        scope="admin",
        plugin=plugin,
        summary="Instance name and live settings",
    )
    add(
        "PUT",
        "/instance",
        instance.put_instance,
        scope="admin",
        body=InstanceUpdate,
        plugin=plugin,
        summary="Change the name and live settings (stored, applied at once)",
    )
    add(
        "POST",
        "/instance/rotate-key",
        instance.rotate_key,
        scope="admin",
        body=instance.RotateKeyBody,
        plugin=plugin,
        summary="Re-encrypt every stored secret with a new key (mail-proxy NAME rotate-key)",
    )
    add(
        "GET",
        "/command-log",
        instance.command_log,
        scope="admin",
        query=CommandLogQuery,
        plugin=plugin,
        summary="Audit trail of state-changing calls (paginated)",
    )
    add(
        "GET",
        "/command-log/export",
        instance.export_command_log,
        scope="admin",
        query=ExportQuery,
        plugin=plugin,
        summary="The audit trail as JSON lines (streamed)",
    )
    # -- plugins' per-tenant settings ----------------------------------------------------
    add(
        "GET",
        "/tenant-settings",
        tenant_settings.list_settings,
        scope="tenant",
        query=TenantQuery,
        plugin=plugin,
        summary="The tenant's plugin settings (secrets shown as <name>_set)",
    )
    add(
        "GET",
        "/tenant-settings/{name}",
        tenant_settings.get_setting,
        scope="tenant",
        query=TenantQuery,
        plugin=plugin,
        summary="One plugin setting of the tenant",
    )
    add(
        "PUT",
        "/tenant-settings/{name}",
        tenant_settings.put_setting,
        scope="tenant",
        query=TenantQuery,
        body=tenant_settings.SettingValue,
        plugin=plugin,
        summary="Replace one plugin setting, validated by its plugin",
    )
    add(
        "DELETE",
        "/tenant-settings/{name}",
        tenant_settings.delete_setting,
        scope="tenant",
        query=TenantQuery,
        plugin=plugin,
        summary="Remove one plugin setting",
    )
