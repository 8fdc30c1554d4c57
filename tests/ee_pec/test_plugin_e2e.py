"""End to end: a message through a PEC account, the provider's receipts read back from the
account's mailbox, the message's events, states and delivery reports.

Real parts: the service (every installed plugin), an SMTP server playing the PEC provider
(it appends signed receipts to the sender's Dovecot mailbox), Dovecot, the client app that
receives the delivery reports, SQLite and PostgreSQL.
"""

from __future__ import annotations

import asyncio
from typing import Any

from ee_pec.world import DELIVERED, NO_DEST, REFUSED, PecWorld, metric, plan

from mail_proxy.core.testing.reports import wait_until


async def test_acceptance_delivery_and_error_reach_the_client_in_order_once(
    start_world: Any,
) -> None:
    world: PecWorld = await start_world()
    world.provider.plan = plan(errors={REFUSED: NO_DEST})
    await world.add_pec_account()
    await world.send("inv-1", [DELIVERED, REFUSED])

    items = await world.wait_pec_items("inv-1", 3)
    assert [i["pec_event"] for i in items] == ["pec_acceptance", "pec_delivery", "pec_error"]
    acceptance, delivery, error = items
    assert acceptance["pec_details"]["kind"] == "accettazione"
    assert acceptance["pec_details"]["provider"] == "Test PEC Provider"
    assert acceptance["pec_acceptance_ts"] == acceptance["pec_ts"]
    assert delivery["pec_details"]["recipient"] == DELIVERED
    assert delivery["pec_acceptance_ts"] == acceptance["pec_ts"]
    assert "pec_delivery_ts" not in delivery  # not every recipient has it
    assert error["pec_details"]["recipient"] == REFUSED
    assert error["pec_details"]["error"] == f"no-dest: {NO_DEST}"
    assert error["pec_details"]["kind"] == "errore-consegna"

    msg = await world.message("inv-1")
    assert msg["status"] == "sent"
    assert msg["pec_acceptance_ts"] == acceptance["pec_ts"]
    assert msg["pec_delivery_ts"] is None
    assert msg["pec_recipients"] == {
        DELIVERED: {"status": "delivered", "ts": delivery["pec_ts"]},
        REFUSED: {"status": "error", "ts": error["pec_ts"], "error": f"no-dest: {NO_DEST}"},
    }
    kinds = [e["event_type"] for e in await world.events("inv-1")]
    assert kinds[-3:] == ["pec_acceptance", "pec_delivery", "pec_error"]
    assert "sent" in kinds

    # nothing more arrives: each event was reported once
    await asyncio.sleep(1.5)
    assert [i["pec_event"] for i in await world.pec_items("inv-1")] == [
        "pec_acceptance",
        "pec_delivery",
        "pec_error",
    ]
    # every receipt was flagged \Seen once handled
    assert world.dovecot.count(world.user, unseen_only=True) == 0


async def test_delivered_to_every_recipient_sets_pec_delivery_ts(start_world: Any) -> None:
    world: PecWorld = await start_world()
    await world.add_pec_account()
    other = "archivio@pec.destinatario.test"
    await world.send("inv-2", [DELIVERED], cc=[other])

    items = await world.wait_pec_items("inv-2", 3)
    assert [i["pec_event"] for i in items] == ["pec_acceptance", "pec_delivery", "pec_delivery"]
    last = items[-1]
    assert last["pec_delivery_ts"] == last["pec_ts"]
    assert "pec_delivery_ts" not in items[1]
    msg = await world.message("inv-2")
    assert msg["pec_delivery_ts"] == last["pec_ts"]
    assert {a: v["status"] for a, v in msg["pec_recipients"].items()} == {
        DELIVERED: "delivered",
        other: "delivered",
    }


async def test_pull_reports_and_status_route(start_world: Any) -> None:
    world: PecWorld = await start_world()
    await world.add_pec_account()
    await world.send("inv-3", [DELIVERED])
    await world.wait_pec_items("inv-3", 2)

    async def mailbox_caught_up() -> bool:  # the state is saved after each batch
        (account,) = (await world.api.get("/pec/status"))["accounts"]
        return bool((account["mailbox"] or {}).get("last_uid", 0) >= 2)

    await wait_until(mailbox_caught_up, what="mailbox state saved")
    (account,) = (await world.api.get("/pec/status"))["accounts"]
    assert account["account_id"] == "pec" and account["imap_user"] == world.user
    assert "imap_password" not in account
    assert account["polled_here"] is True
    assert account["poller"]["last_error"] is None
    assert account["mailbox"]["last_uid"] >= 2
    assert account["waiting"] == {"acceptance": 0, "delivery": 0}

    text = await (await world.api.client.get("/metrics")).text()
    assert 'gmp_pec_poll_lag_seconds{account_id="pec",tenant_id="default"}' in text
    assert 'gmp_pec_poll_failures{account_id="pec",tenant_id="default"} 0.0' in text
    assert await metric(world, "gmp_pec_receipts_total", kind="accettazione") == 1

    accounts = (await world.api.get("/accounts"))["accounts"]
    shown = next(a for a in accounts if a["id"] == "pec")
    assert shown["pec"] is True and shown["imap_password_set"] is True
    assert "imap_password" not in shown and world.password not in str(accounts)


async def test_a_mailbox_that_refuses_the_login_shows_its_error(start_world: Any) -> None:
    world: PecWorld = await start_world()
    await world.add_pec_account(imap_password="not-the-password")

    async def failing() -> bool:
        (account,) = (await world.api.get("/pec/status"))["accounts"]
        return bool((account["poller"] or {}).get("last_error"))

    await wait_until(failing, 15, "the login failure shown")
    (account,) = (await world.api.get("/pec/status"))["accounts"]
    assert "login as" in account["poller"]["last_error"]
    assert "not-the-password" not in str(account)
    text = await (await world.api.client.get("/metrics")).text()
    assert 'gmp_pec_poll_failures{account_id="pec",tenant_id="default"} 0.0' not in text
    # the right password: the same poller is replaced and reads the mailbox
    await world.add_pec_account()
    await world.send("after-fix", [DELIVERED])
    assert len(await world.wait_pec_items("after-fix", 2)) == 2
