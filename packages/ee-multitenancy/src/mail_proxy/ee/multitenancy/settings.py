"""Plugins' tenant settings in the tenant routes: the fields of a tenant body that are not
tenant fields, and what ``GET /tenant/{id}`` shows of them.

The plugin knows no setting by name: each one is declared by the plugin that owns it
(``register_tenant_settings``) and validated, sealed, stored and shown by the core's
:class:`~mail_proxy.core.engine.tenant_settings.TenantSettings`, exactly as through
``/tenant-settings/{name}``. A name that only a placeholder declares (a known plugin that is
not installed) is refused with the core's answer naming the plugin to install; a name nobody
declares is refused like any unknown field of a body.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mail_proxy.core.contracts.errors import ApiError
from mail_proxy.core.engine.tenant_settings import TenantSettings

if TYPE_CHECKING:
    from mail_proxy.core.engine.runtime import Runtime


def field_error(field: str, message: str) -> ApiError:
    """A 400 ``validation_error`` naming ``field``, shaped like the body validation's."""
    return ApiError(
        400,
        "validation_error",
        f"invalid body: {field}: {message}",
        details=[{"field": field, "message": message}],
    )


def check_names(rt: Runtime, raw: dict[str, Any]) -> list[str]:
    """Check that every name in ``raw`` is an installed plugin's tenant setting and return
    those only the admin may set. 400 otherwise (nothing is validated or stored yet)."""
    store = rt.local(TenantSettings)
    admin_only = []
    for name in raw:
        if name not in rt.tenant_settings:
            raise field_error(name, "Extra inputs are not permitted")
        if store.spec(name).admin_only:  # a placeholder's name: 400 naming its plugin
            admin_only.append(name)
    return sorted(admin_only)


def validate(rt: Runtime, raw: dict[str, Any], *, is_admin: bool) -> dict[str, Any]:
    """What to store for each setting of ``raw``, validated by its plugin's model with its
    secrets sealed (None removes the setting). 400 naming the setting otherwise."""
    store = rt.local(TenantSettings)
    return {name: store.validate(name, value, is_admin=is_admin) for name, value in raw.items()}


async def save(rt: Runtime, tenant_id: str, values: dict[str, Any]) -> None:
    """Store the values :func:`validate` returned."""
    store = rt.local(TenantSettings)
    for name, value in values.items():
        await store.put(tenant_id, name, value)


async def shown(rt: Runtime, tenant_id: str) -> dict[str, Any]:
    """The tenant's settings as answers show them: every setting installed plugins declare
    (None when not set), and any other one stored (its plugin uninstalled since)."""
    store = rt.local(TenantSettings)
    stored = await store.stored(tenant_id)
    installed = store.names()
    names = [*installed, *sorted(n for n in stored if n not in installed)]
    return {name: store.public(name, stored.get(name)) for name in names}
