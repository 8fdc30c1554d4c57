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


async def test_a_change_during_a_load_is_not_hidden_by_it(api: Api, monkeypatch: Any) -> None:
    """An account saved while the tenant is being read: the requests after the save read it
    again (they do not join the load under way), and that older load does not store its
    answer over the newer one."""
    await api.add_account("main")
    rt = api.runtime
    directory = directory_of(rt)
    release = asyncio.Event()
    real = rt.storage.list_accounts

    async def slow(tenant_id: str) -> Any:
        accounts = await real(tenant_id)
        await release.wait()
        return accounts

    directory.invalidate("default")
    monkeypatch.setattr(rt.storage, "list_accounts", slow)
    old_load = asyncio.create_task(directory.get("default"))
    await asyncio.sleep(0.05)  # the load has read the accounts and waits
    monkeypatch.setattr(rt.storage, "list_accounts", real)
    await api.add_account("other", default=False)  # invalidates the directory
    fresh = await directory.get("default")
    assert fresh is not None and "other" in fresh.accounts
    release.set()
    stale = await old_load
    assert stale is not None and "other" not in stale.accounts  # its own caller's answer
    again = await directory.get("default")
    assert again is not None and "other" in again.accounts  # not stored over the newer one
