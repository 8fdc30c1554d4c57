"""Crashes and stalls of ``mail-proxy serve`` processes during delivery.

- L3: SIGKILL at 20 seeded random moments of a delivery burst (SQLite: the only instance,
  restarted each time; PostgreSQL: one of two instances, the other keeps running). Lost = 0
  every time; duplicates at most the messages in flight at the kills, and every duplicated
  message is flagged ``uncertain``.
- L4: SIGKILL while clients are posting: every message answered 2xx is delivered; a client
  whose connection was cut posts the same ids again and gets no second message.
- L6: SIGSTOP an instance holding claims past its lease; the other retakes and sends them;
  SIGCONT: the stale instance's completions are fenced off (one terminal state, one ``sent``
  event), at most one extra copy per message, flagged.

The sink keeps a message as soon as its content is in and answers later (harness.Sink), so
an instance dying in between has delivered it without knowing: the duplicate window is real.
``GMP_RELIABILITY_SEED`` changes the moments (default 16), ``GMP_RELIABILITY_KILLS`` their
number (default 20).
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from reliability.harness import (
    Accounting,
    Fleet,
    Posters,
    Sink,
    add_account,
    db_rows,
    in_flight,
    message,
    record,
    uncertain_ids,
    wait_final,
    wait_until,
)

from mail_proxy.core.testing.reports import ReportClient
from mail_proxy.core.testing.service import ServiceProcess

SEED = int(os.environ.get("GMP_RELIABILITY_SEED", "16"))
KILLS = int(os.environ.get("GMP_RELIABILITY_KILLS", "20"))
LEASE = "2"

pytestmark = [pytest.mark.reliability, pytest.mark.timeout(300)]


def crash_env(rc: ReportClient) -> dict[str, str]:
    # A killed instance may hold the report-sync lease (GMP_SYNC_TIMEOUT + 30 s): short here.
    return {
        "GMP_CLAIM_LEASE_SECONDS": LEASE,
        "GMP_CLIENT_SYNC_URL": rc.url,
        "GMP_SYNC_TIMEOUT": "5",
    }


async def enqueue(svc: ServiceProcess, ids: list[str]) -> None:
    for i in range(0, len(ids), 500):
        chunk = ids[i : i + 500]
        data = await svc.call(
            "POST", "/commands/add-messages", json={"messages": [message(x) for x in chunk]}
        )
        assert data["queued"] == len(chunk), data


async def instance_id(svc: ServiceProcess) -> str:
    return str((await svc.call("GET", "/instance"))["instance"]["instance_id"])


async def check_crash_accounting(
    item: str,
    url: str,
    svc: ServiceProcess,
    sink: Sink,
    rc: ReportClient,
    ids: list[str],
    in_flight_at_kills: list[int],
) -> None:
    await wait_final(svc, len(ids), timeout=150)
    account = Accounting(set(ids), sink.copies())
    flagged = await uncertain_ids(url)
    duplicated = set(account.duplicated)
    figures = {
        **account.figures(),
        "kills": len(in_flight_at_kills),
        "in_flight_at_kills": sum(in_flight_at_kills),
        "flagged": len(flagged),
        "duplicated_unflagged": len(duplicated - flagged),
        "5xx": 0,  # every API call of the test asserted its 200
        "seed": SEED,
    }
    record(item, **figures)
    assert not account.lost and not account.unexpected
    assert sum(account.duplicated.values()) <= sum(in_flight_at_kills)
    assert duplicated <= flagged, duplicated - flagged
    statuses = {r[0] for r in await db_rows(url, "SELECT DISTINCT status FROM messages")}
    assert statuses == {"sent"}
    # The report items of the duplicated messages' sent events say uncertain.
    wanted = duplicated

    def reported() -> bool:
        seen = {i["id"] for i in rc.accepted_items() if "sent_ts" in i and i.get("uncertain")}
        return seen >= wanted

    await rc.wait_for(reported, 90)


async def test_l3_kill_9_at_random_moments_sqlite(tmp_path: Path) -> None:
    rng = random.Random(SEED)
    url = f"sqlite:///{tmp_path / 'l3.db'}"
    async with Sink() as sink, ReportClient() as rc:
        sink.data_delay = 0.15
        async with Fleet(tmp_path, url, **crash_env(rc)) as fleet:
            svc = await fleet.start()
            await add_account(svc, sink)
            ids = [f"k{i}" for i in range(600)]
            await enqueue(svc, ids)
            held: list[int] = []
            for k in range(KILLS):
                if k:
                    svc = await fleet.start()
                    if k % 2 == 0:  # keep the burst going
                        more = [f"k{k}-{j}" for j in range(20)]
                        await enqueue(svc, more)
                        ids += more
                await asyncio.sleep(rng.uniform(0.2, 1.2))
                fleet.kill(svc)
                held.append(len(await in_flight(url)))
            svc = await fleet.start()
            await check_crash_accounting("L3 sqlite", url, svc, sink, rc, ids, held)


@pytest.mark.postgres
async def test_l3_kill_9_one_of_two_postgresql_instances(tmp_path: Path, pg_url: str) -> None:
    rng = random.Random(SEED + 1)
    async with Sink() as sink, ReportClient() as rc:
        sink.data_delay = 0.15
        async with Fleet(tmp_path, pg_url, **crash_env(rc)) as fleet:
            survivor = await fleet.start()
            await add_account(survivor, sink)
            ids = [f"k{i}" for i in range(900)]
            await enqueue(survivor, ids)
            held: list[int] = []
            for k in range(KILLS):
                victim = await fleet.start()
                victim_id = await instance_id(victim)
                if k % 2 == 0:
                    more = [f"k{k}-{j}" for j in range(20)]
                    await enqueue(victim, more)
                    ids += more
                await asyncio.sleep(rng.uniform(0.2, 1.2))
                fleet.kill(victim)
                held.append(len(await in_flight(pg_url, claimed_by=victim_id)))
            await check_crash_accounting(
                "L3 postgresql, 1 of 2 killed", pg_url, survivor, sink, rc, ids, held
            )


async def test_l4_kill_9_while_clients_post(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'l4.db'}"
    async with Sink() as sink:
        sink.data_delay = 0.05
        async with Fleet(tmp_path, url, GMP_CLAIM_LEASE_SECONDS=LEASE) as fleet:
            svc = await fleet.start()
            await add_account(svc, sink)
            posters = Posters([svc], clients=20, seconds=8, batch=3, pause=0.05, prefix="w")
            posting = asyncio.create_task(posters.run())
            for _ in range(2):
                await asyncio.sleep(2.5)
                fleet.kill(svc)
                await asyncio.sleep(0.3)
                svc = await fleet.start()
                posters.svcs[0] = svc  # clients retry against the restarted service
            await posting
            await wait_final(svc, len(posters.accepted), timeout=90)
            account = Accounting(posters.accepted, sink.copies())
            flagged = await uncertain_ids(url)
            record(
                "L4 sqlite",
                **account.figures(),
                reposted=len(posters.reposted),
                no_answer=posters.statuses.get(0, 0),
                flagged=len(flagged),
                **{"5xx": sum(n for s, n in posters.statuses.items() if s >= 500)},
            )
            assert posters.statuses.get(0, 0) > 0, "no request was cut by the kills"
            assert posters.reposted
            assert not account.lost and not account.unexpected
            assert set(account.duplicated) <= flagged
            # A re-posted id was never sent twice unless it was in flight at a kill.
            assert not (set(account.duplicated) & posters.reposted) - flagged
            assert not [s for s in posters.statuses if s >= 500], posters.bodies_5xx[:3]


async def set_scheduler(svc: ServiceProcess, active: bool) -> None:
    await svc.call("PUT", "/instance", json={"scheduler_active": active})


async def sent_events(svc: ServiceProcess, msg_id: str) -> list[dict[str, Any]]:
    events = (await svc.call("GET", f"/messages/{msg_id}/events"))["events"]
    return [e for e in events if e["event_type"] in ("sent", "error")]


@pytest.mark.postgres
async def test_l6_a_stalled_instance_past_its_lease_is_fenced_off(
    tmp_path: Path, pg_url: str
) -> None:
    async with Sink() as sink:
        sink.data_delay = 1.0
        async with Fleet(tmp_path, pg_url, GMP_CLAIM_LEASE_SECONDS="3") as fleet:
            stale, other = await fleet.start(), await fleet.start()
            stale_id = await instance_id(stale)
            await set_scheduler(other, False)
            await add_account(other, sink)
            ids = [f"s{i}" for i in range(30)]
            await enqueue(other, ids)
            await sink.wait_until(lambda: len(sink.messages) >= 4, timeout=15)
            fleet.stop_signal(stale, signal.SIGSTOP)
            await asyncio.sleep(0.3)  # what it sent before the stop reaches the database
            held = await in_flight(pg_url, claimed_by=stale_id)
            assert held, "the stalled instance held no claim"
            await set_scheduler(other, True)
            await wait_final(other, len(ids), timeout=60)  # after the lease, taken over
            copies_before = sink.copies()
            fleet.stop_signal(stale, signal.SIGCONT)

            async def caught_up() -> bool:  # the stale instance answers again
                try:
                    await stale.call("GET", "/status")
                except (aiohttp.ClientError, AssertionError):
                    return False
                return True

            await wait_until(caught_up, 20, "the resumed instance answering")
            await asyncio.sleep(2 * sink.data_delay + 1.0)  # its deliveries finish (fenced)
            copies = sink.copies()
            account = Accounting(set(ids), copies)
            flagged = await uncertain_ids(pg_url)
            record(
                "L6 postgresql",
                **account.figures(),
                held_by_stalled=len(held),
                flagged=len(flagged),
                sent_after_resume=sum(copies.values()) - sum(copies_before.values()),
            )
            assert not account.lost and not account.unexpected
            assert max(copies.values()) <= 2
            assert set(account.duplicated) <= held & flagged
            # One terminal state and one outcome event per message: the stale completions
            # changed nothing.
            rows = await db_rows(pg_url, "SELECT id, status FROM messages")
            assert {status for _, status in rows} == {"sent"} and len(rows) == len(ids)
            for msg_id in sorted(held):
                assert [e["event_type"] for e in await sent_events(other, msg_id)] == ["sent"]
            assert "fenced off" in (tmp_path / "service-1.log").read_text()
