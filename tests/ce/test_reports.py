"""The reporter and the ``http`` sink against a real client app on loopback.

Events are produced through the real storage (enqueue → claim → record_outcomes), exactly as
the dispatcher writes them; the end-to-end path through SMTP is in test_reports_e2e.py.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import time
from collections.abc import Callable
from typing import Any

import pytest

from mail_proxy.core.contracts.model import Tenant
from mail_proxy.core.engine.reporter import Reporter, find_reporter
from mail_proxy.core.testing.reports import (
    TENANT_TOKEN,
    ReportClient,
    plugins_with_tenant_tokens,
    record_outcome,
    wait_until,
)
from mail_proxy.core.web.app import RUNTIME

FAR = 10**10


@pytest.fixture
def start_app(aiohttp_client_factory: Any, make_settings: Any) -> Callable[..., Any]:
    """``client, rt = await start_app(**settings)``: the real app, dispatcher paused."""

    async def start(settings: Any = None, **overrides: Any) -> Any:
        overrides.setdefault("scheduler_active", False)
        settings = settings or make_settings(**overrides)
        client = await aiohttp_client_factory(settings, plugins=plugins_with_tenant_tokens())
        return client, client.app[RUNTIME]

    return start


@pytest.fixture
async def report_client() -> Any:
    async with ReportClient() as rc:
        yield rc


def reporter_of(rt: Any) -> Reporter:
    rep = find_reporter(rt)
    assert rep is not None
    return rep


def status_of(rt: Any, tenant_id: str = "default") -> dict[str, Any]:
    [entry] = [e for e in reporter_of(rt).sync_status() if e["tenant_id"] == tenant_id]
    return entry


async def backlog(rt: Any, tenant_id: str = "default") -> int:
    return int((await rt.storage.report_backlog()).get(tenant_id, 0))


# -- what is reported ----------------------------------------------------------------------------
async def test_each_outcome_is_pushed_once_with_exactly_the_api_fields(
    db_url: str, start_app: Any, report_client: ReportClient
) -> None:
    rc = report_client
    # A heartbeat interval of an hour: whatever arrives was pushed because of the event.
    _client, rt = await start_app(client_sync_url=rc.url, sync_interval=3600, database_url=db_url)
    t0 = time.time() - 10
    await record_outcome(rt, "m1", "sent", ts=t0)
    await record_outcome(rt, "m2", "error", ts=t0 + 1, error="554 5.7.1 rejected")
    await record_outcome(
        rt,
        "m3",
        "deferred",
        ts=t0 + 2,
        deferred_ts=t0 + 60,
        deferred_reason="451 4.3.0 later",
        error="451 4.3.0 later",
    )
    await record_outcome(rt, "m3", "sent", ts=t0 + 3, enqueue=False)
    items = await rc.wait_items(4)
    assert items == [
        {"id": "m1", "sent_ts": t0},
        {"id": "m2", "error_ts": t0 + 1, "error": "554 5.7.1 rejected"},
        {"id": "m3", "deferred_ts": t0 + 60, "deferred_reason": "451 4.3.0 later"},
        {"id": "m3", "sent_ts": t0 + 3},
    ]
    await wait_until(lambda: _zero(backlog(rt)), what="backlog acknowledged")
    rt.wake_reporter()
    await asyncio.sleep(0.3)
    assert len(rc.accepted_items()) == 4  # acknowledged events are never sent again
    for req in rc.requests:
        assert req.headers["content-type"] == "application/json"
        assert set(req.data) == {"delivery_report"}


async def test_new_events_are_pushed_on_the_wake_up_not_on_a_timer(
    start_app: Any, report_client: ReportClient
) -> None:
    rc = report_client
    _client, rt = await start_app(client_sync_url=rc.url, sync_interval=3600)
    await rc.wait_requests(1)  # the start-up heartbeat
    reporter = reporter_of(rt)
    reporter.refresh_interval = 3600  # no periodic rescan either: only the wake-up is left
    reporter._kick.set()
    await asyncio.sleep(0.2)
    await record_outcome(rt, "w1", "sent")  # the dispatcher's path: commit, then wake
    assert [i["id"] for i in await rc.wait_items(1)] == ["w1"]


async def _zero(value: Any) -> bool:
    return await value == 0


async def test_batches_respect_the_batch_size_and_follow_each_other_at_once(
    start_app: Any, report_client: ReportClient
) -> None:
    rc = report_client
    _client, rt = await start_app(client_sync_url=rc.url, sync_interval=3600, report_batch_size=2)
    await rc.wait_requests(1)  # the start-up heartbeat
    for i in range(5):
        await record_outcome(rt, f"b{i}", "sent", wake=False)
    rt.wake_reporter()
    items = await rc.wait_items(5)
    assert [i["id"] for i in items] == [f"b{i}" for i in range(5)]
    sizes = [len(r.items) for r in rc.requests if r.items]
    assert sizes == [2, 2, 1]


async def test_idle_tenants_get_an_empty_heartbeat_every_interval(
    start_app: Any, report_client: ReportClient
) -> None:
    rc = report_client
    await start_app(client_sync_url=rc.url, sync_interval=0.2)
    requests = await rc.wait_requests(3)
    assert all(r.body == b'{"delivery_report":[]}' for r in requests[:3])
    assert all(r.accepted for r in requests[:3])
    ids = {r.headers["webhook-id"] for r in requests[:3]}
    assert len(ids) == 3  # every heartbeat is a new request id


async def test_recorded_events_are_reported_in_the_shape_their_type_declares(
    start_app: Any, report_client: ReportClient
) -> None:
    from mail_proxy.core.contracts.extensions import EventType
    from mail_proxy.core.contracts.model import NewEvent

    rc = report_client
    _client, rt = await start_app(client_sync_url=rc.url, sync_interval=3600)
    await rc.wait_requests(1)
    rt.event_types.register(
        "probe_hit",
        EventType(
            "probe_hit",
            report=lambda ev: {"probe_ts": ev.event_ts, "probe": ev.metadata.get("what")},
        ),
        plugin="test",
    )
    t0 = time.time() - 100
    await record_outcome(rt, "pb", "sent", ts=t0, wake=False)
    added = await rt.record_events(
        [
            NewEvent("default", "pb", "probe_hit", t0 + 5, "seen", {"what": "x"}),
            NewEvent("default", "pb", "undeclared", t0 + 6, "free text", {}),
            NewEvent("default", "nobody", "probe_hit", t0, None, {}),  # unknown message: ignored
        ]
    )
    assert [e.event_type for e in added] == ["probe_hit", "undeclared"]
    items = await rc.wait_items(3)
    assert items[1:] == [
        {"id": "pb", "probe_ts": t0 + 5, "probe": "x"},
        {"id": "pb", "event": "undeclared", "event_ts": t0 + 6, "description": "free text"},
    ]


# -- failures, backoff, isolation ---------------------------------------------------------
@pytest.mark.parametrize("mode", ["500", "not_ok", "not_json", "hang"])
async def test_failing_client_keeps_its_events_and_never_blocks_others(
    start_app: Any, mode: str, tmp_path: Any
) -> None:
    async with ReportClient() as bad, ReportClient() as good:
        bad.mode = mode
        client, rt = await start_app(
            client_sync_url=good.url, sync_timeout=0.5, fetch_allow_networks=["127.0.0.0/8"]
        )
        await rt.storage.save_tenant(Tenant("acme", client_base_url=bad.base_url))
        await record_outcome(rt, "a1", "sent", tenant_id="acme", wake=False)
        await record_outcome(
            rt, "a2", "error", tenant_id="acme", error="550 no such user", wake=False
        )
        await record_outcome(rt, "d1", "sent")  # wakes the reporter: a1 and a2 go together

        # acme is retried with backoff; each attempt carries the same two events ...
        # (Under load the periodic outbox scan may catch a1 alone once: wait for two
        # attempts that carry both.)
        def full(r: Any) -> bool:
            return [i["id"] for i in r.items] == ["a1", "a2"]

        await bad.wait_for(lambda: sum(1 for r in bad.requests if full(r)) >= 2, timeout=20)
        # ... while the default tenant's report went through.
        assert [i["id"] for i in await good.wait_items(1)] == ["d1"]
        attempts = [r for r in bad.requests if full(r)]
        assert attempts[1].at - attempts[0].at >= 0.4  # backoff (1 s, jitter 50-100 %)
        assert all({i["id"] for i in r.items} <= {"a1", "a2"} for r in bad.requests)
        assert len({r.headers["webhook-id"] for r in attempts}) == 1  # a resend keeps its id
        assert not any(r.accepted for r in bad.requests)
        assert await backlog(rt, "acme") == 2
        entry = status_of(rt, "acme")
        assert entry["failures"] >= 1 and entry["last_error"] and entry["backlog"] == 2
        assert entry["url"] == bad.base_url + "/mail-proxy/sync"
        if mode == "hang":
            assert "timed out" in entry["last_error"]

        # Dispatch is not held up either: a real message of the default tenant goes out.
        await rt.storage.save_account(_file_account(tmp_path))
        resp = await client.post(
            "/commands/add-messages",
            headers=client.admin_headers,
            json={
                "messages": [
                    {
                        "id": "live",
                        "from": "a@example.com",
                        "to": ["b@example.com"],
                        "subject": "hi",
                        "body": "x",
                    }
                ]
            },
        )
        assert resp.status == 200, await resp.text()
        rt.scheduler.resume()
        items = await good.wait_items(2)
        assert items[1]["id"] == "live" and set(items[1]) == {"id", "sent_ts"}

        # The client comes back: every kept event arrives once.
        bad.mode = "ok"
        bad.release()
        await bad.wait_items(2, timeout=15)
        await wait_until(lambda: _zero(backlog(rt, "acme")), what="acme acknowledged")
        rt.wake_reporter()
        await asyncio.sleep(0.3)
        assert [i["id"] for i in bad.accepted_items()] == ["a1", "a2"]
        assert status_of(rt, "acme")["failures"] == 0
        assert status_of(rt, "acme")["last_error"] is None


def _file_account(tmp_path: Any) -> Any:
    from mail_proxy.core.contracts.model import Account

    return Account(
        "default",
        "files",
        transport="file",
        default=True,
        options={"directory": str(tmp_path / "out")},
    )


async def test_a_hanging_client_does_not_delay_another_tenant(start_app: Any) -> None:
    async with ReportClient() as slow, ReportClient() as fast:
        slow.mode = "hang"
        _client, rt = await start_app(
            client_sync_url=fast.url,
            sync_timeout=60,
            sync_interval=3600,
            fetch_allow_networks=["127.0.0.0/8"],
        )
        await rt.storage.save_tenant(Tenant("slow", client_base_url=slow.base_url))
        await record_outcome(rt, "s1", "sent", tenant_id="slow")
        await slow.wait_for(lambda: slow.in_flight == 1)
        await record_outcome(rt, "f1", "sent")
        assert [i["id"] for i in await fast.wait_items(1)] == ["f1"]
        assert slow.in_flight == 1  # the slow tenant's request is still pending meanwhile
        assert status_of(rt, "slow")["syncing"] is True
        slow.release()


async def test_reports_survive_a_restart_while_the_client_is_down(
    db_url: str, aiohttp_client_factory: Any, make_settings: Any, report_client: ReportClient
) -> None:
    rc = report_client
    rc.mode = "500"
    settings = make_settings(client_sync_url=rc.url, database_url=db_url, scheduler_active=False)
    first = await aiohttp_client_factory(settings)
    rt = first.app[RUNTIME]
    await record_outcome(rt, "r1", "sent")
    await record_outcome(rt, "r2", "error", error="boom")
    await rc.wait_for(lambda: any(r.items for r in rc.requests))
    await first.close()  # stop the whole service (services, storage)

    rc.mode = "ok"
    second = await aiohttp_client_factory(settings)
    rt2 = second.app[RUNTIME]
    items = await rc.wait_items(2, timeout=15)
    assert [(i["id"], sorted(i)) for i in items] == [
        ("r1", ["id", "sent_ts"]),
        ("r2", ["error", "error_ts", "id"]),
    ]
    await wait_until(lambda: _zero(backlog(rt2)), what="acknowledged after restart")
    rt2.wake_reporter()
    await asyncio.sleep(0.3)
    assert len(rc.accepted_items()) == 2


async def test_metrics_show_backlog_failures_and_last_success_age(
    start_app: Any, report_client: ReportClient
) -> None:
    rc = report_client
    rc.mode = "500"
    t_start = time.time()
    client, rt = await start_app(client_sync_url=rc.url)
    await record_outcome(rt, "x1", "sent")
    await rc.wait_for(lambda: len([r for r in rc.requests if r.items]) >= 2)
    await wait_until(lambda: _metric_at_least(client, "gmp_report_backlog", 1.0))
    t_read = time.time()
    text = await _metrics(client)
    assert _metric(text, "gmp_report_sync_failures_total") >= 2
    # Never succeeded: the age counts from the reporter's start, which lies between the app's
    # start and the first (failed) request; failures do not reset it.
    age = _metric(text, "gmp_report_last_success_age_seconds")
    assert t_read - rc.requests[0].at <= age <= time.time() - t_start
    t_ok = time.time()
    rc.mode = "ok"
    await rc.wait_items(1)
    await wait_until(lambda: _zero(backlog(rt)))
    await wait_until(lambda: _metric_equals(client, "gmp_report_backlog", 0.0))
    age = _metric(await _metrics(client), "gmp_report_last_success_age_seconds")
    # The first success came after the switch to ok: the age restarted from it.
    assert 0 <= age <= time.time() - t_ok + 0.05


async def _metrics(client: Any) -> str:
    resp = await client.get("/metrics")
    assert resp.status == 200
    return str(await resp.text())


def _metric(text: str, name: str, tenant: str = "default") -> float:
    prefix = f'{name}{{tenant_id="{tenant}"}} '
    for line in text.splitlines():
        if line.startswith(prefix):
            return float(line[len(prefix) :])
    raise AssertionError(f"{prefix!r} not in /metrics")


async def _metric_at_least(client: Any, name: str, value: float) -> bool:
    return _metric(await _metrics(client), name) >= value


async def _metric_equals(client: Any, name: str, value: float) -> bool:
    return _metric(await _metrics(client), name) == value


# -- the client's answer: queued, next_sync_after, run-now --------------------------------------
async def test_queued_answers_trigger_immediate_resyncs(
    start_app: Any, report_client: ReportClient
) -> None:
    rc = report_client
    rc.answers = [{"queued": 2}, {"queued": 1}, {"queued": 0}]
    await start_app(client_sync_url=rc.url, sync_interval=3600)
    await rc.wait_requests(3)
    await asyncio.sleep(0.4)
    assert len(rc.requests) == 3  # no heartbeat for an hour: the two extra calls were at once


async def test_next_sync_after_holds_heartbeats_but_not_reports_and_tenant_run_now_clears_it(
    start_app: Any, report_client: ReportClient
) -> None:
    rc = report_client
    rc.answers = [{"next_sync_after": FAR}]
    client, rt = await start_app(client_sync_url=rc.url, sync_interval=0.2)
    await rc.wait_requests(1)
    await asyncio.sleep(1.0)  # five heartbeat intervals
    assert len(rc.requests) == 1
    assert status_of(rt)["dnd"] is True and status_of(rt)["dnd_until"] == FAR

    rc.answers.append({"next_sync_after": FAR})
    await record_outcome(rt, "urgent", "sent")  # reports are urgent: pushed inside DND
    assert [i["id"] for i in await rc.wait_items(1)] == ["urgent"]
    assert len(rc.requests) == 2

    resp = await client.post("/commands/run-now", json={}, headers=client.admin_headers)
    assert resp.status == 200
    await asyncio.sleep(0.5)
    assert len(rc.requests) == 2  # the admin's run-now respects the tenant's DND

    resp = await client.post("/commands/run-now", json={}, headers={"X-API-Token": TENANT_TOKEN})
    assert resp.status == 200, await resp.text()
    await rc.wait_requests(3)  # the tenant's own run-now calls it at once ...
    assert rc.requests[2].items == []
    await rc.wait_requests(5)  # ... and, its answer having no next_sync_after, heartbeats resume
    assert status_of(rt)["dnd"] is False


async def test_admin_run_now_syncs_tenants_outside_dnd_at_once(
    start_app: Any, report_client: ReportClient
) -> None:
    rc = report_client
    client, _rt = await start_app(client_sync_url=rc.url, sync_interval=300.0)
    await rc.wait_requests(1)  # the first heartbeat; the next one would be in 300 s
    await asyncio.sleep(0.3)
    assert len(rc.requests) == 1
    resp = await client.post("/commands/run-now", json={}, headers=client.admin_headers)
    assert resp.status == 200
    await rc.wait_requests(2)
    assert rc.requests[1].items == []  # an empty heartbeat, right away


# -- signing, auth, address policy ----------------------------------------------------------------
def independent_verify(
    secret: str,
    headers: dict[str, str],
    body: bytes,
    now: float | None = None,
    tolerance: float = 300,
) -> bool:
    """What a client writes from the docs (no import of the proxy's signing module)."""
    import hashlib
    import hmac

    key = base64.b64decode(secret[6:]) if secret.startswith("whsec_") else secret.encode()
    msg_id, ts = headers["webhook-id"], headers["webhook-timestamp"]
    if abs((time.time() if now is None else now) - int(ts)) > tolerance:
        return False
    mac = hmac.new(key, f"{msg_id}.{ts}.".encode() + body, hashlib.sha256).digest()
    expected = base64.b64encode(mac).decode()
    return any(
        sig.startswith("v1,") and hmac.compare_digest(sig[3:], expected)
        for sig in headers.get("webhook-signature", "").split()
    )


def _docs_verifier() -> Any:
    """The verifier printed in docs/reports.md, executed as a reader would paste it."""
    import re
    from pathlib import Path

    text = (Path(__file__).parents[2] / "docs" / "reports.md").read_text()
    [code] = [b for b in re.findall(r"```python\n(.*?)```", text, re.S) if "def verify" in b]
    assert len(code.strip().splitlines()) <= 10
    namespace: dict[str, Any] = {}
    exec(compile(code, "docs/reports.md", "exec"), namespace)
    return namespace["verify"]


async def test_requests_are_signed_with_the_global_or_the_tenant_secret(
    start_app: Any,
) -> None:
    from mail_proxy.ce.reports.signing import SignatureError, verify

    tenant_secret = "whsec_" + base64.b64encode(bytes(range(32))).decode()
    docs_verify = _docs_verifier()
    async with ReportClient() as glob, ReportClient() as own:
        _client, rt = await start_app(
            client_sync_url=glob.url,
            sync_interval=3600,
            client_sync_secret="global-s3cret",
            fetch_allow_networks=["127.0.0.0/8"],
        )
        await rt.storage.save_tenant(
            Tenant("acme", client_base_url=own.base_url, sync_secret=tenant_secret)
        )
        await record_outcome(rt, "g1", "sent")
        await record_outcome(rt, "t1", "sent", tenant_id="acme")
        await glob.wait_items(1)
        await own.wait_items(1)
        for rc, secret in ((glob, "global-s3cret"), (own, tenant_secret)):
            req = next(r for r in rc.requests if r.items)
            h, body = req.headers, req.body
            assert independent_verify(secret, h, body)
            assert not independent_verify(secret, h, body.replace(b"sent_ts", b"sent_tz"))
            assert not independent_verify(secret, {**h, "webhook-id": "other"}, body)
            assert not independent_verify(secret, h, body, now=int(h["webhook-timestamp"]) + 301)
            assert not independent_verify("wrong", h, body)
            assert docs_verify(secret, h, body)  # the ten lines of docs/reports.md
            assert not docs_verify(secret, h, body + b" ")
            verify(secret, h, body)  # the helper shipped for Python clients agrees
            with pytest.raises(SignatureError):
                verify(secret, h, body + b" ")
            with pytest.raises(SignatureError):
                verify(secret, h, body, now=int(h["webhook-timestamp"]) - 301)
        # The tenant's secret is not the global one and vice versa.
        req = next(r for r in own.requests if r.items)
        assert not independent_verify("global-s3cret", req.headers, req.body)


async def test_without_a_secret_requests_are_unsigned_and_a_warning_is_logged_once(
    start_app: Any, report_client: ReportClient, caplog: pytest.LogCaptureFixture
) -> None:
    rc = report_client
    caplog.set_level(logging.WARNING, logger="mail_proxy.ce.reports.http_sink")
    await start_app(client_sync_url=rc.url, sync_interval=0.2)
    requests = await rc.wait_requests(3)
    assert all("webhook-signature" not in r.headers for r in requests)
    assert all(r.headers["webhook-id"] and r.headers["webhook-timestamp"] for r in requests)
    warnings = [r for r in caplog.records if "UNSIGNED" in r.getMessage()]
    assert len(warnings) == 1


async def test_auth_headers_come_from_client_auth_or_the_global_settings(
    start_app: Any,
) -> None:
    async with ReportClient() as glob, ReportClient() as bearer, ReportClient() as basic:
        _client, rt = await start_app(
            client_sync_url=glob.url,
            sync_interval=3600,
            client_sync_token="glob-token",
            fetch_allow_networks=["127.0.0.0/8"],
        )
        await rt.storage.save_tenant(
            Tenant(
                "b1",
                client_base_url=bearer.base_url + "/app/",
                client_sync_path="hooks/sync",
                client_auth={"method": "bearer", "token": "tk1"},
            )
        )
        await rt.storage.save_tenant(
            Tenant(
                "b2",
                client_base_url=basic.base_url,
                client_auth={"method": "basic", "user": "u", "password": "p:w"},
            )
        )
        await record_outcome(rt, "g", "sent")
        await record_outcome(rt, "x", "sent", tenant_id="b1")
        await record_outcome(rt, "y", "sent", tenant_id="b2")
        for rc in (glob, bearer, basic):
            await rc.wait_items(1)
        first = next(r for r in glob.requests if r.items)
        assert first.headers["authorization"] == "Bearer glob-token"
        req = next(r for r in bearer.requests if r.items)
        assert req.headers["authorization"] == "Bearer tk1"
        assert req.path == "/app/hooks/sync"
        req = next(r for r in basic.requests if r.items)
        assert req.headers["authorization"] == "Basic " + base64.b64encode(b"u:p:w").decode()
        assert req.path == "/mail-proxy/sync"


async def test_tenant_urls_obey_the_address_policy(
    start_app: Any, report_client: ReportClient
) -> None:
    rc = report_client
    _client, rt = await start_app(sync_interval=3600)  # loopback not allowed
    await rt.storage.save_tenant(Tenant("acme", client_base_url=rc.base_url))
    await record_outcome(rt, "p1", "sent", tenant_id="acme")

    async def failed() -> bool:
        return any(
            e["tenant_id"] == "acme" and e["failures"] >= 1 for e in reporter_of(rt).sync_status()
        )

    await wait_until(failed, what="refused sync")
    entry = status_of(rt, "acme")
    assert (
        "address policy" in entry["last_error"]
        and "GMP_FETCH_ALLOW_NETWORKS" in (entry["last_error"])
    )
    assert rc.requests == [] and await backlog(rt, "acme") == 1


async def test_sync_status_reports_each_tenant(start_app: Any, report_client: ReportClient) -> None:
    rc = report_client
    rc.answers = [{"next_sync_after": FAR}]
    _client, rt = await start_app(client_sync_url=rc.url, sync_interval=3600)
    await rc.wait_requests(1)
    await wait_until(
        lambda: _true(status_of(rt)["last_success_ts"] is not None and not status_of(rt)["syncing"])
    )
    entry = status_of(rt)
    assert entry["sink"] == "http" and entry["url"] == rc.url
    assert entry["dnd"] is True and entry["next_due_ts"] == FAR
    assert entry["backlog"] == 0 and entry["failures"] == 0 and entry["last_error"] is None
    assert entry["syncing"] is False


async def _true(value: bool) -> bool:
    return value
