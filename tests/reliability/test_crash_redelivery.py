"""Crash redelivery is flagged (issue 16, defect 6).

``mail-proxy serve`` is killed with SIGKILL while messages are in flight at a slow SMTP
server that has their content and answers later (so it delivers them). After a restart the
claims are retaken when their lease expires and sent again: those attempts may be duplicates
and say so with ``uncertain: true`` on the message, its events and its report item. Messages
that were not in flight are not flagged.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from reliability.harness import (
    Fleet,
    Sink,
    add_account,
    in_flight,
    message,
    uncertain_ids,
    wait_final,
)

from mail_proxy.core.testing.reports import ReportClient

pytestmark = [pytest.mark.reliability, pytest.mark.timeout(120)]


async def test_kill_9_with_messages_in_flight_flags_their_redelivery(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'crash.db'}"
    async with Sink() as sink, ReportClient() as rc:
        sink.data_delay = 1.5  # the sink holds each message 1.5 s before its 250
        fleet = Fleet(tmp_path, url, GMP_CLAIM_LEASE_SECONDS="2", GMP_CLIENT_SYNC_URL=rc.url)
        async with fleet:
            svc = await fleet.start()
            await add_account(svc, sink)
            ids = [f"c{i}" for i in range(40)]
            await svc.call(
                "POST", "/commands/add-messages", json={"messages": [message(i) for i in ids]}
            )
            # kill while the sink holds the first messages (8 at a time per account)
            await sink.wait_until(lambda: len(sink.messages) >= 4, timeout=10)
            fleet.kill(svc)
            held = await in_flight(url)
            await asyncio.sleep(sink.data_delay + 0.5)  # the sink answers the dead client
            first_copies = set(sink.copies())

            svc = await fleet.start()
            calm = ["after0", "after1"]  # never in flight at a crash
            await svc.call(
                "POST", "/commands/add-messages", json={"messages": [message(i) for i in calm]}
            )
            ids += calm
            await wait_final(svc, len(ids), timeout=60)
            copies = sink.copies()
            assert set(copies) == set(ids)  # lost = 0
            duplicated = {i for i, n in copies.items() if n > 1}
            assert duplicated, "the sink got no message twice: nothing was tested"
            assert max(copies.values()) == 2
            assert duplicated <= held and duplicated <= first_copies
            # Every message in flight at the kill is flagged, and only those: on the
            # message, on its sent event and on its report item.
            assert await uncertain_ids(url) == held
            for msg_id in sorted(duplicated):
                detail = (await svc.call("GET", f"/messages/{msg_id}"))["message"]
                assert detail["uncertain"] is True and detail["status"] == "sent"
                evs = (await svc.call("GET", f"/messages/{msg_id}/events"))["events"]
                [sent] = [e for e in evs if e["event_type"] == "sent"]
                assert sent["metadata"]["uncertain"] is True
            for msg_id in calm:
                detail = (await svc.call("GET", f"/messages/{msg_id}"))["message"]
                assert detail["uncertain"] is False
            await rc.wait_for(
                lambda: {i["id"] for i in rc.accepted_items() if "sent_ts" in i} >= set(ids), 20
            )
        sent_items = [i for i in rc.accepted_items() if "sent_ts" in i]
        assert {i["id"] for i in sent_items if i.get("uncertain")} == held
        # Both copies carry the same Message-ID: the recipient can tell them apart too.
        for msg_id in duplicated:
            same = {
                m.message["Message-ID"]
                for m in sink.messages
                if m.message["X-Genro-Mail-ID"] == msg_id
            }
            assert len(same) == 1


async def test_a_graceful_stop_mid_data_flags_the_next_attempt(tmp_path: Path) -> None:
    # SIGTERM while the sink holds the message longer than the shutdown grace (5 s): the
    # delivery is cancelled and its claim given back, but the sink keeps the message. The
    # lease (12 s) outlasts the sink's delay, so the first instance never retakes its own
    # claim, and is short enough that the SIGKILL fallback's claim expires within the wait.
    url = f"sqlite:///{tmp_path / 'stop.db'}"
    async with Sink() as sink:
        sink.data_delay = 10.0
        async with Fleet(tmp_path, url, GMP_CLAIM_LEASE_SECONDS="12") as fleet:
            svc = await fleet.start()
            await add_account(svc, sink)
            await svc.call("POST", "/commands/add-messages", json={"messages": [message("slow")]})
            await sink.wait_for_messages(1, timeout=10)
            sink.data_delay = 0.0  # for the next attempt
            svc.stop()
            assert svc.proc is not None
            if svc.proc.returncode == 0:  # (a loaded machine may need the SIGKILL fallback)
                assert await uncertain_ids(url) == {"slow"}
                assert await in_flight(url) == set()  # given back, not left to its lease
            svc = await fleet.start()
            [msg] = await wait_final(svc, 1, timeout=45)
            assert msg["id"] == "slow" and msg["status"] == "sent"
            detail = (await svc.call("GET", "/messages/slow"))["message"]
            assert detail["uncertain"] is True
        assert sink.copies() == {"slow": 2}
