"""Plugins' per-tenant settings over HTTP (``register_tenant_settings``): one route pair for
every setting any installed plugin declares, with the plugin's validation and secrets.

``GET /tenant-settings`` lists a tenant's settings, ``GET|PUT|DELETE
/tenant-settings/{name}`` reads, replaces or removes one. A tenant token acts on its own
tenant; the admin token names the tenant with ``?tenant_id=`` (default: the default tenant,
so a single-tenant install configures itself here). A name no installed plugin declares is
refused with a reason naming the plugin to install, when it is a known one.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web
from pydantic import RootModel

from mail_proxy.core.engine.tenant_settings import TenantSettings
from mail_proxy.core.web.app import (
    AUDIT_SUMMARY,
    body_of,
    ok,
    principal_of,
    runtime_of,
    tenant_of,
)


class SettingValue(RootModel[dict[str, Any]]):
    """The setting's JSON object, checked by the plugin that declares it."""


async def list_settings(request: web.Request) -> web.Response:
    rt = runtime_of(request)
    store = rt.local(TenantSettings)
    stored = await store.stored(tenant_of(request))
    return ok(
        {
            "tenant_id": tenant_of(request),
            "settings": {n: store.public(n, stored.get(n)) for n in store.names()},
        }
    )


async def get_setting(request: web.Request) -> web.Response:
    rt = runtime_of(request)
    name = request.match_info["name"]
    store = rt.local(TenantSettings)
    store.spec(name)
    stored = (await store.stored(tenant_of(request))).get(name)
    return ok({"tenant_id": tenant_of(request), name: store.public(name, stored)})


async def put_setting(request: web.Request) -> web.Response:
    rt = runtime_of(request)
    name = request.match_info["name"]
    tenant_id = tenant_of(request)
    store = rt.local(TenantSettings)
    body: SettingValue = body_of(request)
    value = store.validate(name, body.root, is_admin=principal_of(request).is_admin)
    await store.put(tenant_id, name, value)
    request[AUDIT_SUMMARY] = {"setting": name}
    return ok({"tenant_id": tenant_id, name: store.public(name, value)})


async def delete_setting(request: web.Request) -> web.Response:
    rt = runtime_of(request)
    name = request.match_info["name"]
    tenant_id = tenant_of(request)
    store = rt.local(TenantSettings)
    store.validate(name, None, is_admin=principal_of(request).is_admin)
    await store.put(tenant_id, name, None)
    request[AUDIT_SUMMARY] = {"setting": name, "removed": True}
    return ok({"tenant_id": tenant_id, name: None})
