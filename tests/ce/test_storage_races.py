"""Replacing or deleting a queued message while another instance claims it (PostgreSQL).

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

from mail_proxy.ce.storage.sql import SqlStorage
from mail_proxy.core.model import NewMessage
from mail_proxy.core.plugins import create_plugin_manager
from mail_proxy.core.runtime import Runtime

pytestmark = pytest.mark.postgres


def new(payload: dict[str, Any]) -> NewMessage:
    return NewMessage("default", "m1", "acc", 2, payload, "<m1@example.com>")


@pytest.fixture
async def store(pg_url: str, make_settings: Any) -> AsyncIterator[SqlStorage]:
    rt = Runtime(make_settings(database_url=pg_url), create_plugin_manager(load_entry_points=False))
    storage = SqlStorage(rt, pg_url)
    await storage.start()
    await storage.enqueue([new({"subject": "first"})], time.time())
    yield storage
    await storage.close()


async def claimed_meanwhile(pg_url: str, call: Awaitable[Any]) -> Any:
    """Run ``call`` while another transaction holds an uncommitted claim of m1; commit the
    claim once ``call`` waits on its row lock; return what ``call`` returned."""
    schema = pg_url.rsplit("schema=", 1)[1]
    other = await asyncpg.connect(pg_url.split("?")[0], server_settings={"search_path": schema})
    watcher = await asyncpg.connect(pg_url.split("?")[0])
    try:
        tx = other.transaction()
        await tx.start()
        await other.execute(
            "UPDATE messages SET status = 'sending', claim_token = claim_token + 1,"
            " lease_until = $1 WHERE id = 'm1'",
            time.time() + 60,
        )
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
    result = await claimed_meanwhile(
        pg_url, store.enqueue([new({"subject": "second"})], time.time())
    )
    assert result.queued == 0 and result.rejected == [("m1", "being sent")]
    rec = await store.get_message("default", "m1")
    assert rec is not None and rec.status == "sending" and rec.payload == {"subject": "first"}


async def test_deleting_a_message_being_claimed_is_refused(store: SqlStorage, pg_url: str) -> None:
    result = await claimed_meanwhile(pg_url, store.delete_messages("default", ["m1"]))
    assert result.removed == 0 and result.unauthorized == ["m1"]
    assert await store.get_message("default", "m1") is not None
