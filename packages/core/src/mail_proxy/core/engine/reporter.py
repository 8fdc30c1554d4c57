"""The reporter: delivers the durable event outbox to each tenant's report sink.

The dispatcher writes ``sent``/``error``/``deferred`` events in the same transaction as the
message's state change, and plugin services record their own (``Runtime.record_events``);
those rows are the outbox. The
reporter reads a tenant's unacknowledged events in order, turns each into a report item
(:func:`report_item`, the shapes of API.md "Delivery reports"), hands a batch to the
tenant's sink and acknowledges the events only when the sink says the client accepted them.
Nothing is dropped: a failed batch is sent again later, also after a restart.

How it is scheduled:

* one scheduler task wakes on ``runtime.report_wakeup`` (set after every committed batch of
  outcomes and by ``run-now``), on its own deadlines (backoff expiries, heartbeats) and at
  least every :data:`TENANT_REFRESH` seconds (events written by other instances);
* each tenant syncs in its own task with its own backoff, so a failing or slow client never
  delays another tenant nor the dispatcher; at most :data:`MAX_CONCURRENT_SYNCS` requests are
  in flight;
* a tenant is called when it has unacknowledged events (at once, even inside its
  do-not-disturb window), when its heartbeat is due (every ``sync_interval`` since the last
  successful call, not before ``next_sync_after``), or when it called ``run-now`` with its
  own token (which also clears do-not-disturb and any backoff);
* after an accepted batch it goes on while a full batch was sent, new events arrived, or the
  client answered ``queued > 0`` (it has more messages to submit: sync again at once);
* a failure (sink error, non-2xx, ``ok`` not true, timeout) schedules a retry after an
  exponential backoff with jitter: 1 s, 2 s, 4 s ... capped at ``sync_interval``.

Bookkeeping (:class:`~mail_proxy.core.contracts.model.SyncState`) is kept in storage, so the heartbeat
schedule, do-not-disturb and the failure count survive a restart. In test mode
(``GMP_TEST_MODE``) there are no timed heartbeats; events and ``run-now`` still sync.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from mail_proxy.core.contracts.model import EventRecord, SyncState, Tenant
from mail_proxy.core.contracts.services import Service

if TYPE_CHECKING:
    from mail_proxy.core.contracts.extensions import EventType
    from mail_proxy.core.contracts.reports import ReportSink, SinkAnswer
    from mail_proxy.core.engine.runtime import Runtime
    from mail_proxy.core.plugins.registry import Registry

T = TypeVar("T")
log = logging.getLogger(__name__)

#: Report requests in flight at once (all tenants).
MAX_CONCURRENT_SYNCS = 16
#: The tenant list and the backlog are re-read at least this often (seconds).
TENANT_REFRESH = 5.0
#: After a wake-up, wait this long so a burst of commits is reported in one request.
COALESCE = 0.05
#: Shortest time between two outbox scans driven by wake-ups (bounds the scan rate under load).
MIN_CYCLE = 0.25
#: First retry delay after a failed sync; doubles per failure up to ``sync_interval``.
BACKOFF_BASE = 1.0
#: Most immediate re-syncs in a row driven by ``queued > 0`` (guards against a client
#: that always answers ``queued`` without submitting anything).
MAX_FOLLOWUPS = 100
#: Longest ``last_error`` kept.
MAX_ERROR_TEXT = 500


def report_item(event: EventRecord, event_types: Registry[EventType]) -> dict[str, Any]:
    """The delivery-report item of one outbox event (API.md "Delivery reports"): ``id`` (the
    client's message id), then the fields its :class:`EventType` declares (the core's
    ``sent``/``error``/``deferred`` in :mod:`mail_proxy.core.engine.event_types`, a plugin's
    own); a type nobody declared is reported as ``{"id", "event", "event_ts",
    "description"}``."""
    item: dict[str, Any] = {"id": event.message_id}
    declared = event_types.get(event.event_type) if event.event_type in event_types else None
    if declared is not None and declared.report is not None:
        item.update(declared.report(event))
    else:
        item.update(event=event.event_type, event_ts=event.event_ts, description=event.description)
    return item


@dataclass
class _TenantSync:
    """The reporter's view of one tenant (persisted part: ``state``)."""

    tenant: Tenant
    state: SyncState
    sink_name: str | None = None
    backlog: int = 0
    #: No new attempt before this time (backoff after a failure).
    retry_at: float = 0.0
    task: asyncio.Task[None] | None = None
    #: New events were committed while the task was running: look again before ending.
    dirty: bool = False
    #: Call the client even with nothing to report (tenant run-now).
    force: bool = False
    age_gauge: bool = False


class Reporter(Service):
    """Pushes each tenant's delivery reports to its sink (see the module docstring)."""

    name = "reporter"

    def __init__(self, runtime: Runtime) -> None:
        self.rt = runtime
        self._tenants: dict[str, _TenantSync] = {}
        self._refreshed = 0.0
        self._last_cycle = 0.0
        self._backlog: dict[str, int] = {}
        #: Longest sleep of the scheduler without a wake-up (see :data:`TENANT_REFRESH`).
        self.refresh_interval = TENANT_REFRESH
        self._slots = asyncio.Semaphore(MAX_CONCURRENT_SYNCS)
        self._kick = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._started = time.time()

    @classmethod
    def create(cls, runtime: Runtime) -> Reporter:
        return cls(runtime)

    async def start(self, runtime: Runtime) -> None:
        self._started = time.time()
        self._task = asyncio.create_task(self._run(), name="reporter")

    async def stop(self) -> None:
        tasks = [t.task for t in self._tenants.values() if t.task is not None]
        if self._task is not None:
            tasks.append(self._task)
            self._task = None
        for task in tasks:
            task.cancel()
        # A batch cancelled in flight is not acknowledged: it is sent again after a restart.
        # Each sync task hands its lease back on the way out (see _sync).
        with contextlib.suppress(Exception):
            await asyncio.gather(*tasks, return_exceptions=True)

    # -- status (GET /tenants/sync-status) ----------------------------------------------------
    def sync_status(self) -> list[dict[str, Any]]:
        """One entry per tenant: target, last sync and success, next call, DND, backlog, error.

        Built from memory (refreshed every few seconds), so it costs no database query.
        """
        now = time.time()
        out = []
        for tid in sorted(self._tenants):
            ts = self._tenants[tid]
            st = ts.state
            sink = self._sink(ts.sink_name)
            describe = getattr(sink, "describe", None) if sink is not None else None
            out.append(
                {
                    "tenant_id": tid,
                    "sink": ts.sink_name,
                    "url": describe(ts.tenant, self.rt) if describe is not None else None,
                    "last_sync_ts": st.last_sync_ts,
                    "last_success_ts": st.last_success_ts,
                    "next_due_ts": self._next_call(ts, now),
                    "dnd_until": st.dnd_until,
                    "dnd": bool(st.dnd_until and st.dnd_until > now),
                    "backlog": ts.backlog,
                    "failures": st.failures,
                    "last_error": st.last_error,
                    "syncing": ts.task is not None,
                }
            )
        return out

    # -- the scheduler --------------------------------------------------------------------------
    async def _run(self) -> None:
        wake = self.rt.report_wakeup
        while True:
            woken = wake.is_set()
            wake.clear()
            self._kick.clear()
            try:
                delay = await self._cycle(woken)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("delivery-report scheduling failed; retrying")
                delay = min(TENANT_REFRESH, self.refresh_interval)
            await self._wait(delay)

    async def _wait(self, delay: float) -> None:
        wake = self.rt.report_wakeup
        waiters = [asyncio.ensure_future(wake.wait()), asyncio.ensure_future(self._kick.wait())]
        try:
            await asyncio.wait(waiters, timeout=delay, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waiters:
                w.cancel()
        # Coalesce a burst of commits, and scan at most every MIN_CYCLE under load (wake-ups
        # after each outcome batch, many tenant syncs ending).
        pause = MIN_CYCLE - (time.monotonic() - self._last_cycle)
        if wake.is_set():
            pause = max(pause, COALESCE)
        if pause > 0:
            await asyncio.sleep(pause)

    async def _cycle(self, woken: bool) -> float:
        """Start the syncs that are due; return the seconds until the next deadline."""
        rt = self.rt
        now = time.time()
        self._last_cycle = time.monotonic()
        requested, priority = rt.report_sync.take()
        refresh = bool(requested) or now >= self._refreshed + self.refresh_interval
        if refresh:
            await self._refresh_tenants(now)
        sinks = {tid: self._sink_for(ts.tenant) for tid, ts in self._tenants.items()}
        if refresh or any(sinks.values()):
            # One grouped count over the outbox index; skipped while nobody has a sink
            # (then it only feeds the backlog gauge, at each refresh).
            self._backlog = await rt.storage.report_backlog()
            if any(tid not in self._tenants for tid in self._backlog):
                await self._refresh_tenants(now)
                sinks = {tid: self._sink_for(ts.tenant) for tid, ts in self._tenants.items()}
        deadline = now + self.refresh_interval
        for tid, ts in self._tenants.items():
            ts.backlog = self._backlog.get(tid, 0)
            rt.metrics.report_backlog.labels(tenant_id=tid).set(ts.backlog)
            if tid in priority:
                ts.state.dnd_until = None
                ts.retry_at = 0.0
                ts.force = True
            elif (rt.report_sync.ALL in requested or tid in requested) and not (
                ts.state.dnd_until and ts.state.dnd_until > now
            ):
                ts.force = True  # admin run-now: a sync (heartbeat if nothing is pending)
            if ts.task is not None:
                ts.dirty = ts.dirty or woken
                continue
            found = sinks.get(tid)
            ts.sink_name = found[0] if found else None
            if found is None:
                ts.force = False
                continue
            self._watch_age(ts)
            if now < ts.retry_at:
                deadline = min(deadline, ts.retry_at)
                continue
            heartbeat = self._heartbeat_at(ts)
            if ts.backlog or ts.force or (heartbeat is not None and heartbeat <= now):
                force, ts.force = ts.force or not ts.backlog, False
                ts.dirty = False
                ts.task = asyncio.create_task(
                    self._sync(ts, found[1], force), name=f"report-sync:{tid}"
                )
                ts.task.add_done_callback(functools.partial(self._sync_done, ts))
            elif heartbeat is not None:
                deadline = min(deadline, heartbeat)
        return max(COALESCE, deadline - now)

    async def _refresh_tenants(self, now: float) -> None:
        tenants = {t.id: t for t in await self.rt.storage.list_tenants()}
        for tid in list(self._tenants):
            if tid not in tenants:
                self._forget(tid)
        for tid, tenant in tenants.items():
            known = self._tenants.get(tid)
            if known is not None:
                known.tenant = tenant
                continue
            state = await self.rt.storage.get_sync_state(tid)
            ts = _TenantSync(tenant, state)
            if state.failures:
                # Keep backing off a client that was failing before the restart.
                ts.retry_at = (state.last_sync_ts or 0.0) + self._backoff(state.failures, False)
            self._tenants[tid] = ts
        self._refreshed = now

    def _forget(self, tid: str) -> None:
        ts = self._tenants.pop(tid)
        if ts.task is not None:
            ts.task.cancel()
        m = self.rt.metrics
        for gauge in (m.report_backlog, m.report_last_success_age):
            with contextlib.suppress(KeyError):
                gauge.remove(tid)

    def _watch_age(self, ts: _TenantSync) -> None:
        """Export the age of the last success (or of the reporter, if never) for a tenant."""
        if ts.age_gauge:
            return
        ts.age_gauge = True

        def age() -> float:
            return max(0.0, time.time() - (ts.state.last_success_ts or self._started))

        self.rt.metrics.report_last_success_age.labels(tenant_id=ts.tenant.id).set_function(age)

    def _sink(self, name: str | None) -> ReportSink | None:
        if name is None or name not in self.rt.report_sinks:
            return None
        return self.rt.report_sinks.get(name)

    def _sink_for(self, tenant: Tenant) -> tuple[str, ReportSink] | None:
        """The first sink (by name) configured for ``tenant`` (hookspecs: register_report_sinks)."""
        for name in self.rt.report_sinks:
            sink = self.rt.report_sinks.get(name)
            if sink.configured_for(tenant, self.rt):
                return name, sink
        return None

    def _heartbeat_at(self, ts: _TenantSync) -> float | None:
        """When the next empty heartbeat is due (None: no timed heartbeats for this tenant)."""
        if self.rt.settings.test_mode or not ts.tenant.active:
            return None
        st = ts.state
        return max(st.next_due_ts or 0.0, st.dnd_until or 0.0, ts.retry_at)

    def _next_call(self, ts: _TenantSync, now: float) -> float | None:
        if ts.sink_name is None:
            return None
        if ts.backlog or ts.force:
            return max(now, ts.retry_at)
        return self._heartbeat_at(ts)

    def _backoff(self, failures: int, jitter: bool = True) -> float:
        cap = max(BACKOFF_BASE, self.rt.settings.sync_interval)
        delay = min(cap, BACKOFF_BASE * 2.0 ** min(max(failures - 1, 0), 30))
        return delay * random.uniform(0.5, 1.0) if jitter else delay

    def _sync_done(self, ts: _TenantSync, task: asyncio.Task[None]) -> None:
        ts.task = None
        self._kick.set()  # recompute deadlines (a retry time or a follow-up may be due)
        if not task.cancelled() and task.exception() is not None:
            log.error("report sync of tenant %r crashed", ts.tenant.id, exc_info=task.exception())

    # -- one tenant's sync ------------------------------------------------------------------------
    async def _sync(self, ts: _TenantSync, sink: ReportSink, force: bool) -> None:
        """Send batches under the tenant's sync lease (one pushing instance at a time)."""
        rt = self.rt
        tid = ts.tenant.id
        lease = rt.settings.sync_timeout + 30.0
        # A stop cancels this task at any await. Cancelled while the claim or the release is
        # in flight, the database work would still be done (or half done) with nobody to hand
        # the lease back, and the other instances would wait for it to expire: both run to
        # completion first (_uncancellable), then the cancellation goes on.
        try:
            claimed = await _uncancellable(
                rt.storage.claim_report_sync(tid, rt.instance_id, rt.clock.now(), lease),
                undo=lambda: rt.storage.release_report_sync(tid, rt.instance_id),
            )
            if not claimed:
                return  # another instance is pushing this tenant's reports right now
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("claiming the report sync of tenant %r failed: %s", tid, exc)
            ts.retry_at = time.time() + self._backoff(ts.state.failures + 1)
            return
        try:
            await self._sync_batches(ts, sink, force, lease)
        finally:
            with contextlib.suppress(Exception):
                await _uncancellable(rt.storage.release_report_sync(tid, rt.instance_id))

    async def _sync_batches(
        self, ts: _TenantSync, sink: ReportSink, force: bool, lease: float
    ) -> None:
        """Send batches until the outbox is empty (or the client is failing)."""
        rt = self.rt
        tid = ts.tenant.id
        batch = rt.settings.report_batch_size
        followups = 0
        # The lease was just taken by _sync. Each delivery (at most sync_timeout) must start
        # with enough of it left; renew only when that is no longer true (long syncs).
        keep = lease - rt.settings.sync_timeout - 5.0
        renew_at = time.monotonic() + keep
        while True:
            ts.dirty = False
            try:
                tenant = await rt.storage.get_tenant(tid)
                if tenant is None:
                    return
                ts.tenant = tenant
                events = await rt.storage.fetch_unreported(tid, batch)
            except Exception as exc:
                log.warning("reading the report outbox of tenant %r failed: %s", tid, exc)
                ts.retry_at = time.time() + self._backoff(ts.state.failures + 1)
                return
            if not events and not force:
                return
            if time.monotonic() >= renew_at:  # a long sync: renew before the lease runs out
                if not await rt.storage.claim_report_sync(
                    tid, rt.instance_id, rt.clock.now(), lease
                ):
                    return  # the lease was lost (this instance stalled): leave it to the holder
                renew_at = time.monotonic() + keep
            async with self._slots:
                answer = await self._deliver(sink, tenant, events)
            if not await self._record(ts, answer, events):
                return
            force = False
            if answer.queued > 0:
                if followups < MAX_FOLLOWUPS:
                    followups += 1
                    force = True
                    continue
                log.warning(
                    "tenant %r keeps answering queued > 0; waiting for the next heartbeat", tid
                )
            if ts.force:  # a tenant run-now arrived while this sync was running
                ts.force, force = False, True
                continue
            if len(events) >= batch or ts.dirty:
                continue
            return

    async def _deliver(
        self, sink: ReportSink, tenant: Tenant, events: list[EventRecord]
    ) -> SinkAnswer:
        """Call the sink; a sink that raises (a bug) counts as a failed delivery."""
        from mail_proxy.core.contracts.reports import SinkAnswer

        try:
            return await sink.deliver(
                tenant, [report_item(e, self.rt.event_types) for e in events], self.rt
            )
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("report sink failed for tenant %r", tenant.id)
            name = type(exc).__name__
            return SinkAnswer(False, error=f"internal error in the report sink: {name}")

    async def _record(self, ts: _TenantSync, answer: SinkAnswer, events: list[EventRecord]) -> bool:
        """Apply the client's answer: acknowledge, update the bookkeeping. True on success."""
        rt = self.rt
        st = ts.state
        tid = ts.tenant.id
        now = time.time()
        st.last_sync_ts = now
        if answer.accepted:
            try:
                if events:
                    await rt.storage.acknowledge_events(tid, [e.pk for e in events], now)
            except Exception as exc:
                answer_error: str | None = f"acknowledging failed: {exc}"
            else:
                answer_error = None
        else:
            answer_error = answer.error or "rejected by the sink"
        if answer_error is None:
            st.failures = 0
            st.last_error = None
            st.last_success_ts = now
            st.next_due_ts = now + rt.settings.sync_interval
            after = answer.next_sync_after
            st.dnd_until = after if after is not None and after > now else None
            ts.retry_at = 0.0
            ts.backlog = max(0, ts.backlog - len(events))
        else:
            st.failures += 1
            st.last_error = answer_error[:MAX_ERROR_TEXT]
            delay = self._backoff(st.failures)
            ts.retry_at = now + delay
            rt.metrics.report_failures.labels(tenant_id=tid).inc()
            log.warning(
                "delivery reports of tenant %r not accepted (%s); %d event(s) kept, "
                "retry in %.1fs (failure %d)",
                tid,
                st.last_error,
                len(events),
                delay,
                st.failures,
            )
        with contextlib.suppress(Exception):
            await rt.storage.save_sync_state(st)
        return answer_error is None


def find_reporter(runtime: Runtime) -> Reporter | None:
    """The running reporter of ``runtime``, e.g. for ``GET /tenants/sync-status``::

    reporter = find_reporter(rt)
    entries = reporter.sync_status() if reporter is not None else []
    """
    for service in runtime.services:
        if isinstance(service, Reporter):
            return service
    return None


async def _uncancellable(
    work: Coroutine[Any, Any, T], undo: Callable[[], Coroutine[Any, Any, Any]] | None = None
) -> T:
    """Await ``work`` to its end even if the calling task is cancelled meanwhile; then, when
    it was cancelled, run ``undo`` if ``work`` returned a true value, and re-raise."""
    future = asyncio.ensure_future(work)
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        with contextlib.suppress(Exception):
            if await future and undo is not None:
                await undo()
        raise
