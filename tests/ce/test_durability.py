"""An accepted message is on disk before the 2xx: kill -9 the service right after the answer,
reopen the database, the message is there."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import aiohttp

from mail_proxy.core.engine.encryption import generate_key
from mail_proxy.core.testing.service import ServiceProcess


async def test_accepted_messages_survive_kill_9_right_after_the_answer(tmp_path: Path) -> None:
    db = tmp_path / "durable.db"
    env = {
        "GMP_DATABASE_URL": f"sqlite:///{db}",
        "GMP_API_TOKEN": "durability-token",
        "MAIL_PROXY_ENCRYPTION_KEY": generate_key(),
        "GMP_SCHEDULER_ACTIVE": "false",
        "GMP_LOG_LEVEL": "WARNING",
    }
    svc = await ServiceProcess(env, tmp_path / "svc.log").start()
    accepted: list[str] = []
    try:
        await svc.call(
            "POST", "/account", json={"id": "a", "host": "127.0.0.1", "port": 9, "default": True}
        )

        async def send(i: int) -> None:
            body = {
                "messages": [
                    {
                        "id": f"d{i}",
                        "from": "s@example.com",
                        "to": ["r@example.com"],
                        "subject": "x",
                    }
                ]
            }
            async with aiohttp.ClientSession() as session:
                async with session.post(
                    svc.url + "/commands/add-messages", json=body, headers=svc.headers
                ) as resp:
                    if resp.status == 200 and (await resp.json())["queued"] == 1:
                        accepted.append(f"d{i}")

        await asyncio.gather(*(send(i) for i in range(40)))
        last = len(accepted)
        await send(1000)  # the kill follows this answer immediately
        svc.kill()
        assert len(accepted) == last + 1
    finally:
        svc.kill()
    with sqlite3.connect(db) as conn:
        stored = {row[0] for row in conn.execute("SELECT id FROM messages")}
    assert set(accepted) <= stored
    assert "d1000" in stored
