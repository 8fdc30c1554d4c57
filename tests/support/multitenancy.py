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
    api: Api, tenant: TenantHandle | str, account_id: str, directory: str, **fields: Any
) -> dict[str, Any]:
    """A ``file``-transport account of ``tenant`` (nothing leaves the machine), made with
    the admin token: the file transport writes on the server's disk, so a tenant's own key
    may not configure it."""
    tenant_id = tenant if isinstance(tenant, str) else tenant.id
    body = {
        "id": account_id,
        "tenant_id": tenant_id,
        "transport": "file",
        "options": {"directory": directory},
        "default": True,
        **fields,
    }
    return await api.call("POST", "/account", body)


class SyncReceiver:
    """A client application's delivery-report endpoint (real aiohttp server on loopback).

    Records every request (path, headers, raw body) and answers ``{"ok": true}``.
    """

    def __init__(self) -> None:
        self.requests: list[tuple[str, dict[str, str], bytes]] = []
        self.port = 0
        self._runner: Any = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> SyncReceiver:
        from aiohttp import web

        async def handle(request: web.Request) -> web.Response:
            self.requests.append((request.path, dict(request.headers), await request.read()))
            return web.json_response({"ok": True})

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def reported_ids(self) -> list[str]:
        """Message ids of every report item received, in order."""
        import json

        ids: list[str] = []
        for _, _, body in self.requests:
            ids += [item["id"] for item in json.loads(body).get("delivery_report", [])]
        return ids
