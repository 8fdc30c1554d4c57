"""``core.intake``: when the intake counts as busy, and that the hold is bounded."""

from __future__ import annotations

import asyncio
import time

from mail_proxy.core.engine.intake import IntakePressure


def test_busy_from_the_threshold_and_for_a_moment_after() -> None:
    intake = IntakePressure(busy_messages=16, linger=0.2)
    with intake.accepting(1), intake.accepting(1):
        assert not intake.busy()  # ordinary traffic
    with intake.accepting(10), intake.accepting(6):
        assert intake.in_flight == 16 and intake.busy()
    assert intake.in_flight == 0
    assert intake.busy()  # lingers: the next wave of requests is on its way
    time.sleep(0.25)
    assert not intake.busy()


async def test_wait_quiet_ends_when_the_intake_quiets_down() -> None:
    intake = IntakePressure(busy_messages=4, linger=0.05)

    async def request() -> None:
        with intake.accepting(5):
            await asyncio.sleep(0.2)

    task = asyncio.create_task(request())
    await asyncio.sleep(0)
    waited = await intake.wait_quiet(5.0)
    await task
    assert 0.2 <= waited < 2.0  # the request's time plus the linger, far below the bound


async def test_wait_quiet_is_bounded_by_max_hold() -> None:
    intake = IntakePressure(busy_messages=4, linger=0.05)
    with intake.accepting(100):  # an intake that never quiets down
        waited = await intake.wait_quiet(0.3)
    assert 0.3 <= waited < 1.5
