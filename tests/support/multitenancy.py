"""Helpers for the multitenancy tests: tenants with their keys, on top of :mod:`support.ce_api`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from support.ce_api import Api


@dataclass
class TenantHandle:
    """A tenant created through ``POST /tenant`` with the secrets shown at creation."""

    id: str
    api_key: str
    sync_secret: str
    answer: dict[str, Any]

    @property
    def headers(self) -> dict[str, str]:
        return {"X-API-Token": self.api_key}


async def create_tenant(api: Api, tenant_id: str, **fields: Any) -> TenantHandle:
    answer = await api.post("/tenant", {"id": tenant_id, **fields}, expect=201)
    return TenantHandle(tenant_id, answer["api_key"], answer["sync_secret"], answer)


async def as_tenant(
    api: Api,
    tenant: TenantHandle | str,
    method: str,
    path: str,
    json: Any = None,
    *,
    expect: int | None = 200,
    **kw: Any,
) -> dict[str, Any]:
    """One call with a tenant's key (``tenant`` may be a raw token)."""
    token = tenant if isinstance(tenant, str) else tenant.api_key
    return await api.call(method, path, json, expect=expect, headers={"X-API-Token": token}, **kw)


async def add_file_account(
    api: Api, tenant: TenantHandle, account_id: str, directory: str, **fields: Any
) -> dict[str, Any]:
    """A ``file``-transport account of ``tenant`` (nothing leaves the machine)."""
    body = {
        "id": account_id,
        "transport": "file",
        "options": {"directory": directory},
        "default": True,
        **fields,
    }
    return await as_tenant(api, tenant, "POST", "/account", body)
