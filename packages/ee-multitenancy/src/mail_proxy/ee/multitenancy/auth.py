"""The tenant side of authentication: an API key → ``Principal("tenant", id)``.

The key is looked up in the plugin's table on every request (by its hash, through a unique
index), then its tenant in storage, with no cache: rotation, revocation and deactivation made
through any instance sharing the database take effect on the very next request everywhere.
An expired key is refused with 401 ``token_expired``, a key of an inactive tenant with 403
``tenant_inactive``; an unknown key is simply not recognised (the core answers 401
``invalid_token``).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from mail_proxy.core.contracts.errors import ApiError
from mail_proxy.core.contracts.model import Principal

from .keys import hash_key, same_hash
from .keystore import TenantKeys

if TYPE_CHECKING:
    from mail_proxy.core.engine.runtime import Runtime


async def tenant_principal(token: str, runtime: Runtime) -> Principal | None:
    """The tenant principal for ``token``, None when no tenant holds that key."""
    digest = hash_key(token)
    key = await runtime.local(TenantKeys).find(digest)
    if key is None or not same_hash(key.key_hash, digest):
        return None
    tenant = await runtime.storage.get_tenant(key.tenant_id)
    if tenant is None:
        return None
    if key.expires_at is not None and key.expires_at <= time.time():
        raise ApiError(
            401, "token_expired", "this API key has expired: ask the administrator for a new one"
        )
    if not tenant.active:
        raise ApiError(403, "tenant_inactive", "this tenant is inactive")
    return Principal("tenant", tenant.id)
