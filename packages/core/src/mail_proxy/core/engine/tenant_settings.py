"""Plugins' per-tenant settings (``register_tenant_settings``): validated by the plugin's
model, secret members sealed with the instance key, stored generically by the storage
(one JSON value per tenant and name), cached per runtime until the tenant changes.

Routes use :meth:`TenantSettings.validate` / :meth:`public`; plugins read the decrypted
value with ``await runtime.local(TenantSettings).get(tenant_id, name)``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mail_proxy.core.contracts.errors import ApiError
from mail_proxy.core.contracts.extensions import TenantSetting
from mail_proxy.core.engine.sealed import SecretPlace, checked, seal_members, shown, unsealed

if TYPE_CHECKING:
    from mail_proxy.core.engine.runtime import Runtime


class TenantSettings:
    """One per runtime (``runtime.local(TenantSettings)``)."""

    def __init__(self, runtime: Runtime) -> None:
        self.rt = runtime
        self._cache: dict[str, dict[str, Any]] = {}

    # -- declarations -------------------------------------------------------------------
    def spec(self, name: str) -> TenantSetting:
        """The declaration of ``name``; 400 naming the missing plugin when none is installed."""
        registry = self.rt.tenant_settings
        if name in registry:
            found = registry.get(name)
            if not registry.is_placeholder(name):
                return found
            # the name is known, its plugin is not installed
            raise ApiError(400, "plugin_not_installed", f"{name} {found.doc}", field=name)
        raise ApiError(
            400,
            "unknown_setting",
            f"{name}: no installed plugin provides this tenant setting",
            field=name,
        )

    def names(self) -> list[str]:
        """The settings installed plugins provide (placeholders left out)."""
        reg = self.rt.tenant_settings
        return [n for n in reg if not reg.is_placeholder(n)]

    # -- values ---------------------------------------------------------------------------
    def validate(self, name: str, raw: Any, *, is_admin: bool) -> dict[str, Any] | None:
        """Check ``raw`` with the plugin's model: what to pass to :meth:`put` (None removes
        the setting), secret members still in clear (``put`` seals them for the tenant's
        row) or sealed as stored. 400 with the field and the model's reason otherwise."""
        spec = self.spec(name)
        if spec.admin_only and not is_admin:
            raise ApiError(403, "admin_only", f"{name} is set with the admin token only")
        if raw is None:
            return None
        return checked(spec.model, raw, name)

    def public(self, name: str, stored: dict[str, Any] | None) -> dict[str, Any] | None:
        """What answers show: secret members replaced by ``"<member>_set": true``."""
        registry = self.rt.tenant_settings
        secrets = registry.get(name).secret_fields if name in registry else ()
        return shown(stored, secrets)

    async def stored(self, tenant_id: str) -> dict[str, Any]:
        """Every stored setting of ``tenant_id`` (sealed), cached until the tenant changes."""
        found = self._cache.get(tenant_id)
        if found is None:
            found = self._cache[tenant_id] = await self.rt.storage.get_tenant_settings(tenant_id)
        return found

    async def get(self, tenant_id: str, name: str) -> Any:
        """The plugin's model instance for ``tenant_id`` (secrets decrypted), or None."""
        spec = self.spec(name)
        data = (await self.stored(tenant_id)).get(name)
        if data is None:
            return None
        return unsealed(self.rt, spec.model, data, _place(tenant_id, name))

    async def put(self, tenant_id: str, name: str, value: dict[str, Any] | None) -> None:
        """Store a value :meth:`validate` returned, once the setting's own ``check`` (if it
        has one) accepted it; the tenant's owners are told."""
        if value is not None:
            spec = self.spec(name)
            place = _place(tenant_id, name)
            value = seal_members(self.rt, value, spec.secret_fields, place)
            if spec.check is not None:
                await spec.check(unsealed(self.rt, spec.model, value, place), tenant_id, self.rt)
        await self.rt.storage.put_tenant_setting(tenant_id, name, value)
        await self.rt.tenant_changed(tenant_id)

    def forget(self, tenant_id: str) -> None:
        self._cache.pop(tenant_id, None)


def _place(tenant_id: str, name: str) -> SecretPlace:
    """Where a tenant setting's secrets are stored: ``tenant_settings`` row
    ``(tenant_id, name)``, column ``value``."""
    return SecretPlace("tenant_settings", "value", (tenant_id, name))
