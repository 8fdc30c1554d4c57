"""The attachment memory budget: bounded, capped, and free of hold-and-wait deadlocks."""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path

from mail_proxy.core.engine.attachments import UNKNOWN_SIZE_GUESS, estimated_size
from mail_proxy.core.engine.budget import ByteBudget, Reservation


async def test_large_requests_take_turns_small_ones_share() -> None:
    budget = ByteBudget(100)
    peak = 0
    in_use = 0

    async def job(size: int) -> None:
        nonlocal peak, in_use
        r = Reservation(budget)
        await r.ensure(size)
        in_use += r.held
        peak = max(peak, in_use)
        await asyncio.sleep(0.01)
        in_use -= r.held
        await r.release()

    await asyncio.wait_for(asyncio.gather(*(job(s) for s in [60, 60, 500, 10, 10, 10])), 5)
    assert peak <= 100 and budget.free == 100


async def test_growing_reservations_never_deadlock() -> None:
    budget = ByteBudget(100)
    first, second = Reservation(budget), Reservation(budget)
    await first.ensure(40)
    await second.ensure(40)

    async def grow(r: Reservation) -> None:
        await r.ensure(90)  # both grow past what is free: neither may wait holding its part
        await asyncio.sleep(0.01)
        await r.release()

    await asyncio.wait_for(asyncio.gather(grow(first), grow(second)), 5)
    assert budget.free == 100


def test_estimated_size_uses_what_is_known_without_fetching(tmp_path: Path) -> None:
    f = tmp_path / "a.bin"
    f.write_bytes(b"x" * 5000)
    atts = [
        {"filename": "a", "storage_path": "base64:" + base64.b64encode(b"y" * 3000).decode()},
        {"filename": "b", "storage_path": str(f)},
        {"filename": "c", "storage_path": "https://example.com/c.pdf"},
    ]
    assert estimated_size(atts) == 3000 + 5000 + UNKNOWN_SIZE_GUESS
