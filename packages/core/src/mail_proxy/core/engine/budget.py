"""A memory budget for messages with attachments.

Building a message holds its attachments about ``COPIES`` times at the peak: the raw bytes,
the base64 text being assembled and the finished text in the MIME tree (sending then streams
that text slice by slice, see ``wire.py``; measured with tracemalloc: 77 MB at the peak for a
20 MB attachment). Each message with attachments reserves that much of
the budget before it fetches, so small attachments go through many at a time while large ones
take turns, and the service's memory stays bounded whatever the attachment sizes.
"""

from __future__ import annotations

import asyncio

#: Peak bytes held per byte of attachment while a message is built and sent.
COPIES = 4


class ByteBudget:
    """A weighted semaphore over bytes. A request larger than the whole budget is capped to
    it (it then runs alone rather than never)."""

    def __init__(self, total: int) -> None:
        self.total = max(1, total)
        self.free = self.total
        self._changed = asyncio.Condition()

    async def acquire(self, amount: int) -> int:
        """Wait until ``amount`` (capped to the budget) is free, take it, return what was taken."""
        amount = max(0, min(amount, self.total))
        async with self._changed:
            await self._changed.wait_for(lambda: self.free >= amount)
            self.free -= amount
        return amount

    async def release(self, amount: int) -> None:
        async with self._changed:
            self.free += amount
            self._changed.notify_all()


class Reservation:
    """What one message holds of a :class:`ByteBudget`. ``ensure`` grows it without ever
    waiting while holding part of the budget (no two messages can block each other)."""

    def __init__(self, budget: ByteBudget) -> None:
        self.budget = budget
        self.held = 0

    async def ensure(self, amount: int) -> None:
        amount = min(amount, self.budget.total)
        if amount <= self.held:
            return
        await self.release()
        self.held = await self.budget.acquire(amount)

    async def release(self) -> None:
        if self.held:
            await self.budget.release(self.held)
            self.held = 0
