"""Intake first: while clients are handing over mail heavily, new deliveries wait (bounded).

On a busy machine the API and the dispatcher share one event loop. Accepting a message costs
a fraction of what delivering it costs, and a client waiting for its 200 is waiting *now*,
while a queued message is already durable. So when many messages are being accepted at once
(:data:`BUSY_MESSAGES` or more in requests still being handled, or that was the case less
than :data:`LINGER` seconds ago), the dispatcher holds its next claim until the intake quiets
down, for at most ``intake_priority_max_hold`` seconds at a time, then claims one small round
(the dispatcher's claim threshold) and holds again: delivery is slowed under overload, never
stopped. Deliveries already started are not affected. Ordinary traffic (a request or two in
flight) never counts as busy.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator

#: Messages being accepted at once from which the intake counts as busy.
BUSY_MESSAGES = 16
#: How long the intake stays busy after the last moment it was (seconds): requests arrive in
#: waves (clients answered by one group commit send their next requests together).
LINGER = 0.05


class IntakePressure:
    """Counts the messages in ``add-messages`` requests being handled."""

    def __init__(self, busy_messages: int = BUSY_MESSAGES, linger: float = LINGER) -> None:
        self.busy_messages = busy_messages
        self.linger = linger
        self.in_flight = 0
        self._busy_at = -1e9

    @contextlib.contextmanager
    def accepting(self, count: int) -> Iterator[None]:
        """Around the handling of one request carrying ``count`` messages."""
        self.in_flight += count
        if self.in_flight >= self.busy_messages:
            self._busy_at = time.monotonic()
        try:
            yield
        finally:
            self.in_flight -= count

    def busy(self) -> bool:
        if self.in_flight >= self.busy_messages:
            self._busy_at = time.monotonic()
            return True
        return time.monotonic() - self._busy_at < self.linger

    async def wait_quiet(self, max_hold: float) -> float:
        """Wait while busy, at most ``max_hold`` seconds; returns how long it waited."""
        started = time.monotonic()
        deadline = started + max_hold
        while self.busy():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            await asyncio.sleep(min(self.linger, remaining))
        return time.monotonic() - started
