"""The pull API (GET /reports, POST /reports/ack) and the retention of reported messages."""

from __future__ import annotations

import time
from typing import Any

import pytest

from mail_proxy.core.contracts.model import Tenant
from mail_proxy.core.engine.housekeeping import Housekeeping
from mail_proxy.core.engine.reporter import report_item
from mail_proxy.core.testing.reports import (
    ReportClient,
    plugins_with_tenant_tokens,
    record_outcome,
    wait_until,
)
from mail_proxy.core.web.app import RUNTIME

DAY = 86400.0


@pytest.fixture
async def app(db_url: str, aiohttp_client_factory: Any, make_settings: Any) -> Any:
    """The real app without any push target (reports wait in the outbox), dispatcher paused.

    ``db_url`` comes first so that the database outlives the app at teardown."""
    settings = make_settings(scheduler_active=False, database_url=db_url, sync_interval=3600)
    return await aiohttp_client_factory(settings, plugins=plugins_with_tenant_tokens())


async def get(
    client: Any, path: str, status: int = 200, token: str | None = None, **params: Any
) -> dict[str, Any]:
    headers = {"X-API-Token": token} if token else client.admin_headers
    resp = await client.get(path, params=params, headers=headers)
    data: dict[str, Any] = await resp.json()
    assert resp.status == status, data
    return data


async def ack(client: Any, cursor: str, status: int = 200, **extra: Any) -> dict[str, Any]:
    resp = await client.post(
        "/reports/ack", json={"cursor": cursor, **extra}, headers=client.admin_headers
    )
    data: dict[str, Any] = await resp.json()
    assert resp.status == status, data
    return data


async def test_pull_pages_in_order_resume_exactly_and_ack_up_to_a_cursor(app: Any) -> None:
    rt = app.app[RUNTIME]
    t0 = time.time() - 50
    for i in range(4):
        await record_outcome(rt, f"p{i}", "sent", ts=t0 + i)
    await record_outcome(rt, "p4", "error", ts=t0 + 4, error="550 unknown user")

    first = await get(app, "/reports", limit=2)
    assert first["ok"] is True and first["has_more"] is True
    assert [i["id"] for i in first["delivery_report"]] == ["p0", "p1"]
    assert first["next_cursor"] == first["delivery_report"][-1]["cursor"]
    second = await get(app, "/reports", limit=2, after=first["next_cursor"])
    third = await get(app, "/reports", limit=2, after=second["next_cursor"])
    assert [i["id"] for i in second["delivery_report"]] == ["p2", "p3"]
    assert third["has_more"] is False
    items = first["delivery_report"] + second["delivery_report"] + third["delivery_report"]
    # Same items as a push would carry, plus their cursor.
    stripped = [{k: v for k, v in i.items() if k != "cursor"} for i in items]
    assert stripped == [{"id": f"p{i}", "sent_ts": t0 + i} for i in range(4)] + [
        {"id": "p4", "error_ts": t0 + 4, "error": "550 unknown user"}
    ]
    empty = await get(app, "/reports", after=third["next_cursor"])
    assert empty["delivery_report"] == [] and empty["next_cursor"] == third["next_cursor"]

    # Reading does not acknowledge: a fresh read starts again at the oldest event.
    again = await get(app, "/reports", limit=1)
    assert again["delivery_report"][0]["id"] == "p0"

    assert (await ack(app, second["next_cursor"]))["acknowledged"] == 4
    assert (await ack(app, second["next_cursor"]))["acknowledged"] == 0  # idempotent
    rest = await get(app, "/reports")
    assert [i["id"] for i in rest["delivery_report"]] == ["p4"]
    assert (await rt.storage.report_backlog()).get("default") == 1

    # Acknowledged by pull = acknowledged for push: a push target now gets only p4.
    async with ReportClient() as rc:
        rt.settings.section("report_sink").client_sync_url = rc.url
        rt.wake_reporter()
        items = await rc.wait_items(1)
        assert items == [{"id": "p4", "error_ts": t0 + 4, "error": "550 unknown user"}]


async def test_pull_is_tenant_scoped_and_refuses_bad_cursors(app: Any) -> None:
    rt = app.app[RUNTIME]
    await rt.storage.save_tenant(Tenant("acme"))
    await record_outcome(rt, "d1", "sent")
    await record_outcome(rt, "a1", "sent", tenant_id="acme")

    own = await get(app, "/reports", token="tenant-token:acme")
    assert [i["id"] for i in own["delivery_report"]] == ["a1"]
    admin_view = await get(app, "/reports", tenant_id="acme")
    assert [i["id"] for i in admin_view["delivery_report"]] == ["a1"]
    refused = await get(app, "/reports", 403, token="tenant-token:acme", tenant_id="default")
    assert refused["code"] == "tenant_scope"

    # acme acknowledging with a cursor that lies beyond default's event touches only acme.
    resp = await app.post(
        "/reports/ack",
        json={"cursor": own["next_cursor"]},
        headers={"X-API-Token": "tenant-token:acme"},
    )
    assert (await resp.json())["acknowledged"] == 1
    assert [i["id"] for i in (await get(app, "/reports"))["delivery_report"]] == ["d1"]

    bad = await get(app, "/reports", 400, after="not-a-cursor")
    assert bad["code"] == "invalid_cursor" and bad["ok"] is False
    assert (await ack(app, "bm90LWEtY3Vyc29y", 400))["code"] == "invalid_cursor"
    assert (await get(app, "/reports", 400, limit=0))["code"] == "validation_error"
    resp = await app.post("/reports/ack", json={}, headers=app.admin_headers)
    assert resp.status == 400 and (await resp.json())["code"] == "validation_error"
    resp = await app.get("/reports")
    assert resp.status == 401 and (await resp.json())["code"] == "missing_token"
    doc = await (await app.get("/openapi.json")).json()
    assert "get" in doc["paths"]["/reports"] and "post" in doc["paths"]["/reports/ack"]


async def test_retention_purges_old_acknowledged_messages_only(app: Any) -> None:
    rt = app.app[RUNTIME]
    storage = rt.storage
    old = time.time() - 8 * DAY  # older than the default retention (7 days)
    acked = await record_outcome(rt, "old-acked", "sent", ts=old)
    await record_outcome(rt, "old-unacked", "error", ts=old, error="550 gone")
    recent = await record_outcome(rt, "recent-acked", "sent")
    await record_outcome(
        rt, "old-deferred", "deferred", ts=old, deferred_ts=old + 60, deferred_reason="451 later"
    )
    for tenant_events in (await storage.fetch_unreported("default", 100),):
        pks = [e.pk for e in tenant_events if e.message_pk in (acked, recent)]
        assert len(pks) == 2
        await storage.acknowledge_events("default", pks, time.time())
    deferred_events = [
        e for e in await storage.fetch_unreported("default", 100) if e.message_id == "old-deferred"
    ]
    await storage.acknowledge_events("default", [e.pk for e in deferred_events], time.time())

    [job] = [s for s in rt.services if isinstance(s, Housekeeping)]
    await job.tick()

    assert job.last_purged == 1
    assert await storage.get_message("default", "old-acked") is None
    assert await storage.list_events("default", "old-acked") is None
    kept = await storage.list_events("default", "old-unacked")
    assert kept is not None and [e.event_type for e in kept] == ["queued", "error"]
    assert await storage.get_message("default", "recent-acked") is not None
    # An old message still waiting for a retry is not finished: kept, reported or not.
    assert await storage.get_message("default", "old-deferred") is not None

    # Once its report is acknowledged (here through the pull API) it goes too.
    page = await get(app, "/reports")
    assert [i["id"] for i in page["delivery_report"]] == ["old-unacked"]
    await ack(app, page["next_cursor"])
    await job.tick()
    assert job.last_purged == 1
    assert await storage.get_message("default", "old-unacked") is None


async def test_report_item_shapes_for_every_event_type() -> None:
    from mail_proxy.core.contracts.extensions import EventType
    from mail_proxy.core.contracts.model import EventRecord
    from mail_proxy.core.engine.event_types import CORE_EVENT_TYPES
    from mail_proxy.core.plugins.registry import Registry

    types: Registry[EventType] = Registry("event type")
    for declared in CORE_EVENT_TYPES:
        types.register(declared.name, declared)

    def item(kind: str, desc: str | None = None, **meta: Any) -> dict[str, Any]:
        return report_item(EventRecord(1, "default", 1, "m", kind, 100.0, desc, meta), types)

    assert item("sent", None, attempts=2) == {"id": "m", "sent_ts": 100.0}
    assert item("error", "boom") == {"id": "m", "error_ts": 100.0, "error": "boom"}
    assert item("deferred", "busy", deferred_ts=160.0) == {
        "id": "m",
        "deferred_ts": 160.0,
        "deferred_reason": "busy",
    }
    # a type nobody declared (its plugin uninstalled since): the generic shape
    assert item("gone_plugin_event", "text") == {
        "id": "m",
        "event": "gone_plugin_event",
        "event_ts": 100.0,
        "description": "text",
    }


async def test_pull_and_push_never_deliver_an_acknowledged_event_twice(
    aiohttp_client_factory: Any,
    make_settings: Any,
) -> None:
    async with ReportClient() as rc:
        client = await aiohttp_client_factory(
            make_settings(scheduler_active=False, client_sync_url=rc.url, sync_interval=3600)
        )
        rt = client.app[RUNTIME]
        await record_outcome(rt, "x1", "sent")
        await rc.wait_items(1)
        await wait_until(lambda: _backlog_is(rt, 0))
        assert (await get(client, "/reports"))["delivery_report"] == []


async def _backlog_is(rt: Any, value: int) -> bool:
    return (await rt.storage.report_backlog()).get("default", 0) == value
