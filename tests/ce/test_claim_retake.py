"""Retaking a claim whose lease ran out (SQLite and PostgreSQL): from another instance the
message is flagged ``uncertain``; the instance that held it gets it back unflagged (its
dispatcher carries the delivery it still has over to the new claim); a claim given back
while the transport had the message is flagged too."""

from __future__ import annotations

import time

from mail_proxy.ce.storage.sql import SqlStorage
from mail_proxy.core.contracts.model import NewMessage, Outcome, RecipientOutcome


def msg(i: str) -> NewMessage:
    return NewMessage("default", i, "acc", 2, {"subject": i}, f"<{i}@example.com>")


async def test_only_another_instance_retakes_and_the_retake_is_flagged(
    storage: SqlStorage,
) -> None:
    now = time.time()
    await storage.enqueue([msg("a")], now)
    [first] = await storage.claim_messages("i1", now, 10, 5, 10)
    assert first.uncertain is False
    # its own claim comes back unflagged (its dispatcher carries on with the delivery)
    [own] = await storage.claim_messages("i1", now + 60, 10, 5, 10)
    assert own.uncertain is False and own.claim_token == (first.claim_token or 0) + 1
    first = own
    [again] = await storage.claim_messages("i2", now + 120, 10, 5, 10)
    assert again.uncertain is True and again.claim_token == (first.claim_token or 0) + 1
    # the first claimer's late outcome is fenced off; the new one is applied and keeps the flag
    late = Outcome(first.pk, first.claim_token or 0, "sent", now + 121)
    assert await storage.record_outcomes([late]) == []
    done = Outcome(
        again.pk,
        again.claim_token or 0,
        "sent",
        now + 122,
        recipients=[RecipientOutcome("r@example.com", "sent", 250, "OK")],
    )
    assert await storage.record_outcomes([done]) == [again.pk]
    stored = await storage.get_message("default", "a")
    assert stored is not None and stored.status == "sent" and stored.uncertain is True
    assert [r.public() for r in stored.recipients] == [
        {"address": "r@example.com", "status": "sent", "code": 250, "reply": "OK"}
    ]


async def test_a_claim_given_back_mid_send_is_flagged(storage: SqlStorage) -> None:
    now = time.time()
    await storage.enqueue([msg("b"), msg("c")], now)
    b, c = await storage.claim_messages("i1", now, 10, 60, 10)
    given_back = [
        Outcome(b.pk, b.claim_token or 0, "released", now, metadata={"uncertain": True}),
        Outcome(c.pk, c.claim_token or 0, "released", now),
    ]
    assert sorted(await storage.record_outcomes(given_back)) == sorted([b.pk, c.pk])
    flags = {m.id: m.uncertain for m in await storage.claim_messages("i1", now, 10, 60, 10)}
    assert flags == {"b": True, "c": False}
