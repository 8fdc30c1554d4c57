"""PEC accounts through the account routes: validation with a clear reason, the password
sealed and never shown, tenant-scoped accounts kept apart, and the service without the
plugin refusing ``pec`` with the reason that names it.

Real parts: the service (SQLite and PostgreSQL), Dovecot, the simulated provider, the report
receiver; the multitenancy plugin for the tenant case (skipped when it is not installed).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from ee_pec.world import DELIVERED, PecWorld, common, metric

from support.ce_api import Api
from support.pec_provider import build_receipt

SECRET = "pec-Sentinel-Password-4711"


async def test_pec_without_its_mailbox_is_refused_with_the_reason(start_world: Any) -> None:
    world: PecWorld = await start_world()
    answer = await world.api.post(
        "/account", {"id": "p", "host": "127.0.0.1", "pec": True}, expect=400
    )
    assert answer["code"] == "invalid_setting"
    assert "a PEC account needs the IMAP settings of its mailbox" in answer["error"]
    assert "missing imap_host, imap_user, imap_password" in answer["error"]
    answer = await world.api.post(
        "/account",
        {"id": "p", "host": "127.0.0.1", "pec": True, "imap_host": "imap.test", "imap_user": "u"},
        expect=400,
    )
    assert "missing imap_password" in answer["error"]
    bad_port = {"id": "p", "host": "127.0.0.1", "imap_port": 0}
    assert (await world.api.post("/account", bad_port, expect=400))["code"] == "invalid_setting"
    assert (await world.api.get("/accounts"))["accounts"] == []


async def test_the_password_is_sealed_kept_on_update_and_never_shown(
    start_world: Any, db_url: str
) -> None:
    world: PecWorld = await start_world()
    saved = await world.add_pec_account(imap_password=SECRET)
    assert SECRET not in str(saved)
    assert saved["account"]["imap_password_set"] is True
    assert saved["account"]["imap_folder"] == "INBOX"
    # an update that leaves the password out keeps it (and still passes validation)
    body = {
        "id": "pec",
        "host": "127.0.0.1",
        "port": world.provider.port,
        "pec": True,
        "imap_host": world.dovecot.host,
        "imap_port": world.dovecot.port,
        "imap_user": world.user,
        "imap_use_tls": False,
    }
    updated = await world.api.post("/account", body)
    assert updated["account"]["imap_password_set"] is True
    listed = await world.api.get("/accounts")
    assert SECRET not in str(listed) and "imap_password" not in listed["accounts"][0]
    status = await world.api.get("/pec/status")
    assert SECRET not in str(status)
    if db_url.startswith("sqlite"):
        data = b"".join(p.read_bytes() for p in Path(db_url[10:]).parent.glob("gmp.db*"))
        assert SECRET.encode() not in data


async def test_without_the_plugin_pec_is_refused_naming_it(
    db_url: str, aiohttp_client_factory: Any, make_settings: Any, tmp_path: Path
) -> None:
    settings = make_settings(database_url=db_url, disabled_plugins=["pec"])
    api = Api(await aiohttp_client_factory(settings), tmp_path)
    answer = await api.post(
        "/account",
        {"id": "p", "host": "127.0.0.1", "pec": True, "imap_host": "imap.test"},
        expect=400,
    )
    assert answer["code"] == "plugin_not_installed"
    assert answer["error"].startswith("pec accounts need the PEC plugin")
    assert (await api.get("/pec/status", expect=404))["ok"] is False
    plugins = (await api.get("/status"))["plugins"]
    assert "pec" not in plugins
    # an ordinary account is fine
    await api.post("/account", {"id": "plain", "host": "127.0.0.1"})


async def test_tenant_accounts_are_kept_apart(start_world: Any) -> None:
    pytest.importorskip("mail_proxy.ee.multitenancy.plugin")
    from mail_proxy.core.testing.reports import wait_until
    from support.multitenancy import as_tenant, create_tenant

    world: PecWorld = await start_world(fetch_allow_networks=["127.0.0.0/8"])  # acme's URL
    if "multitenancy" not in (await world.api.get("/status"))["plugins"]:
        pytest.skip("the multitenancy plugin is not installed")
    await world.add_pec_account()  # the default tenant's PEC account, mailbox world.user
    acme = await create_tenant(world.api, "acme", client_base_url=world.reports.base_url)
    acme_user, acme_password = world.dovecot.new_user("acme")
    acme_sender = "acme@pec.mittente.test"
    world.provider.mailboxes[acme_sender] = acme_user
    world.provider.plan = lambda got: []
    await as_tenant(
        world.api,
        acme,
        "POST",
        "/account",
        {
            "id": "pec",  # the same account id as the default tenant's
            "host": "127.0.0.1",
            "port": world.provider.port,
            "default": True,
            "pec": True,
            "imap_host": world.dovecot.host,
            "imap_port": world.dovecot.port,
            "imap_user": acme_user,
            "imap_password": acme_password,
            "imap_use_tls": False,
        },
    )
    mine = await as_tenant(world.api, acme, "GET", "/pec/status")
    assert [(a["tenant_id"], a["imap_user"]) for a in mine["accounts"]] == [("acme", acme_user)]
    await as_tenant(world.api, acme, "GET", "/pec/status?tenant_id=default", expect=403)
    everyone = await world.api.get("/pec/status")
    assert {a["tenant_id"] for a in everyone["accounts"]} == {"default", "acme"}

    entry = {"id": "a-1", "from": acme_sender, "to": [DELIVERED], "subject": "S", "body": "b"}
    sent = await as_tenant(world.api, acme, "POST", "/commands/add-messages", {"messages": [entry]})
    assert sent["queued"] == 1
    (got,) = await world.provider.wait_received(1)

    # acme's receipt in the default tenant's mailbox (same account id): changes nothing
    world.dovecot.append(world.user, build_receipt("accettazione", **common(got)))

    async def counted() -> bool:
        return await metric(world, "gmp_pec_receipts_unmatched_total", reason="other_account") == 1

    await wait_until(counted, 15, "the foreign receipt counted")
    # in acme's own mailbox it is recorded, and reported to acme
    world.dovecot.append(acme_user, build_receipt("accettazione", **common(got)))
    (item,) = await world.wait_pec_items("a-1", 1)
    assert item["pec_event"] == "pec_acceptance"
    acme_request = [r for r in world.reports.requests if r.accepted and r.items]
    assert all(i["id"] == "a-1" for r in acme_request for i in r.items if "pec_event" in i)
