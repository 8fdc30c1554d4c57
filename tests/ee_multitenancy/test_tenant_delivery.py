"""Tenants in the engine: queues, rate limits, quotas, suspension, inactivity and reports stay
per tenant, even when two tenants use the same account id and the same message ids.

Real parts: aiosmtpd servers on loopback (one per tenant), real sync endpoints (aiohttp on
loopback), the real app in test mode (the dispatcher runs on ``run-now``).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from mail_proxy.ce.reports.signing import SignatureError, verify
from mail_proxy.core.testing.smtp import SmtpTestServer
from support.ce_api import Api, message, start_api
from support.multitenancy import SyncReceiver, TenantHandle, as_tenant, create_tenant

IDS = ["m-1", "m-2", "m-3"]


@pytest.fixture
async def api(db_url: str, aiohttp_client_factory: Any, make_settings: Any, tmp_path: Path) -> Api:
    return await start_api(
        aiohttp_client_factory,
        make_settings,
        db_url,
        tmp_path,
        fetch_allow_networks=["127.0.0.0/8"],
    )


@pytest.fixture
async def smtp_pair() -> AsyncIterator[tuple[SmtpTestServer, SmtpTestServer]]:
    async with SmtpTestServer() as one, SmtpTestServer() as two:
        yield one, two


async def smtp_account(
    api: Api, tenant: TenantHandle, server: SmtpTestServer, account_id: str = "main", **fields: Any
) -> None:
    body = {"id": account_id, "host": "127.0.0.1", "port": server.port, "default": True, **fields}
    await as_tenant(api, tenant, "POST", "/account", body)


async def send(api: Api, tenant: TenantHandle, *messages: dict[str, Any]) -> None:
    answer = await as_tenant(
        api, tenant, "POST", "/commands/add-messages", {"messages": list(messages)}
    )
    assert answer["queued"] == len(messages), answer


async def statuses(api: Api, tenant: TenantHandle) -> dict[str, str]:
    listed = await as_tenant(api, tenant, "GET", "/messages")
    return {m["id"]: m["status"] for m in listed["messages"]}


async def wait_statuses(
    api: Api, tenant: TenantHandle, wanted: dict[str, str], timeout: float = 10.0
) -> None:
    deadline = time.monotonic() + timeout
    while True:
        got = await statuses(api, tenant)
        if all(got.get(k) == v for k, v in wanted.items()):
            return
        assert time.monotonic() < deadline, f"{tenant.id}: {got}, wanted {wanted}"
        await asyncio.sleep(0.03)


async def test_same_account_and_message_ids_do_not_collide(
    api: Api, smtp_pair: tuple[SmtpTestServer, SmtpTestServer]
) -> None:
    server_a, server_b = smtp_pair
    a = await create_tenant(api, "tenant-a")
    b = await create_tenant(api, "tenant-b")
    await smtp_account(api, a, server_a)
    await smtp_account(api, b, server_b)
    await send(api, a, *[message(i, subject=f"A {i}") for i in IDS])
    await send(api, b, *[message(i, subject=f"B {i}") for i in IDS])
    await as_tenant(api, a, "POST", "/commands/run-now", {})
    await wait_statuses(api, a, dict.fromkeys(IDS, "sent"))
    await wait_statuses(api, b, dict.fromkeys(IDS, "sent"))
    got_a = sorted(m.message["Subject"] for m in server_a.messages)
    got_b = sorted(m.message["Subject"] for m in server_b.messages)
    assert got_a == [f"A {i}" for i in IDS] and got_b == [f"B {i}" for i in IDS]
    ids_a = {m.message["Message-ID"] for m in server_a.messages}
    ids_b = {m.message["Message-ID"] for m in server_b.messages}
    assert len(ids_a) == 3 and len(ids_b) == 3 and not ids_a & ids_b
    for tenant, letter in ((a, "A"), (b, "B")):
        detail = await as_tenant(api, tenant, "GET", "/messages/m-1")
        assert detail["message"]["subject"] == f"{letter} m-1"
        assert detail["message"]["tenant_id"] == tenant.id
        events = await as_tenant(api, tenant, "GET", "/messages/m-1/events")
        assert [e["event_type"] for e in events["events"]] == ["queued", "sent"]
    # deleting A's m-2 (already sent: refused) and re-queuing A's ids leaves B's alone
    await send(api, a, message("m-4"))
    removed = await as_tenant(api, a, "POST", "/commands/delete-messages", {"ids": ["m-4", "m-1"]})
    assert removed["removed"] == 1 and removed["unauthorized"] == ["m-1"]
    assert sorted(await statuses(api, b)) == IDS


async def test_rate_limits_are_counted_per_tenant(
    api: Api, smtp_pair: tuple[SmtpTestServer, SmtpTestServer]
) -> None:
    """Both tenants have an account ``main`` limited to 2 per minute: each sends 2."""
    server_a, server_b = smtp_pair
    a = await create_tenant(api, "tenant-a")
    b = await create_tenant(api, "tenant-b")
    await smtp_account(api, a, server_a, limit_per_minute=2)
    await smtp_account(api, b, server_b, limit_per_minute=2)
    await send(api, a, *[message(i) for i in IDS])
    await as_tenant(api, a, "POST", "/commands/run-now", {})
    await wait_statuses(api, a, {"m-1": "sent", "m-2": "sent", "m-3": "deferred"})
    await send(api, b, *[message(i) for i in IDS])
    await as_tenant(api, b, "POST", "/commands/run-now", {})
    await wait_statuses(api, b, {"m-1": "sent", "m-2": "sent", "m-3": "deferred"})
    assert len(server_a.messages) == 2 and len(server_b.messages) == 2
    detail = await as_tenant(api, b, "GET", "/messages/m-3")
    assert detail["message"]["deferred_ts"] > time.time() + 30


async def test_tenant_quota_applies_across_its_accounts(
    api: Api, smtp_pair: tuple[SmtpTestServer, SmtpTestServer]
) -> None:
    server_a, server_b = smtp_pair
    a = await create_tenant(api, "tenant-a", rate_limits={"per_minute": 2})
    other = await create_tenant(api, "other")
    await smtp_account(api, a, server_a, "one")
    await smtp_account(api, a, server_a, "two", default=False)
    await smtp_account(api, other, server_b)
    await send(
        api,
        a,
        message("x1", account_id="one"),
        message("x2", account_id="two"),
        message("x3", account_id="one"),
        message("x4", account_id="two"),
    )
    await send(api, other, *[message(i) for i in IDS])
    await as_tenant(api, a, "POST", "/commands/run-now", {})
    await wait_statuses(api, other, dict.fromkeys(IDS, "sent"))  # not limited by A's quota
    deadline = time.monotonic() + 10
    while True:
        got = await statuses(api, a)
        if sorted(got.values()) == ["deferred", "deferred", "sent", "sent"]:
            break
        assert time.monotonic() < deadline, got
        await asyncio.sleep(0.03)
    assert len(server_a.messages) == 2 and len(server_b.messages) == 3
    # the quota is the admin's: the tenant cannot lift it
    lifted = await as_tenant(api, a, "PUT", "/tenant/tenant-a", {"rate_limits": None}, expect=403)
    assert lifted["code"] == "admin_only_field"


async def test_inactive_tenant_messages_are_held(
    api: Api, smtp_pair: tuple[SmtpTestServer, SmtpTestServer]
) -> None:
    server_a, server_b = smtp_pair
    a = await create_tenant(api, "tenant-a")
    b = await create_tenant(api, "tenant-b")
    await smtp_account(api, a, server_a)
    await smtp_account(api, b, server_b)
    await send(api, a, message("held-1"), message("held-2"))
    await api.call("PUT", "/tenant/tenant-a", {"active": False})
    await send(api, b, message("b-1"))
    await api.post("/commands/run-now", {})
    await wait_statuses(api, b, {"b-1": "sent"})
    await asyncio.sleep(0.2)
    await api.post("/commands/run-now", {})
    await wait_statuses(api, b, {"b-1": "sent"})
    held = await api.get("/messages", params={"tenant_id": "tenant-a"})
    assert {m["status"] for m in held["messages"]} == {"pending"}
    assert server_a.messages == []
    await api.call("PUT", "/tenant/tenant-a", {"active": True})
    await as_tenant(api, a, "POST", "/commands/run-now", {})
    await wait_statuses(api, a, {"held-1": "sent", "held-2": "sent"})
    assert len(server_a.messages) == 2


async def test_tenant_tokens_run_now_suspend_and_activate_their_own_tenant_only(
    api: Api, smtp_pair: tuple[SmtpTestServer, SmtpTestServer]
) -> None:
    server_a, server_b = smtp_pair
    a = await create_tenant(api, "tenant-a")
    b = await create_tenant(api, "tenant-b")
    await smtp_account(api, a, server_a)
    await smtp_account(api, b, server_b)

    answer = await as_tenant(api, a, "POST", "/commands/suspend", {})
    assert answer["tenant_id"] == "tenant-a" and answer["suspended_batches"] == ["*"]
    refused = await as_tenant(
        api, a, "POST", "/commands/suspend", {"tenant_id": "tenant-b"}, expect=403
    )
    assert refused["code"] == "tenant_scope"
    refused = await as_tenant(
        api, a, "POST", "/commands/activate", params={"tenant_id": "tenant-b"}, json={}, expect=403
    )
    assert refused["code"] == "tenant_scope"
    batch = await as_tenant(api, b, "POST", "/commands/suspend", {"batch_code": "promo"})
    assert batch["suspended_batches"] == ["promo"]

    await send(api, a, message("a-1"))
    await send(api, b, message("b-1"), message("b-promo", batch_code="promo"))
    ran = await as_tenant(api, b, "POST", "/commands/run-now", {})
    assert ran["tenant_id"] == "tenant-b"
    await wait_statuses(api, b, {"b-1": "sent"})
    await asyncio.sleep(0.2)
    assert (await statuses(api, a)) == {"a-1": "pending"}
    assert (await statuses(api, b))["b-promo"] == "pending"
    # the scheduler itself is the admin's: a tenant's suspend never stops it
    assert (await api.get("/status"))["scheduler_active"] is True

    answer = await as_tenant(api, a, "POST", "/commands/activate", {})
    assert answer["suspended_batches"] == [] and answer["tenant_id"] == "tenant-a"
    await wait_statuses(api, a, {"a-1": "sent"})
    await as_tenant(api, b, "POST", "/commands/activate", {"batch_code": "promo"})
    await wait_statuses(api, b, {"b-promo": "sent"})
    assert (await api.get("/tenant/tenant-b"))["tenant"]["suspended_batches"] == []


async def test_reports_go_to_each_tenants_endpoint_with_its_auth_and_signature(
    api: Api, smtp_pair: tuple[SmtpTestServer, SmtpTestServer]
) -> None:
    server_a, server_b = smtp_pair
    sink_a, sink_b = await SyncReceiver().start(), await SyncReceiver().start()
    try:
        a = await create_tenant(
            api,
            "tenant-a",
            client_base_url=sink_a.url,
            client_sync_path="/hooks/a",
            client_auth={"method": "bearer", "token": "token-of-a"},
        )
        b = await create_tenant(
            api,
            "tenant-b",
            client_base_url=sink_b.url,
            client_auth={"method": "basic", "user": "bee", "password": "password-of-b"},
        )
        await smtp_account(api, a, server_a)
        await smtp_account(api, b, server_b)
        # The reporter picks up new tenants at its periodic refresh (5 s); shorten it here
        # rather than wait (it is the reporter's knob, see core/reporter.py).
        reporter = next(s for s in api.runtime.services if s.name == "reporter")
        reporter.refresh_interval = 0.2  # type: ignore[attr-defined]
        await send(api, a, *[message(i) for i in IDS])
        await send(api, b, *[message(i) for i in IDS], message("b-only"))
        await api.post("/commands/run-now", {})
        await _until(
            lambda: (
                set(sink_a.reported_ids()) == set(IDS)
                and set(sink_b.reported_ids()) == {*IDS, "b-only"}
            )
        )

        import base64

        basic_b = "Basic " + base64.b64encode(b"bee:password-of-b").decode()
        for sink, tenant, path, auth, foreign in (
            (sink_a, a, "/hooks/a", "Bearer token-of-a", ("password-of-b", "bee")),
            (sink_b, b, "/mail-proxy/sync", basic_b, ("token-of-a",)),
        ):
            for got_path, headers, body in sink.requests:
                assert got_path == path
                assert headers.get("Authorization") == auth
                verify(tenant.sync_secret, {k.lower(): v for k, v in headers.items()}, body)
                text = json.dumps(headers) + body.decode()
                assert not any(secret in text for secret in foreign)
        # a report signed for A does not verify with B's secret
        _, headers, body = sink_a.requests[0]
        with pytest.raises(SignatureError):
            verify(b.sync_secret, {k.lower(): v for k, v in headers.items()}, body)
        assert "b-only" not in sink_a.reported_ids()
        # the reports are acknowledged per tenant: nothing left in either backlog
        storage = api.runtime.storage
        deadline = time.monotonic() + 10
        while True:
            backlog = await storage.report_backlog()
            if not backlog.get("tenant-a") and not backlog.get("tenant-b"):
                break
            assert time.monotonic() < deadline, backlog
            await asyncio.sleep(0.03)
        status = {e["tenant_id"]: e for e in (await api.get("/tenants/sync-status"))["tenants"]}
        assert status["tenant-a"]["url"] == f"{sink_a.url}/hooks/a"
        assert status["tenant-b"]["url"] == f"{sink_b.url}/mail-proxy/sync"
    finally:
        await sink_a.stop()
        await sink_b.stop()


async def _until(condition: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.03)


async def test_shared_operator_endpoints_are_told_which_tenant(
    db_url: str,
    aiohttp_client_factory: Any,
    make_settings: Any,
    tmp_path: Path,
    smtp_pair: tuple[SmtpTestServer, SmtpTestServer],
) -> None:
    """Tenants without their own URLs share GMP_CLIENT_SYNC_URL and GMP_ATTACHMENT_BASE_URL:
    every request says which tenant it is for, so equal message ids do not collide there."""
    operator = await SyncReceiver().start()
    try:
        api = await start_api(
            aiohttp_client_factory,
            make_settings,
            db_url,
            tmp_path,
            client_sync_url=operator.url + "/sync",
            attachment_base_url=operator.url,
        )
        server_a, server_b = smtp_pair
        a = await create_tenant(api, "tenant-a")
        b = await create_tenant(api, "tenant-b")
        await smtp_account(api, a, server_a)
        await smtp_account(api, b, server_b)
        att = {"filename": "doc.json", "storage_path": "doc-1", "fetch_mode": "endpoint"}
        await send(api, a, message("m-1", attachments=[att]))
        await send(api, b, message("m-1", attachments=[att]))
        await api.post("/commands/run-now", {})

        def reports() -> dict[str, list[str]]:
            got: dict[str, list[str]] = {}
            for path, _, body in operator.requests:
                data = json.loads(body)
                if path == "/sync" and data["delivery_report"]:
                    got.setdefault(data.get("tenant_id"), []).extend(
                        i["id"] for i in data["delivery_report"]
                    )
            return got

        await _until(lambda: reports() == {"tenant-a": ["m-1"], "tenant-b": ["m-1"]})
        fetches = sorted(
            json.loads(body)["tenant_id"]
            for path, _, body in operator.requests
            if path == "/mail-proxy/attachments"
        )
        assert fetches == ["tenant-a", "tenant-b"]
    finally:
        await operator.stop()
