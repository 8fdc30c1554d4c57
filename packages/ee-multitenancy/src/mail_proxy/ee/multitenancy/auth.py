"""The tenant side of authentication: an API key → ``Principal("tenant", id)``.

The key is looked up in storage on every request (by its hash, through a unique index), with
no cache: rotation and revocation made through any instance sharing the database take effect
on the very next request everywhere. An expired key is refused with 401 ``token_expired``, a
key of an inactive tenant with 403 ``tenant_inactive``; an unknown key is simply not
recognised (the core answers 401 ``invalid_token``).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from mail_proxy.core.contracts.errors import ApiError
from mail_proxy.core.contracts.model import Principal

from .keys import hash_key, same_hash

if TYPE_CHECKING:
    from mail_proxy.core.engine.runtime import Runtime


async def tenant_principal(token: str, runtime: Runtime) -> Principal | None:
    """The tenant principal for ``token``, None when no tenant holds that key."""
    digest = hash_key(token)
    tenant = await runtime.storage.find_tenant_by_key_hash(digest)
    if tenant is None or not same_hash(tenant.api_key_hash, digest):
        return None
    expires = tenant.api_key_expires_at
    if expires is not None and expires <= time.time():
        raise ApiError(
            401, "token_expired", "this API key has expired: ask the administrator for a new one"
        )
    if not tenant.active:
        raise ApiError(403, "tenant_inactive", "this tenant is inactive")
    return Principal("tenant", tenant.id)
