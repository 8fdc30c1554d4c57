"""Delivery reports end to end: REST in, real SMTP out, reports to a real client app."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from mail_proxy.core.testing.reports import (
    TENANT_TOKEN,
    Received,
    ReportClient,
    plugins_with_tenant_tokens,
)
from mail_proxy.core.testing.smtp import SmtpTestServer
from support.api import add_account, enqueue, events, message, wait_status


@pytest.fixture
async def smtp() -> Any:
    async with SmtpTestServer() as server:
        yield server


@pytest.fixture
async def rc() -> Any:
    async with ReportClient() as client:
        yield client


async def test_sent_error_and_deferred_outcomes_reach_the_client(
    db_url: str,
    aiohttp_client_factory: Any,
    make_settings: Any,
    smtp: SmtpTestServer,
    rc: ReportClient,
) -> None:
    client = await aiohttp_client_factory(
        make_settings(
            client_sync_url=rc.url, sync_interval=3600, retry_delays=[0.3], database_url=db_url
        )
    )
    await add_account(client, smtp, default=True)
    smtp.script_rcpt = {
        "bad@example.com": "550 5.1.1 no such user",
        "tmp@example.com": "450 4.2.0 mailbox busy",
    }
    await enqueue(
        client,
        [
            message(id="ok", to="ok@example.com"),
            message(id="bad", to="bad@example.com"),
            message(id="tmp", to="tmp@example.com"),
        ],
    )
    await wait_status(client, "tmp", "deferred")
    smtp.script_rcpt = {"bad@example.com": "550 5.1.1 no such user"}
    await wait_status(client, "tmp", "sent")
    items = await rc.wait_items(4)
    by_id: dict[str, list[dict[str, Any]]] = {}
    for item in items:
        by_id.setdefault(item["id"], []).append(item)

    stored = {i: {e["event_type"]: e for e in await events(client, i)} for i in by_id}
    assert by_id["ok"] == [{"id": "ok", "sent_ts": stored["ok"]["sent"]["event_ts"]}]
    [bad] = by_id["bad"]
    assert set(bad) == {"id", "error_ts", "error"} and "550" in bad["error"]
    assert bad["error_ts"] == stored["bad"]["error"]["event_ts"]
    deferred, sent = by_id["tmp"]  # in order per message
    assert set(deferred) == {"id", "deferred_ts", "deferred_reason"}
    assert deferred["deferred_ts"] == stored["tmp"]["deferred"]["metadata"]["deferred_ts"]
    assert "450" in deferred["deferred_reason"]
    assert sent == {"id": "tmp", "sent_ts": stored["tmp"]["sent"]["event_ts"]}
    assert deferred["deferred_ts"] > stored["tmp"]["deferred"]["event_ts"]
    await asyncio.sleep(0.3)
    assert len(rc.accepted_items()) == 4  # each event exactly once


async def test_a_client_submitting_from_its_sync_handler_gets_one_burst(
    aiohttp_client_factory: Any,
    make_settings: Any,
    smtp: SmtpTestServer,
    rc: ReportClient,
) -> None:
    """The classic flow: the proxy calls, the client submits mail and answers queued > 0,
    the proxy calls again at once; the mail is sent and reported without a heartbeat."""
    client = await aiohttp_client_factory(
        make_settings(client_sync_url=rc.url, sync_interval=3600),
        plugins=plugins_with_tenant_tokens(),
    )
    await add_account(client, smtp, default=True)
    outbox = [[message(id="q1"), message(id="q2")], [message(id="q3")]]

    async def submit(req: Received) -> None:
        if outbox:
            await enqueue(client, outbox.pop(0))
            rc.answers.append({"queued": len(outbox)} if outbox else {"queued": 0})

    rc.on_request = submit
    # The client asks for a call with its own token (clears DND, calls even with no reports).
    resp = await client.post("/commands/run-now", json={}, headers={"X-API-Token": TENANT_TOKEN})
    assert resp.status == 200
    items = await rc.wait_items(3)
    assert sorted(i["id"] for i in items) == ["q1", "q2", "q3"]
    assert all(set(i) == {"id", "sent_ts"} for i in items)
    assert len(smtp.messages) == 3
    calls_with_submissions = [r for r in rc.requests if r.answered.get("queued") is not None]
    assert [r.answered["queued"] for r in calls_with_submissions] == [1, 0]
