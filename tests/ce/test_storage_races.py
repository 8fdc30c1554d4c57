"""Enqueue and delete racing another instance's transaction on the same rows (PostgreSQL).

The other instance's claim is a real transaction on a second connection, held open while our
call runs: our call must wait for it and then see the message as being sent, never delete it
(it would be sent twice: once by the claimer, once as its replacement).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable
from typing import Any

import asyncpg
import pytest

from mail_proxy.ce import plugin as ce_plugin
from mail_proxy.ce.storage.sql import SqlStorage
from mail_proxy.core.contracts.model import NewMessage
from mail_proxy.core.engine.runtime import Runtime
from mail_proxy.core.plugins.loader import create_plugin_manager

pytestmark = pytest.mark.postgres


def new(payload: dict[str, Any]) -> NewMessage:
    return NewMessage("default", "m1", "acc", 2, payload, "<m1@example.com>")


@pytest.fixture
async def store(pg_url: str, make_settings: Any) -> AsyncIterator[SqlStorage]:
    rt = Runtime.create(
        make_settings(database_url=pg_url),
        create_plugin_manager(extra_plugins=[("ce", ce_plugin)], load_entry_points=False),
    )
    storage = SqlStorage(rt, pg_url)
    await storage.start()
    await storage.enqueue([new({"subject": "first"})], time.time())
    yield storage
    await storage.close()


CLAIM_M1 = (
    "UPDATE messages SET status = 'sending', claim_token = claim_token + 1,"
    " lease_until = extract(epoch from now()) + 60 WHERE id = 'm1'"
)
INSERT_M2 = (
    "INSERT INTO messages (tenant_id, id, account_id, priority, status, payload, message_id,"
    " created_at, updated_at) VALUES ('default', 'm2', 'acc', 2, 'pending', '{}', '<m2@x>',"
    " extract(epoch from now()), extract(epoch from now()))"
)


async def while_held(pg_url: str, statement: str, call: Awaitable[Any]) -> Any:
    """Run ``call`` while another transaction holds ``statement`` uncommitted; commit it once
    ``call`` waits on its lock; return what ``call`` returned."""
    schema = pg_url.rsplit("schema=", 1)[1]
    other = await asyncpg.connect(pg_url.split("?")[0], server_settings={"search_path": schema})
    watcher = await asyncpg.connect(pg_url.split("?")[0])
    try:
        tx = other.transaction()
        await tx.start()
        await other.execute(statement)
        task = asyncio.ensure_future(call)
        deadline = time.monotonic() + 10
        while not await watcher.fetchval("SELECT count(*) FROM pg_locks WHERE NOT granted"):
            assert not task.done(), f"the call did not wait for the claim: {task.result()}"
            assert time.monotonic() < deadline, "the call never waited on the claimed row"
            await asyncio.sleep(0.02)
        await tx.commit()
        return await asyncio.wait_for(task, 10)
    finally:
        await other.close()
        await watcher.close()


async def test_replacing_a_message_being_claimed_is_refused(store: SqlStorage, pg_url: str) -> None:
    result = await while_held(
        pg_url, CLAIM_M1, store.enqueue([new({"subject": "second"})], time.time())
    )
    assert result.queued == 0 and result.rejected == [("m1", "being sent")]
    rec = await store.get_message("default", "m1")
    assert rec is not None and rec.status == "sending" and rec.payload == {"subject": "first"}


async def test_deleting_a_message_being_claimed_is_refused(store: SqlStorage, pg_url: str) -> None:
    result = await while_held(pg_url, CLAIM_M1, store.delete_messages("default", ["m1"]))
    assert result.removed == 0 and result.unauthorized == ["m1"]
    assert await store.get_message("default", "m1") is not None


async def test_a_lone_call_that_clashes_with_another_insert_is_retried(
    store: SqlStorage, pg_url: str
) -> None:
    # another instance inserts m2 and commits after our read: our INSERT hits the unique index
    m2 = NewMessage("default", "m2", "acc", 2, {"subject": "ours"}, "<m2@example.com>")
    result = await while_held(pg_url, INSERT_M2, store.enqueue([m2], time.time()))
    assert result.queued == 1 and result.rejected == []
    rec = await store.get_message("default", "m2")
    assert rec is not None and rec.payload == {"subject": "ours"}  # replaced the other's row


async def test_instances_starting_together_both_create_the_default_tenant(
    store: SqlStorage, pg_url: str, make_settings: Any
) -> None:
    # a fresh database: the other instance is inserting the default tenant right now
    async with store.engine.begin() as conn:
        await conn.exec_driver_sql("DELETE FROM tenants WHERE id = 'default'")
    insert_default = (
        "INSERT INTO tenants (id, name, active, created_at, updated_at)"
        " VALUES ('default', 'Default tenant', true, 0, 0)"
    )
    rt = Runtime.create(
        make_settings(database_url=pg_url),
        create_plugin_manager(extra_plugins=[("ce", ce_plugin)], load_entry_points=False),
    )
    second = SqlStorage(rt, pg_url)
    try:
        await while_held(pg_url, insert_default, second.start())  # no IntegrityError
        assert [t.id for t in await second.list_tenants()] == ["default"]
    finally:
        await second.close()


async def test_a_suspend_racing_the_same_suspend_elsewhere_succeeds(
    store: SqlStorage, pg_url: str
) -> None:
    insert_promo = (
        "INSERT INTO suspensions (tenant_id, batch_code, created_at) VALUES ('default', 'promo', 0)"
    )
    assert await while_held(pg_url, insert_promo, store.suspend("default", "promo")) == ["promo"]
