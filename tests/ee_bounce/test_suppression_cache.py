"""The suppression check at enqueue re-reads a tenant's list once per recheck, not once per
request in flight."""

from __future__ import annotations

import asyncio
from typing import Any

from mail_proxy.ee.bounce.suppression import Suppression, Suppressions
from support.ce_api import Api


async def test_concurrent_checks_recheck_the_list_once(api: Api, monkeypatch: Any) -> None:
    suppressions = api.runtime.local(Suppressions)
    assert await suppressions.any_listed("default") is False
    suppressions._cache["default"].checked_at -= 60  # due for a recheck
    rechecks = 0
    real = suppressions._signature

    async def counting(tenant_id: str) -> Any:
        nonlocal rechecks
        rechecks += 1
        await asyncio.sleep(0.02)  # the database taking its time
        return await real(tenant_id)

    monkeypatch.setattr(suppressions, "_signature", counting)
    answers = await asyncio.gather(*(suppressions.any_listed("default") for _ in range(50)))
    assert answers == [False] * 50 and rechecks == 1
    # an address added through the list is seen at once (add() drops the cache)
    entry = Suppression(
        "default", "gone@example.com", "user_unknown", "5.1.1", "api", None, None, 1.0, 1.0
    )
    await suppressions.add([entry])
    assert await suppressions.any_listed("default") is True
    found = await suppressions.find("default", ["Gone@Example.com"])
    assert found is not None and found.address == "gone@example.com"
