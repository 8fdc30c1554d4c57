"""L1: 50 clients posting for a while against the running service with the dispatch on, on
one instance (SQLite) and on two instances sharing one PostgreSQL database.

Accounting from the sink's own record: every accepted id received exactly once (lost = 0,
duplicated = 0), nothing received that was not accepted, no 5xx, no connection error.

CI runs 15 s of posting (``GMP_RELIABILITY_L1_SECONDS`` sets it: 60 for the full run of the
issue); the queue then drains for as long as deliveries keep coming.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest
from reliability.harness import (
    Accounting,
    Fleet,
    Posters,
    Sink,
    add_account,
    list_messages,
    record,
)

from mail_proxy.core.testing.service import ServiceProcess

SECONDS = float(os.environ.get("GMP_RELIABILITY_L1_SECONDS", "15"))
CLIENTS = 50

#: The queue drains after the posting stops, for as long as deliveries keep coming; no
#: delivery for this long fails the test.
STALL = 30.0

pytestmark = [pytest.mark.reliability, pytest.mark.timeout(max(240.0, 20 * SECONDS))]


async def drain(sink: Sink, accepted: set[str]) -> None:
    """Wait until the sink has every accepted message, as long as deliveries keep coming
    (a loaded machine drains slowly; a stalled queue fails after ``STALL`` seconds)."""
    seen, still = len(sink.messages), 0.0
    while not set(sink.copies()) >= accepted:
        await asyncio.sleep(1.0)
        still = still + 1.0 if len(sink.messages) == seen else 0.0
        seen = len(sink.messages)
        assert still < STALL, f"delivery stalled: {len(accepted - set(sink.copies()))} missing"


async def load(fleet: Fleet, svcs: list[ServiceProcess], sink: Sink, item: str) -> None:
    await add_account(svcs[0], sink)
    posters = Posters(svcs, clients=CLIENTS, seconds=SECONDS, batch=2, pause=0.25, prefix="l")
    await posters.run()
    assert posters.accepted, posters.statuses

    await drain(sink, posters.accepted)
    messages = await list_messages(svcs[0])
    account = Accounting(posters.accepted, sink.copies())
    figures = {
        **account.figures(),
        "clients": CLIENTS,
        "seconds": SECONDS,
        "instances": len(svcs),
        "requests": sum(posters.statuses.values()),
        "5xx": sum(n for s, n in posters.statuses.items() if s >= 500),
        "no_answer": posters.statuses.get(0, 0),
        "flagged": sum(bool(m.get("uncertain")) for m in messages),
    }
    record(item, **figures)
    assert not account.lost and not account.duplicated and not account.unexpected
    assert set(posters.statuses) == {200}, posters.statuses
    statuses = {m["id"]: m["status"] for m in messages}
    assert len(statuses) == len(posters.accepted)
    assert set(statuses.values()) == {"sent"}


async def test_l1_fifty_clients_one_instance_sqlite(tmp_path: Path) -> None:
    async with Sink() as sink:
        async with Fleet(tmp_path, f"sqlite:///{tmp_path / 'l1.db'}") as fleet:
            svc = await fleet.start()
            await load(fleet, [svc], sink, "L1 sqlite, 1 instance")


@pytest.mark.postgres
async def test_l1_fifty_clients_two_instances_postgresql(tmp_path: Path, pg_url: str) -> None:
    async with Sink() as sink:
        async with Fleet(tmp_path, pg_url) as fleet:
            svcs = [await fleet.start(), await fleet.start()]
            await load(fleet, svcs, sink, "L1 postgresql, 2 instances")
