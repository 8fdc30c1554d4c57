"""The plugin's HTTP routes (API.md "Plugin routes: bounce").

Admin: ``GET|PUT /instance/bounce`` (the instance's mailbox and return path, with the pollers'
status), ``POST /instance/reload-bounce`` (apply the stored configuration now),
``POST /instance/bounce/test`` (log in and count the folder's messages).

Tenant scope: ``GET /suppressions``, ``POST /suppressions`` (add by hand),
``DELETE /suppressions/{address}``: a tenant token acts on its own list, the admin names the
tenant with ``tenant_id`` (default: the default tenant).
"""

from __future__ import annotations

import time
from typing import Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from mail_proxy.core.contracts.errors import ApiError
from mail_proxy.core.contracts.model import DEFAULT_TENANT
from mail_proxy.core.contracts.routes import RouteTable
from mail_proxy.core.engine.tenant_settings import TenantSettings
from mail_proxy.core.web.app import (
    AUDIT_SUMMARY,
    body_of,
    ok,
    query_of,
    runtime_of,
    tenant_of,
)

from .config import NAME, BounceConfig, public_view
from .service import BounceService
from .suppression import Suppression, Suppressions, normalize

#: Stands for the stored password while a partial PUT is validated (never stored).
_KEPT = "\x00kept"


class BounceBody(BaseModel):
    """``PUT /instance/bounce``: the fields to change; the others keep their value (an
    omitted ``password`` keeps the stored one, ``null`` removes it)."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool | None = None
    host: str | None = None
    port: int | None = None
    user: str | None = None
    password: str | None = None
    folder: str | None = None
    use_tls: bool | None = None
    starttls: bool | None = None
    poll_interval: float | None = None
    return_path: str | None = None
    processed_folder: str | None = None


class SuppressionBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    address: str = Field(max_length=320)
    note: str | None = Field(default=None, max_length=500)
    tenant_id: str | None = None

    @field_validator("address")
    @classmethod
    def _address(cls, value: str) -> str:
        value = value.strip()
        local, at, domain = value.rpartition("@")
        if not at or not local or "." not in domain or any(c.isspace() for c in value):
            raise ValueError("expected an email address (name@example.com)")
        if any(ord(c) < 32 or c in "<>," for c in value):
            raise ValueError("expected a bare address, without name, brackets or commas")
        return value


class SuppressionQuery(BaseModel):
    tenant_id: str | None = None
    limit: int = Field(default=100, ge=1, le=1000)
    cursor: str | None = None


# -- the instance's configuration --------------------------------------------------------
def _service(request: web.Request) -> BounceService:
    return runtime_of(request).local(BounceService)


async def get_bounce(request: web.Request) -> web.Response:
    rt = runtime_of(request)
    stored = (await rt.local(TenantSettings).stored(DEFAULT_TENANT)).get(NAME)
    service = _service(request)
    return ok(
        {
            "bounce": public_view(stored),
            "mailboxes": service.status(),
            "config_error": service.last_reload_error,
        }
    )


async def put_bounce(request: web.Request) -> web.Response:
    rt = runtime_of(request)
    store = rt.local(TenantSettings)
    stored: dict[str, Any] = dict((await store.stored(DEFAULT_TENANT)).get(NAME) or {})
    body: BounceBody = body_of(request)
    given = body.model_dump(exclude_unset=True)
    merged = {k: v for k, v in stored.items() if k != "password"}
    merged.update({k: v for k, v in given.items() if k != "password"})
    sealed = None
    if "password" in given:
        merged["password"] = given["password"] or None
    elif stored.get("password") is not None:
        merged["password"], sealed = _KEPT, stored["password"]
    value = store.validate(NAME, merged, is_admin=True)
    if value is not None and sealed is not None:
        value["password"] = sealed
    await store.put(DEFAULT_TENANT, NAME, value)  # tenant_changed: the pollers follow
    request[AUDIT_SUMMARY] = {"changed": sorted(given)}
    service = _service(request)
    return ok({"bounce": public_view(value), "mailboxes": service.status()})


async def reload_bounce(request: web.Request) -> web.Response:
    service = _service(request)
    await service.reload()
    if service.last_reload_error:
        raise ApiError(409, "bounce_config_unreadable", service.last_reload_error)
    return ok({"mailboxes": service.status()})


async def test_bounce(request: web.Request) -> web.Response:
    """Test the stored configuration, or it with the body's fields changed (not stored)."""
    from .probe import probe

    rt = runtime_of(request)
    current = await rt.local(TenantSettings).get(DEFAULT_TENANT, NAME)
    values = current.model_dump() if isinstance(current, BounceConfig) else {}
    body: BounceBody = body_of(request)
    values.update(body.model_dump(exclude_unset=True))
    values["enabled"] = False  # a test needs no complete configuration to say what is missing
    try:
        config = BounceConfig.model_validate(values)
    except ValidationError as exc:
        err = exc.errors(include_url=False, include_input=False)[0]
        where = ".".join(str(p) for p in err["loc"]) or "bounce"
        raise ApiError(400, "invalid_setting", f"{where}: {err['msg']}", field=where) from None
    return ok(await probe(config))


# -- suppressions ----------------------------------------------------------------------------
async def list_suppressions(request: web.Request) -> web.Response:
    rt = runtime_of(request)
    query: SuppressionQuery = query_of(request)
    tenant_id = tenant_of(request)
    rows = await rt.local(Suppressions).page(tenant_id, query.limit + 1, query.cursor)
    more = len(rows) > query.limit
    rows = rows[: query.limit]
    return ok(
        {
            "tenant_id": tenant_id,
            "suppressions": [r.public() for r in rows],
            "next_cursor": rows[-1].address if more and rows else None,
        }
    )


async def add_suppression(request: web.Request) -> web.Response:
    rt = runtime_of(request)
    body: SuppressionBody = body_of(request)
    tenant_id = tenant_of(request)
    now = time.time()
    entry = Suppression(
        tenant_id, body.address, "manual", None, "manual", body.note, None, now, now
    )
    store = rt.local(Suppressions)
    await store.add([entry])
    request[AUDIT_SUMMARY] = {"address": normalize(body.address)}
    found = await store.get(tenant_id, body.address)
    return ok({"suppression": found.public() if found else entry.public()})


async def delete_suppression(request: web.Request) -> web.Response:
    rt = runtime_of(request)
    tenant_id = tenant_of(request)
    address = request.match_info["address"]
    request[AUDIT_SUMMARY] = {"address": normalize(address)}
    if not await rt.local(Suppressions).remove(tenant_id, address):
        raise ApiError(
            404, "suppression_not_found", f"{normalize(address)} is not on the suppression list"
        )
    return ok({"tenant_id": tenant_id, "removed": normalize(address)})


def register(routes: RouteTable, plugin: str) -> None:
    add = routes.add
    add(
        "GET",
        "/instance/bounce",
        get_bounce,
        scope="admin",
        plugin=plugin,
        summary="Bounce mailbox and return path of the instance, with the pollers' status",
    )
    add(
        "PUT",
        "/instance/bounce",
        put_bounce,
        scope="admin",
        plugin=plugin,
        body=BounceBody,
        summary="Change the instance's bounce configuration (applied at once)",
    )
    add(
        "POST",
        "/instance/reload-bounce",
        reload_bounce,
        scope="admin",
        plugin=plugin,
        summary="Apply the stored bounce configuration now",
    )
    add(
        "POST",
        "/instance/bounce/test",
        test_bounce,
        scope="admin",
        plugin=plugin,
        body=BounceBody,
        summary="Log in to the bounce mailbox and count its messages",
    )
    add(
        "GET",
        "/suppressions",
        list_suppressions,
        scope="tenant",
        plugin=plugin,
        query=SuppressionQuery,
        summary="The tenant's suppressed addresses",
    )
    add(
        "POST",
        "/suppressions",
        add_suppression,
        scope="tenant",
        plugin=plugin,
        body=SuppressionBody,
        summary="Suppress an address by hand",
    )
    add(
        "DELETE",
        "/suppressions/{address}",
        delete_suppression,
        scope="tenant",
        plugin=plugin,
        summary="Accept messages to an address again",
    )
