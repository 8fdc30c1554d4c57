"""The bounce plugin's promises under trouble: restarts, a renumbered mailbox, forged bounces,
another tenant's message, the suppression list. All against the real service, SMTP server and
Dovecot (see bounce_stack.py)."""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path

from ee_bounce.bounce_stack import (
    RETURN_PATH,
    BounceStack,
    postfix_dsn,
    qmail_bounce,
)

BENCH = Path(__file__).resolve().parents[2] / "bench"


def _rejected(metrics: str, why: str) -> float:
    found = re.search(rf'gmp_bounce_rejected_total{{why="{why}"}} ([0-9.]+)', metrics)
    return float(found.group(1)) if found else 0.0


async def _bounce_events(stack: BounceStack, msg_id: str, tenant_id: str | None = None) -> list:
    params = {"tenant_id": tenant_id} if tenant_id else None
    events = (await stack.ok("GET", f"/messages/{msg_id}/events", params=params))["events"]
    return [e for e in events if e["event_type"] == "bounce"]


async def test_restart_between_bounces_and_uidvalidity_change(stack: BounceStack) -> None:
    await stack.start()
    await stack.configure()
    await stack.add_account()
    first = await stack.send("r-1", to="one@example.org")
    second = await stack.send("r-2", to="two@example.org")
    third = await stack.send("r-3", to="three@example.org")
    dsn_one = postfix_dsn(first, bounce_id="dsn-one")

    stack.append(dsn_one)
    await stack.wait_bounces("r-1")
    await asyncio.sleep(0.5)  # the report's acknowledgement committed (else sent again)
    stack.stop()
    stack.append(postfix_dsn(second, bounce_id="dsn-two"))  # arrives while the service is down
    await stack.start()
    await stack.wait_bounces("r-2")
    await asyncio.sleep(0.5)

    # The mailbox is renumbered (new UIDVALIDITY): everything in it is read again. The
    # bounce already handled must not count twice; the new one must not be missed.
    stack.stop()
    old = stack.dovecot.uidvalidity(stack.user)
    assert stack.dovecot.recreate_folder(stack.user, "INBOX") != old
    stack.append(dsn_one)
    stack.append(postfix_dsn(third, bounce_id="dsn-three"))
    await stack.start()
    await stack.wait_bounces("r-3")
    await stack.wait_seen(2)
    await asyncio.sleep(1.5)
    for msg_id in ("r-1", "r-2", "r-3"):
        # one event each (a report may be repeated across a restart, the event is one)
        reported = {(i["bounce_ts"], i["recipient"]) for i in await stack.bounce_items(msg_id)}
        assert len(reported) == 1, msg_id
        assert len(await _bounce_events(stack, msg_id)) == 1, msg_id
    status = await stack.ok("GET", "/instance/bounce")
    [mailbox] = status["mailboxes"]
    assert mailbox["uidvalidity"] == stack.dovecot.uidvalidity(stack.user)
    assert mailbox["last_error"] is None and mailbox["state"] == "polling"


async def test_forged_bounces_change_nothing(stack: BounceStack) -> None:
    await stack.start()
    await stack.configure()
    await stack.add_account()
    target = await stack.send("order-1001", to="victim@example.org")
    token = target.mail_from.split("+", 1)[1].split("@")[0]
    pk, mac = token.split("-")

    # 1. the right client id, a Message-ID the proxy never sent, no token
    headers = (
        "From: Shop <shop@example.com>\nTo: victim@example.org\nSubject: order\n"
        "Message-ID: <guessed-0001@example.com>\nX-Genro-Mail-ID: order-1001\n"
    )
    stack.append(postfix_dsn(target, headers_text=headers, deliver_to=RETURN_PATH))
    # 2. the right Message-ID, another client id
    real = target.message["Message-ID"]
    other = headers.replace("<guessed-0001@example.com>", real).replace(
        "X-Genro-Mail-ID: order-1001", "X-Genro-Mail-ID: order-1002"
    )
    stack.append(postfix_dsn(target, headers_text=other, deliver_to=RETURN_PATH))
    # 3. a token with a wrong MAC, 4. another message's key with this one's MAC
    wrong_mac = "a" * len(mac) if mac != "a" * len(mac) else "b" * len(mac)
    stack.append(qmail_bounce(target).replace(token.encode(), f"{pk}-{wrong_mac}".encode()))
    stack.append(qmail_bounce(target).replace(token.encode(), f"{pk}0-{mac}".encode()))
    await stack.wait_seen(4)
    await asyncio.sleep(1.5)

    assert await _bounce_events(stack, "order-1001") == []
    assert await stack.bounce_items("order-1001") == []
    message = (await stack.ok("GET", "/messages/order-1001"))["message"]
    assert message["bounce_type"] is None
    assert (await stack.ok("GET", "/suppressions"))["suppressions"] == []
    metrics = await stack.metrics()
    assert _rejected(metrics, "forged") == 2 and _rejected(metrics, "unmatched") == 2, metrics

    # the genuine bounce still works afterwards
    stack.append(postfix_dsn(target))
    assert len(await stack.wait_bounces("order-1001")) == 1


async def test_another_tenants_message_in_this_mailbox_changes_nothing(stack: BounceStack) -> None:
    await stack.start()
    await stack.configure()
    status, _ = await stack.api("POST", "/tenant", json={"id": "acme"})
    assert status == 201
    acme_user, acme_password = stack.dovecot.new_user("acme")
    acme_mailbox = stack.mailbox(
        user=acme_user, password=acme_password, return_path="acme-bounces@example.com"
    )
    await stack.ok(
        "PUT", "/tenant-settings/bounce", params={"tenant_id": "acme"}, json=acme_mailbox
    )
    await stack.add_account()
    await stack.add_account("acme")
    mine = await stack.send("d-1", to="a@example.org")
    theirs = await stack.send("a-1", to="b@example.org", tenant_id="acme")
    assert theirs.mail_from.startswith("acme-bounces+")  # the tenant's own return path

    # acme's genuine bounce, delivered to the instance's mailbox: refused there
    stack.append(postfix_dsn(theirs, deliver_to=theirs.mail_from))
    await stack.wait_seen(1)
    stack.append(postfix_dsn(mine))
    await stack.wait_bounces("d-1")
    assert await _bounce_events(stack, "a-1", "acme") == []
    assert _rejected(await stack.metrics(), "foreign_tenant") == 1

    # in acme's own mailbox it counts
    stack.append(postfix_dsn(theirs), user=acme_user)
    deadline = time.monotonic() + 20
    while not await _bounce_events(stack, "a-1", "acme"):
        assert time.monotonic() < deadline, stack.log_tail()
        await asyncio.sleep(0.2)
    listed = await stack.ok("GET", "/suppressions", params={"tenant_id": "acme"})
    assert [s["address"] for s in listed["suppressions"]] == ["b@example.org"]
    assert [s["address"] for s in (await stack.ok("GET", "/suppressions"))["suppressions"]] == [
        "a@example.org"
    ]
    status = await stack.ok("GET", "/instance/bounce")
    assert len(status["mailboxes"]) == 2

    # deleting the tenant removes its suppression list
    await stack.ok("DELETE", "/tenant/acme")
    listed = await stack.ok("GET", "/suppressions")
    assert [s["address"] for s in listed["suppressions"]] == ["a@example.org"]


async def test_suppression_after_hard_bounce_until_deleted(stack: BounceStack) -> None:
    await stack.start()
    await stack.configure()
    await stack.add_account()
    received = await stack.send("s-1", to="Gone@Example.org")
    stack.append(postfix_dsn(received, recipient="gone@example.org"))
    await stack.wait_bounces("s-1")

    [entry] = (await stack.ok("GET", "/suppressions"))["suppressions"]
    assert entry["address"] == "gone@example.org" and entry["code"] == "5.1.1"
    assert entry["source"] == "bounce" and entry["message_id"] == "s-1"
    day = time.strftime("%Y-%m-%d", time.gmtime(entry["updated_at"]))

    new = {"id": "s-2", "from": "shop@example.com", "to": ["GONE@example.org"], "subject": "x"}
    answer = await stack.ok("POST", "/commands/add-messages", json={"messages": [new]})
    assert answer["queued"] == 0 and answer["ok"] is False
    assert [(r["id"], r["reason"]) for r in answer["rejected"]] == [
        ("s-2", f"suppressed: gone@example.org (hard bounce 5.1.1 on {day})")
    ]
    # the client may insist for one message
    forced = {**new, "id": "s-3", "ignore_suppression": True}
    answer = await stack.ok("POST", "/commands/add-messages", json={"messages": [forced]})
    assert answer["queued"] == 1, answer

    status, data = await stack.api("DELETE", "/suppressions/gone@example.org")
    assert status == 200 and data["removed"] == "gone@example.org"
    status, data = await stack.api("DELETE", "/suppressions/gone@example.org")
    assert status == 404 and data["code"] == "suppression_not_found"
    answer = await stack.ok("POST", "/commands/add-messages", json={"messages": [new]})
    assert answer["queued"] == 1, answer

    # by hand, and a soft bounce never suppresses
    await stack.ok("POST", "/suppressions", json={"address": "Manual@Example.org", "note": "asked"})
    manual = {**new, "id": "s-4", "to": ["manual@example.org"]}
    answer = await stack.ok("POST", "/commands/add-messages", json={"messages": [manual]})
    day = time.strftime("%Y-%m-%d", time.gmtime())
    assert [(r["id"], r["reason"]) for r in answer["rejected"]] == [
        ("s-4", f"suppressed: manual@example.org (added by hand on {day})")
    ]
    status, data = await stack.api("POST", "/suppressions", json={"address": "not an address"})
    assert status == 400 and data["code"] == "validation_error"


async def test_kill_during_a_batch_neither_loses_nor_repeats(stack: BounceStack) -> None:
    # kill -9 while the poller works through the mailbox; after the restart every bounce has
    # exactly one event (the batch in progress is read again and recognised).
    import sys

    from mail_proxy.core.testing.service import ServiceProcess

    sys.path.insert(0, str(BENCH))
    from harness.bounce import dsn  # the bench's Postfix DSN for a quoted Message-ID

    count = 300
    await stack.start(GMP_SCHEDULER_ACTIVE="false", GMP_BOUNCE_BATCH_SIZE="50")
    await stack.add_account()
    ids = [f"<crash.{n}@example.com>" for n in range(count)]
    entries = [
        {"id": f"b-{n}", "from": "shop@example.com", "to": [f"gone{n}@example.org"],
         "subject": "x", "message_id": ids[n]}
        for n in range(count)
    ]  # fmt: skip
    assert (await stack.ok("POST", "/commands/add-messages", json={"messages": entries}))[
        "queued"
    ] == count
    for n in range(count):
        stack.append(dsn(n, ids[n]))
    await stack.configure(return_path=None)
    assert stack.svc is not None
    deadline = time.monotonic() + 30
    while not re.search(r"^gmp_bounces_total\{", await stack.metrics(), re.M):
        assert time.monotonic() < deadline, stack.log_tail()
        await asyncio.sleep(0.02)
    recorded = re.findall(r"^gmp_bounces_total\{.*\} ([0-9.]+)$", await stack.metrics(), re.M)
    stack.svc.kill()
    assert sum(float(v) for v in recorded) > 0  # killed while (or just after) it worked
    stack.svc = await ServiceProcess(stack.env, stack.tmp / "svc.log").start()
    # the killed instance's lease on the mailbox expires first (60 s): then the new one reads
    await stack.wait_seen(count, timeout=150)
    await asyncio.sleep(1.5)
    for n in range(count):
        assert len(await _bounce_events(stack, f"b-{n}")) == 1, n


async def test_key_rotation_keeps_the_verp_secret_and_the_password(stack: BounceStack) -> None:
    from mail_proxy.core.engine.encryption import generate_key

    await stack.start()
    await stack.configure()
    await stack.add_account()
    before = await stack.send("k-1", to="rotated@example.org")
    new_key = generate_key()
    await stack.ok("POST", "/instance/rotate-key", json={"new_key": new_key})
    stack.stop()
    stack.env["MAIL_PROXY_ENCRYPTION_KEY"] = new_key
    await stack.start()
    # a bounce that only its VERP address names, for a message sent under the old key
    stack.append(qmail_bounce(before))
    items = await stack.wait_bounces("k-1")
    assert [(i["bounce_type"], i["recipient"]) for i in items] == [("hard", "rotated@example.org")]
