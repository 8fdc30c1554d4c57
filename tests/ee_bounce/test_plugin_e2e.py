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
