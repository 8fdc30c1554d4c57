"""The API the operator console reads (issue 19), against the real app and database (SQLite
and PostgreSQL): message filters and newest-first keyset pages, the overview, suspensions,
re-queueing a failed message, testing an account's connection, and the console's own files
with their Content-Security-Policy."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import aiohttp
import pytest

from mail_proxy.core.engine.dispatcher import CACHE_SECONDS
from mail_proxy.core.testing.net import free_port
from mail_proxy.core.testing.smtp import SmtpTestServer
from support.ce_api import Api, message


@pytest.fixture
async def api(api: Api) -> Api:
    """The shared ``api`` (tests/conftest.py) with a default file account ``main``."""
    await api.add_account("main")
    return api


async def _pages(api: Api, **params: str) -> list[list[str]]:
    """Every page of ``GET /messages`` with ``params``, as lists of ids."""
    pages: list[list[str]] = []
    cursor = ""
    while True:
        query = {**params, **({"cursor": cursor} if cursor else {})}
        answer = await api.get("/messages", params=query)
        pages.append([m["id"] for m in answer["messages"]])
        cursor = answer["next_cursor"]
        if not cursor:
            return pages


async def test_newest_first_pages_cover_every_message_once(api: Api) -> None:
    await api.send(*(message(f"m{i}") for i in range(7)))
    pages = await _pages(api, order="desc", limit="3")
    assert pages == [["m6", "m5", "m4"], ["m3", "m2", "m1"], ["m0"]]
    assert await _pages(api, limit="4") == [["m0", "m1", "m2", "m3"], ["m4", "m5", "m6"]]


async def test_a_cursor_belongs_to_its_order(api: Api) -> None:
    await api.send(*(message(f"m{i}") for i in range(3)))
    asc = await api.get("/messages", params={"limit": "1"})
    refused = await api.get(
        "/messages", params={"order": "desc", "cursor": asc["next_cursor"]}, expect=400
    )
    assert refused["code"] == "invalid_cursor" and "order=desc" in refused["error"]
    bad = await api.get("/messages", params={"order": "sideways"}, expect=400)
    assert bad["code"] == "validation_error" and bad["details"][0]["field"] == "order"


async def test_filters_by_account_batch_status_and_creation_time(api: Api) -> None:
    await api.add_account("other", default=False)
    await api.send(message("a1"), message("b1", account_id="other", batch_code="spring"))
    after_first = time.time()
    await api.send(message("a2", batch_code="spring"), message("b2", account_id="other"))

    def ids(answer: dict[str, object]) -> list[str]:
        return [m["id"] for m in answer["messages"]]  # type: ignore[attr-defined]

    assert ids(await api.get("/messages", params={"account_id": "other"})) == ["b1", "b2"]
    assert ids(await api.get("/messages", params={"batch_code": "spring", "order": "desc"})) == [
        "a2",
        "b1",
    ]
    assert ids(await api.get("/messages", params={"since": str(after_first)})) == ["a2", "b2"]
    assert ids(await api.get("/messages", params={"until": str(after_first)})) == ["a1", "b1"]
    both = {"account_id": "other", "since": str(after_first), "status": "pending"}
    assert ids(await api.get("/messages", params=both)) == ["b2"]
    assert ids(await api.get("/messages", params={"status": "sent"})) == []
    assert ids(await api.get("/messages", params={"account_id": "nobody"})) == []

    # a creation-time window is paged in creation order, with cursors of its own
    window = {"since": "0", "limit": "1"}
    assert await _pages(api, **window) == [["a1"], ["b1"], ["a2"], ["b2"]]
    assert await _pages(api, **window, order="desc") == [["b2"], ["a2"], ["b1"], ["a1"]]
    pk_cursor = (await api.get("/messages", params={"limit": "1"}))["next_cursor"]
    mixed = await api.get("/messages", params={**window, "cursor": pk_cursor}, expect=400)
    assert mixed["code"] == "invalid_cursor"
    time_cursor = (await api.get("/messages", params=window))["next_cursor"]
    mixed = await api.get("/messages", params={"limit": "1", "cursor": time_cursor}, expect=400)
    assert mixed["code"] == "invalid_cursor"

    wrong = await api.get("/messages", params={"since": "20", "until": "10"}, expect=400)
    assert wrong["code"] == "invalid_range" and wrong["details"][0]["field"] == "since"
    negative = await api.get("/messages", params={"since": "-1"}, expect=400)
    assert negative["code"] == "validation_error"


async def test_overview_counts_outcomes_and_suspensions(api: Api, tmp_path: Path) -> None:
    # an account that cannot deliver (a file account without a directory: a final error)
    await api.add_account("broken", default=False, options={})
    await api.send(
        message("ok1"),
        message("ok2"),
        message("bad", account_id="broken"),
        message("later", deferred_ts=time.time() + 3600),
    )
    before = await api.get("/overview")
    assert before["tenant_id"] is None  # the admin, naming no tenant: every tenant
    assert before["counts"] == {
        "pending": 3,
        "scheduled": 1,
        "deferred": 0,
        "sending": 0,
        "sent": 0,
        "error": 0,
    }
    assert before["oldest_pending_age"] is not None and before["oldest_pending_age"] >= 0
    assert before["recent"] == {"window_seconds": 3600, "sent": 0, "error": 0, "deferred": 0}
    assert before["scheduler_active"] is True and "ce" in before["plugins"]

    await api.post("/commands/run-now")
    assert await api.wait_status("ok1", "sent") == "sent"
    assert await api.wait_status("ok2", "sent") == "sent"
    assert await api.wait_status("bad", "error") == "error"
    after = await api.get("/overview", params={"tenant_id": "default", "window": "600"})
    assert after["tenant_id"] == "default"
    assert after["counts"]["sent"] == 2 and after["counts"]["error"] == 1
    assert after["counts"]["pending"] == 0 and after["counts"]["scheduled"] == 1
    assert after["recent"] == {"window_seconds": 600, "sent": 2, "error": 1, "deferred": 0}
    # three outcomes to report, and no client to take them in this test
    assert after["report_backlog"] == 3

    await api.post("/commands/suspend", {"tenant_id": "default", "batch_code": "spring"})
    listed = await api.get("/suspended-batches")
    assert [(s["tenant_id"], s["batch_code"]) for s in listed["suspensions"]] == [
        ("default", "spring")
    ]
    assert (await api.get("/overview"))["suspensions"] == listed["suspensions"]
    await api.post("/commands/activate", {"tenant_id": "default", "batch_code": "spring"})
    assert (await api.get("/suspended-batches"))["suspensions"] == []

    assert (await api.get("/overview", params={"window": "5"}, expect=400))["code"] == (
        "validation_error"
    )
    missing = await api.get("/overview", params={"tenant_id": "nope"}, expect=404)
    assert missing["code"] == "tenant_not_found"


async def test_requeue_a_failed_message(api: Api, tmp_path: Path) -> None:
    await api.add_account("broken", default=False, options={})
    await api.send(message("bad", account_id="broken"), message("queued"))
    await api.post("/commands/run-now")
    assert await api.wait_status("bad", "error") == "error"
    failed = (await api.get("/messages/bad"))["message"]
    assert failed["error"] and failed["attempts"] == 1

    await api.add_account("broken", default=False)  # repaired: it has a directory now
    # the dispatcher reads an account again after its short cache (CACHE_SECONDS) runs out
    await asyncio.sleep(CACHE_SECONDS + 0.1)
    answer = await api.post(
        "/commands/requeue-messages", {"ids": ["bad", "queued", "ghost"]}, expect=200
    )
    assert {k: answer[k] for k in ("requeued", "not_found", "not_failed")} == {
        "requeued": 1,
        "not_found": ["ghost"],
        "not_failed": ["queued"],
    }
    await api.post("/commands/run-now")
    status = await api.wait_status("bad", "sent")
    assert status == "sent", await api.get("/messages/bad/events")
    sent = (await api.get("/messages/bad"))["message"]
    assert sent["error"] is None and sent["attempts"] == 1
    events = (await api.get("/messages/bad/events"))["events"]
    assert [e["event_type"] for e in events] == ["queued", "error", "requeued", "sent"]
    requeued = events[2]
    assert requeued["metadata"]["previous_error"] == failed["error"]
    assert requeued["reported_ts"] is None

    # sent messages are not failed: nothing changes
    answer = await api.post("/commands/requeue-messages", {"ids": ["bad"]})
    assert answer["requeued"] == 0 and answer["not_failed"] == ["bad"]
    too_many = await api.post("/commands/requeue-messages", {"ids": ["x"] * 1001}, expect=413)
    assert too_many["code"] == "batch_too_large"
    assert (await api.post("/commands/requeue-messages", {}, expect=400))["code"] == (
        "validation_error"
    )


async def test_events_carry_the_report_acknowledgement(api: Api) -> None:
    await api.send(message("m1"))
    await api.post("/commands/run-now")
    assert await api.wait_status("m1", "sent") == "sent"
    events = (await api.get("/messages/m1/events"))["events"]
    assert [e["event_type"] for e in events] == ["queued", "sent"]
    assert events[1]["reported_ts"] is None  # no client acknowledged it yet
    pending = await api.runtime.storage.fetch_unreported("default", 10)
    await api.runtime.storage.acknowledge_events("default", [e.pk for e in pending], 1234.5)
    events = (await api.get("/messages/m1/events"))["events"]
    assert events[1]["reported_ts"] == 1234.5


async def test_test_connection_of_smtp_and_file_accounts(api: Api, tmp_path: Path) -> None:
    async with SmtpTestServer(auth=("user", "secret-pw"), auth_require_tls=False) as server:
        await api.add_account(
            "smtp-ok",
            transport="smtp",
            host="127.0.0.1",
            port=server.port,
            user="user",
            password="secret-pw",
            allow_plaintext_auth=True,
            options={},
        )
        ok = await api.post("/account/smtp-ok/test")
        assert ok["connected"] is True, ok
        assert ok["detail"] == f"connected to 127.0.0.1:{server.port}, no TLS, logged in as user"
        assert [a.success for a in server.auth_attempts] == [True]
        assert server.messages == []

        await api.add_account(
            "smtp-bad",
            transport="smtp",
            host="127.0.0.1",
            port=server.port,
            user="user",
            password="wrong-pw",
            allow_plaintext_auth=True,
            options={},
        )
        refused = await api.post("/account/smtp-bad/test")
        assert refused["connected"] is False
        assert "535" in refused["detail"] and "wrong-pw" not in refused["detail"]

    closed = free_port()
    await api.add_account("smtp-down", transport="smtp", host="127.0.0.1", port=closed, options={})
    down = await api.post("/account/smtp-down/test")
    assert down["connected"] is False and f"127.0.0.1:{closed}" in down["detail"]

    file_ok = await api.post("/account/main/test")
    assert file_ok["connected"] is True and "writable" in file_ok["detail"]
    await api.add_account("nodir", default=False, options={})
    file_bad = await api.post("/account/nodir/test")
    assert file_bad["connected"] is False and "directory" in file_bad["detail"]

    missing = await api.post("/account/ghost/test", expect=404)
    assert missing["code"] == "account_not_found"
    log = (await api.get("/command-log"))["entries"]
    assert {"account_id": "smtp-ok", "connected": True} in [e["summary"] for e in log]


async def test_status_says_who_the_token_is(api: Api) -> None:
    status = await api.get("/status")
    assert status["token"] == {"kind": "admin", "tenant_id": None}


async def test_console_files_are_public_with_a_strict_csp(api: Api) -> None:
    base = str(api.client.make_url(""))
    async with aiohttp.ClientSession() as session:
        async with session.get(base + "/console") as resp:
            page = await resp.text()
            assert resp.status == 200 and resp.content_type == "text/html"
            csp = resp.headers["Content-Security-Policy"]
            assert "default-src 'self'" in csp and "unsafe-inline" not in csp
            assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
            assert resp.headers["X-Content-Type-Options"] == "nosniff"
        assert '<script type="module" src="/console/app.js"></script>' in page
        assert "<script>" not in page and "style=" not in page and "<style" not in page
        for name, ctype in (
            ("app.js", "text/javascript"),
            ("pages/message.js", "text/javascript"),
            ("console.css", "text/css"),
        ):
            async with session.get(f"{base}/console/{name}") as resp:
                assert resp.status == 200 and resp.content_type == ctype, name
                assert "Content-Security-Policy" in resp.headers
                body = await resp.text()
                assert "innerHTML" not in body and "eval(" not in body, name
        for bad in ("nope.js", "..%2Fplugin.py", "%2E%2E/__init__.py", "pages/../../plugin.py"):
            async with session.get(f"{base}/console/{bad}") as resp:
                assert resp.status == 404, bad
                assert (await resp.json())["ok"] is False


async def test_openapi_describes_the_new_routes_and_filters(api: Api) -> None:
    doc = await api.get("/openapi.json")
    paths = doc["paths"]
    for path in (
        "/overview",
        "/suspended-batches",
        "/commands/requeue-messages",
        "/account/{account_id}/test",
    ):
        assert path in paths, path
    names = {p["name"] for p in paths["/messages"]["get"]["parameters"]}
    assert {"account_id", "since", "until", "order", "cursor", "status", "batch_code"} <= names
