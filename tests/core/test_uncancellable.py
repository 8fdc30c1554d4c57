"""``reporter._uncancellable``: a sync lease claim or release survives the stop's cancel."""

from __future__ import annotations

import asyncio

import pytest

from mail_proxy.core.engine.reporter import _uncancellable


@pytest.mark.parametrize(
    ("claimed", "expected"),
    [(True, ["claimed", "released"]), (False, ["claimed"])],
    ids=["returned-true-is-undone", "returned-false-has-nothing-to-undo"],
)
async def test_cancelled_caller_waits_for_the_work_then_undoes_it_if_needed(
    claimed: bool, expected: list[str]
) -> None:
    log: list[str] = []

    async def claim() -> bool:
        await asyncio.sleep(0.1)  # the database write in flight
        log.append("claimed")
        return claimed

    async def release() -> None:
        log.append("released")

    task = asyncio.create_task(_uncancellable(claim(), undo=release))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    # "claimed" is there when the cancelled caller returns: it waited for the work.
    assert log == expected


async def test_without_cancel_it_is_a_plain_await() -> None:
    async def work() -> int:
        return 7

    assert await _uncancellable(work()) == 7
