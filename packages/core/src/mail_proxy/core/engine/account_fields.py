"""Fields plugins add to accounts (``register_account_fields``): split out of an account body,
validated by the plugin's model, stored sealed in ``account.extra[name]``, shown without
secrets. The account routes use :meth:`AccountFieldsCodec.split` and :meth:`public`;
plugins read their fields with :meth:`AccountFieldsCodec.get`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mail_proxy.core.contracts.errors import ApiError
from mail_proxy.core.engine.sealed import (
    SecretPlace,
    is_sealed,
    opened,
    seal,
    shown,
    unsealed,
)

if TYPE_CHECKING:
    from mail_proxy.core.contracts.model import Account
    from mail_proxy.core.engine.runtime import Runtime


class AccountFieldsCodec:
    """One per runtime (``runtime.local(AccountFieldsCodec)``)."""

    def __init__(self, runtime: Runtime) -> None:
        self.rt = runtime

    def _owner(self) -> dict[str, str]:
        """Field name → the registered group that accepts it."""
        reg = self.rt.account_fields
        return {
            field: name
            for name, spec in reg.items()
            if not reg.is_placeholder(name)
            for field in spec.model.model_fields
        }

    def split(
        self,
        extra_fields: dict[str, Any],
        previous: dict[str, Any] | None,
        tenant_id: str,
        account_id: str,
    ) -> dict[str, Any]:
        """The plugins' part of account ``(tenant_id, account_id)``: ``extra_fields`` (what
        the core account body did not know) grouped by plugin, validated and sealed for that
        account's row, merged over ``previous`` (the stored ``extra``). 400 for a field no installed plugin accepts (naming the plugin to
        install when it is a known one)."""
        reg = self.rt.account_fields
        owner = self._owner()
        groups: dict[str, dict[str, Any]] = {}
        for key, value in extra_fields.items():
            if key in owner:
                groups.setdefault(owner[key], {})[key] = value
            elif key in reg and reg.is_placeholder(key):
                raise ApiError(400, "plugin_not_installed", reg.get(key).doc, field=key)
            else:
                raise ApiError(400, "validation_error", f"unknown account field {key!r}", field=key)
        extra = dict(previous or {})
        for name, raw in groups.items():
            spec = reg.get(name)
            found = extra.get(name)
            stored: dict[str, Any] = found if isinstance(found, dict) else {}
            # A secret left out of an update keeps its stored value, and the model validates
            # the account as it will be (so a model may require a secret).
            kept = {
                s: stored[s]
                for s in spec.secret_fields
                if s not in raw and is_sealed(stored.get(s))
            }
            place = _place(tenant_id, account_id, name)
            full = {
                **raw,
                **{s: opened(self.rt, spec.model, s, t, place) for s, t in kept.items()},
            }
            extra[name] = seal(self.rt, spec.model, spec.secret_fields, full, "", place)
        return extra

    def public(self, extra: dict[str, Any] | None) -> dict[str, Any]:
        """The plugins' fields of an account, flat, as the API shows them."""
        reg = self.rt.account_fields
        out: dict[str, Any] = {}
        for name, stored in (extra or {}).items():
            if name in reg and not reg.is_placeholder(name) and isinstance(stored, dict):
                out.update(shown(stored, reg.get(name).secret_fields) or {})
        return out

    def get(self, account: Account, name: str) -> Any:
        """The plugin's model instance for ``account`` (secrets decrypted), or None."""
        stored = (account.extra or {}).get(name)
        if stored is None or name not in self.rt.account_fields:
            return None
        model = self.rt.account_fields.get(name).model
        return unsealed(self.rt, model, stored, _place(account.tenant_id, account.id, name))


def _place(tenant_id: str, account_id: str, name: str) -> SecretPlace:
    """Where the secrets of field group ``name`` are stored: ``accounts`` row ``(tenant_id,
    account_id)``, column ``extra``, member ``name``."""
    return SecretPlace("accounts", f"extra.{name}", (tenant_id, account_id))
