"""The acceptance timeout: a PEC message sent with no acceptance receipt within
``pec_acceptance_timeout`` seconds gets a ``pec_timeout`` event, once.

Cheap by construction: each check reads only the ``pec_messages`` rows whose ``check_after``
has come (an indexed range: messages accepted in time are never looked at again), at most
:data:`BATCH` at a time. For each, the message itself says what to do:

- sent, and ``sent_ts + timeout`` passed: the row is marked (a conditional update, so that
  of several instances sharing the database one wins) and ``pec_timeout`` recorded;
- sent more recently, or still waiting for a retry: looked at again later;
- failed, deleted or replaced: the row is closed (nothing to wait for).

A receipt of acceptance that arrives after the timeout is recorded all the same. The same
service forgets, once an hour, the rows older than ``pec_retention_seconds``.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from mail_proxy.core.contracts.model import NewEvent
from mail_proxy.core.contracts.services import PeriodicService

from . import events as ev
from .metrics import PecMetrics
from .settings import SECTION
from .tables import TrackedMessage, tables_of

if TYPE_CHECKING:
    from mail_proxy.core.engine.runtime import Runtime

log = logging.getLogger(__name__)

#: rows looked at per check
BATCH = 200
#: seconds between two prunes of old rows
PRUNE_EVERY = 3600.0


class PecTimeouts(PeriodicService):
    """Registered as service ``pec-timeouts``."""

    name = "pec-timeouts"

    def __init__(self, runtime: Runtime) -> None:
        super().__init__()
        self.rt = runtime
        self.interval = runtime.settings.section(SECTION).pec_timeout_check_interval
        self._pruned_at = 0.0

    @classmethod
    def create(cls, runtime: Runtime) -> PecTimeouts | None:
        if runtime.storage is None or runtime.storage.database is None:
            return None
        return cls(runtime)

    async def tick(self) -> None:
        rt = self.rt
        settings = rt.settings.section(SECTION)
        table = tables_of(rt)
        now = time.time()
        while True:
            due = await table.due_for_timeout(now, BATCH)
            for row in due:
                await self._check(row, now, settings.pec_acceptance_timeout)
            if len(due) < BATCH:
                break
        if now - self._pruned_at >= PRUNE_EVERY:
            self._pruned_at = now
            gone = await table.prune(now - settings.pec_retention_seconds)
            if gone:
                log.info("pec: forgot %d old message/receipt rows", gone)

    async def _check(self, row: TrackedMessage, now: float, timeout: float) -> None:
        rt = self.rt
        table = tables_of(rt)
        message = await rt.storage.get_message(row.tenant_id, row.msg_id)
        if message is None or message.pk != row.message_pk or message.status == "error":
            await table.close(row.tenant_id, row.msg_id)
            return
        if message.status != "sent":  # waiting for a retry or a rate window
            await table.postpone(row.tenant_id, row.msg_id, now + timeout)
            return
        sent_ts = message.sent_ts or row.attempt_ts
        if sent_ts + timeout > now:
            await table.postpone(row.tenant_id, row.msg_id, sent_ts + timeout)
            return
        if not await table.claim_timeout(row.tenant_id, row.msg_id, now):
            return  # accepted meanwhile, or another instance recorded it
        meta = {
            "account_id": row.account_id,
            "pec_ts": now,
            "timeout_seconds": timeout,
            "sent_ts": sent_ts,
        }
        text = f"PEC: no acceptance receipt {int(now - sent_ts)} s after sending"
        await rt.record_events([NewEvent(row.tenant_id, row.msg_id, ev.TIMEOUT, now, text, meta)])
        rt.local(PecMetrics).timeouts.labels(row.tenant_id).inc()
        log.warning("pec: %s/%s: %s", row.tenant_id, row.msg_id, text)
