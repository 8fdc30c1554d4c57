"""Which configuration and which storage credentials apply to a tenant and to a stored file.

A file is written with the tenant's current ``storage_url`` and ``storage_options``; the
options are also kept (sealed) per tenant and URL in ``largefiles_stores``, so the file can
still be read and deleted after the configuration changed, and after the tenant itself was
deleted (its settings are gone by then).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from mail_proxy.core.engine.tenant_settings import TenantSettings

from .config import NAME, LargeFileConfig
from .records import Records
from .storage import Location

if TYPE_CHECKING:
    from mail_proxy.core.engine.runtime import Runtime


async def tenant_config(runtime: Runtime, tenant_id: str) -> LargeFileConfig | None:
    """The tenant's ``large_file_config`` (credentials decrypted), or None."""
    settings = runtime.local(TenantSettings)
    if (await settings.stored(tenant_id)).get(NAME) is None:
        return None  # the common case, without decrypting anything
    found = await settings.get(tenant_id, NAME)
    return found if isinstance(found, LargeFileConfig) else None


class StoreMemo:
    """What this instance already kept in ``largefiles_stores`` (one write per change)."""

    def __init__(self, runtime: Runtime) -> None:
        self.rt = runtime
        self._kept: dict[tuple[str, str], str] = {}

    async def remember(self, tenant_id: str, config: LargeFileConfig) -> Location:
        """The location of the tenant's current configuration, its options kept."""
        assert config.storage_url is not None
        options = dict(config.storage_options or {})
        fingerprint = json.dumps(options, sort_keys=True, default=str)
        key = (tenant_id, config.storage_url)
        if self._kept.get(key) != fingerprint:
            await self.rt.local(Records).remember_store(tenant_id, config.storage_url, options)
            self._kept[key] = fingerprint
        return Location(config.storage_url, options)

    def forget(self, tenant_id: str) -> None:
        for key in [k for k in self._kept if k[0] == tenant_id]:
            del self._kept[key]


async def location_for(
    runtime: Runtime, tenant_id: str, url: str, config: LargeFileConfig | None = None
) -> Location:
    """Where a file written to ``url`` for ``tenant_id`` is: with the current configuration's
    options when it still names ``url``, else with the options kept when it was written."""
    if config is None:
        config = await tenant_config(runtime, tenant_id)
    if config is not None and config.storage_url == url:
        return Location(url, dict(config.storage_options or {}))
    kept: dict[str, Any] | None = await runtime.local(Records).store_options(tenant_id, url)
    return Location(url, kept or {})
