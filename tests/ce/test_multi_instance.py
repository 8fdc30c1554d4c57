"""Several service processes on one PostgreSQL: split work, no duplicates, shared limits,
crash recovery through leases."""

from __future__ import annotations

import asyncio
import os
import signal
from collections import Counter
from pathlib import Path

import aiohttp
import asyncpg
import pytest

from mail_proxy.core.engine.encryption import generate_key
from mail_proxy.core.testing.service import ServiceProcess
from mail_proxy.core.testing.smtp import SmtpTestServer

pytestmark = pytest.mark.postgres


def env_for(pg_url: str, **extra: str) -> dict[str, str]:
    return {
        "GMP_DATABASE_URL": pg_url,
        "GMP_API_TOKEN": "multi-instance-token",
        "MAIL_PROXY_ENCRYPTION_KEY": KEY,
        "GMP_LOG_LEVEL": "WARNING",
        "GMP_SEND_LOOP_INTERVAL": "0.1",
        **extra,
    }


KEY = generate_key()


async def start_pair(pg_url: str, tmp_path: Path, **extra: str) -> list[ServiceProcess]:
    first = await ServiceProcess(env_for(pg_url, **extra), tmp_path / "a.log").start()
    second = await ServiceProcess(env_for(pg_url, **extra), tmp_path / "b.log").start()
    return [first, second]


async def enqueue_all(svc: ServiceProcess, ids: list[str]) -> None:
    for i in range(0, len(ids), 500):
        batch = [
            {
                "id": x,
                "from": "s@example.com",
                "to": ["r@example.com"],
                "subject": x,
                "body": "b" * 800,
            }
            for x in ids[i : i + 500]
        ]
        data = await svc.call("POST", "/commands/add-messages", json={"messages": batch})
        assert data["queued"] == len(batch)


async def wait_received(smtp: SmtpTestServer, count: int, timeout: float) -> None:
    await smtp.wait_until(
        lambda: len({m.message["X-Genro-Mail-ID"] for m in smtp.messages}) >= count, timeout
    )


async def counter(svc: ServiceProcess, name: str) -> float:
    """The sum of the labelled series of counter ``name`` on this instance's ``/metrics``."""
    async with aiohttp.ClientSession() as session:
        async with session.get(svc.url + "/metrics") as resp:
            assert resp.status == 200
            text = await resp.text()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(name + "{") or line.startswith(name + " ")
    )


async def set_scheduler(svc: ServiceProcess, active: bool) -> None:
    """Pause or resume this instance's dispatcher only (the live value is per process)."""
    await svc.call("PUT", "/instance", json={"scheduler_active": active})


async def pg_connect(pg_url: str) -> asyncpg.Connection:
    schema = pg_url.rsplit("schema=", 1)[1]
    return await asyncpg.connect(pg_url.split("?")[0], server_settings={"search_path": schema})


async def test_two_instances_deliver_each_message_exactly_once(pg_url: str, tmp_path: Path) -> None:
    async with SmtpTestServer() as smtp:
        services = await start_pair(pg_url, tmp_path)
        try:
            await services[0].call(
                "POST",
                "/account",
                json={"id": "a", "host": "127.0.0.1", "port": smtp.port, "default": True},
            )
            ids = [f"m{i}" for i in range(2000)]
            await enqueue_all(services[1], ids)
            await wait_received(smtp, 2000, timeout=150)
            await asyncio.sleep(0.5)
            counts = Counter(m.message["X-Genro-Mail-ID"] for m in smtp.messages)
            assert set(counts) == set(ids)
            assert max(counts.values()) == 1, [k for k, v in counts.items() if v > 1][:5]
            # Both instances took part: each process counts what it delivered itself.
            sent = [await counter(s, "gmp_sent_total") for s in services]
            assert all(n > 0 for n in sent), sent
            assert sum(sent) == len(ids), sent
            status = await services[0].call("GET", "/status")
            assert status["pending_messages"] == 0
        finally:
            for s in services:
                s.stop()


async def test_rate_limit_holds_across_instances(pg_url: str, tmp_path: Path) -> None:
    async with SmtpTestServer() as smtp:
        services = await start_pair(pg_url, tmp_path)
        try:
            await services[0].call(
                "POST",
                "/account",
                json={
                    "id": "a",
                    "host": "127.0.0.1",
                    "port": smtp.port,
                    "default": True,
                    "limit_per_minute": 25,
                },
            )
            first, second = services

            async def deferred() -> int:
                listed = await second.call(
                    "GET", "/messages", params={"status": "deferred", "limit": "500"}
                )
                return len(listed["messages"])

            # The first instance alone uses up the minute's budget...
            await set_scheduler(second, False)
            await enqueue_all(first, [f"r{i}" for i in range(50)])
            await smtp.wait_for_messages(25, timeout=20)
            for _ in range(200):
                if await deferred() == 25:
                    break
                await asyncio.sleep(0.1)
            # ...then the second alone claims fresh messages: a per-process limit would let
            # it send 25 more.
            await set_scheduler(first, False)
            await set_scheduler(second, True)
            await enqueue_all(second, [f"r{i}" for i in range(50, 100)])
            for _ in range(200):
                if await deferred() == 75:
                    break
                await asyncio.sleep(0.1)
            await asyncio.sleep(1.5)
            assert len(smtp.messages) == 25
            assert await deferred() == 75
            assert await counter(first, "gmp_sent_total") == 25
            assert await counter(first, "gmp_rate_limited_total") >= 25
            assert await counter(second, "gmp_sent_total") == 0
            assert await counter(second, "gmp_rate_limited_total") >= 50
        finally:
            for s in services:
                s.stop()


async def test_kill_9_mid_burst_other_instance_takes_over(pg_url: str, tmp_path: Path) -> None:
    async with SmtpTestServer() as smtp:
        smtp.data_delay = 0.01
        services = await start_pair(pg_url, tmp_path, GMP_CLAIM_LEASE_SECONDS="6")
        victim, survivor = services
        db = await pg_connect(pg_url)
        try:
            await survivor.call(
                "POST",
                "/account",
                json={"id": "a", "host": "127.0.0.1", "port": smtp.port, "default": True},
            )
            victim_id = (await victim.call("GET", "/instance"))["instance"]["instance_id"]
            ids = [f"k{i}" for i in range(600)]
            await enqueue_all(survivor, ids)
            await smtp.wait_until(lambda: len(smtp.messages) >= 150, 60)
            # Freeze the victim and note the claims it holds (committed, its lease running);
            # retry until it holds some, then kill it: those are what the survivor must retake.
            assert victim.proc is not None
            held: dict[int, int] = {}
            for _ in range(50):
                os.kill(victim.proc.pid, signal.SIGSTOP)
                await asyncio.sleep(0.3)  # statements sent before the stop reach the database
                rows = await db.fetch(
                    "SELECT pk, claim_token FROM messages"
                    " WHERE status = 'sending' AND claimed_by = $1",
                    victim_id,
                )
                held = {r["pk"]: r["claim_token"] for r in rows}
                if held:
                    break
                os.kill(victim.proc.pid, signal.SIGCONT)
                await asyncio.sleep(0.05)
            assert held, "the victim never held a claim"
            victim.kill()
            await wait_received(smtp, len(ids), timeout=150)
            await asyncio.sleep(1.0)
            counts = Counter(m.message["X-Genro-Mail-ID"] for m in smtp.messages)
            assert set(counts) == set(ids), "lost messages"
            duplicates = sum(v - 1 for v in counts.values())
            # Only messages the victim had handed to SMTP but not yet committed may repeat: a
            # delivery keeps its slot until its outcome is committed, so at most
            # max_concurrent_sends (64) of them.
            assert duplicates <= 64
            # Accounting: every accepted message ends sent (the sink accepts all).
            sent = await survivor.call(
                "GET", "/messages", params={"status": "sent", "limit": "1000"}
            )
            total = len(sent["messages"])
            cursor = sent.get("next_cursor")
            while cursor:
                page = await survivor.call(
                    "GET", "/messages", params={"status": "sent", "limit": "1000", "cursor": cursor}
                )
                total += len(page["messages"])
                cursor = page.get("next_cursor")
            assert total == len(ids)
            assert (await survivor.call("GET", "/status"))["pending_messages"] == 0
            # A lease takeover happened: messages the victim held were claimed again (fencing
            # token increased) and sent.
            rows = await db.fetch(
                "SELECT pk, claim_token, status FROM messages WHERE pk = ANY($1::bigint[])",
                list(held),
            )
            retaken = [r["pk"] for r in rows if r["claim_token"] > held[r["pk"]]]
            assert len(retaken) >= 1, (held, [tuple(r) for r in rows])
            assert {r["status"] for r in rows} == {"sent"}
        finally:
            await db.close()
            for s in services:
                s.stop()
