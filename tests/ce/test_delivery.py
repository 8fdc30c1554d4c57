"""The delivery engine against a real SMTP server on loopback (aiosmtpd, scriptable)."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import pytest
import sqlalchemy as sa

from mail_proxy.core.testing.smtp import SmtpTestServer
from mail_proxy.core.web.app import RUNTIME
from support.api import add_account, enqueue, events, get_message, message, run_now, wait_status


@pytest.fixture
async def smtp() -> Any:
    async with SmtpTestServer() as server:
        yield server


@pytest.fixture
def app(aiohttp_client_factory: Any, make_settings: Any) -> Any:
    async def start(**overrides: Any) -> Any:
        return await aiohttp_client_factory(make_settings(**overrides))

    return start


async def test_priority_then_fifo_order_is_observed_at_the_server(
    app: Any, smtp: SmtpTestServer
) -> None:
    client = await app(max_concurrent_sends=1, max_sends_per_account=1, scheduler_active=False)
    await add_account(client, smtp, default=True)
    plan = [("a", 3), ("b", 2), ("c", 0), ("d", 2), ("e", 1), ("f", 0), ("g", 3), ("h", 2)]
    await enqueue(client, [message(id=i, priority=p) for i, p in plan])
    resp = await client.post("/commands/activate", json={}, headers=client.admin_headers)
    assert (await resp.json())["scheduler_active"] is True
    received = await smtp.wait_for_messages(len(plan))
    order = [m.message["X-Genro-Mail-ID"] for m in received]
    assert order == ["c", "f", "e", "b", "d", "h", "a", "g"]


async def test_deferred_ts_holds_a_message_until_its_time(app: Any, smtp: SmtpTestServer) -> None:
    client = await app()
    await add_account(client, smtp, default=True)
    at = time.time() + 1.5
    await enqueue(client, [message(id="later", deferred_ts=at), message(id="now")])
    assert (await get_message(client, "later"))["status"] == "scheduled"
    await wait_status(client, "now", "sent")
    assert [m.message["X-Genro-Mail-ID"] for m in smtp.messages] == ["now"]
    await wait_status(client, "later", "sent")
    assert smtp.messages[-1].received_at >= at


async def test_suspended_batch_is_held_until_activated(app: Any, smtp: SmtpTestServer) -> None:
    client = await app()
    await add_account(client, smtp, default=True)
    h = client.admin_headers
    resp = await client.post("/commands/suspend", json={"batch_code": "promo"}, headers=h)
    assert (await resp.json())["suspended_batches"] == ["promo"]
    await enqueue(client, [message(id="p1", batch_code="promo"), message(id="x1")])
    await wait_status(client, "x1", "sent")
    await asyncio.sleep(0.3)
    assert (await get_message(client, "p1"))["status"] == "pending"
    resp = await client.post("/commands/activate", json={"batch_code": "promo"}, headers=h)
    assert (await resp.json())["suspended_batches"] == []
    await wait_status(client, "p1", "sent")


async def test_temporary_failure_is_retried_with_the_same_message_id(
    app: Any, smtp: SmtpTestServer
) -> None:
    client = await app(retry_delays=[0.2])
    await add_account(client, smtp, default=True)
    smtp.data_replies.append("451 4.3.0 try again later")
    await enqueue(client, [message(id="r1")])
    msg = await wait_status(client, "r1", "sent")
    assert msg["attempts"] == 2
    [refused] = smtp.refused_data
    [delivered] = smtp.messages
    first_id = [line for line in refused.split(b"\r\n") if line.lower().startswith(b"message-id:")][
        0
    ]
    assert first_id.split(b":", 1)[1].strip().decode() == delivered.message["Message-ID"]
    kinds = [(e["event_type"], e["metadata"].get("smtp_code")) for e in await events(client, "r1")]
    assert kinds == [("queued", None), ("deferred", 451), ("sent", None)]


async def test_permanent_failure_fails_at_once(app: Any, smtp: SmtpTestServer) -> None:
    client = await app()
    await add_account(client, smtp, default=True)
    smtp.data_replies.append("554 5.7.1 rejected by policy")
    await enqueue(client, [message(id="p")])
    msg = await wait_status(client, "p", "error")
    assert msg["attempts"] == 1 and "554" in msg["error"]
    assert smtp.messages == []


async def test_disconnect_during_data_is_retried(app: Any, smtp: SmtpTestServer) -> None:
    client = await app(retry_delays=[0.2])
    await add_account(client, smtp, default=True)
    smtp.drop_data = 1
    await enqueue(client, [message(id="d")])
    msg = await wait_status(client, "d", "sent")
    assert msg["attempts"] == 2 and len(smtp.dropped) == 1 and len(smtp.messages) == 1


async def test_connection_refused_backs_off_without_a_hot_loop(
    app: Any, unused_tcp_port: int
) -> None:
    client = await app(retry_delays=[30.0])
    await add_account(client, None, port=unused_tcp_port, default=True)
    await enqueue(client, [message(id="c")])
    msg = await wait_status(client, "c", "deferred")
    await asyncio.sleep(0.5)
    msg = await get_message(client, "c")
    assert msg["status"] == "deferred" and msg["attempts"] == 1
    assert msg["deferred_ts"] >= time.time() + 25
    [ev] = [e for e in await events(client, "c") if e["event_type"] == "deferred"]
    assert ev["metadata"]["deferred_ts"] == msg["deferred_ts"]


async def test_max_retries_then_error(app: Any, smtp: SmtpTestServer) -> None:
    client = await app(retry_delays=[0.05], max_retries=2)
    await add_account(client, smtp, default=True)
    smtp.data_replies.extend(["451 4.3.0 busy"] * 5)
    await enqueue(client, [message(id="m")])
    msg = await wait_status(client, "m", "error")
    assert msg["attempts"] == 3 and "gave up after 3 attempts" in msg["error"]
    assert [e["event_type"] for e in await events(client, "m")] == [
        "queued",
        "deferred",
        "deferred",
        "error",
    ]


async def test_auth_failure_fails_without_leaking_the_password(
    app: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    sentinel = "WRONG-pass-SENTINEL-42"
    async with SmtpTestServer(auth=("user", "right"), auth_require_tls=False) as server:
        client = await app()
        await add_account(
            client, server, user="user", password=sentinel, allow_plaintext_auth=True, default=True
        )
        await enqueue(client, [message(id="a")])
        msg = await wait_status(client, "a", "error")
        assert msg["attempts"] == 1
        seen = [str(msg), str(await events(client, "a"))]
        resp = await client.get("/accounts", headers=client.admin_headers)
        seen.append(await resp.text())
        seen.append(caplog.text)
        assert all(sentinel not in s for s in seen)
        assert server.auth_attempts and server.messages == []


async def test_password_never_sent_over_an_unencrypted_connection(app: Any) -> None:
    async with SmtpTestServer(auth=("user", "secret"), auth_require_tls=False) as server:
        client = await app()
        await add_account(client, server, user="user", password="secret", default=True)
        await enqueue(client, [message(id="p")])
        msg = await wait_status(client, "p", "error")
        assert msg["attempts"] == 1  # permanent: no retry would change it
        assert "not encrypted" in msg["error"] and "allow_plaintext_auth" in msg["error"]
        assert server.auth_attempts == [] and server.messages == []


async def test_starttls_required_but_not_offered_sends_no_auth(
    app: Any, smtp: SmtpTestServer
) -> None:
    client = await app()
    await add_account(client, smtp, user="user", password="secret", starttls=True, default=True)
    await enqueue(client, [message(id="t")])
    msg = await wait_status(client, "t", "error")
    assert "STARTTLS" in msg["error"]
    assert smtp.auth_attempts == [] and smtp.messages == []


async def test_mixed_recipients_are_not_sent_twice(app: Any, smtp: SmtpTestServer) -> None:
    client = await app(retry_delays=[0.2])
    await add_account(client, smtp, default=True)
    smtp.script_rcpt["slow@example.com"] = "450 4.2.1 mailbox busy"
    await enqueue(client, [message(id="mix", to=["ok@example.com", "slow@example.com"])])
    await smtp.wait_for_messages(1)
    await wait_status(client, "mix", "deferred")
    del smtp.script_rcpt["slow@example.com"]
    await wait_status(client, "mix", "sent")
    assert [m.rcpt_tos for m in smtp.messages] == [["ok@example.com"], ["slow@example.com"]]
    assert smtp.messages[0].message["Message-ID"] == smtp.messages[1].message["Message-ID"]


async def test_a_recipient_refused_for_good_on_the_retry_leaves_the_message_sent(
    app: Any, smtp: SmtpTestServer
) -> None:
    # ok@ gets it on the first attempt; late@ is deferred, then refused for good on the retry
    # (the only recipient left): the message was delivered, so it ends "sent" with the
    # refusal recorded, exactly as when both replies come in one attempt.
    client = await app(retry_delays=[0.2])
    await add_account(client, smtp, default=True)
    smtp.script_rcpt["late@example.com"] = "450 4.2.1 mailbox busy"
    await enqueue(client, [message(id="late", to=["ok@example.com", "late@example.com"])])
    await wait_status(client, "late", "deferred")
    smtp.script_rcpt["late@example.com"] = "550 5.1.1 no such user"
    msg = await wait_status(client, "late", "sent")
    assert [m.rcpt_tos for m in smtp.messages] == [["ok@example.com"]]
    sent = [e for e in await events(client, "late") if e["event_type"] == "sent"]
    assert [e["metadata"].get("refused_recipients") for e in sent] == [
        {"late@example.com": "550 5.1.1 no such user"}
    ], (msg, sent)


async def test_rate_limit_per_minute_defers_the_rest(app: Any, smtp: SmtpTestServer) -> None:
    client = await app()
    await add_account(client, smtp, limit_per_minute=10, default=True)
    await enqueue(client, [message(id=f"r{i}") for i in range(50)])
    await smtp.wait_for_messages(10)
    await asyncio.sleep(0.5)
    assert len(smtp.messages) == 10
    listed = await (await client.get("/messages?limit=100", headers=client.admin_headers)).json()
    statuses = [m["status"] for m in listed["messages"]]
    assert statuses.count("sent") == 10 and statuses.count("deferred") == 40
    first_window = max(m["deferred_ts"] for m in listed["messages"] if m["status"] == "deferred")
    assert first_window >= smtp.messages[0].received_at + 55
    # Let a minute pass for the limiter and the queue (shift the clock-bearing rows back).
    rt = client.app[RUNTIME]
    async with rt.storage.engine.begin() as conn:
        await conn.execute(sa.text("UPDATE send_log SET ts = ts - 61"))
        await conn.execute(
            sa.text("UPDATE messages SET deferred_ts = deferred_ts - 61 WHERE status = 'deferred'")
        )
    await run_now(client)
    await smtp.wait_for_messages(20)
    await asyncio.sleep(0.5)
    assert len(smtp.messages) == 20
    metrics = await (await client.get("/metrics")).text()
    assert 'gmp_rate_limited_total{account_id="smtp1",tenant_id="default"}' in metrics
    ids = [m.message["X-Genro-Mail-ID"] for m in smtp.messages]
    assert len(set(ids)) == 20


async def test_reject_behaviour_fails_over_limit(app: Any, smtp: SmtpTestServer) -> None:
    client = await app()
    await add_account(client, smtp, limit_per_minute=2, limit_behavior="reject", default=True)
    await enqueue(client, [message(id=f"x{i}") for i in range(4)])
    for i, final in enumerate(["sent", "sent", "error", "error"]):
        await wait_status(client, f"x{i}", final)
    statuses = [(await get_message(client, f"x{i}"))["status"] for i in range(4)]
    assert statuses == ["sent", "sent", "error", "error"]


async def test_message_headers_envelope_and_bcc(app: Any, smtp: SmtpTestServer) -> None:
    client = await app()
    await add_account(client, smtp, default=True)
    await enqueue(
        client,
        [
            message(
                id="h",
                to=["a@example.com"],
                cc=["b@example.com"],
                bcc=["hidden@example.com"],
                return_path="bounces@example.com",
                headers={"X-Campaign": "spring"},
            )
        ],
    )
    [got] = await smtp.wait_for_messages(1)
    assert got.mail_from == "bounces@example.com"
    assert sorted(got.rcpt_tos) == ["a@example.com", "b@example.com", "hidden@example.com"]
    assert "hidden@example.com" not in got.raw.decode()
    assert got.message["X-Genro-Mail-ID"] == "h" and got.message["X-Campaign"] == "spring"
    assert got.message["Date"] and got.message["Message-ID"]


async def test_test_mode_waits_for_run_now(app: Any, smtp: SmtpTestServer) -> None:
    client = await app(test_mode=True)
    await add_account(client, smtp, default=True)
    await enqueue(client, [message(id="tm")])
    await asyncio.sleep(0.4)
    assert smtp.messages == []
    await run_now(client)
    await wait_status(client, "tm", "sent")


async def test_file_transport_writes_eml(app: Any, tmp_path: Any) -> None:
    client = await app()
    out = tmp_path / "outbox"
    out.mkdir()
    await add_account(client, None, transport="file", options={"directory": str(out)}, default=True)
    await enqueue(client, [message(id="f1")])
    await wait_status(client, "f1", "sent")
    [eml] = list(out.glob("*.eml"))
    assert b"X-Genro-Mail-ID: f1" in eml.read_bytes()


def _metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in /metrics")


@pytest.mark.parametrize("max_hold", [1.0, 0.0], ids=["intake-first", "off"])
async def test_a_busy_intake_holds_new_claims_briefly(
    app: Any, smtp: SmtpTestServer, max_hold: float
) -> None:
    client = await app(intake_priority_max_hold=max_hold)
    await add_account(client, smtp, default=True)
    # 20 messages in one request: at least BUSY_MESSAGES being accepted at once = a busy
    # intake, so the dispatcher woken by this enqueue first waits for the intake to quiet down
    await enqueue(client, [message(id=f"m{i}") for i in range(20)])
    assert len(await smtp.wait_for_messages(20)) == 20
    resp = await client.get("/metrics")
    held = _metric(await resp.text(), "gmp_dispatch_intake_hold_seconds_total")
    if max_hold:
        assert 0.0 < held <= max_hold + 0.5
    else:
        assert held == 0.0
