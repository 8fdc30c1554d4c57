"""The isolation matrix, generated from the application's own route table.

Every non-public route of the running app (``app[ROUTES]``: core, ce, this plugin and any
other installed plugin) is tried with: no token, a garbled token, an expired key, revoked
keys (rotated and deleted), a tenant key on admin-only routes, and tenant A's key against
tenant B's resources (B named in the query, in the body, in the path; B's real ids in path
parameters). A route added later is covered without touching this file.

Tenant B's data carries a sentinel (:data:`MARK`: subjects, batch code, name, account
options, client_auth secret) that must never appear in any answer to A; B's ids carry
:data:`ID_MARK`, and an answer about one of B's ids must be identical to the answer about an
id that exists nowhere (same status, same body once the id itself is masked).

Some path parameters name nothing a tenant owns (:data:`SHARED_PARAMS`: a tenant setting's
name is the same for every tenant); they get the same value everywhere. The app runs with the
test plugin :mod:`.probe_setting`, so such a name always exists.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from ee_multitenancy import probe_setting

from mail_proxy.core.contracts.routes import RouteSpec
from mail_proxy.core.web.app import ROUTES
from mail_proxy.ee.multitenancy.keys import hash_key
from mail_proxy.ee.multitenancy.keystore import TenantKeys
from support.ce_api import Api, message
from support.multitenancy import TenantHandle, add_file_account, as_tenant, create_tenant

MARK = "zq9sentinel"
ID_MARK = "bxid"
PARAM = re.compile(r"\{([^}/:]+)(?::[^}]*)?\}")
FAR_FUTURE = time.time() + 30 * 86400
#: Path parameters that name no tenant's resource, with the value used for them.
SHARED_PARAMS = {"name": "probe_note"}


@dataclass
class World:
    api: Api
    a: TenantHandle
    b: TenantHandle
    expired: str
    rotated: str
    deleted: str
    #: B's real ids by path-parameter name.
    b_ids: dict[str, str]
    b_cursor: str
    samples: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)

    @property
    def routes(self) -> list[RouteSpec]:
        return [r for r in self.api.client.app[ROUTES] if r.scope != "public"]


async def build_world(api: Api, tmp_path: Path) -> World:
    a = await create_tenant(api, "tenant-a", name="Tenant A")
    b = await create_tenant(
        api,
        "tenant-b",
        name=f"Tenant B {MARK}",
        client_base_url=f"https://{MARK}.example.com",
        client_auth={"method": "bearer", "token": f"tok-{MARK}"},
    )
    # the same account id and the same message ids in both tenants
    await add_file_account(api, a, "shared", str(tmp_path / "out-a"))
    await add_file_account(api, b, "shared", str(tmp_path / f"out-{MARK}"))
    await add_file_account(api, b, f"{ID_MARK}-acct", str(tmp_path / f"out2-{MARK}"), default=False)
    held = {"deferred_ts": FAR_FUTURE}
    await as_tenant(
        api,
        a,
        "POST",
        "/commands/add-messages",
        {"messages": [message("m-1", **held), message("m-2", **held), message("a-only", **held)]},
    )
    await as_tenant(
        api,
        b,
        "POST",
        "/commands/add-messages",
        {"messages": [message(f"{ID_MARK}-sent", subject=f"sent {MARK}")]},
    )
    await as_tenant(api, b, "POST", "/commands/run-now", {})
    for _ in range(200):
        got = await as_tenant(api, b, "GET", f"/messages/{ID_MARK}-sent")
        if got["message"]["status"] == "sent":
            break
        await asyncio.sleep(0.02)
    else:
        raise AssertionError(f"B's message was not delivered: {got}")
    await as_tenant(
        api,
        b,
        "POST",
        "/commands/add-messages",
        {
            "messages": [
                message(m, subject=f"subject {MARK}", batch_code=f"batch-{MARK}", **held)
                for m in ("m-1", "m-2", f"{ID_MARK}-msg")
            ]
        },
    )
    reports = await as_tenant(api, b, "GET", "/reports")
    assert reports["delivery_report"], reports

    expired = await create_tenant(api, "tenant-expired")
    await api.runtime.local(TenantKeys).issue(
        "tenant-expired", hash_key(expired.api_key), time.time() - 60
    )
    rotated = await create_tenant(api, "tenant-rotated")
    await api.post("/tenant/tenant-rotated/api-key")
    deleted = await create_tenant(api, "tenant-revoked")
    await api.call("DELETE", "/tenant/tenant-revoked/api-key")

    world = World(
        api,
        a,
        b,
        expired.api_key,
        rotated.api_key,
        deleted.api_key,
        b_ids={"id": f"{ID_MARK}-msg", "account_id": f"{ID_MARK}-acct", **SHARED_PARAMS},
        b_cursor=reports["delivery_report"][-1]["cursor"],
    )
    world.samples = {
        ("POST", "/commands/add-messages"): {"messages": [message("intruder")]},
        ("POST", "/commands/run-now"): {},
        ("POST", "/commands/suspend"): {},
        ("POST", "/commands/activate"): {},
        ("POST", "/commands/delete-messages"): {"ids": [f"{ID_MARK}-msg", "m-1"]},
        ("POST", "/commands/requeue-messages"): {"ids": [f"{ID_MARK}-msg", "m-1"]},
        ("POST", "/commands/cleanup-messages"): {"older_than_seconds": 0},
        ("POST", "/account"): {"id": "intruder", "host": "smtp.example.com", "port": 25},
        ("PUT", "/tenant/{id}"): {"name": "hijacked"},
        ("POST", "/reports/ack"): {"cursor": world.b_cursor},
        ("POST", "/tenant/{id}/api-key"): {},
        ("PUT", "/tenant-settings/{name}"): {"note": "intruder"},
        ("POST", "/example/notes/{id}"): {"note": "intruder"},
    }
    return world


@pytest.fixture
async def world(
    db_url: str, aiohttp_client_factory: Any, make_settings: Any, tmp_path: Path
) -> World:
    settings = make_settings(database_url=db_url, test_mode=True)
    client = await aiohttp_client_factory(settings, plugins=probe_setting.plugins())
    return await build_world(Api(client, tmp_path), tmp_path)


def fill(path: str, values: dict[str, str], tenant_param: str | None, tenant: str) -> str:
    """``path`` with every parameter replaced: the tenant parameter (declared, or following a
    ``/tenant/`` segment) by ``tenant``, an account parameter by ``values["account_id"]``,
    anything else by ``values["id"]`` (a message id)."""

    def one(m: re.Match[str]) -> str:
        name = m.group(1)
        before = path[: m.start()].rstrip("/").rsplit("/", 1)[-1]
        if name == tenant_param or before in ("tenant", "tenants"):
            return tenant
        if name == "account_id" or before in ("account", "accounts"):
            return values["account_id"]
        return values.get(name, values["id"])

    return PARAM.sub(one, path)


async def raw(api: Api, token: str | None, method: str, path: str, **kw: Any) -> tuple[int, Any]:
    headers = {"X-API-Token": token} if token is not None else {}
    resp = await api.client.request(method, path, headers=headers, **kw)
    text = await resp.text()
    try:
        return resp.status, json.loads(text)
    except ValueError:
        return resp.status, text


def _body_kw(spec: RouteSpec, body: dict[str, Any] | None) -> dict[str, Any]:
    if spec.method in ("POST", "PUT", "PATCH", "DELETE") and spec.body is not None:
        return {"json": body if body is not None else {}}
    return {}


# -- authentication ------------------------------------------------------------------------------
async def test_every_route_refuses_missing_bad_expired_and_revoked_tokens(world: World) -> None:
    api, failures = world.api, []
    routes = world.routes
    assert len(routes) >= 20, [f"{r.method} {r.path}" for r in routes]
    garbled = [
        ("missing", None, "missing_token"),
        ("garbled", "garbled!", "invalid_token"),
        ("key-shaped", "A" * 43, "invalid_token"),
        ("expired", world.expired, "token_expired"),
        ("rotated", world.rotated, "invalid_token"),
        ("revoked", world.deleted, "invalid_token"),
    ]
    for spec in routes:
        path = fill(spec.path, world.b_ids, spec.tenant_param, world.b.id)
        sample = world.samples.get((spec.method, spec.path))
        for label, token, code in garbled:
            status, answer = await raw(api, token, spec.method, path, **_body_kw(spec, sample))
            if status != 401 or not isinstance(answer, dict) or answer.get("code") != code:
                failures.append(f"{spec.method} {spec.path} [{label}]: {status} {answer}")
            elif answer.get("ok") is not False or MARK in json.dumps(answer):
                failures.append(f"{spec.method} {spec.path} [{label}]: bad body {answer}")
    assert not failures, "\n".join(failures)


async def test_tenant_key_on_admin_routes_is_403(world: World) -> None:
    api, failures = world.api, []
    admin_routes = [r for r in world.routes if r.scope == "admin"]
    assert {("POST", "/tenant"), ("GET", "/tenants"), ("DELETE", "/tenant/{id}")} <= {
        (r.method, r.path) for r in admin_routes
    }
    for spec in admin_routes:
        for target in (world.a.id, world.b.id):  # its own tenant and another one
            path = fill(spec.path, world.b_ids, spec.tenant_param, target)
            sample = world.samples.get((spec.method, spec.path))
            status, answer = await raw(
                api, world.a.api_key, spec.method, path, **_body_kw(spec, sample)
            )
            if status != 403 or answer.get("code") != "admin_only" or MARK in json.dumps(answer):
                failures.append(f"{spec.method} {spec.path} ({target}): {status} {answer}")
    assert not failures, "\n".join(failures)
    await assert_b_untouched(world)


# -- tenant A against tenant B ---------------------------------------------------------------
async def test_tenant_key_never_reaches_another_tenant(world: World) -> None:
    """B named in the query, in the body or in the path: 403/404, never B's data."""
    api, failures = world.api, []
    for spec in world.routes:
        if spec.scope == "admin":
            continue
        sample = world.samples.get((spec.method, spec.path))
        body_model = spec.body if spec.method in ("POST", "PUT", "PATCH", "DELETE") else None
        variants: list[tuple[str, dict[str, Any]]] = [
            ("query", {"params": {"tenant_id": world.b.id}, **_body_kw(spec, sample)})
        ]
        if body_model is not None and "tenant_id" in body_model.model_fields:
            variants.append(("body", {"json": {**(sample or {}), "tenant_id": world.b.id}}))
        for label, kw in variants:
            path = fill(spec.path, world.b_ids, spec.tenant_param, world.b.id)
            status, answer = await raw(api, world.a.api_key, spec.method, path, **kw)
            text = json.dumps(answer)
            if MARK in text:
                failures.append(f"{spec.method} {spec.path} [{label}]: B's data leaked: {text}")
            allowed = {403, 404}
            if spec.scope == "any":
                allowed = {200}  # not a tenant resource: the token's own view
            elif sample is None and body_model is not None:
                allowed.add(400)  # no valid sample body known for a new route
            if status not in allowed:
                failures.append(f"{spec.method} {spec.path} [{label}]: {status} {text}")
    assert not failures, "\n".join(failures)
    await assert_b_untouched(world)


async def test_ids_of_another_tenant_look_like_missing_ids(world: World) -> None:
    """A's key with B's real ids in the path answers exactly as for ids that exist nowhere."""
    api, failures = world.api, []
    with_params = [r for r in world.routes if PARAM.search(r.path) and r.scope != "public"]
    assert with_params
    for spec in with_params:
        sample = world.samples.get((spec.method, spec.path))
        for tenant_named in (False, True):
            answers = []
            nowhere = {
                k: v if k in SHARED_PARAMS else f"{v}-nowhere-{uuid.uuid4().hex[:6]}"
                for k, v in world.b_ids.items()
            }
            for ids, tenant in (
                (world.b_ids, world.b.id),
                (nowhere, f"nowhere-{uuid.uuid4().hex[:6]}"),
            ):
                path = fill(spec.path, ids, spec.tenant_param, tenant)
                params = {"tenant_id": world.b.id} if tenant_named else {}
                status, answer = await raw(
                    api, world.a.api_key, spec.method, path, params=params, **_body_kw(spec, sample)
                )
                text = json.dumps(answer)
                for key, value in [*ids.items(), ("tenant", tenant)]:
                    if key not in SHARED_PARAMS:
                        text = text.replace(value, "<ID>")
                answers.append((status, text))
            (s1, t1), (s2, t2) = answers
            label = f"{spec.method} {spec.path} (tenant named: {tenant_named})"
            if MARK in t1:
                failures.append(f"{label}: B's data leaked: {t1}")
            if (s1, t1) != (s2, t2):
                failures.append(f"{label}: distinguishable: {s1} {t1} vs {s2} {t2}")
            # B's id is refused or not found; a GET may instead show the empty view it shows
            # for an id that exists nowhere (identical, checked above). A path naming no
            # tenant's resource acts on A's own tenant.
            owned = [p for p in PARAM.findall(spec.path) if p not in SHARED_PARAMS]
            empty_view = spec.method == "GET" and s1 == 200
            if spec.scope != "any" and owned and s1 not in (403, 404) and not empty_view:
                failures.append(f"{label}: {s1} {t1}")
    assert not failures, "\n".join(failures)
    await assert_b_untouched(world)


async def test_own_views_never_show_the_other_tenant(world: World) -> None:
    """Every GET a tenant may call, for its own tenant: only its own rows."""
    api, failures = world.api, []
    for spec in world.routes:
        if spec.method != "GET" or spec.scope == "admin":
            continue
        own_ids = {"id": "m-1", "account_id": "shared", **SHARED_PARAMS}
        path = fill(spec.path, own_ids, spec.tenant_param, world.a.id)
        status, answer = await raw(api, world.a.api_key, "GET", path)
        text = json.dumps(answer)
        if status != 200 or MARK in text or ID_MARK in text or world.b.id in text:
            failures.append(f"GET {spec.path}: {status} {text}")
    assert not failures, "\n".join(failures)
    # and the shared ids resolve to A's own rows
    msg = await as_tenant(api, world.a, "GET", "/messages/m-1")
    assert msg["message"]["tenant_id"] == world.a.id and MARK not in json.dumps(msg)
    ids = [m["id"] for m in (await as_tenant(api, world.a, "GET", "/messages"))["messages"]]
    assert sorted(ids) == ["a-only", "m-1", "m-2"]
    accounts = (await as_tenant(api, world.a, "GET", "/accounts"))["accounts"]
    assert [(x["tenant_id"], x["id"]) for x in accounts] == [(world.a.id, "shared")]


async def assert_b_untouched(world: World) -> None:
    """After A's attempts: B's messages, accounts, reports and configuration are intact."""
    api = world.api
    msgs = await api.get("/messages", params={"tenant_id": world.b.id})
    by_id = {m["id"]: m for m in msgs["messages"]}
    assert set(by_id) == {"m-1", "m-2", f"{ID_MARK}-msg", f"{ID_MARK}-sent"}, by_id
    assert by_id["m-1"]["status"] == "scheduled"
    accounts = await api.get("/accounts", params={"tenant_id": world.b.id})
    assert sorted(x["id"] for x in accounts["accounts"]) == [f"{ID_MARK}-acct", "shared"]
    tenant = (await api.get(f"/tenant/{world.b.id}"))["tenant"]
    assert tenant["name"] == f"Tenant B {MARK}" and tenant["suspended_batches"] == []
    assert tenant["has_api_key"] and tenant["client_auth"]["has_secret"]
    reports = await as_tenant(api, world.b, "GET", "/reports")
    assert reports["delivery_report"], "A acknowledged B's reports"
    # B's key still works, and A's did not create anything in B
    await as_tenant(api, world.b, "GET", "/tenant/tenant-b")
    assert "intruder" not in json.dumps(msgs) + json.dumps(accounts)
