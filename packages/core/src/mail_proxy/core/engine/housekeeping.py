"""Housekeeping: the periodic jobs that keep storage bounded.

- purge finished messages whose reports were all acknowledged, after
  ``report_retention_seconds`` (with their events);
- prune the rate-limit send log older than the longest window (one day);
- expire attachment cache entries (when the attachment cache is in use).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from mail_proxy.core.contracts.services import PeriodicService

if TYPE_CHECKING:
    from mail_proxy.core.engine.runtime import Runtime

log = logging.getLogger(__name__)

DAY = 86400.0


class Housekeeping(PeriodicService):
    name = "housekeeping"

    def __init__(self, interval: float) -> None:
        super().__init__()
        self.interval = interval
        self.last_purged = 0

    @classmethod
    def create(cls, runtime: Runtime) -> Housekeeping:
        retention = runtime.settings.report_retention_seconds
        return cls(interval=max(1.0, min(300.0, retention / 10)))

    async def tick(self) -> None:
        rt = self.runtime
        assert rt is not None
        now = rt.clock.now()  # the times compared were written on the database's clock
        self.last_purged = await rt.storage.cleanup_messages(
            None, now - rt.settings.report_retention_seconds
        )
        if self.last_purged:
            log.info("retention: purged %d finished messages", self.last_purged)
        await rt.storage.prune_send_log(now - DAY - 60)
        resolver = getattr(rt, "attachments", None)
        cache = getattr(resolver, "cache", None)
        if cache is not None and hasattr(cache, "expire"):
            await cache.expire()
