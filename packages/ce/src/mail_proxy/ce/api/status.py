"""``GET /status``: what an operator checks first (scheduler, queue, plugins, database)."""

from __future__ import annotations

from aiohttp import web

from mail_proxy.core import __version__
from mail_proxy.core.web.app import ok, principal_of, runtime_of


async def status(request: web.Request) -> web.Response:
    """Any token. A tenant token sees its own tenant's pending count, the admin all of them."""
    rt = runtime_of(request)
    principal = principal_of(request)
    tenant_id = None if principal.is_admin else principal.tenant_id
    pending = await rt.storage.count_pending(tenant_id)
    # accounts allowed to send their password over an unencrypted connection: an operator
    # should know about each of them
    plaintext_auth = [
        {"tenant_id": a.tenant_id, "id": a.id}
        for a in await rt.storage.list_accounts(tenant_id)
        if a.allow_plaintext_auth
    ]
    return ok(
        {
            "scheduler_active": rt.scheduler.active,
            "version": __version__,
            "instance": rt.settings.instance_name,
            "plugins": rt.plugins.names(),
            "pending_messages": pending,
            "database": rt.storage.dialect,
            "plaintext_auth_accounts": plaintext_auth,
            # who the caller is: the console shows admin pages only to the admin
            "token": {"kind": principal.kind, "tenant_id": principal.tenant_id},
        }
    )
