"""run-now, suspend/activate (tenant, batch, whole scheduler) and cleanup-messages."""

from __future__ import annotations

import asyncio
import time

import pytest

from mail_proxy.core.contracts.model import Outcome
from support.ce_api import Api, message


@pytest.fixture
async def api(api: Api) -> Api:
    """The shared ``api`` (tests/conftest.py) with a default account ``main``."""
    await api.add_account("main")
    return api


async def test_scheduler_suspend_and_activate(api: Api) -> None:
    answer = await api.post("/commands/suspend")
    assert answer == {"ok": True, "scheduler_active": False, "_status": 200}
    assert api.runtime.scheduler.active is False
    assert (await api.get("/status"))["scheduler_active"] is False
    assert (await api.runtime.storage.get_settings())["scheduler_active"] is False

    answer = await api.post("/commands/activate")
    assert answer == {"ok": True, "scheduler_active": True, "_status": 200}
    assert (await api.runtime.storage.get_settings())["scheduler_active"] is True


async def test_tenant_and_batch_suspension(api: Api) -> None:
    await api.send(message("a", batch_code="spring"), message("b"))
    answer = await api.post("/commands/suspend", {"tenant_id": "default", "batch_code": "spring"})
    assert answer["tenant_id"] == "default"
    assert answer["suspended_batches"] == ["spring"]
    assert answer["pending_messages"] == 2
    assert api.runtime.scheduler.active is True  # the scheduler itself keeps running

    rt = api.runtime
    claimed = await rt.storage.claim_messages(rt.instance_id, 4e9, 10, 60, 10)
    assert [r.id for r in claimed] == ["b"]  # the suspended batch stays queued

    answer = await api.post("/commands/suspend", {"tenant_id": "default"})
    assert answer["suspended_batches"] == ["*", "spring"]

    # activating wakes the dispatcher, which now delivers the batch that was held back
    answer = await api.post("/commands/activate", {"tenant_id": "default"})
    assert answer["suspended_batches"] == []
    assert await api.wait_status("a", "sent") == "sent"


async def test_batch_code_without_tenant_is_the_default_tenant(api: Api) -> None:
    answer = await api.post("/commands/suspend", {"batch_code": "x"})
    assert answer["tenant_id"] == "default" and answer["suspended_batches"] == ["x"]
    assert api.runtime.scheduler.active is True
    answer = await api.post("/commands/activate", {"batch_code": "x"})
    assert answer["suspended_batches"] == []


async def test_run_now_delivers_in_test_mode(api: Api) -> None:
    """Test mode holds the queue until run-now; then the file transport writes the message."""
    await api.send(message("m1"))
    await asyncio.sleep(0.1)
    assert (await api.get("/messages/m1"))["message"]["status"] == "pending"
    answer = await api.post("/commands/run-now")
    assert answer["ok"] is True
    assert await api.wait_status("m1", "sent") == "sent"
    files = list((api.tmp_path / "out").glob("*.eml"))
    assert len(files) == 1 and b"Subject: Hello" in files[0].read_bytes()


async def test_cleanup_messages(api: Api) -> None:
    await api.send(message("done"), message("queued"))
    rt = api.runtime
    claimed = {r.id: r for r in await rt.storage.claim_messages(rt.instance_id, 4e9, 10, 60, 10)}
    done, queued = claimed["done"], claimed["queued"]
    now = time.time()
    await rt.storage.record_outcomes(
        [
            Outcome(pk=done.pk, claim_token=done.claim_token, kind="sent", ts=now),
            Outcome(
                pk=queued.pk,
                claim_token=queued.claim_token,
                kind="released",
                ts=now,
                count_attempt=False,
            ),
        ]
    )
    # the sent event is not reported yet: nothing may be purged
    assert (await api.post("/commands/cleanup-messages", {"older_than_seconds": 0}))["removed"] == 0
    events = await rt.storage.fetch_unreported("default", 100)
    await rt.storage.acknowledge_events("default", [e.pk for e in events], now)
    # the default threshold (the 7-day retention) keeps a fresh message; 0 removes it
    answer = await api.post("/commands/cleanup-messages")
    assert answer["removed"] == 0
    await asyncio.sleep(0.01)
    answer = await api.post("/commands/cleanup-messages", {"older_than_seconds": 0})
    assert answer["removed"] == 1
    assert sorted(await api.message_ids()) == ["queued"]

    bad = await api.post("/commands/cleanup-messages", {"older_than_seconds": -1}, expect=400)
    assert bad["code"] == "validation_error"
