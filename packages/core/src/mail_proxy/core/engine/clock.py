"""The shared clock: wall-clock time as the database tells it.

Instances sharing a database decide leases (message claims, the report-sync lease) and
rate-limit windows by comparing times that different instances wrote. An instance's own clock
can be wrong by minutes (no NTP, a VM resumed from a snapshot, a container with a skewed
clock): one ahead would take over claims whose lease is still running and send them a second
time, and count the others' sends as outside its rate window; one behind would keep its
claims for minutes after it died, and write deferrals in the past.

So every time an instance writes for the others to compare comes from one clock, the
database server's. :class:`SharedClock` measures this instance's offset to it at start and
again every ``refresh_seconds``; :meth:`SharedClock.now` is the local clock plus that offset.
A database without a clock of its own (SQLite: one instance per file, on this machine) gives
offset 0. A failed measurement keeps the last offset.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mail_proxy.core.contracts.storage import Storage

log = logging.getLogger(__name__)

#: A measurement whose round trip took longer than this is not trusted over an older one (the
#: offset's error is up to half the round trip).
MAX_ROUND_TRIP = 1.0
#: An offset this large (seconds) is logged as a warning: the machine's clock needs fixing.
WARN_OFFSET = 2.0


class SharedClock:
    """This instance's view of the database's clock (see the module doc)."""

    def __init__(
        self, refresh_seconds: float = 30.0, local: Callable[[], float] = time.time
    ) -> None:
        self.refresh_seconds = refresh_seconds
        #: This machine's clock (a test gives a skewed one).
        self.local = local
        #: Database time minus local time, seconds.
        self.offset = 0.0
        self.measured = False
        self._task: asyncio.Task[None] | None = None

    def now(self) -> float:
        """Unix time on the database's clock (this machine's, corrected by the offset)."""
        return self.local() + self.offset

    async def measure(self, storage: Storage) -> None:
        """Read the database's clock once and update the offset."""
        before = self.local()
        remote = await storage.database_time()
        after = self.local()
        if remote is None:
            self.offset, self.measured = 0.0, True
            return
        if self.measured and after - before > MAX_ROUND_TRIP:
            return  # a slow answer measures the delay, not the clock: keep the last offset
        offset = remote - (before + after) / 2
        if abs(offset) >= WARN_OFFSET and (not self.measured or abs(offset - self.offset) >= 1.0):
            log.warning(
                "this machine's clock is %+.1f s off the database's: leases, rate windows and "
                "deferrals use the database's clock (fix the machine's clock: NTP)",
                offset,
            )
        self.offset, self.measured = offset, True

    async def start(self, storage: Storage) -> None:
        """Measure now (a failure here is the storage's failure), then every
        ``refresh_seconds`` in the background."""
        await self.measure(storage)
        self._task = asyncio.create_task(self._refresh(storage), name="shared-clock")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _refresh(self, storage: Storage) -> None:
        while True:
            await asyncio.sleep(self.refresh_seconds)
            try:
                await self.measure(storage)
            except Exception as exc:  # the database away: the last offset stays good
                log.debug("measuring the database clock failed: %s", exc)
