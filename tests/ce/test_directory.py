"""The enqueue path's tenant cache (ce/api/directory.py): one database read per expiry."""

from __future__ import annotations

import asyncio
from typing import Any

from mail_proxy.ce.api.directory import directory_of
from support.ce_api import Api


async def test_an_expired_entry_is_read_once_by_concurrent_requests(
    api: Api, monkeypatch: Any
) -> None:
    """When the entry expires under load, one request reads the tenant again and the others
    keep using the expired entry meanwhile (they used to queue dozens of reads on the pool)."""
    await api.add_account("main")
    rt = api.runtime
    directory = directory_of(rt)
    first = await directory.get("default")
    assert first is not None and "main" in first.accounts
    first.loaded_at -= 60  # expired
    reads = 0
    real = rt.storage.get_tenant

    async def counting(tenant_id: str) -> Any:
        nonlocal reads
        reads += 1
        await asyncio.sleep(0.02)  # the database taking its time
        return await real(tenant_id)

    monkeypatch.setattr(rt.storage, "get_tenant", counting)
    views = await asyncio.gather(*(directory.get("default") for _ in range(50)))
    assert reads == 1
    assert all(v is not None and "main" in v.accounts for v in views)
    assert {id(v) for v in views} <= {id(first), id(await directory.get("default"))}
    assert reads == 1  # the entry read by the first is fresh now
    # this instance's own account changes still drop the entry at once
    await api.add_account("other", default=False)
    fresh = await directory.get("default")
    assert fresh is not None and "other" in fresh.accounts
