"""Plugin-declared values (tenant settings, account fields) as they are stored and shown:
validated by the plugin's pydantic model, secret members sealed with the instance key as
``{"$enc": token}`` (key rotation finds them by that shape), never returned in clear. Each
token is bound to its row and member (:class:`SecretPlace`): copied elsewhere, it does not
open.

A secret member may be any JSON value (a password, or a whole ``{"key": ..., "secret": ...}``
object of credentials): text is sealed as it is, other values as their JSON text, decoded
again when the model's field does not take text."""

from __future__ import annotations

import json
import types
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel, SecretStr, ValidationError

from mail_proxy.core.contracts.errors import ApiError
from mail_proxy.core.engine.encryption import secret_context

if TYPE_CHECKING:
    from mail_proxy.core.engine.runtime import Runtime

#: How a secret member is stored (also what key rotation looks for).
SEALED = "$enc"


@dataclass(frozen=True)
class SecretPlace:
    """The row a plugin value is stored in: each sealed member is encrypted for
    ``secret_context(table, f"{column}.{member}", *key)``, so it opens nowhere else."""

    table: str
    column: str
    key: tuple[Any, ...]

    def context(self, member: str) -> str:
        return secret_context(self.table, f"{self.column}.{member}", *self.key)


def checked(model: Any, raw: Any, where: str) -> dict[str, Any]:
    """``raw`` validated by ``model``, as JSON data (secrets still in clear). 400
    ``invalid_setting`` naming ``where`` and the model's reason otherwise."""
    try:
        value = model.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors(include_url=False, include_input=False)[0]
        path = ".".join(str(p) for p in (where, *err["loc"]) if p != "")
        raise ApiError(400, "invalid_setting", f"{path}: {err['msg']}", field=where) from None
    return value.model_dump(mode="json") if isinstance(value, BaseModel) else dict(value)


def seal_members(
    runtime: Runtime, data: dict[str, Any], secrets: tuple[str, ...], place: SecretPlace
) -> dict[str, Any]:
    """``data`` with its ``secrets`` members sealed for ``place`` (members already sealed,
    kept from the stored value of the same place, stay as they are)."""
    out = dict(data)
    for secret in secrets:
        value = out.get(secret)
        if value is not None and not is_sealed(value):
            text = value if isinstance(value, str) else json.dumps(value)
            out[secret] = {SEALED: runtime.encrypt(text, place.context(secret))}
    return out


def seal(
    runtime: Runtime,
    model: Any,
    secrets: tuple[str, ...],
    raw: Any,
    where: str,
    place: SecretPlace,
) -> dict[str, Any]:
    """Validate ``raw`` with ``model`` and seal its ``secrets`` for ``place``: what to
    store."""
    return seal_members(runtime, checked(model, raw, where), secrets, place)


def shown(stored: dict[str, Any] | None, secrets: tuple[str, ...]) -> dict[str, Any] | None:
    """What answers show: secret members replaced by ``"<member>_set": true/false``."""
    if stored is None:
        return None
    out = dict(stored)
    for secret in secrets:
        out[f"{secret}_set"] = out.pop(secret, None) is not None
    return {k: v for k, v in out.items() if not is_sealed(v)}


def unsealed(runtime: Runtime, model: Any, stored: dict[str, Any], place: SecretPlace) -> Any:
    """The plugin's model instance with its secrets decrypted (those stored for ``place``)."""
    plain = {
        k: opened(runtime, model, k, v, place) if is_sealed(v) else v for k, v in stored.items()
    }
    return model.model_validate(plain)


def opened(
    runtime: Runtime, model: Any, name: str, sealed: dict[str, Any], place: SecretPlace
) -> Any:
    """The value of the sealed member ``name``: its text, or the JSON value it encodes when
    ``model``'s field ``name`` does not take text."""
    text = runtime.decrypt(sealed[SEALED], place.context(name))
    if _takes_text(model, name):
        return text
    try:
        return json.loads(text)
    except ValueError:  # sealed as plain text before the field's type changed
        return text


def _takes_text(model: Any, name: str) -> bool:
    field = getattr(model, "model_fields", {}).get(name)
    if field is None:
        return True
    kinds = [field.annotation]
    if get_origin(field.annotation) in (Union, types.UnionType):
        kinds = list(get_args(field.annotation))
    for kind in kinds:
        if get_origin(kind) is Annotated:
            kind = get_args(kind)[0]
        if kind is Any or (isinstance(kind, type) and issubclass(kind, (str, SecretStr))):
            return True
    return False


def is_sealed(value: Any) -> bool:
    return isinstance(value, dict) and set(value) == {SEALED}
