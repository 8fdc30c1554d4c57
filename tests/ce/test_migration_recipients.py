"""Migration 0006: ``messages.delivered_rcpts`` (addresses accepted on an earlier attempt)
becomes ``messages.recipients`` (each recipient's state), and ``messages.uncertain`` appears.
A message deferred before the upgrade with one recipient delivered is finished after it
without sending to that recipient again."""

from __future__ import annotations

import json
import time
from typing import Any

import sqlalchemy as sa
from alembic import command

from mail_proxy.ce.storage.engine import MIGRATIONS, alembic_config, make_engine
from mail_proxy.core.testing.smtp import SmtpTestServer
from support.api import add_account, get_message, wait_status


async def database_at_0005(url: str) -> None:
    """Revision 0005 with one message, deferred after a.example got it."""
    engine, _, schema = make_engine(url)

    def upgrade(sync_conn: Any) -> None:
        cfg = alembic_config(None, str(MIGRATIONS / "versions"))
        cfg.attributes["connection"] = sync_conn
        command.upgrade(cfg, "0005")

    payload = {
        "id": "old",
        "from": "s@example.com",
        "to": ["a@example.com", "b@example.com"],
        "subject": "before the upgrade",
        "body": "x",
    }
    now = time.time()
    try:
        async with engine.begin() as conn:
            if schema:
                await conn.execute(sa.text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))
            await conn.run_sync(upgrade)
            await conn.execute(
                sa.text(
                    "INSERT INTO messages (tenant_id, id, account_id, priority, status, payload,"
                    " message_id, attempts, deferred_ts, delivered_rcpts, claim_token,"
                    " created_at, updated_at) VALUES ('default', 'old', 'smtp1', 2, 'deferred',"
                    " :payload, '<old@example.com>', 1, :now, :rcpts, 1, :now, :now)"
                ),
                {
                    "payload": json.dumps(payload),
                    "rcpts": json.dumps(["a@example.com"]),
                    "now": now - 1,
                },
            )
    finally:
        await engine.dispose()


async def test_delivered_recipients_survive_the_upgrade(
    db_url: str, aiohttp_client_factory: Any, make_settings: Any
) -> None:
    await database_at_0005(db_url)
    async with SmtpTestServer() as smtp:
        client = await aiohttp_client_factory(
            make_settings(database_url=db_url, scheduler_active=False)
        )
        await add_account(client, smtp, default=True)
        before = await get_message(client, "old")
        assert before["recipients"] == [
            {"address": "a@example.com", "status": "sent", "code": None, "reply": None}
        ]
        assert before["uncertain"] is False
        resp = await client.post("/commands/activate", json={}, headers=client.admin_headers)
        assert resp.status == 200
        final = await wait_status(client, "old", "sent")
        assert [m.rcpt_tos for m in smtp.messages] == [["b@example.com"]]
        assert {r["address"]: r["status"] for r in final["recipients"]} == {
            "a@example.com": "sent",
            "b@example.com": "sent",
        }
