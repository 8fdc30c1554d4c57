"""Receipts in the mailbox: every kind maps to its event, mail that is not a receipt is left
alone, a receipt changes only a message of the account whose mailbox it came from, and no
receipt is handled twice (read twice, a UIDVALIDITY change, a restart of the service).

Real parts: the service, the simulated provider (SMTP), Dovecot, the report receiver, SQLite
and PostgreSQL.
"""

from __future__ import annotations

import asyncio
from typing import Any

from ee_pec.world import DELIVERED, SENDER, PecWorld, Received, common, metric

from mail_proxy.core.testing.reports import wait_until
from support.corpora import corpus
from support.pec_provider import build_anomaly, build_certified_mail, build_receipt

FIRST = "primo@pec.destinatario.test"
SECOND = "secondo@pec.destinatario.test"
THIRD = "terzo@pec.destinatario.test"


async def test_every_receipt_kind_maps_to_its_event(start_world: Any) -> None:
    world: PecWorld = await start_world()

    def every_kind(got: Received) -> list[bytes]:
        if got.subject.endswith("refused"):
            return [build_receipt("non-accettazione", **common(got), error_detail="virus")]
        one = common(got, recipients=[FIRST])
        return [
            build_receipt("accettazione", **common(got)),
            build_receipt("presa-in-carico", **one),
            build_receipt("preavviso-errore-consegna", **one, error_detail="in attesa"),
            build_receipt("avvenuta-consegna", **common(got), recipient=FIRST),
            build_receipt("errore-consegna", **common(got), recipient=SECOND),
            build_receipt("rilevazione-virus", **common(got), recipient=THIRD),
        ]

    world.provider.plan = every_kind
    await world.add_pec_account()
    await world.send("kinds", [FIRST, SECOND, THIRD])
    await world.send("refused", [FIRST], subject="Fattura refused")

    items = await world.wait_pec_items("kinds", 6)
    assert [(i["pec_event"], i["pec_details"]["kind"]) for i in items] == [
        ("pec_acceptance", "accettazione"),
        ("pec_taken_in_charge", "presa-in-carico"),
        ("pec_delivery_warning", "preavviso-errore-consegna"),
        ("pec_delivery", "avvenuta-consegna"),
        ("pec_error", "errore-consegna"),
        ("pec_error", "rilevazione-virus"),
    ]
    assert items[4]["pec_details"]["error"].startswith("no-dest")
    assert items[5]["pec_details"]["error"] == "virus" and items[5]["pec_details"]["recipient"]
    msg = await world.message("kinds")
    assert {a: v["status"] for a, v in msg["pec_recipients"].items()} == {
        FIRST: "delivered",
        SECOND: "error",
        THIRD: "error",
    }

    (refusal,) = await world.wait_pec_items("refused", 1)
    assert refusal["pec_event"] == "pec_error"
    assert refusal["pec_details"]["kind"] == "non-accettazione"
    assert refusal["pec_details"]["error"] == "altro: virus"
    refused = await world.message("refused")
    assert refused["pec_acceptance_ts"] is None
    assert refused["pec_recipients"] == {
        FIRST: {"status": "error", "ts": refusal["pec_ts"], "error": "altro: virus"}
    }
    assert await metric(world, "gmp_pec_receipts_total", kind="errore-consegna") == 1
    assert await metric(world, "gmp_pec_receipts_total", tenant_id="default") == 7


async def test_certified_mail_and_anomalies_are_not_receipts(start_world: Any) -> None:
    world: PecWorld = await start_world()
    world.provider.plan = lambda got: [
        build_certified_mail(**common(got)),
        build_anomaly(**common(got)),
        build_receipt("accettazione", **common(got)),
    ]
    await world.add_pec_account()
    await world.send("mixed", [DELIVERED])

    (item,) = await world.wait_pec_items("mixed", 1)
    assert item["pec_event"] == "pec_acceptance"
    await asyncio.sleep(1.0)
    assert len(await world.pec_items("mixed")) == 1
    assert [e["event_type"] for e in await world.events("mixed")].count("pec_acceptance") == 1
    assert await metric(world, "gmp_pec_ignored_total", reason="certified_mail") == 1
    assert await metric(world, "gmp_pec_ignored_total", reason="anomaly") == 1
    # left alone, but read: flagged \Seen like everything the poller handled
    assert world.dovecot.count(world.user, unseen_only=True) == 0


async def test_a_receipt_changes_only_a_message_of_its_own_account(start_world: Any) -> None:
    world: PecWorld = await start_world()
    other_user, other_password = world.dovecot.new_user("pec")
    other_sender = "altro@pec.mittente.test"
    world.provider.plan = lambda got: []  # receipts are appended by the test
    await world.add_pec_account()
    world.provider.mailboxes[other_sender] = other_user
    await world.api.post(
        "/account",
        {
            "id": "other",
            "host": "127.0.0.1",
            "port": world.provider.port,
            "pec": True,
            "imap_host": world.dovecot.host,
            "imap_port": world.dovecot.port,
            "imap_user": other_user,
            "imap_password": other_password,
            "imap_use_tls": False,
        },
    )
    await world.send("mine", [DELIVERED])
    (got,) = await world.provider.wait_received(1)

    # the acceptance of a message of account "pec" lands in account "other"'s mailbox
    world.dovecot.append(other_user, build_receipt("accettazione", **common(got)))
    # and a receipt for a Message-ID nobody sent lands in the right mailbox
    world.dovecot.append(
        world.user,
        build_receipt(
            "accettazione", **common(got, original_message_id="<forged.1@pec.mittente.test>")
        ),
    )

    async def counted() -> bool:
        other = await metric(world, "gmp_pec_receipts_unmatched_total", reason="other_account")
        unknown = await metric(world, "gmp_pec_receipts_unmatched_total", reason="unknown_message")
        return other == 1 and unknown == 1

    await wait_until(counted, 15, "both receipts counted as unmatched")
    assert await world.pec_items("mine") == []
    kinds = [e["event_type"] for e in await world.events("mine")]
    assert not [k for k in kinds if k.startswith("pec_")]
    assert "pec_acceptance_ts" not in await world.message("mine")

    # the same receipt in the right mailbox is recorded
    world.dovecot.append(world.user, build_receipt("accettazione", **common(got)))
    (item,) = await world.wait_pec_items("mine", 1)
    assert item["pec_event"] == "pec_acceptance"


async def test_a_receipt_read_again_records_nothing(start_world: Any) -> None:
    world: PecWorld = await start_world()
    world.provider.plan = lambda got: []
    await world.add_pec_account()
    await world.send("twice", [DELIVERED])
    (got,) = await world.provider.wait_received(1)
    acceptance = build_receipt("accettazione", **common(got))
    delivery = build_receipt("avvenuta-consegna", **common(got), recipient=DELIVERED)
    for raw in (acceptance, acceptance, delivery, delivery):  # each one twice in a row
        world.dovecot.append(world.user, raw)
    await world.wait_pec_items("twice", 2)

    # the folder renumbered (UIDVALIDITY changes): everything is read again
    await world.stop()
    world.dovecot.recreate_folder(world.user, "INBOX")
    for raw in (acceptance, delivery):
        world.dovecot.append(world.user, raw)
    world = await start_world(user=(world.user, world.password))

    async def read_again() -> bool:
        return await metric(world, "gmp_pec_receipts_duplicate_total") >= 2

    await wait_until(read_again, 15, "the renumbered folder read again")
    await asyncio.sleep(0.5)
    assert [i["pec_event"] for i in await world.pec_items("twice")] == [
        "pec_acceptance",
        "pec_delivery",
    ]
    kinds = [e["event_type"] for e in await world.events("twice")]
    assert [k for k in kinds if k.startswith("pec_")] == ["pec_acceptance", "pec_delivery"]


async def test_restart_between_receipts_processes_none_twice(start_world: Any) -> None:
    world: PecWorld = await start_world()
    world.provider.plan = lambda got: [build_receipt("accettazione", **common(got))]
    await world.add_pec_account()
    await world.send("restart", [DELIVERED, FIRST])
    (got,) = await world.provider.wait_received(1)
    await world.wait_pec_items("restart", 1)

    await world.stop()  # the service stops between two receipts
    world.dovecot.append(
        world.user, build_receipt("avvenuta-consegna", **common(got), recipient=DELIVERED)
    )
    world = await start_world(user=(world.user, world.password))
    await world.wait_pec_items("restart", 2)
    world.dovecot.append(
        world.user, build_receipt("avvenuta-consegna", **common(got), recipient=FIRST)
    )
    items = await world.wait_pec_items("restart", 3)
    await asyncio.sleep(1.0)
    items = await world.pec_items("restart")
    assert [i["pec_event"] for i in items] == ["pec_acceptance", "pec_delivery", "pec_delivery"]
    assert items[-1]["pec_delivery_ts"] == items[-1]["pec_ts"]
    assert (await world.message("restart"))["pec_delivery_ts"] == items[-1]["pec_ts"]
    assert SENDER in got.sender


async def test_a_receipt_recorded_but_not_remembered_before_a_crash_is_not_recorded_again(
    start_world: Any,
) -> None:
    """The window between recording the event and remembering the receipt: the receipt's
    key in the event's metadata is enough to recognise it when it is read again."""
    import sqlalchemy as sa

    from mail_proxy.ee.pec import tables
    from mail_proxy.ee.pec.receipts import ReceiptHandler

    world: PecWorld = await start_world()
    world.provider.plan = lambda got: []
    await world.add_pec_account()
    await world.send("window", [DELIVERED])
    (got,) = await world.provider.wait_received(1)
    raw = build_receipt("accettazione", **common(got))
    world.dovecot.append(world.user, raw)
    await world.wait_pec_items("window", 1)

    rt = world.api.runtime
    async with rt.storage.database.begin() as conn:  # as if the service died before this
        await conn.execute(sa.delete(tables.receipts))
    handler = ReceiptHandler(rt, "default", "pec")
    assert await handler.handle(raw) == "recorded"  # recognised from the event itself
    assert await handler.handle(raw) == "duplicate"  # and now remembered
    kinds = [e["event_type"] for e in await world.events("window")]
    assert kinds.count("pec_acceptance") == 1


async def test_the_real_receipts_are_matched_header_first_then_by_daticert(
    start_world: Any,
) -> None:
    """The corpus receipts: the acceptance names the original in its header; the delivery
    error's header names another Message-ID and only its signed daticert <msgid> matches."""

    import pytest

    real = corpus("pec")
    if not (real / "errore-consegna.eml").is_file():
        pytest.skip(f"PEC corpus not available ({real})")
    world: PecWorld = await start_world()
    world.provider.plan = lambda got: []
    await world.add_pec_account(sender="sender@fakepec.it")
    original = "<SN05IE$951DEC16C1CFD3E4FD8FF1B1D24A99AE@fakepec.it>"
    await world.send("real", ["rec@fakepec.it"], sender="sender@fakepec.it", message_id=original)
    (got,) = await world.provider.wait_received(1)
    assert got.message_id == original
    for name in ("accettazione.eml", "errore-consegna.eml"):
        world.dovecot.append(world.user, (real / name).read_bytes())

    acceptance, error = await world.wait_pec_items("real", 2)
    assert acceptance["pec_event"] == "pec_acceptance"
    assert acceptance["pec_details"]["provider"] == "FAKEPEC PEC S.p.A."
    assert error["pec_event"] == "pec_error"
    assert error["pec_details"]["recipient"] == "rec@fakepec.it"
    assert error["pec_details"]["error"] == (
        "no-dest: 5.1.1 - FAKE Pec S.p.A. - indirizzo non valido"
    )
    warnings = error["pec_details"]["warnings"]
    assert any("disagrees with daticert msgid" in w for w in warnings)
    assert any("matched by daticert msgid" in w for w in warnings)
    assert error["pec_ts"] - acceptance["pec_ts"] == 25  # 18:20:38 → 18:21:03 (+01:00)
