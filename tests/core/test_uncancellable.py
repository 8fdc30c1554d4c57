"""``reporter._uncancellable``: a sync lease claim or release survives the stop's cancel."""

from __future__ import annotations

import asyncio

import pytest

from mail_proxy.core.reporter import _uncancellable


async def test_cancelled_caller_waits_for_the_work_then_undoes_it() -> None:
    log: list[str] = []

    async def claim() -> bool:
        await asyncio.sleep(0.1)  # the database write in flight
        log.append("claimed")
        return True

    async def release() -> None:
        log.append("released")

    task = asyncio.create_task(_uncancellable(claim(), undo=release))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert log == ["claimed", "released"]


async def test_nothing_to_undo_when_the_work_returned_false() -> None:
    log: list[str] = []

    async def claim() -> bool:
        await asyncio.sleep(0.05)
        return False

    async def release() -> None:
        log.append("released")

    task = asyncio.create_task(_uncancellable(claim(), undo=release))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert log == []


async def test_without_cancel_it_is_a_plain_await() -> None:
    async def work() -> int:
        return 7

    assert await _uncancellable(work()) == 7
