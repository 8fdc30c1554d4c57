"""The acceptance timeout (shortened): a PEC message with no receipt gets ``pec_timeout``
once; a late acceptance is still recorded; a message accepted in time, or one that failed,
never times out.

Real parts: the service, the simulated provider (SMTP), Dovecot, the report receiver, SQLite
and PostgreSQL.
"""

from __future__ import annotations

import asyncio
from typing import Any

from ee_pec.world import DELIVERED, PecWorld, common, metric, plan

from support.pec_provider import build_receipt

TIMEOUT = 1.0


async def test_no_receipt_times_out_once_and_a_late_acceptance_is_recorded(
    start_world: Any,
) -> None:
    world: PecWorld = await start_world(pec_acceptance_timeout=TIMEOUT)
    world.provider.plan = lambda got: []  # the provider stays silent
    await world.add_pec_account()
    await world.send("late", [DELIVERED])
    (got,) = await world.provider.wait_received(1)

    (item,) = await world.wait_pec_items("late", 1, timeout=10)
    assert item["pec_event"] == "pec_timeout"
    assert item["pec_details"]["timeout_seconds"] == TIMEOUT
    assert item["pec_ts"] - item["pec_details"]["sent_ts"] >= TIMEOUT
    await asyncio.sleep(4 * TIMEOUT)  # the check runs every 0.2 s: still once
    assert [i["pec_event"] for i in await world.pec_items("late")] == ["pec_timeout"]
    assert await metric(world, "gmp_pec_timeouts_total", tenant_id="default") == 1

    world.dovecot.append(world.user, build_receipt("accettazione", **common(got)))
    items = await world.wait_pec_items("late", 2)
    assert [i["pec_event"] for i in items] == ["pec_timeout", "pec_acceptance"]
    msg = await world.message("late")
    assert msg["pec_timeout_ts"] == item["pec_ts"]
    assert msg["pec_acceptance_ts"] == items[1]["pec_ts"]


async def test_accepted_in_time_or_failed_never_times_out(start_world: Any) -> None:
    world: PecWorld = await start_world(pec_acceptance_timeout=TIMEOUT)
    world.provider.plan = plan()
    await world.add_pec_account()
    await world.send("in-time", [DELIVERED])
    await world.wait_pec_items("in-time", 2)
    # a message the provider refuses at SMTP fails for good: nothing to wait for
    world.provider.data_reply = "554 5.7.1 message refused"
    await world.send("refused", [DELIVERED])
    assert await world.api.wait_status("refused", "error") == "error"
    await asyncio.sleep(3 * TIMEOUT)
    assert [i["pec_event"] for i in await world.pec_items("in-time")] == [
        "pec_acceptance",
        "pec_delivery",
    ]
    assert await world.pec_items("refused") == []
    assert await metric(world, "gmp_pec_timeouts_total") == 0
    (account,) = (await world.api.get("/pec/status"))["accounts"]
    assert account["waiting"] == {"acceptance": 0, "delivery": 0}
