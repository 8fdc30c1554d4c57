"""One reload at a time per key: callers that arrive while it runs share its result.

Caches on the request path (the intake's tenant directory, a plugin's per-tenant list) expire
while dozens of requests are in flight; without this each of them would read the same rows
again at that moment, queued on the connection pool. With it one read runs and every caller
waiting for it gets its answer, or its exception at once (a database that is away fails them
all together instead of one after another).
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
T = TypeVar("T")


class SingleFlight(Generic[K, T]):
    """``await flights.run(key, load)``: ``load()`` runs once per key at a time."""

    def __init__(self) -> None:
        self._running: dict[K, asyncio.Future[T]] = {}

    def running(self, key: K) -> bool:
        """Whether a load of ``key`` is under way (a caller may keep its stale copy)."""
        return key in self._running

    def forget(self, key: K) -> None:
        """Later callers start a new load of ``key`` (the data changed under the one running,
        which goes on for the callers already waiting)."""
        self._running.pop(key, None)

    def forget_all(self) -> None:
        self._running.clear()

    async def run(self, key: K, load: Callable[[], Awaitable[T]]) -> T:
        flight = self._running.get(key)
        if flight is None:
            flight = asyncio.ensure_future(load())
            self._running[key] = flight
            flight.add_done_callback(functools.partial(self._landed, key))
        # shielded: a caller that gives up (cancelled) does not cancel the others' load
        return await asyncio.shield(flight)

    def _landed(self, key: K, flight: asyncio.Future[T]) -> None:
        if self._running.get(key) is flight:
            del self._running[key]
        if not flight.cancelled():
            flight.exception()  # seen: each waiter raises it itself
