"""core.engine.single_flight: one load per key at a time, shared by the callers meanwhile."""

from __future__ import annotations

import asyncio

import pytest

from mail_proxy.core.engine.single_flight import SingleFlight


async def test_callers_meanwhile_share_one_load_and_its_failure() -> None:
    flights: SingleFlight[str, int] = SingleFlight()
    loads = 0

    async def load() -> int:
        nonlocal loads
        loads += 1
        await asyncio.sleep(0.02)
        return loads

    assert await asyncio.gather(*(flights.run("t", load) for _ in range(20))) == [1] * 20
    assert not flights.running("t")
    assert await flights.run("t", load) == 2  # the next load after it landed is a new one

    async def failing() -> int:
        await asyncio.sleep(0.02)
        raise ConnectionRefusedError("database away")

    results = await asyncio.gather(
        *(flights.run("t", failing) for _ in range(5)), return_exceptions=True
    )
    assert all(isinstance(r, ConnectionRefusedError) for r in results)
    assert not flights.running("t")


async def test_a_caller_that_gives_up_does_not_cancel_the_others() -> None:
    flights: SingleFlight[str, str] = SingleFlight()

    async def load() -> str:
        await asyncio.sleep(0.05)
        return "loaded"

    impatient = asyncio.create_task(flights.run("t", load))
    patient = asyncio.create_task(flights.run("t", load))
    await asyncio.sleep(0.01)
    impatient.cancel()
    with pytest.raises(asyncio.CancelledError):
        await impatient
    assert await patient == "loaded"


async def test_forget_makes_later_callers_load_again() -> None:
    flights: SingleFlight[str, str] = SingleFlight()
    release = asyncio.Event()

    async def old() -> str:
        await release.wait()
        return "old"

    async def new() -> str:
        return "new"

    waiting = asyncio.create_task(flights.run("t", old))
    await asyncio.sleep(0)
    assert flights.running("t")
    flights.forget("t")  # the data changed under the load running
    assert await flights.run("t", new) == "new"
    release.set()
    assert await waiting == "old"  # the caller already waiting still gets its answer
    assert not flights.running("t")
