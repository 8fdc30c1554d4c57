"""The core's own plugin: admin-token authentication, metrics, the engine services.

Written with the same hooks a third-party plugin uses.
"""

from __future__ import annotations

import hmac
from typing import TYPE_CHECKING, Any

from mail_proxy.core.contracts.model import ADMIN, Principal
from mail_proxy.core.plugins import hookimpl

if TYPE_CHECKING:
    from aiohttp import web

    from mail_proxy.core.contracts.extensions import Event, EventType
    from mail_proxy.core.engine.runtime import Runtime, ServiceFactory
    from mail_proxy.core.plugins.registry import Registry


@hookimpl
def plugin_info() -> dict[str, Any]:
    return {"description": "Kernel: admin token, metrics, dispatcher, reporter", "edition": "core"}


@hookimpl(tryfirst=True)
def authenticate(request: web.Request, token: str, runtime: Runtime) -> Principal | None:
    """The admin token (``GMP_API_TOKEN``), compared in constant time."""
    expected = runtime.settings.api_token
    if expected and hmac.compare_digest(token.encode(), expected.encode()):
        return ADMIN
    return None


@hookimpl
def on_event(event: Event, runtime: Runtime) -> None:
    m = runtime.metrics
    labels = {"tenant_id": event.tenant_id, "account_id": event.account_id or ""}
    counter = {
        "sent": m.sent,
        "error": m.errors,
        "deferred": m.deferred,
        "rate_limited": m.rate_limited,
    }.get(event.type)
    if counter is not None:
        counter.labels(**labels).inc()


@hookimpl
def register_services(services: Registry[ServiceFactory]) -> None:
    from mail_proxy.core.engine.dispatcher import Dispatcher
    from mail_proxy.core.engine.housekeeping import Housekeeping
    from mail_proxy.core.engine.loop_lag import LoopLagMonitor
    from mail_proxy.core.engine.reporter import Reporter

    services.register("dispatcher", Dispatcher.create, plugin="core")
    services.register("reporter", Reporter.create, plugin="core")
    services.register("housekeeping", Housekeeping.create, plugin="core")
    services.register("loop-lag", LoopLagMonitor.create, plugin="core")


@hookimpl
def register_event_types(event_types: Registry[EventType]) -> None:
    from mail_proxy.core.engine.event_types import CORE_EVENT_TYPES

    for event_type in CORE_EVENT_TYPES:
        event_types.register(event_type.name, event_type, plugin="core")


@hookimpl
async def tenant_deleted(tenant_id: str, runtime: Runtime) -> None:
    """Drop the deleted tenant's cached settings, accounts and attachments (memory and disk)."""
    from mail_proxy.core.engine.attachments import get_resolver
    from mail_proxy.core.engine.dispatcher import DeliveryLookups
    from mail_proxy.core.engine.tenant_settings import TenantSettings

    runtime.local(TenantSettings).forget(tenant_id)
    runtime.local(DeliveryLookups).forget(tenant_id)
    await get_resolver(runtime).cache.purge_tenant(tenant_id)


@hookimpl
def tenant_changed(tenant_id: str, runtime: Runtime) -> None:
    """The tenant, its accounts or its settings changed: read them again at their next use."""
    from mail_proxy.core.engine.dispatcher import DeliveryLookups
    from mail_proxy.core.engine.tenant_settings import TenantSettings

    runtime.local(TenantSettings).forget(tenant_id)
    runtime.local(DeliveryLookups).forget(tenant_id)
