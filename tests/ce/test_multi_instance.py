"""Several service processes on one PostgreSQL: split work, no duplicates, shared limits,
crash recovery through leases."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

import pytest

from mail_proxy.encryption import generate_key
from support.service import ServiceProcess
from support.smtp_server import SmtpTestServer

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
            # Both instances took part (different SMTP connections per process).
            assert len({m.connection_id for m in smtp.messages}) >= 2
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
            await enqueue_all(services[0], [f"r{i}" for i in range(100)])
            await smtp.wait_for_messages(25, timeout=20)
            await asyncio.sleep(1.5)
            assert len(smtp.messages) == 25
            listed = await services[1].call(
                "GET", "/messages", params={"status": "deferred", "limit": "500"}
            )
            assert len(listed["messages"]) == 75
        finally:
            for s in services:
                s.stop()


async def test_kill_9_mid_burst_other_instance_takes_over(pg_url: str, tmp_path: Path) -> None:
    async with SmtpTestServer() as smtp:
        smtp.data_delay = 0.01
        services = await start_pair(pg_url, tmp_path, GMP_CLAIM_LEASE_SECONDS="6")
        victim, survivor = services
        try:
            await survivor.call(
                "POST",
                "/account",
                json={"id": "a", "host": "127.0.0.1", "port": smtp.port, "default": True},
            )
            ids = [f"k{i}" for i in range(600)]
            await enqueue_all(survivor, ids)
            await smtp.wait_until(lambda: len(smtp.messages) >= 150, 60)
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
        finally:
            for s in services:
                s.stop()
