"""``GET /pec/status``: the PEC accounts and where their mailboxes stand.

For each PEC account of the tenant (with the admin token and no ``tenant_id``: of every
tenant): the mailbox settings (never the password), the stored mailbox state (UIDVALIDITY,
last UID read, which instance holds the polling lease and until when, last write), what this
instance's poller knows when it polls the mailbox (connected, last successful read, last error,
messages handled, consecutive failures) and how many messages wait for a receipt.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from aiohttp import web
from pydantic import BaseModel, ConfigDict

from mail_proxy.core.contracts.model import Account
from mail_proxy.core.contracts.routes import RouteTable
from mail_proxy.core.engine.runtime import Runtime
from mail_proxy.core.web.app import ok, principal_of, runtime_of, tenant_named, tenant_of

from . import tables
from .accounts import is_pec_account, mailbox_key
from .pollers import PecPollers
from .tables import tables_of


class StatusQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")
    tenant_id: str | None = None


async def _mailbox_rows(runtime: Runtime, keys: list[str]) -> dict[str, Any]:
    if not keys or runtime.storage.database is None:
        return {}
    t = tables.mailboxes
    async with runtime.storage.database.connect() as conn:
        rows = await conn.execute(sa.select(t).where(t.c.mailbox_key.in_(keys)))
        return {r.mailbox_key: r for r in rows}


async def account_status(runtime: Runtime, account: Account, row: Any) -> dict[str, Any]:
    stored = dict((account.extra or {}).get("pec") or {})
    mailbox = None
    if row is not None:
        mailbox = {
            "uidvalidity": row.uidvalidity,
            "last_uid": row.last_uid,
            "lease_owner": row.lease_owner,
            "lease_until": row.lease_until,
            "updated_at": row.updated_at,
        }
    poller = runtime.local(PecPollers).poller_status(account.tenant_id, account.id)
    return {
        "tenant_id": account.tenant_id,
        "account_id": account.id,
        "imap_host": stored.get("imap_host"),
        "imap_port": stored.get("imap_port"),
        "imap_user": stored.get("imap_user"),
        "imap_folder": stored.get("imap_folder"),
        "imap_use_tls": stored.get("imap_use_tls"),
        "mailbox": mailbox,
        "polled_here": poller is not None and bool(poller.get("has_lease")),
        "poller": poller,
        "waiting": await tables_of(runtime).waiting(account.tenant_id, account.id),
    }


async def pec_status(request: web.Request) -> web.Response:
    rt = runtime_of(request)
    every_tenant = principal_of(request).is_admin and not tenant_named(request)
    accounts = await rt.storage.list_accounts(None if every_tenant else tenant_of(request))
    pec = [a for a in accounts if is_pec_account(a)]
    rows = await _mailbox_rows(rt, [mailbox_key(a.tenant_id, a.id) for a in pec])
    out = [await account_status(rt, a, rows.get(mailbox_key(a.tenant_id, a.id))) for a in pec]
    return ok({"accounts": out})


def register(routes: RouteTable, plugin: str) -> None:
    routes.add(
        "GET",
        "/pec/status",
        pec_status,
        scope="tenant",
        summary="PEC accounts and their mailboxes: last read, last UID, errors, waiting",
        query=StatusQuery,
        plugin=plugin,
    )
