"""The PEC plugin in the real service process (``mail-proxy serve``, plugins from their entry
points) stopped and started between receipts, and two instances sharing one database: each
receipt is recorded once.

Real parts: ``mail-proxy serve`` subprocesses, the simulated provider (SMTP), Dovecot, the
report receiver, SQLite and PostgreSQL.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from ee_pec.world import DELIVERED, SENDER, PecProviderSmtp, PecWorld, common

from mail_proxy.core.engine.encryption import generate_key
from mail_proxy.core.testing.reports import ReportClient, wait_until
from mail_proxy.core.testing.service import ServiceProcess
from support.dovecot import Dovecot
from support.pec_provider import build_receipt

SECOND = "secondo@pec.destinatario.test"


async def test_the_service_stopped_between_receipts_records_each_once(
    db_url: str, tmp_path: Path, dovecot: Dovecot, provider: PecProviderSmtp, reports: ReportClient
) -> None:
    user, password = dovecot.new_user("svc")
    provider.mailboxes[SENDER] = user
    provider.plan = lambda got: [build_receipt("accettazione", **common(got))]
    env = {
        "GMP_API_TOKEN": "pec-service-test-token-0123",
        "MAIL_PROXY_ENCRYPTION_KEY": generate_key(),
        "GMP_DATABASE_URL": db_url,
        "GMP_CLIENT_SYNC_URL": reports.url,
        "GMP_SYNC_INTERVAL": "1",
        "GMP_PEC_POLL_INTERVAL": "2",
    }
    service = await ServiceProcess(env, tmp_path / "service.log").start()
    try:
        await service.call(
            "POST",
            "/account",
            json={
                "id": "pec",
                "host": "127.0.0.1",
                "port": provider.port,
                "default": True,
                "pec": True,
                "imap_host": dovecot.host,
                "imap_port": dovecot.port,
                "imap_user": user,
                "imap_password": password,
                "imap_use_tls": False,
            },
        )
        message = {"id": "svc-1", "from": SENDER, "to": [DELIVERED, SECOND], "subject": "S"}
        await service.call("POST", "/commands/add-messages", json={"messages": [message]})
        (got,) = await provider.wait_received(1)

        def pec(n: int) -> Any:
            return lambda: len([i for i in reports.accepted_items() if "pec_event" in i]) >= n

        await reports.wait_for(pec(1), 15)
        await asyncio.sleep(0.5)  # the acknowledgement of that report is written
        service.stop()  # SIGTERM: the poller logs out and gives its lease up
        dovecot.append(user, build_receipt("avvenuta-consegna", **common(got), recipient=DELIVERED))
        service = await ServiceProcess(env, tmp_path / "service.log").start()
        await reports.wait_for(pec(2), 15)
        dovecot.append(user, build_receipt("avvenuta-consegna", **common(got), recipient=SECOND))
        await reports.wait_for(pec(3), 15)
        await asyncio.sleep(1.0)

        items = [i for i in reports.accepted_items() if "pec_event" in i]
        assert [i["pec_event"] for i in items] == ["pec_acceptance", "pec_delivery", "pec_delivery"]
        assert items[-1]["pec_delivery_ts"] == items[-1]["pec_ts"]
        events = (await service.call("GET", "/messages/svc-1/events"))["events"]
        kinds = [e["event_type"] for e in events if e["event_type"].startswith("pec_")]
        assert kinds == ["pec_acceptance", "pec_delivery", "pec_delivery"]
    finally:
        service.stop()


async def test_two_instances_on_one_database_read_a_mailbox_once(start_world: Any) -> None:
    first: PecWorld = await start_world()
    first.provider.plan = lambda got: []
    await first.add_pec_account()
    second: PecWorld = await start_world(user=(first.user, first.password))

    async def both_know_it() -> bool:
        one = (await first.api.get("/pec/status"))["accounts"][0]
        two = (await second.api.get("/pec/status"))["accounts"][0]
        return one["poller"] is not None and two["poller"] is not None

    await wait_until(both_know_it, 15, "both instances have a poller for the account")
    await first.send("shared", [DELIVERED])
    (got,) = await first.provider.wait_received(1)
    for kind in ("accettazione", "avvenuta-consegna"):
        extra = {"recipient": DELIVERED} if kind != "accettazione" else {}
        first.dovecot.append(first.user, build_receipt(kind, **common(got), **extra))
    await first.wait_pec_items("shared", 2)
    await asyncio.sleep(1.0)
    assert [i["pec_event"] for i in await first.pec_items("shared")] == [
        "pec_acceptance",
        "pec_delivery",
    ]
    polled = [
        (await w.api.get("/pec/status"))["accounts"][0]["polled_here"] for w in (first, second)
    ]
    assert sorted(polled) == [False, True]
