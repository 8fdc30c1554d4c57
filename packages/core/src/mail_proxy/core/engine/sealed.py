"""Plugin-declared values (tenant settings, account fields) as they are stored and shown:
validated by the plugin's pydantic model, secret members sealed with the instance key as
``{"$enc": token}`` (key rotation finds them by that shape), never returned in clear."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ValidationError

from mail_proxy.core.contracts.errors import ApiError

if TYPE_CHECKING:
    from mail_proxy.core.engine.runtime import Runtime

#: How a secret member is stored (also what key rotation looks for).
SEALED = "$enc"


def seal(
    runtime: Runtime, model: Any, secrets: tuple[str, ...], raw: Any, where: str
) -> dict[str, Any]:
    """Validate ``raw`` with ``model`` and seal its ``secrets``: what to store. 400
    ``invalid_setting`` naming ``where`` and the model's reason otherwise."""
    try:
        value = model.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors(include_url=False, include_input=False)[0]
        path = ".".join(str(p) for p in (where, *err["loc"]) if p != "")
        raise ApiError(400, "invalid_setting", f"{path}: {err['msg']}", field=where) from None
    data = value.model_dump(mode="json") if isinstance(value, BaseModel) else dict(value)
    for secret in secrets:
        if data.get(secret) is not None:
            data[secret] = {SEALED: runtime.encrypt(str(data[secret]))}
    return data


def shown(stored: dict[str, Any] | None, secrets: tuple[str, ...]) -> dict[str, Any] | None:
    """What answers show: secret members replaced by ``"<member>_set": true/false``."""
    if stored is None:
        return None
    out = dict(stored)
    for secret in secrets:
        out[f"{secret}_set"] = out.pop(secret, None) is not None
    return {k: v for k, v in out.items() if not is_sealed(v)}


def unsealed(runtime: Runtime, model: Any, stored: dict[str, Any]) -> Any:
    """The plugin's model instance with its secrets decrypted."""
    plain = {k: runtime.decrypt(v[SEALED]) if is_sealed(v) else v for k, v in stored.items()}
    return model.model_validate(plain)


def is_sealed(value: Any) -> bool:
    return isinstance(value, dict) and set(value) == {SEALED}
