"""F10: suspend a tenant (or one batch) in the middle of a batch and resume: nothing is sent
while suspended, and nobody gets a second copy.

C1: the report endpoint is down (500, then not JSON) for several sync intervals (shortened to
1 s), then up: every event is delivered, each in exactly one acknowledged request, and each
acknowledged request has its own ``webhook-id``.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

import pytest
from reliability.harness import Accounting, Fleet, Sink, add_account, message, record, wait_final

from mail_proxy.core.testing.reports import ReportClient
from mail_proxy.core.testing.service import ServiceProcess

pytestmark = [pytest.mark.reliability, pytest.mark.timeout(120)]


async def enqueue(svc: ServiceProcess, ids: list[str], **fields: str) -> None:
    data = await svc.call(
        "POST", "/commands/add-messages", json={"messages": [message(i, **fields) for i in ids]}
    )
    assert data["queued"] == len(ids), data


async def quiet(sink: Sink, seconds: float) -> int:
    """Messages the sink received during ``seconds`` (after in-flight ones landed)."""
    await asyncio.sleep(1.0)  # deliveries already handed to SMTP finish
    before = len(sink.messages)
    await asyncio.sleep(seconds)
    return len(sink.messages) - before


@pytest.mark.parametrize("scope", ["tenant", "batch"])
async def test_f10_suspend_mid_batch_and_resume(tmp_path: Path, scope: str) -> None:
    async with Sink() as sink:
        sink.data_delay = 0.02
        async with Fleet(tmp_path, f"sqlite:///{tmp_path / 'f10.db'}") as fleet:
            svc = await fleet.start()
            await add_account(svc, sink)
            ids = [f"f{i}" for i in range(300)]
            await enqueue(svc, ids, batch_code="spring")
            await sink.wait_until(lambda: len(sink.messages) >= 60, timeout=30)
            body = {"tenant_id": "default"}
            if scope == "batch":
                body["batch_code"] = "spring"
            held = await svc.call("POST", "/commands/suspend", json=body)
            assert held["suspended_batches"] == (["*"] if scope == "tenant" else ["spring"])
            assert await quiet(sink, 1.5) == 0
            paused_at = len(sink.messages)
            assert paused_at < len(ids)
            resumed = await svc.call("POST", "/commands/activate", json=body)
            assert resumed["suspended_batches"] == []
            await wait_final(svc, len(ids), timeout=60)
        account = Accounting(set(ids), sink.copies())
        record(f"F10 suspend {scope}", **account.figures(), sent_before_suspend=paused_at)
        assert not account.lost and not account.duplicated and not account.unexpected


async def test_c1_report_endpoint_down_for_several_intervals(tmp_path: Path) -> None:
    async with Sink() as sink, ReportClient() as rc:
        rc.mode = "500"
        async with Fleet(
            tmp_path,
            f"sqlite:///{tmp_path / 'c1.db'}",
            GMP_CLIENT_SYNC_URL=rc.url,
            GMP_SYNC_INTERVAL="1",
        ) as fleet:
            svc = await fleet.start()
            await add_account(svc, sink)
            sink.script_rcpt = {"c7@example.net": "550 5.1.1 no such user"}
            ids = [f"c{i}" for i in range(40)]
            await enqueue(svc, ids)
            await wait_final(svc, len(ids), timeout=30)
            await rc.wait_for(lambda: len(rc.requests) >= 3, timeout=20)
            rc.mode = "not_json"
            await rc.wait_for(lambda: len(rc.requests) >= 5, timeout=20)
            failed = len(rc.requests)
            rc.mode = "ok"

            def all_reported() -> bool:
                return {i["id"] for i in rc.accepted_items()} >= set(ids)

            await rc.wait_for(all_reported, timeout=30)
            await asyncio.sleep(2.5)  # a heartbeat or two more: nothing is sent again
        accepted = [r for r in rc.requests if r.accepted]
        webhook_ids = Counter(r.headers["webhook-id"] for r in accepted)
        items = Counter((i["id"], "sent_ts" in i) for i in rc.accepted_items())
        record(
            "C1 report endpoint down",
            failed_requests=failed,
            accepted_requests=len(accepted),
            events=len(items),
            delivered_twice=sum(n - 1 for n in items.values()),
        )
        assert failed >= 5 and max(webhook_ids.values()) == 1
        assert set(items) == {(i, i != "c7") for i in ids}  # one outcome each
        assert max(items.values()) == 1, [k for k, n in items.items() if n > 1]
        # the bearer token goes in the header, never in a body
        assert all(fleet.sync_token not in r.body.decode() for r in rc.requests)
