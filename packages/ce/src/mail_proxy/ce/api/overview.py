"""``GET /overview`` and ``GET /suspended-batches``: what an operator (or the console) looks
at first, in one call each, scoped like every other route.

An admin token that names no tenant sees every tenant; one that names a tenant, or a tenant
token, sees that tenant only.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from mail_proxy.core import __version__
from mail_proxy.core.contracts.storage import Suspension
from mail_proxy.core.web.app import (
    ok,
    principal_of,
    query_of,
    runtime_of,
    tenant_named,
    tenant_of,
)

from .models import OverviewQuery


def _scope(request: web.Request) -> str | None:
    """The tenant the request is narrowed to, or None for an admin's every-tenant view."""
    if principal_of(request).is_admin and not tenant_named(request):
        return None
    return tenant_of(request)


def _suspension(s: Suspension) -> dict[str, Any]:
    return {"tenant_id": s.tenant_id, "batch_code": s.batch_code, "created_at": s.created_at}


async def overview(request: web.Request) -> web.Response:
    """Queue by status, recent outcomes, oldest pending age, report backlog, suspensions,
    scheduler state and plugins."""
    rt = runtime_of(request)
    q: OverviewQuery = query_of(request)
    tenant_id = _scope(request)
    now = rt.clock.now()  # the clock the events' times were written on (engine/clock.py)
    view = await rt.storage.queue_overview(tenant_id, now - q.window)
    oldest = view.oldest_pending_created_at
    suspensions = await rt.storage.list_suspensions(tenant_id)
    return ok(
        {
            "tenant_id": tenant_id,
            "generated_at": now,
            "counts": view.counts,
            "recent": {"window_seconds": q.window, **view.recent},
            "oldest_pending_age": max(0.0, now - oldest) if oldest is not None else None,
            "report_backlog": view.report_backlog,
            "suspensions": [_suspension(s) for s in suspensions],
            "scheduler_active": rt.scheduler.active,
            "plugins": rt.plugins.names(),
            "version": __version__,
            "instance": rt.settings.instance_name,
            "database": rt.storage.dialect,
        }
    )


async def suspended_batches(request: web.Request) -> web.Response:
    """The suspensions (``batch_code`` ``*``: the whole tenant) in scope."""
    rt = runtime_of(request)
    tenant_id = _scope(request)
    suspensions = await rt.storage.list_suspensions(tenant_id)
    return ok({"tenant_id": tenant_id, "suspensions": [_suspension(s) for s in suspensions]})
