"""Command routes: run-now, suspend and activate (a tenant, a batch, or the scheduler)."""

from __future__ import annotations

from aiohttp import web

from mail_proxy.core.web.app import (
    AUDIT_SUMMARY,
    body_of,
    ok,
    principal_of,
    runtime_of,
    tenant_named,
    tenant_of,
)

from .models import SuspendBody


async def run_now(request: web.Request) -> web.Response:
    """Wake dispatch and reporting. A tenant token also lifts its do-not-disturb window."""
    rt = runtime_of(request)
    principal = principal_of(request)
    tenant_id = tenant_of(request)
    narrowed = tenant_named(request) or not principal.is_admin
    if not principal.is_admin:  # the tenant's own run-now lifts its do-not-disturb window
        rt.report_sync.request_sync(tenant_id, urgent=True)
    else:  # sync now (heartbeats included) every tenant, or the named one; DND respected
        rt.report_sync.request_sync(tenant_id if narrowed else None)
    rt.wake_dispatcher()
    rt.wake_reporter()
    return ok({"tenant_id": tenant_id if narrowed else None})


async def _set_scheduler(request: web.Request, active: bool) -> web.Response:
    rt = runtime_of(request)
    await rt.storage.put_settings({"scheduler_active": active})
    rt.scheduler.set(active)
    request[AUDIT_SUMMARY] = {"scheduler_active": active}
    return ok({"scheduler_active": active})


def _whole_scheduler(request: web.Request) -> bool:
    """The admin form: admin token, no tenant named and no batch_code."""
    body: SuspendBody = body_of(request)
    return principal_of(request).is_admin and not tenant_named(request) and body.batch_code is None


async def suspend(request: web.Request) -> web.Response:
    """Stop dispatching a tenant (or one of its batches); admin form: the whole scheduler."""
    return await _change_suspension(request, suspend=True)


async def activate(request: web.Request) -> web.Response:
    """Lift a suspension (a batch, or everything of the tenant); admin form: the scheduler."""
    return await _change_suspension(request, suspend=False)


async def _change_suspension(request: web.Request, *, suspend: bool) -> web.Response:
    if _whole_scheduler(request):
        return await _set_scheduler(request, not suspend)
    rt = runtime_of(request)
    body: SuspendBody = body_of(request)
    tenant_id = tenant_of(request)
    change = rt.storage.suspend if suspend else rt.storage.activate
    batches = await change(tenant_id, body.batch_code)
    if not suspend:
        rt.wake_dispatcher()
    request[AUDIT_SUMMARY] = {"batch_code": body.batch_code or "*"}
    return ok(
        {
            "tenant_id": tenant_id,
            "suspended_batches": batches,
            "pending_messages": await rt.storage.count_pending(tenant_id),
        }
    )
