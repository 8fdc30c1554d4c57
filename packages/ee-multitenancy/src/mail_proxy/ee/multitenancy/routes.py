"""The tenant management routes (API.md "Plugin routes", multitenancy).

Scope is declared per route and enforced by the core's guard, never here: ``admin`` routes
refuse tenant tokens (403), and ``/tenant/{id}`` routes are ``tenant``-scoped with
``tenant_param="id"``, so a tenant token naming another tenant is refused before the handler
runs and the handler reads the bound tenant with :func:`tenant_of`.

Changes to one tenant are read-modify-write of its row (the storage saves whole tenants).
They are serialised on this instance by one lock so that, for example, a configuration update
cannot write back a report-signing secret that a concurrent rotation has just replaced.
Between instances sharing a database the window is the few milliseconds between the read and
the write of one request (last write wins). API keys are not in that row: they live in the
plugin's own table (:mod:`.keystore`), and a plugin's tenant settings in the core's generic
store (:mod:`.settings`).

After every change the tenant's owners are told (``runtime.tenant_changed`` /
``tenant_deleted``): each one clears what it caches of the tenant, and on deletion deletes what
it keeps of it (this plugin: the key, see :mod:`.plugin`).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import time
from typing import Any

from aiohttp import web

from mail_proxy.core.contracts.errors import ApiError
from mail_proxy.core.contracts.model import DEFAULT_TENANT, Tenant
from mail_proxy.core.contracts.routes import RouteTable
from mail_proxy.core.engine.reporter import find_reporter
from mail_proxy.core.engine.runtime import Runtime
from mail_proxy.core.web.app import (
    AUDIT_SUMMARY,
    body_of,
    ok,
    principal_of,
    query_of,
    runtime_of,
    tenant_of,
)

from . import settings
from .keys import hash_key, new_api_key, new_sync_secret
from .keystore import TenantKeys
from .models import (
    ADMIN_ONLY_FIELDS,
    ApiKeyBody,
    ClientAuth,
    TenantCreate,
    TenantsQuery,
    TenantUpdate,
    dump,
)
from .settings import field_error as _field_error
from .views import public_tenant, sync_status

_CURSOR_PREFIX = "t1:"


def register(routes: RouteTable, plugin: str) -> None:
    """Add the tenant routes to ``routes``."""
    add = routes.add
    add(
        "POST",
        "/tenant",
        create_tenant,
        scope="admin",
        body=TenantCreate,
        plugin=plugin,
        summary="Create a tenant; its api_key and sync_secret are returned once",
        success=201,
    )
    add(
        "GET",
        "/tenants",
        list_tenants,
        scope="admin",
        query=TenantsQuery,
        plugin=plugin,
        summary="List tenants (paginated: limit, cursor → next_cursor; no secrets)",
    )
    add(
        "GET",
        "/tenants/sync-status",
        list_sync_status,
        scope="admin",
        query=TenantsQuery,
        plugin=plugin,
        summary="Delivery-report sync state and backlog of every tenant",
    )
    add(
        "GET",
        "/tenant/{id}",
        get_tenant,
        scope="tenant",
        tenant_param="id",
        plugin=plugin,
        summary="One tenant's configuration (no secrets)",
    )
    add(
        "PUT",
        "/tenant/{id}",
        update_tenant,
        scope="tenant",
        tenant_param="id",
        body=TenantUpdate,
        plugin=plugin,
        summary="Change the fields given (null clears one, plugin settings included); "
        "active, rate_limits and admin-only plugin settings need the admin token",
    )
    add(
        "DELETE",
        "/tenant/{id}",
        delete_tenant,
        scope="admin",
        tenant_param="id",
        plugin=plugin,
        summary="Delete a tenant with its accounts, messages, events and cached attachments",
    )
    add(
        "POST",
        "/tenant/{id}/api-key",
        create_api_key,
        scope="admin",
        tenant_param="id",
        body=ApiKeyBody,
        plugin=plugin,
        summary="Issue a new API key (shown once); the previous key stops working at once",
    )
    add(
        "DELETE",
        "/tenant/{id}/api-key",
        revoke_api_key,
        scope="admin",
        tenant_param="id",
        plugin=plugin,
        summary="Revoke the tenant's API key at once",
    )
    add(
        "POST",
        "/tenant/{id}/sync-secret",
        rotate_sync_secret,
        scope="admin",
        tenant_param="id",
        plugin=plugin,
        summary="Issue a new report-signing secret (shown once) replacing the previous one",
    )


# -- helpers ----------------------------------------------------------------------------------
class _TenantLock(asyncio.Lock):
    """Serialises tenant changes on one runtime (``runtime.local(_TenantLock)``)."""

    def __init__(self, runtime: Runtime) -> None:
        super().__init__()


def _lock(rt: Runtime) -> asyncio.Lock:
    return rt.local(_TenantLock)


async def _load(rt: Runtime, tenant_id: str) -> Tenant:
    tenant = await rt.storage.get_tenant(tenant_id)
    if tenant is None:
        raise ApiError(404, "tenant_not_found", f"no tenant {tenant_id!r}")
    return tenant


def _future(value: float | None, field: str) -> float | None:
    if value is not None and value <= time.time():
        raise _field_error(field, "must be in the future")
    return value


def resolve_auth(new: ClientAuth | None, old: dict[str, Any] | None) -> dict[str, Any] | None:
    """The ``client_auth`` to store: ``new``, with an omitted secret kept from ``old`` when
    the method (and for basic, the user) is unchanged."""
    if new is None:
        return None
    data = new.model_dump(exclude_none=True)
    old = old or {}
    same = old.get("method") == new.method
    if new.method == "bearer" and new.token is None:
        if not (same and old.get("token")):
            raise _field_error("client_auth.token", "method 'bearer' needs a token")
        data["token"] = old["token"]
    if new.method == "basic" and new.password is None:
        if not (same and old.get("password") and old.get("user") == new.user):
            raise _field_error("client_auth.password", "method 'basic' needs a password")
        data["password"] = old["password"]
    return data


def _encode_cursor(tenant_id: str) -> str:
    return base64.urlsafe_b64encode(f"{_CURSOR_PREFIX}{tenant_id}".encode()).decode().rstrip("=")


def _decode_cursor(cursor: str | None) -> str | None:
    if not cursor:
        return None
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (ValueError, binascii.Error, UnicodeDecodeError):
        text = ""
    if not text.startswith(_CURSOR_PREFIX):
        raise ApiError(400, "invalid_cursor", "the cursor is not one this server returned")
    return text[len(_CURSOR_PREFIX) :]


async def _page(rt: Runtime, q: TenantsQuery) -> tuple[list[Tenant], str | None]:
    """One page of tenants in id order."""
    after = _decode_cursor(q.cursor)
    tenants = [t for t in await rt.storage.list_tenants() if after is None or t.id > after]
    tenants.sort(key=lambda t: t.id)
    if len(tenants) > q.limit:
        tenants = tenants[: q.limit]
        return tenants, _encode_cursor(tenants[-1].id)
    return tenants, None


async def _view(rt: Runtime, tenant: Tenant) -> dict[str, Any]:
    """One tenant as answers show it, with its key and its plugin settings."""
    key = await rt.local(TenantKeys).of_tenant(tenant.id)
    return public_tenant(tenant, key, await settings.shown(rt, tenant.id))


# -- handlers -------------------------------------------------------------------------------------
async def create_tenant(request: web.Request) -> web.Response:
    """Create a tenant with its first API key and its report-signing secret (both shown once)."""
    rt = runtime_of(request)
    body: TenantCreate = body_of(request)
    extra = dict(body.model_extra or {})
    settings.check_names(rt, extra)  # the admin may set every setting
    expires = _future(body.api_key_expires_at, "api_key_expires_at")
    auth = resolve_auth(body.client_auth, None)
    values = settings.validate(rt, extra, is_admin=True)
    api_key, sync_secret = new_api_key(), new_sync_secret()
    async with _lock(rt):
        if body.id == DEFAULT_TENANT or await rt.storage.get_tenant(body.id) is not None:
            raise ApiError(409, "tenant_exists", f"a tenant {body.id!r} already exists")
        tenant = Tenant(
            id=body.id,
            name=body.name,
            active=body.active,
            client_base_url=body.client_base_url,
            client_sync_path=body.client_sync_path,
            client_attachment_path=body.client_attachment_path,
            client_auth=auth,
            rate_limits=dump(body.rate_limits),
            sync_secret=sync_secret,
        )
        saved = await rt.storage.save_tenant(tenant)
        try:
            key = await rt.local(TenantKeys).issue(body.id, hash_key(api_key), expires)
            await settings.save(rt, body.id, {n: v for n, v in values.items() if v is not None})
        except Exception:
            # all or nothing: a tenant without its key would be stuck (POST again: 409)
            await _delete(rt, body.id)
            raise
    await rt.tenant_changed(body.id)
    request[AUDIT_SUMMARY] = {"tenant_id": body.id, "created": True}
    view = public_tenant(saved, key, await settings.shown(rt, body.id))
    return ok({"tenant": view, "api_key": api_key, "sync_secret": sync_secret}, status=201)


async def list_tenants(request: web.Request) -> web.Response:
    rt = runtime_of(request)
    tenants, next_cursor = await _page(rt, query_of(request))
    keys = await rt.local(TenantKeys).of_tenants([t.id for t in tenants])
    views = [public_tenant(t, keys.get(t.id), await settings.shown(rt, t.id)) for t in tenants]
    return ok({"tenants": views, "next_cursor": next_cursor})


async def list_sync_status(request: web.Request) -> web.Response:
    """Per tenant: where reports go, how many wait, and how the last attempts went (the
    reporter's live view on this instance, or the stored state for a tenant it has not
    picked up yet)."""
    rt = runtime_of(request)
    tenants, next_cursor = await _page(rt, query_of(request))
    reporter = find_reporter(rt)
    live = {e["tenant_id"]: e for e in reporter.sync_status()} if reporter is not None else {}
    backlog: dict[str, int] | None = None
    entries = []
    for tenant in tenants:
        if tenant.id in live:
            entries.append(sync_status(tenant, live[tenant.id], None, 0))
            continue
        if backlog is None:
            backlog = await rt.storage.report_backlog()
        state = await rt.storage.get_sync_state(tenant.id)
        entries.append(sync_status(tenant, None, state, backlog.get(tenant.id, 0)))
    return ok({"tenants": entries, "next_cursor": next_cursor})


async def get_tenant(request: web.Request) -> web.Response:
    rt = runtime_of(request)
    tenant = await _load(rt, tenant_of(request))
    view = await _view(rt, tenant)
    view["suspended_batches"] = await rt.storage.suspended_batches(tenant.id)
    return ok({"tenant": view})


async def update_tenant(request: web.Request) -> web.Response:
    """Change only the fields present in the body; ``null`` clears a field."""
    rt = runtime_of(request)
    body: TenantUpdate = body_of(request)
    is_admin = principal_of(request).is_admin
    given = set(body.model_fields_set)
    extra = dict(body.model_extra or {})
    admin_settings = settings.check_names(rt, extra)
    refused = sorted((given & ADMIN_ONLY_FIELDS) | set(admin_settings))
    if refused and not is_admin:
        raise ApiError(
            403,
            "admin_only_field",
            f"only the admin token may change {', '.join(refused)}",
            fields=refused,
        )
    values = settings.validate(rt, extra, is_admin=is_admin)
    tenant_id = tenant_of(request)
    async with _lock(rt):
        tenant = await _load(rt, tenant_id)
        was_active = tenant.active
        for name in given:
            if name == "client_auth":
                tenant.client_auth = resolve_auth(body.client_auth, tenant.client_auth)
            elif name == "rate_limits":
                tenant.rate_limits = dump(body.rate_limits)
            else:
                setattr(tenant, name, getattr(body, name))
        saved = await rt.storage.save_tenant(tenant)
        await settings.save(rt, tenant_id, values)
    await rt.tenant_changed(tenant_id)
    if saved.active and not was_active:
        rt.wake_dispatcher()
    request[AUDIT_SUMMARY] = {"tenant_id": tenant_id, "changed": sorted(given | set(extra))}
    return ok({"tenant": await _view(rt, saved)})


async def delete_tenant(request: web.Request) -> web.Response:
    """Delete a tenant and everything it owns (accounts, messages, events, sync state,
    suspensions, rate-limit history, cached attachments). ``default`` cannot be deleted."""
    rt = runtime_of(request)
    tenant_id = request.match_info["id"]
    if tenant_id == DEFAULT_TENANT:
        raise ApiError(409, "default_tenant", "the default tenant cannot be deleted")
    async with _lock(rt):
        await _load(rt, tenant_id)
        await _delete(rt, tenant_id)
    request[AUDIT_SUMMARY] = {"tenant_id": tenant_id}
    return ok({"tenant_id": tenant_id, "removed": True})


async def _delete(rt: Runtime, tenant_id: str) -> None:
    """The storage deletes the tenant's data, then every owner what it keeps of the tenant
    (its key: this plugin's ``tenant_deleted``; cached attachments: the core's)."""
    await rt.storage.delete_tenant(tenant_id)
    await rt.tenant_deleted(tenant_id)


async def create_api_key(request: web.Request) -> web.Response:
    """Issue a new key; the previous one stops working on the next request, everywhere."""
    rt = runtime_of(request)
    tenant_id = request.match_info["id"]
    body: ApiKeyBody = body_of(request)
    expires = _future(body.expires_at, "expires_at")
    api_key = new_api_key()
    async with _lock(rt):
        await _load(rt, tenant_id)
        await rt.local(TenantKeys).issue(tenant_id, hash_key(api_key), expires)
    request[AUDIT_SUMMARY] = {"tenant_id": tenant_id, "expires_at": expires}
    return ok({"tenant_id": tenant_id, "api_key": api_key, "expires_at": expires})


async def revoke_api_key(request: web.Request) -> web.Response:
    rt = runtime_of(request)
    tenant_id = request.match_info["id"]
    async with _lock(rt):
        await _load(rt, tenant_id)
        had_key = await rt.local(TenantKeys).revoke(tenant_id)
    request[AUDIT_SUMMARY] = {"tenant_id": tenant_id, "revoked": had_key}
    return ok({"tenant_id": tenant_id, "revoked": had_key})


async def rotate_sync_secret(request: web.Request) -> web.Response:
    """A new report-signing secret; reports are signed with it from the next request on."""
    rt = runtime_of(request)
    tenant_id = request.match_info["id"]
    secret = new_sync_secret()
    async with _lock(rt):
        tenant = await _load(rt, tenant_id)
        tenant.sync_secret = secret
        await rt.storage.save_tenant(tenant)
    await rt.tenant_changed(tenant_id)
    request[AUDIT_SUMMARY] = {"tenant_id": tenant_id}
    return ok({"tenant_id": tenant_id, "sync_secret": secret})
