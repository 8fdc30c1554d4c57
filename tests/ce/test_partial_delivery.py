"""Partial delivery (issue 16, defect 3): one message, three recipients answered 250 / 550 /
451 by a real SMTP server. Every recipient's outcome is recorded (message detail, events,
delivery report), only the 4xx recipient is tried again, and the final state says who got it:
``sent`` with the failed recipients listed, or ``error`` when nobody did."""

from __future__ import annotations

from typing import Any

import pytest

from mail_proxy.core.testing.reports import ReportClient
from mail_proxy.core.testing.smtp import SmtpTestServer
from support.api import add_account, enqueue, events, get_message, message, wait_status

OK, GONE, BUSY = "ok@example.com", "gone@example.com", "busy@example.com"


@pytest.fixture
async def smtp() -> Any:
    """The server answers 550 to GONE and 451 to BUSY, and records every RCPT it receives
    (``server.rcpts``)."""
    async with SmtpTestServer() as server:
        server.script_rcpt = {
            GONE: "550 5.1.1 no such user",
            BUSY: "451 4.2.1 mailbox busy, try later",
        }
        yield server


@pytest.fixture
async def rc() -> Any:
    async with ReportClient() as client:
        yield client


def states(recipients: list[dict[str, Any]]) -> dict[str, tuple[str, int | None]]:
    return {r["address"]: (r["status"], r["code"]) for r in recipients}


async def test_250_550_451_is_recorded_per_recipient_and_only_the_451_is_retried(
    db_url: str,
    aiohttp_client_factory: Any,
    make_settings: Any,
    smtp: SmtpTestServer,
    rc: ReportClient,
) -> None:
    client = await aiohttp_client_factory(
        make_settings(
            database_url=db_url, client_sync_url=rc.url, sync_interval=3600, retry_delays=[0.4]
        )
    )
    await add_account(client, smtp, default=True)
    await enqueue(client, [message(id="three", to=[OK, GONE, BUSY])])

    first = await wait_status(client, "three", "deferred")
    assert states(first["recipients"]) == {
        OK: ("sent", 250),
        GONE: ("error", 550),
        BUSY: ("deferred", 451),
    }
    assert [m.rcpt_tos for m in smtp.messages] == [[OK]]
    del smtp.script_rcpt[BUSY]  # the mailbox frees up: the retry gets 250

    final = await wait_status(client, "three", "sent")
    assert states(final["recipients"]) == {
        OK: ("sent", 250),
        GONE: ("error", 550),
        BUSY: ("sent", 250),
    }
    assert GONE in final["error"] and "550" in final["error"]
    assert final["attempts"] == 2 and final["uncertain"] is False
    # Each recipient got it at most once; the 550 one was never asked again.
    assert [m.rcpt_tos for m in smtp.messages] == [[OK], [BUSY]]
    rcpts = smtp.rcpts
    assert rcpts.count(GONE) == 1 and rcpts.count(OK) == 1 and rcpts.count(BUSY) == 2
    ids = {m.message["Message-ID"] for m in smtp.messages}
    assert len(ids) == 1

    # The events carry the states after each attempt.
    evs = [e for e in await events(client, "three") if e["event_type"] != "queued"]
    assert [e["event_type"] for e in evs] == ["deferred", "sent"]
    assert states(evs[0]["metadata"]["recipients"])[BUSY] == ("deferred", 451)
    assert states(evs[1]["metadata"]["recipients"]) == states(final["recipients"])

    # The report: the deferral lists who got it and who waits; the final item is "sent" with
    # the failed recipient named.
    deferred, sent = await rc.wait_items(2)
    assert states(deferred["recipients"]) == states(first["recipients"])
    assert sent["failed_recipients"] == [GONE]
    assert states(sent["recipients"]) == states(final["recipients"])
    gone = next(r for r in sent["recipients"] if r["address"] == GONE)
    assert gone["reply"] == "5.1.1 no such user"


async def test_a_recipient_deferred_until_max_retries_fails_and_the_message_stays_sent(
    aiohttp_client_factory: Any, make_settings: Any, smtp: SmtpTestServer, rc: ReportClient
) -> None:
    client = await aiohttp_client_factory(
        make_settings(client_sync_url=rc.url, retry_delays=[0.1], max_retries=2)
    )
    await add_account(client, smtp, default=True)
    await enqueue(client, [message(id="m", to=[OK, GONE, BUSY])])
    final = await wait_status(client, "m", "sent")
    assert states(final["recipients"]) == {
        OK: ("sent", 250),
        GONE: ("error", 550),
        BUSY: ("error", 451),
    }
    assert final["attempts"] == 3
    assert "gave up after 3 attempts" in final["error"] and BUSY in final["error"]
    assert [m.rcpt_tos for m in smtp.messages] == [[OK]]
    rcpts = smtp.rcpts
    assert rcpts.count(BUSY) == 3 and rcpts.count(GONE) == 1
    items = await rc.wait_items(3)
    assert [sorted(i["failed_recipients"]) for i in items if "sent_ts" in i] == [[BUSY, GONE]]


async def test_nobody_accepted_it_is_an_error_with_every_recipient_listed(
    aiohttp_client_factory: Any, make_settings: Any, smtp: SmtpTestServer, rc: ReportClient
) -> None:
    client = await aiohttp_client_factory(
        make_settings(client_sync_url=rc.url, retry_delays=[0.1], max_retries=1)
    )
    await add_account(client, smtp, default=True)
    await enqueue(client, [message(id="none", to=[GONE, BUSY])])
    final = await wait_status(client, "none", "error")
    assert states(final["recipients"]) == {GONE: ("error", 550), BUSY: ("error", 451)}
    assert "gave up after 2 attempts" in final["error"]
    assert smtp.messages == []
    items = await rc.wait_items(2)
    assert "error_ts" in items[-1] and "recipients" not in items[-1]  # all alike: no list


async def test_single_recipient_reports_keep_their_short_shape(
    aiohttp_client_factory: Any, make_settings: Any, smtp: SmtpTestServer, rc: ReportClient
) -> None:
    client = await aiohttp_client_factory(make_settings(client_sync_url=rc.url))
    await add_account(client, smtp, default=True)
    await enqueue(client, [message(id="one", to=OK), message(id="two", to=[OK, "b@example.com"])])
    await wait_status(client, "one", "sent")
    await wait_status(client, "two", "sent")
    items = await rc.wait_items(2)
    assert all(set(i) == {"id", "sent_ts"} for i in items), items
    detail = await get_message(client, "two")
    assert states(detail["recipients"]) == {OK: ("sent", 250), "b@example.com": ("sent", 250)}
