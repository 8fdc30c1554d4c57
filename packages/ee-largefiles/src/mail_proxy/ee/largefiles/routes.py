"""The plugin's HTTP routes, and the check a configuration passes before it is stored.

- ``GET|PUT /instance/large-files`` (admin): the default tenant's ``large_file_config``
  (a single-tenant install); ``PUT`` keeps the stored ``storage_options`` when the body
  leaves them out and names the same ``storage_url`` (secrets are never shown, so they
  could not be sent back);
- ``POST /instance/large-files/test`` (admin): write, read and delete a probe object with
  the configuration in the body, or else the stored one (``?tenant_id=``, default tenant);
- ``GET /large-files`` (tenant): the offloaded files, ``POST /large-files/purge`` (tenant):
  delete them (all, or ``expired`` only); an admin request naming no tenant covers all;
- ``GET /files/{token}`` (public): a download (:mod:`.downloads`).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from mail_proxy.core.contracts.errors import ApiError
from mail_proxy.core.contracts.model import DEFAULT_TENANT
from mail_proxy.core.engine.tenant_settings import TenantSettings
from mail_proxy.core.web.app import (
    AUDIT_SUMMARY,
    body_of,
    ok,
    principal_of,
    query_of,
    runtime_of,
    tenant_named,
    tenant_of,
)

from .cleanup import purge
from .config import NAME, LargeFileConfig
from .downloads import download
from .locations import tenant_config
from .records import Records
from .settings import SECTION
from .storage import Location, StorageError, probe, signed_url

if TYPE_CHECKING:
    from mail_proxy.core.contracts.routes import RouteTable
    from mail_proxy.core.engine.runtime import Runtime


class TenantQuery(BaseModel):
    model_config = ConfigDict(extra="ignore")
    tenant_id: str | None = None


class FilesQuery(TenantQuery):
    expired: bool = Field(False, description="only files whose link has expired")
    limit: int = Field(200, ge=1, le=1000)
    cursor: str | None = Field(None, description="next_cursor of the previous page")


class PurgeBody(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    tenant_id: str | None = None
    expired: bool = Field(False, description="only files whose link has expired")


async def check_config(config: LargeFileConfig, tenant_id: str, runtime: Runtime) -> None:
    """The async check of ``large_file_config`` before it is stored: the storage must take a
    probe object, and links the proxy serves itself need the encryption key."""
    if not config.enabled or not config.storage_url:
        return
    location = Location(config.storage_url, dict(config.storage_options or {}))
    timeout = runtime.settings.section(SECTION).large_files_probe_timeout
    try:
        await probe(location, timeout)
    except StorageError as exc:
        raise ApiError(
            400,
            "storage_check_failed",
            f"{NAME}.storage_url cannot be used: {exc}",
            field=NAME,
        ) from None
    if config.action == "rewrite" and runtime.cipher is None:
        signs = await signed_url(location, f"{config.storage_url}/probe", config.ttl_seconds, "f")
        if signs is None:
            raise ApiError(
                400,
                "encryption_key_missing",
                f"{NAME}: links served by the proxy (this storage cannot sign its own) need an "
                "encryption key: set MAIL_PROXY_ENCRYPTION_KEY and restart",
                field=NAME,
            )


# -- the default tenant's configuration -----------------------------------------------------
async def get_instance_config(request: web.Request) -> web.Response:
    store = runtime_of(request).local(TenantSettings)
    stored = (await store.stored(DEFAULT_TENANT)).get(NAME)
    return ok({"tenant_id": DEFAULT_TENANT, NAME: store.public(NAME, stored)})


async def put_instance_config(request: web.Request) -> web.Response:
    rt = runtime_of(request)
    body: LargeFileConfig = body_of(request)
    raw = body.model_dump(mode="json")
    if "storage_options" not in body.model_fields_set:
        previous = await tenant_config(rt, DEFAULT_TENANT)
        if previous is not None and previous.storage_url == body.storage_url:
            raw["storage_options"] = previous.storage_options
    store = rt.local(TenantSettings)
    value = store.validate(NAME, raw, is_admin=True)
    await store.put(DEFAULT_TENANT, NAME, value)
    request[AUDIT_SUMMARY] = {"setting": NAME, "action": body.action, "enabled": body.enabled}
    return ok({"tenant_id": DEFAULT_TENANT, NAME: store.public(NAME, value)})


async def test_storage(request: web.Request) -> web.Response:
    rt = runtime_of(request)
    body: LargeFileConfig | None = body_of(request)
    tenant_id = query_of(request).tenant_id or DEFAULT_TENANT
    if body is not None and body.model_fields_set:
        config = body
    else:
        if tenant_id != DEFAULT_TENANT and await rt.storage.get_tenant(tenant_id) is None:
            raise ApiError(404, "tenant_not_found", f"no tenant {tenant_id!r}")
        found = await tenant_config(rt, tenant_id)
        if found is None:
            raise ApiError(404, "not_configured", f"tenant {tenant_id!r} has no {NAME}")
        config = found
    if not config.storage_url:
        raise ApiError(400, "not_configured", f"{NAME} has no storage_url to test")
    started = time.perf_counter()
    await check_config(config.model_copy(update={"enabled": True}), tenant_id, rt)
    location = Location(config.storage_url, dict(config.storage_options or {}))
    signs = await signed_url(location, f"{config.storage_url}/probe", config.ttl_seconds, "f")
    return ok(
        {
            "tenant_id": tenant_id,
            "storage_url": config.storage_url,
            "written_read_deleted": True,
            "links": "signed by the storage" if signs else "served by the proxy",
            "elapsed_ms": round((time.perf_counter() - started) * 1000, 1),
        }
    )


# -- offloaded files --------------------------------------------------------------------------
def _scope(request: web.Request) -> str | None:
    """The tenant of a request, or None for an admin request that named none (all)."""
    if principal_of(request).is_admin and not tenant_named(request):
        return None
    return tenant_of(request)


async def list_files(request: web.Request) -> web.Response:
    rt = runtime_of(request)
    query: FilesQuery = query_of(request)
    try:
        after = int(query.cursor or 0)
    except ValueError:
        raise ApiError(400, "invalid_cursor", "cursor must be a next_cursor value") from None
    rows = await rt.local(Records).listed(
        _scope(request),
        expired_at=time.time() if query.expired else None,
        after_pk=after,
        limit=query.limit,
    )
    files: list[dict[str, Any]] = [r.public() for r in rows]
    cursor = str(rows[-1].pk) if len(rows) == query.limit else None
    return ok({"files": files, "next_cursor": cursor})


async def purge_files(request: web.Request) -> web.Response:
    rt = runtime_of(request)
    body: PurgeBody = body_of(request)
    tenant = _scope(request)
    result = await purge(rt, tenant, expired_only=body.expired)
    request[AUDIT_SUMMARY] = {"expired_only": body.expired, "tenant": tenant or "*", **result}
    return ok(result)


def register(routes: RouteTable, plugin: str) -> None:
    add = routes.add
    add(
        "GET",
        "/instance/large-files",
        get_instance_config,
        scope="admin",
        plugin=plugin,
        summary="The default tenant's large_file_config (storage_options never shown)",
    )
    add(
        "PUT",
        "/instance/large-files",
        put_instance_config,
        scope="admin",
        body=LargeFileConfig,
        plugin=plugin,
        summary="Set the default tenant's large_file_config (the storage is checked first)",
    )
    add(
        "POST",
        "/instance/large-files/test",
        test_storage,
        scope="admin",
        body=LargeFileConfig,
        query=TenantQuery,
        plugin=plugin,
        summary="Write, read and delete a probe object (the body's config, or the stored one)",
    )
    add(
        "GET",
        "/large-files",
        list_files,
        scope="tenant",
        query=FilesQuery,
        plugin=plugin,
        summary="Offloaded files (an admin request naming no tenant lists every tenant's)",
    )
    add(
        "POST",
        "/large-files/purge",
        purge_files,
        scope="tenant",
        body=PurgeBody,
        plugin=plugin,
        summary="Delete offloaded files and their records (all, or expired only)",
    )
    add(
        "GET",
        "/files/{token}",
        download,
        scope="public",
        plugin=plugin,
        summary="Download an offloaded file with a signed, expiring token (Range supported)",
    )
