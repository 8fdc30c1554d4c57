"""The multitenancy plugin (entry point ``multitenancy`` in the ``mail_proxy`` group).

Light to import: only the standard library and the hook marker at module level; routes,
storage lookups and the CLI are imported inside the hooks that need them.

- ``register_routes``: ``/tenant``, ``/tenants``, ``/tenants/sync-status``,
  ``/tenant/{id}``, ``/tenant/{id}/api-key``, ``/tenant/{id}/sync-secret`` (:mod:`.routes`);
- ``authenticate``: tenant API keys → ``Principal("tenant", id)`` (:mod:`.auth`);
- ``register_commands``: ``mail-proxy NAME tenants list|add|show|update|delete|api-key``;
- ``register_migrations``: the branch ``multitenancy`` with the table of tenant API keys
  (:mod:`.tables`, ``migrations/versions``);
- ``tenant_deleted``: a deleted tenant's API key goes with it.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mail_proxy.core.plugins import hookimpl

from .keys import looks_like_key

if TYPE_CHECKING:
    from aiohttp import web

    from mail_proxy.core.contracts.commands import CommandRegistry
    from mail_proxy.core.contracts.extensions import MigrationBranch
    from mail_proxy.core.contracts.model import Principal
    from mail_proxy.core.contracts.routes import RouteTable
    from mail_proxy.core.engine.runtime import Runtime
    from mail_proxy.core.plugins.registry import Registry

PLUGIN = "multitenancy"
VERSIONS = Path(__file__).parent / "migrations" / "versions"


@hookimpl
def plugin_info() -> dict[str, Any]:
    return {
        "description": "Multitenancy: tenants, tenant API keys (tenant scope), per-tenant "
        "endpoints, auth and quotas",
        "edition": "ee",
    }


@hookimpl
def register_routes(routes: RouteTable) -> None:
    from .routes import register

    register(routes, PLUGIN)


@hookimpl
def authenticate(
    request: web.Request, token: str, runtime: Runtime
) -> Awaitable[Principal | None] | None:
    """Recognise tenant API keys (looked up in storage: revocation is immediate).

    Tokens that cannot be a tenant key, and the admin token itself, are answered without a
    database lookup.
    """
    if not looks_like_key(token):
        return None
    admin = runtime.settings.api_token
    if admin and hmac.compare_digest(token.encode(), admin.encode()):
        return None
    from .auth import tenant_principal

    return tenant_principal(token, runtime)


@hookimpl
def register_commands(commands: CommandRegistry) -> None:
    commands.add(
        "tenants",
        "mail_proxy.ee.multitenancy.cli:app",
        help="Tenants: list, add, show, update, delete, api-key.",
        level="instance",
        plugin=PLUGIN,
    )


@hookimpl
def register_migrations(branches: Registry[MigrationBranch]) -> None:
    from mail_proxy.core.contracts.extensions import MigrationBranch

    from .tables import metadata

    branches.register(
        PLUGIN, MigrationBranch(PLUGIN, str(VERSIONS), metadata, PLUGIN), plugin=PLUGIN
    )


@hookimpl
async def tenant_deleted(tenant_id: str, runtime: Runtime) -> None:
    """Delete the tenant's API key (its other data is the storage's and the core's)."""
    from .keystore import TenantKeys

    await runtime.local(TenantKeys).revoke(tenant_id)
