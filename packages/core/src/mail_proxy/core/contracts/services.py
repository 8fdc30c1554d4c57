"""Background services: long-running tasks started and stopped with the application.

The dispatcher, the reporter, cleanup jobs and plugin pollers (mailbox readers) are services.
Each runs inside the aiohttp application's lifecycle: ``start`` after storage is ready,
``stop`` before storage closes, in reverse order.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mail_proxy.core.engine.runtime import Runtime

log = logging.getLogger(__name__)


class Service(abc.ABC):
    """A background job with a clean start and stop."""

    name: str = "service"

    @abc.abstractmethod
    async def start(self, runtime: Runtime) -> None: ...

    @abc.abstractmethod
    async def stop(self) -> None: ...


class PeriodicService(Service):
    """A service that calls :meth:`tick` every ``interval`` seconds (or when woken)."""

    interval: float = 60.0

    def __init__(self) -> None:
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self.runtime: Runtime | None = None

    async def start(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self._task = asyncio.create_task(self._loop(), name=self.name)

    def wake(self) -> None:
        self._wake.set()

    async def _loop(self) -> None:
        while True:
            try:
                await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("%s: tick failed", self.name)
            self._wake.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.interval)

    @abc.abstractmethod
    async def tick(self) -> None: ...

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
