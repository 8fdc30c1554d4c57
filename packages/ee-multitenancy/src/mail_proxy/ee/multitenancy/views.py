"""How a tenant is shown by the API: configuration yes, secrets never.

``client_auth`` comes back as its method, the basic-auth user and whether a secret is stored
(``{"method": "bearer", "has_secret": true}``); the API key and the report-signing secret as
``has_api_key`` / ``api_key_expires_at`` and ``has_sync_secret``. The plugins' tenant
settings follow, each by its name, as the core shows them (secret members as
``"<member>_set"``).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from mail_proxy.core.contracts.model import DEFAULT_SYNC_PATH

if TYPE_CHECKING:
    from mail_proxy.core.contracts.model import SyncState, Tenant

    from .keystore import ApiKey


def public_auth(auth: dict[str, Any] | None) -> dict[str, Any] | None:
    if not auth:
        return None
    method = auth.get("method", "none")
    view: dict[str, Any] = {"method": method}
    if method == "basic":
        view["user"] = auth.get("user")
    view["has_secret"] = bool(auth.get("token") or auth.get("password"))
    return view


def public_tenant(
    tenant: Tenant, key: ApiKey | None, settings: dict[str, Any] | None = None
) -> dict[str, Any]:
    """A tenant as answers show it: ``key`` is its current API key (None: it has none),
    ``settings`` the public form of its plugin settings by name."""
    view = {
        "id": tenant.id,
        "name": tenant.name,
        "active": tenant.active,
        "client_base_url": tenant.client_base_url,
        "client_sync_path": tenant.client_sync_path,
        "client_attachment_path": tenant.client_attachment_path,
        "client_auth": public_auth(tenant.client_auth),
        "rate_limits": tenant.rate_limits,
        "has_api_key": key is not None,
        "api_key_expires_at": key.expires_at if key else None,
        "has_sync_secret": bool(tenant.sync_secret),
        "created_at": tenant.created_at,
        "updated_at": tenant.updated_at,
    }
    # a setting may not shadow a tenant field (it is set through /tenant-settings/{name} then)
    view.update((k, v) for k, v in (settings or {}).items() if k not in view)
    return view


def sync_url(tenant: Tenant) -> str | None:
    """Where this tenant's reports go when it has its own endpoint (else the global URL)."""
    if not tenant.client_base_url:
        return None
    return tenant.client_base_url.rstrip("/") + (tenant.client_sync_path or DEFAULT_SYNC_PATH)


def sync_status(
    tenant: Tenant, live: dict[str, Any] | None, state: SyncState | None, backlog: int
) -> dict[str, Any]:
    """One entry of ``GET /tenants/sync-status``.

    ``live`` is the reporter's own view of the tenant (see ``Reporter.sync_status``: target,
    schedule, backlog, last error), when this instance's reporter knows the tenant already;
    otherwise the entry is built from the stored sync state.
    """
    own = sync_url(tenant)
    entry: dict[str, Any] = {
        "tenant_id": tenant.id,
        "active": tenant.active,
        "endpoint": "tenant" if own else "global",
    }
    if live is not None:
        entry.update({k: v for k, v in live.items() if k != "tenant_id"})
        return entry
    st = state
    entry.update(
        {
            "sink": None,
            "url": own,
            "last_sync_ts": st.last_sync_ts if st else None,
            "last_success_ts": st.last_success_ts if st else None,
            "next_due_ts": st.next_due_ts if st else None,
            "dnd_until": st.dnd_until if st else None,
            "dnd": bool(st and st.dnd_until and st.dnd_until > time.time()),
            "backlog": backlog,
            "failures": st.failures if st else 0,
            "last_error": st.last_error if st else None,
            "syncing": False,
        }
    )
    return entry
