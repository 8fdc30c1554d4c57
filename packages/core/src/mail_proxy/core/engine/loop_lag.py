"""The event-loop lag monitor: a timer asks to wake every :data:`PERIOD` seconds and records
how late it actually ran (``gmp_event_loop_lag_seconds``). Whatever holds the loop (a long
synchronous step, a blocking call) shows here as lag, which every request and delivery on
this instance waits for too."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import TYPE_CHECKING

from mail_proxy.core.contracts.services import Service

if TYPE_CHECKING:
    from mail_proxy.core.engine.runtime import Runtime

#: How often the loop is sampled (seconds): often enough to see 10 ms stalls, cheap.
PERIOD = 0.05


class LoopLagMonitor(Service):
    name = "loop-lag"

    def __init__(self, runtime: Runtime) -> None:
        self.histogram = runtime.metrics.loop_lag
        self._task: asyncio.Task[None] | None = None

    @classmethod
    def create(cls, runtime: Runtime) -> LoopLagMonitor:
        return cls(runtime)

    async def start(self, runtime: Runtime) -> None:
        self._task = asyncio.create_task(self._run(), name=self.name)

    async def _run(self) -> None:
        while True:
            expected = time.perf_counter() + PERIOD
            await asyncio.sleep(PERIOD)
            self.histogram.observe(max(0.0, time.perf_counter() - expected))

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
