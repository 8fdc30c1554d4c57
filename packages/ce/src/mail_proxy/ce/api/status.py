"""``GET /status``: what an operator checks first (scheduler, queue, plugins, database)."""

from __future__ import annotations

from aiohttp import web

from mail_proxy.core import __version__
from mail_proxy.core.web.app import ok, principal_of, runtime_of


async def status(request: web.Request) -> web.Response:
    """Any token. A tenant token sees its own tenant's pending count, the admin all of them."""
    rt = runtime_of(request)
    principal = principal_of(request)
    pending = await rt.storage.count_pending(None if principal.is_admin else principal.tenant_id)
    return ok(
        {
            "scheduler_active": rt.scheduler.active,
            "version": __version__,
            "instance": rt.settings.instance_name,
            "plugins": rt.plugins.names(),
            "pending_messages": pending,
            "database": rt.storage.dialect,
        }
    )
