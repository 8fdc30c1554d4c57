"""The bounce plugin end to end: a message sent through the proxy to a real SMTP server, a
bounce built from what that server received put in a real Dovecot mailbox, the delivery
report the client application receives, what the API shows.

Everything real: the service in its own process, aiosmtpd, Dovecot, the report receiver.
"""

from __future__ import annotations

import asyncio

from ee_bounce.bounce_stack import (
    RETURN_PATH,
    BounceStack,
    postfix_dsn,
    qmail_bounce,
)


async def test_postfix_dsn_quoting_headers_gives_one_report(stack: BounceStack) -> None:
    await stack.start()
    config = await stack.configure()
    assert config["bounce"]["password_set"] is True and "password" not in config["bounce"]
    await stack.add_account()
    received = await stack.send("order-1", to="gone@example.org")
    # VERP: the envelope sender names the message; X-Genro-Mail-ID stays on the message
    local, _, domain = received.mail_from.partition("@")
    assert domain == "example.com" and local.startswith("bounces+"), received.mail_from
    assert received.message["X-Genro-Mail-ID"] == "order-1"

    stack.append(postfix_dsn(received))
    items = await stack.wait_bounces("order-1")
    await asyncio.sleep(1.5)  # nothing more comes
    items = await stack.bounce_items("order-1")
    assert len(items) == 1, items
    item = items[0]
    assert (item["bounce_type"], item["bounce_code"], item["bounce_reason"]) == (
        "hard",
        "5.1.1",
        "user_unknown",
    )
    assert item["recipient"] == "gone@example.org" and item["bounce_ts"] > 0
    assert "User unknown" in item["bounce_diagnostic"]

    message = (await stack.ok("GET", "/messages/order-1"))["message"]
    assert message["bounce_type"] == "hard" and message["bounce_reason"] == "user_unknown"
    assert message["bounce_code"] == "5.1.1" and message["bounce_ts"] == item["bounce_ts"]
    events = (await stack.ok("GET", "/messages/order-1/events"))["events"]
    bounce = [e for e in events if e["event_type"] == "bounce"]
    assert len(bounce) == 1
    meta = bounce[0]["metadata"]
    assert meta["matched_by"] == "verp" and meta["rule"]  # why, for the operator
    metrics = await stack.metrics()
    assert 'gmp_bounces_total{reason="user_unknown",tenant_id="default",type="hard"} 1.0' in metrics


async def test_bounce_quoting_nothing_is_matched_by_its_verp_address(stack: BounceStack) -> None:
    await stack.start()
    await stack.configure()
    await stack.add_account()
    received = await stack.send("order-2", to="nobody-here@example.net")
    untouched = (await stack.ok("GET", "/messages/order-2"))["message"]
    assert untouched["bounce_type"] is None and untouched["bounce_ts"] is None

    stack.append(qmail_bounce(received))
    items = await stack.wait_bounces("order-2")
    assert [(i["bounce_type"], i["bounce_reason"], i["recipient"]) for i in items] == [
        ("hard", "user_unknown", "nobody-here@example.net")
    ]


async def test_message_id_correlation_without_verp(stack: BounceStack) -> None:
    # No return path: envelope senders are the client's; the bounce is delivered to the
    # bounce address and names the message by the Message-ID the proxy generated.
    await stack.start()
    await stack.configure(return_path=None)
    await stack.add_account()
    received = await stack.send("order-3", to="full@example.org")
    assert "+" not in received.mail_from
    stack.append(postfix_dsn(received, status="4.2.2", deliver_to=RETURN_PATH))
    items = await stack.wait_bounces("order-3")
    assert [(i["bounce_type"], i["bounce_code"], i["bounce_reason"]) for i in items] == [
        ("soft", "4.2.2", "mailbox_full")
    ]
    events = (await stack.ok("GET", "/messages/order-3/events"))["events"]
    assert [e["metadata"]["matched_by"] for e in events if e["event_type"] == "bounce"] == [
        "message_id"
    ]
    # a soft bounce never suppresses
    assert (await stack.ok("GET", "/suppressions"))["suppressions"] == []


async def test_the_same_bounce_twice_records_one_event(stack: BounceStack) -> None:
    await stack.start()
    await stack.configure()
    await stack.add_account()
    received = await stack.send("order-4", to="twice@example.org")
    dsn = postfix_dsn(received, bounce_id="same-dsn")
    stack.append(dsn)
    stack.append(dsn)  # the same notice delivered again
    await stack.wait_seen(2)
    await stack.wait_bounces("order-4")
    await asyncio.sleep(1.5)
    assert len(await stack.bounce_items("order-4")) == 1
    events = (await stack.ok("GET", "/messages/order-4/events"))["events"]
    assert len([e for e in events if e["event_type"] == "bounce"]) == 1


async def test_login_failure_is_reported_not_a_crash_loop(stack: BounceStack) -> None:
    await stack.start()
    sentinel = "Sentinel-Password-7f3a9"
    await stack.configure(password=sentinel)
    deadline = asyncio.get_running_loop().time() + 20
    while True:
        status = await stack.ok("GET", "/instance/bounce")
        mailboxes = status["mailboxes"]
        if mailboxes and mailboxes[0]["last_error"]:
            break
        assert asyncio.get_running_loop().time() < deadline, status
        await asyncio.sleep(0.2)
    [mailbox] = mailboxes
    assert mailbox["state"] == "failing" and "login" in mailbox["last_error"]
    assert sentinel not in str(status)
    metrics = await stack.metrics()
    assert "gmp_bounce_poll_lag_seconds{mailbox=" in metrics
    assert "gmp_bounce_mailbox_connected{mailbox=" in metrics
    await asyncio.sleep(2)  # backoff, not a loop: the log says it once
    log = stack.log_tail()
    assert sentinel not in log and log.count("refused") <= 2, log
    # fixed through the API: polling resumes without a restart
    await stack.configure()
    while (await stack.ok("GET", "/instance/bounce"))["mailboxes"][0]["state"] != "polling":
        assert asyncio.get_running_loop().time() < deadline + 20
        await asyncio.sleep(0.2)


async def test_feedback_loop_complaint_is_recorded_never_a_bounce(stack: BounceStack) -> None:
    await stack.start()
    await stack.configure()
    await stack.add_account()
    received = await stack.send("c-1", to="reader@example.org")
    original = received.raw.replace(b"\r\n", b"\n").split(b"\n\n", 1)[0].decode()
    arf = (
        f"From: staff@feedback.example.net\nTo: {received.mail_from}\n"
        "Subject: FW: complaint\nMessage-ID: <arf-1@feedback.example.net>\nMIME-Version: 1.0\n"
        'Content-Type: multipart/report; report-type=feedback-report; boundary="F"\n\n'
        "--F\nContent-Type: text/plain\n\nThis is an email abuse report.\n\n"
        "--F\nContent-Type: message/feedback-report\n\nFeedback-Type: abuse\n"
        "User-Agent: ExampleFBL/1.0\nVersion: 1\nOriginal-Rcpt-To: reader@example.org\n\n"
        f"--F\nContent-Type: message/rfc822\n\n{original}\n\nhello\n--F--\n"
    )
    stack.append(arf.replace("\n", "\r\n").encode())
    await stack.reports.wait_for(
        lambda: any(
            i.get("id") == "c-1" and "complaint_ts" in i for i in stack.reports.accepted_items()
        ),
        20,
    )
    events = (await stack.ok("GET", "/messages/c-1/events"))["events"]
    assert [e["event_type"] for e in events if e["event_type"] in ("bounce", "complaint")] == [
        "complaint"
    ]
    assert (await stack.ok("GET", "/messages/c-1"))["message"]["bounce_type"] is None
    assert (await stack.ok("GET", "/suppressions"))["suppressions"] == []
