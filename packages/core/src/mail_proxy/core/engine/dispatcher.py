"""The dispatcher: claims ready messages and delivers them.

One round: claim up to the free capacity (priority 0 → 3, FIFO inside a priority, at most
``batch_size_per_account`` per account, with a lease) → apply rate limits per account (and per
tenant when the tenant has quotas) in one reservation per bucket → deliver each message
concurrently (message steps → attachments → steps → MIME → steps → transport), bounded globally
(``max_concurrent_sends``) and per account (its ``max_connections``; an account whose
connections are all busy is not claimed from) → hand each outcome to
the :class:`OutcomeWriter`, which commits outcomes *with their events* in batched
transactions (group commit), fenced by the claim token.

The loop wakes at once when messages are added or ``run-now`` is called, and otherwise polls
every ``send_loop_interval``. In test mode it waits for ``run-now`` only.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Literal

from mail_proxy.core.contracts.errors import MessageContentError
from mail_proxy.core.contracts.extensions import DeliveryContext, Event, MessageStep
from mail_proxy.core.contracts.fetch import FetchError
from mail_proxy.core.contracts.model import (
    Account,
    MessageRecord,
    NewEvent,
    Outcome,
    RecipientOutcome,
    RecipientStatus,
    Tenant,
)
from mail_proxy.core.contracts.services import Service
from mail_proxy.core.contracts.storage import RateLimits
from mail_proxy.core.contracts.transport import SendResult, TransportError
from mail_proxy.core.engine.budget import COPIES, ByteBudget, Reservation
from mail_proxy.core.engine.retry import RetryPolicy

if TYPE_CHECKING:
    from mail_proxy.core.engine.runtime import Runtime

from mail_proxy.core.engine.outcomes import (
    OutcomeWriter,
    merge_recipients,
    planned_recipients,
    recipient_answers,
    reply_text,
)

log = logging.getLogger(__name__)

CACHE_SECONDS = 2.0
#: An account is claimed for until it has this many deliveries per connection in flight: its
#: connections busy and enough queued behind them to cover a claim round at full speed (with
#: 2 or 5 the connections starved on a loaded 2-core machine: e2e fell to 51 and 254
#: messages/s, 708 with 10), and no more, so a stalled server holds a bounded share of the
#: global slots (10 × its connections).
QUEUED_PER_CONNECTION = 10
#: All claimed deliveries, sending or queued, at most this many times GMP_MAX_CONCURRENT_SENDS.
QUEUED_TOTAL = 4
#: Attachments at least this large (bytes in all) are MIME-encoded in a worker thread.
BUILD_IN_THREAD_BYTES = 256 * 1024


def account_slots(account: Account, upper: int) -> int:
    """How many deliveries an account may have in flight: its ``max_connections`` (the SMTP
    pool's size for it), at most ``upper`` (``GMP_MAX_SENDS_PER_ACCOUNT``)."""
    return max(1, min(account.max_connections or upper, upper))


def _steps_at(runtime: Runtime, phase: str) -> list[MessageStep]:
    """The plugins' message steps that do something at ``phase`` (``before_fetch``,
    ``after_fetch``, ``before_send``), in name order: the others are not awaited for nothing
    on every message."""
    steps = runtime.message_steps
    return [
        step
        for step in (steps.get(name) for name in steps)
        if getattr(type(step), phase) is not getattr(MessageStep, phase)
    ]


@dataclass
class _Cached:
    value: Any
    expires: float


class DeliveryLookups:
    """The accounts and tenants the dispatcher delivers for, each read at most once per
    :data:`CACHE_SECONDS` (one query per account per round, not per message).

    ``runtime.local(DeliveryLookups)``: the kernel's ``tenant_changed``/``tenant_deleted``
    drop a tenant's entries at once, so an account saved through the API (its connections,
    its timeouts) is what the next round uses.
    """

    def __init__(self, runtime: Runtime) -> None:
        self.rt = runtime
        self._accounts: dict[tuple[str, str], _Cached] = {}
        self._tenants: dict[str, _Cached] = {}

    async def account(self, tenant_id: str, account_id: str) -> Account | None:
        key = (tenant_id, account_id)
        hit = self._accounts.get(key)
        now = time.monotonic()
        if hit is not None and hit.expires > now:
            return hit.value  # type: ignore[no-any-return]
        account = await self.rt.storage.get_account(tenant_id, account_id)
        self._accounts[key] = _Cached(account, now + CACHE_SECONDS)
        return account

    async def tenant(self, tenant_id: str) -> Tenant | None:
        hit = self._tenants.get(tenant_id)
        now = time.monotonic()
        if hit is not None and hit.expires > now:
            return hit.value  # type: ignore[no-any-return]
        tenant = await self.rt.storage.get_tenant(tenant_id)
        self._tenants[tenant_id] = _Cached(tenant, now + CACHE_SECONDS)
        return tenant

    def forget(self, tenant_id: str) -> None:
        """Read the tenant and its accounts again at their next use."""
        self._tenants.pop(tenant_id, None)
        for key in [k for k in self._accounts if k[0] == tenant_id]:
            del self._accounts[key]


class Dispatcher(Service):
    name = "dispatcher"

    def __init__(self, runtime: Runtime) -> None:
        s = runtime.settings
        self.rt = runtime
        self.writer = OutcomeWriter(runtime)
        self._attachment_budget = ByteBudget(int(s.attachment_memory_budget_mb * 1024 * 1024))
        # Claim again only when a useful number of slots is free (not one by one).
        self._claim_threshold = max(1, min(16, s.max_concurrent_sends // 4))
        #: Deliveries holding one of their account's connections (bounded by
        #: ``max_concurrent_sends``), outcomes waiting for their commit (bounded too), and
        #: deliveries claimed and not yet ended, sending or queued on their account's
        #: connections (bounded by ``QUEUED_PER_CONNECTION`` per account and 4 × the global
        #: bound in all).
        self._inflight = 0
        self._queued = 0
        self._uncommitted = 0
        self._slot_freed = asyncio.Event()
        #: Deliveries in flight per account, and each account's bound (its
        #: ``max_connections``): a saturated account is not claimed from, so its queue
        #: never holds the slots other accounts need (one stalled server slows no one else).
        self._account_inflight: Counter[tuple[str, str]] = Counter()
        self._account_cap: dict[tuple[str, str], int] = {}
        self._account_slots: dict[tuple[str, str], asyncio.Semaphore] = {}
        #: Deliveries finished so far (the loop waits for a few before claiming again).
        self._completed = 0
        self._lookups = runtime.local(DeliveryLookups)
        self._tasks: set[asyncio.Task[None]] = set()
        #: Messages handed to the transport and not yet answered (see ``_deliver``).
        self._in_transport: set[int] = set()
        #: Deliveries of this instance from their claim to their committed outcome, by pk.
        self._live: dict[int, MessageRecord] = {}
        self._loop_task: asyncio.Task[None] | None = None
        self._stopping = False
        #: The plugins' message steps for each delivery phase.
        self._before_fetch = _steps_at(runtime, "before_fetch")
        self._after_fetch = _steps_at(runtime, "after_fetch")
        self._before_send = _steps_at(runtime, "before_send")

    @property
    def policy(self) -> RetryPolicy:
        """The retry policy of the current settings (``PUT /instance`` changes them live)."""
        s = self.rt.settings
        return RetryPolicy(tuple(s.retry_delays), s.max_retries, s.retry_jitter)

    @classmethod
    def create(cls, runtime: Runtime) -> Dispatcher:
        return cls(runtime)

    async def start(self, runtime: Runtime) -> None:
        self.writer.start()
        self._loop_task = asyncio.create_task(self._run(), name="dispatcher")

    async def stop(self) -> None:
        self._stopping = True
        if self._loop_task is not None:
            self._loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop_task
        if self._tasks:
            # Give in-flight deliveries a moment; what does not finish is retaken after the lease.
            _done, pending = await asyncio.wait(self._tasks, timeout=5)
            for task in pending:
                task.cancel()
            with contextlib.suppress(Exception):
                await asyncio.gather(*pending, return_exceptions=True)
        await self.writer.stop()

    # -- the loop ----------------------------------------------------------------------------
    async def _run(self) -> None:
        rt = self.rt
        s = rt.settings
        wake = rt.dispatch_wakeup
        if s.test_mode:
            await wake.wait()  # test mode: nothing moves before the first run-now
        while True:
            wake.clear()
            limit = s.claim_batch_size
            if s.intake_priority_max_hold and rt.intake.busy():
                # intake first (intake.py): hold new claims while clients are queuing; if the
                # intake is still busy after the hold, claim a small round only
                rt.metrics.intake_hold.inc(await rt.intake.wait_quiet(s.intake_priority_max_hold))
                if rt.intake.busy():
                    limit = self._claim_threshold
            try:
                claimed = await self.run_round(limit)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("dispatch round failed")
                claimed = 0
                await asyncio.sleep(min(5.0, s.send_loop_interval * 4))
            if claimed and self._free() >= self._claim_threshold:
                continue  # more may be ready: claim again at once
            if claimed or self._free() < self._claim_threshold:
                await self._wait_for_slots(s.send_loop_interval)
            elif self._queued:
                # accounts full (their connections busy, a round queued behind): claim again
                # when a few of their deliveries ended (or a wake-up), not on a timer
                await self._wait_for_completions(min(self._claim_threshold, self._queued))
            elif s.test_mode:
                await wake.wait()  # idle in test mode: wait for the next run-now
            else:
                await self._wait_any(wake, None, s.send_loop_interval)

    async def _wait_for_slots(self, timeout: float) -> None:
        """Busy: wait until enough slots are free to claim a useful batch (or a wake-up)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        wake = self.rt.dispatch_wakeup
        while self._free() < self._claim_threshold and not wake.is_set():
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            self._slot_freed.clear()
            await self._wait_any(self._slot_freed, wake, remaining)

    async def _wait_for_completions(self, count: int) -> None:
        """Wait until ``count`` deliveries ended, a wake-up, or ``send_loop_interval``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.rt.settings.send_loop_interval
        target = self._completed + max(1, count)
        wake = self.rt.dispatch_wakeup
        while self._completed < target and not wake.is_set() and self._queued:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            self._slot_freed.clear()
            await self._wait_any(self._slot_freed, wake, remaining)

    @staticmethod
    async def _wait_any(a: asyncio.Event, b: asyncio.Event | None, timeout: float) -> None:
        waiters = [asyncio.ensure_future(a.wait())]
        if b is not None:
            waiters.append(asyncio.ensure_future(b.wait()))
        try:
            await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waiters:
                w.cancel()

    def _free(self) -> int:
        s = self.rt.settings
        if self._uncommitted >= s.max_concurrent_sends:
            return 0  # the outcome writer is behind: claim nothing more until it catches up
        sending = s.max_concurrent_sends - self._inflight
        return min(sending, QUEUED_TOTAL * s.max_concurrent_sends - self._queued)

    def _saturated(self) -> list[tuple[str, str]]:
        """Accounts with as many deliveries in flight as their connections allow."""
        return [
            key
            for key, n in self._account_inflight.items()
            if n >= QUEUED_PER_CONNECTION * self._account_cap.get(key, 1)
        ]

    async def run_round(self, limit: int) -> int:
        """Claim (at most ``limit``) and start delivering one batch; returns how many messages
        were claimed."""
        rt = self.rt
        if not rt.scheduler.active or self._stopping:
            return 0
        s = rt.settings
        free = min(self._free(), limit)
        if free <= 0:
            return 0
        now = self.rt.clock.now()
        records = await rt.storage.claim_messages(
            rt.instance_id,
            now,
            free,
            s.claim_lease_seconds,
            s.batch_size_per_account,
            skip_accounts=self._saturated(),
            busy=self._account_inflight,
            per_connection=QUEUED_PER_CONNECTION,
        )
        if not records:
            return 0
        by_account: dict[tuple[str, str], list[MessageRecord]] = defaultdict(list)
        for rec in records:
            if self._adopt(rec):
                continue
            by_account[(rec.tenant_id, rec.account_id)].append(rec)
        for (tenant_id, account_id), group in by_account.items():
            account = await self._account(tenant_id, account_id)
            tenant = await self._tenant(tenant_id)
            if account is None or tenant is None:
                what = "account" if account is None else "tenant"
                for rec in group:
                    self._finish(
                        rec,
                        self._error(
                            rec, f"unknown {what} {account_id if account is None else tenant_id!r}"
                        ),
                    )
                continue
            key = (tenant_id, account_id)
            self._account_cap[key] = account_slots(account, s.max_sends_per_account)
            room = QUEUED_PER_CONNECTION * self._account_cap[key] - self._account_inflight[key]
            for rec in group[max(0, room) :]:  # beyond its connections: back to the queue
                self._finish(rec, Outcome(rec.pk, rec.claim_token or 0, "released", now))
            allowed = await self._apply_rate_limits(tenant, account, group[: max(0, room)], now)
            for rec in allowed:
                self._spawn(rec, account, tenant)
        return len(records)

    # -- rate limits ----------------------------------------------------------------------------
    async def _apply_rate_limits(
        self, tenant: Tenant, account: Account, group: list[MessageRecord], now: float
    ) -> list[MessageRecord]:
        buckets: list[tuple[str, RateLimits]] = []
        if account.has_rate_limit:
            buckets.append(
                (
                    f"acct:{tenant.id}:{account.id}",
                    RateLimits(
                        account.limit_per_minute, account.limit_per_hour, account.limit_per_day
                    ),
                )
            )
        tl = tenant.rate_limits or {}
        tenant_limits = RateLimits(tl.get("per_minute"), tl.get("per_hour"), tl.get("per_day"))
        if tenant_limits.any():
            buckets.append((f"tenant:{tenant.id}:*", tenant_limits))
        if not buckets:
            return group
        granted = len(group)
        next_free: float | None = None
        reserved: list[tuple[str, int]] = []
        for bucket, limits in buckets:
            res = await self.rt.storage.reserve_sends(bucket, granted, now, limits)
            reserved.append((bucket, res.granted))
            if res.granted < granted and res.next_free_ts is not None:
                next_free = max(next_free or 0.0, res.next_free_ts)
            granted = min(granted, res.granted)
        for bucket, got in reserved:
            if got > granted:
                await self.rt.storage.release_sends(bucket, got - granted, now)
        held = group[granted:]
        for rec in held:
            self.rt.emit(
                Event("rate_limited", rec.tenant_id, rec.account_id, rec.pk, rec.id, now, {})
            )
            if account.limit_behavior == "reject":
                self._finish(rec, self._error(rec, "rate limit exceeded"))
            else:
                self._finish(
                    rec,
                    Outcome(
                        rec.pk,
                        rec.claim_token or 0,
                        "deferred",
                        self.rt.clock.now(),
                        deferred_ts=next_free or now + 1.0,
                        deferred_reason="rate limit",
                        count_attempt=False,
                    ),
                )
        return group[:granted]

    # -- delivery -----------------------------------------------------------------------------------
    def _adopt(self, rec: MessageRecord) -> bool:
        """Our own claim came back: its lease ran out while we were still sending the message
        or waiting to commit its outcome (a slow server, the database away). The delivery in
        progress goes on under the new claim, instead of a second delivery."""
        live = self._live.get(rec.pk)
        if live is None:
            return False
        live.claim_token, live.lease_until = rec.claim_token, rec.lease_until
        self.writer.retarget(rec.pk, rec.claim_token or 0)
        return True

    def _spawn(self, rec: MessageRecord, account: Account, tenant: Tenant) -> None:
        self._live[rec.pk] = rec
        self._queued += 1
        self._account_inflight[(rec.tenant_id, rec.account_id)] += 1
        task = asyncio.create_task(self._deliver(rec, account, tenant))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _slot(self, rec: MessageRecord, account: Account) -> asyncio.Semaphore:
        """The account's connections: at most that many of its deliveries run at once (the
        others claimed for it wait here, a bounded number: see ``QUEUED_PER_CONNECTION``)."""
        key = (rec.tenant_id, rec.account_id)
        size = account_slots(account, self.rt.settings.max_sends_per_account)
        slot = self._account_slots.get(key)
        if slot is None or getattr(slot, "size", None) != size:  # new, or the account changed
            slot = self._account_slots[key] = asyncio.Semaphore(size)
            slot.size = size  # type: ignore[attr-defined]
        return slot

    def _sent_off(self, rec: MessageRecord) -> None:
        """The attempt ended: free the account's room for it; its outcome is counted as
        uncommitted until the writer commits it."""
        self._queued -= 1
        key = (rec.tenant_id, rec.account_id)
        self._account_inflight[key] -= 1
        self._completed += 1
        if self._account_inflight[key] <= 0:
            del self._account_inflight[key]
        self._slot_freed.set()

    async def _deliver(self, rec: MessageRecord, account: Account, tenant: Tenant) -> None:
        rt = self.rt
        started = time.perf_counter()
        sent_off = False
        try:
            if self._lease_too_short(rec):
                # Waited too long (a slow attachment budget): another instance may retake this
                # message soon. Give it back instead of racing it (no double send).
                self._sent_off(rec)
                sent_off = True
                self._live.pop(rec.pk, None)
                self._finish(
                    rec, Outcome(rec.pk, rec.claim_token or 0, "released", self.rt.clock.now())
                )
                return
            async with self._slot(rec, account):
                # a global slot only while it holds one of the account's connections: messages
                # queued behind a stalled server take none from the other accounts
                self._inflight += 1
                try:
                    outcome = await self._attempt(rec, account, tenant)
                finally:
                    self._inflight -= 1
                    self._slot_freed.set()
        except asyncio.CancelledError:
            # Stopped (shutdown): the claim goes back. If the transport had the message, the
            # server may have taken it: the next attempt is flagged uncertain.
            meta = {"uncertain": True} if rec.pk in self._in_transport else {}
            self._live.pop(rec.pk, None)
            self._finish(
                rec,
                Outcome(
                    rec.pk, rec.claim_token or 0, "released", self.rt.clock.now(), metadata=meta
                ),
            )
            raise
        except Exception as exc:  # a bug, not a delivery failure: retry, bounded by max_retries
            log.exception("unexpected error delivering message pk=%s", rec.pk)
            outcome = self._temporary(rec, f"internal error: {type(exc).__name__}", None)
        finally:
            self._in_transport.discard(rec.pk)
            if not sent_off:
                self._sent_off(rec)
        rt.metrics.send_latency.observe(time.perf_counter() - started)
        # Delivered-but-unrecorded messages (the only duplicates a crash can cause) stay
        # bounded: at most max_concurrent_sends sending plus max_concurrent_sends uncommitted.
        self._uncommitted += 1
        try:
            await self._finish(rec, outcome)
        finally:
            self._uncommitted -= 1
            self._live.pop(rec.pk, None)
            self._slot_freed.set()

    async def _attempt(self, rec: MessageRecord, account: Account, tenant: Tenant) -> Outcome:
        reservation = Reservation(self._attachment_budget)
        try:
            return await self._attempt_now(rec, account, tenant, reservation)
        finally:
            await reservation.release()

    async def _attempt_now(
        self,
        rec: MessageRecord,
        account: Account,
        tenant: Tenant,
        reservation: Reservation,
    ) -> Outcome:
        from mail_proxy.core.engine.mime import MimeError, build_email, envelope

        rt = self.rt
        ctx = DeliveryContext(rec, account, tenant, rt, rec.payload)
        try:
            for step in self._before_fetch:
                await step.before_fetch(ctx)
            ctx.attachments = []
            if ctx.payload.get("attachments"):
                from mail_proxy.core.engine.attachments import estimated_size, get_resolver

                # Reserve memory for the copies of the attachments before fetching them
                # (budget.py), after the steps: one may have taken an attachment out of the
                # message (a large file offloaded to object storage). estimated_size may stat a
                # file: off the event loop.
                atts = ctx.payload["attachments"]
                await reservation.ensure(COPIES * await asyncio.to_thread(estimated_size, atts))
                ctx.attachments = await get_resolver(rt).resolve(tenant, atts, ctx.record.id)
                # larger than estimated: reserve the real size
                await reservation.ensure(COPIES * sum(len(a.content) for a in ctx.attachments))
            for step in self._after_fetch:
                await step.after_fetch(ctx)
            attachments, ctx.attachments = ctx.attachments, None
            build = functools.partial(
                build_email,
                ctx.payload,
                message_id=rec.message_id,
                mail_id=rec.id,
                attachments=attachments,
            )
            # encoding large attachments takes tens of ms: off the event loop
            large = sum(len(a.content) for a in attachments) >= BUILD_IN_THREAD_BYTES
            ctx.email = await asyncio.to_thread(build) if large else build()
            del attachments, build  # the MIME message holds the content now
            ctx.sender, ctx.recipients = envelope(ctx.payload)
            for step in self._before_send:
                await step.before_send(ctx)
        except (FetchError, MimeError, MessageContentError) as exc:
            return self._error(rec, str(exc))
        finally:
            if ctx.events:  # e.g. an attachment offloaded: recorded before the outcome
                await rt.record_events(
                    [
                        NewEvent(rec.tenant_id, rec.id, kind, self.rt.clock.now(), text, meta)
                        for kind, text, meta in ctx.events
                    ]
                )
        sender, recipients, email = ctx.sender, ctx.recipients, ctx.email
        known = {r.address.lower(): r for r in rec.recipients}
        # Recipients that got it or were refused for good are never tried again.
        todo = [
            a for a in recipients if a.lower() not in known or known[a.lower()].status == "deferred"
        ]
        if not todo:
            return self._conclude(rec, list(rec.recipients), None, None)
        self._in_transport.add(rec.pk)
        try:
            result: SendResult = await rt.transport(account.transport).send(
                account, email, sender, todo
            )
        except TransportError as exc:
            # The whole attempt failed: every recipient tried gets its reason.
            status: RecipientStatus = "error" if exc.permanent else "deferred"
            answers = [RecipientOutcome(a, status, exc.code, str(exc)) for a in todo]
            return self._conclude(
                rec, merge_recipients(rec.recipients, answers), str(exc), exc.code
            )
        return self._conclude(
            rec, merge_recipients(rec.recipients, recipient_answers(todo, result)), None, None
        )

    def _lease_too_short(self, rec: MessageRecord) -> bool:
        """True when less than half of the claim lease is left before sending starts."""
        if rec.lease_until is None:
            return False
        return self.rt.clock.now() > rec.lease_until - self.rt.settings.claim_lease_seconds / 2

    # -- outcomes -----------------------------------------------------------------------------------
    def _finish(self, rec: MessageRecord, outcome: Outcome) -> asyncio.Future[None]:
        return self.writer.add(outcome, rec)

    def _outcome(
        self,
        rec: MessageRecord,
        kind: Literal["sent", "deferred", "error"],
        recipients: list[RecipientOutcome],
        error: str | None,
        code: int | None,
        **fields: Any,
    ) -> Outcome:
        """An outcome whose event carries every recipient's state and, when the message was
        retaken after a crash, ``uncertain`` (it may have been delivered already)."""
        meta: dict[str, Any] = {}
        if kind == "sent":
            meta["created_at"] = rec.created_at
            refused = {r.address: reply_text(r) for r in recipients if r.status == "error"}
            if refused:
                meta["refused_recipients"] = refused
        if recipients:
            meta["recipients"] = [r.public() for r in recipients]
        if rec.uncertain:
            meta["uncertain"] = True
        return Outcome(
            rec.pk,
            rec.claim_token or 0,
            kind,
            self.rt.clock.now(),
            error=error,
            smtp_code=code,
            recipients=recipients,
            metadata=meta,
            **fields,
        )

    def _conclude(
        self,
        rec: MessageRecord,
        recipients: list[RecipientOutcome],
        failure: str | None,
        code: int | None,
    ) -> Outcome:
        """The message's state after an attempt that reached the transport: retried while a
        recipient is ``deferred`` (only those are tried again), else final."""
        waiting = [r for r in recipients if r.status == "deferred"]
        if not waiting:
            return self._final(rec, recipients, failure, code)
        first = waiting[0]
        reason = failure or (
            f"recipients deferred ({', '.join(r.address for r in waiting)}): {reply_text(first)}"
        )
        return self._retry(rec, recipients, reason, code if failure else first.code)

    def _retry(
        self,
        rec: MessageRecord,
        recipients: list[RecipientOutcome],
        reason: str,
        code: int | None,
    ) -> Outcome:
        """A temporary failure: deferred with backoff, or final after ``max_retries``."""
        attempts = rec.attempts + 1
        if not self.policy.should_retry(attempts):
            return self._final(
                rec, recipients, f"gave up after {attempts} attempts: {reason}", code
            )
        return self._outcome(
            rec,
            "deferred",
            recipients,
            reason,
            code,
            deferred_ts=self.rt.clock.now() + self.policy.delay(attempts),
            deferred_reason=reason,
        )

    def _final(
        self,
        rec: MessageRecord,
        recipients: list[RecipientOutcome],
        failure: str | None,
        code: int | None,
    ) -> Outcome:
        """The last word on a message: ``sent`` when at least one recipient accepted it (the
        others listed as failed in ``recipients`` and named in ``error``), else ``error``.
        Recipients still waiting for a retry fail with the message."""
        recipients = [
            replace(r, status="error") if r.status == "deferred" else r for r in recipients
        ]
        if failure is not None:  # the message failed: so did the recipients never tried
            known = {r.address.lower() for r in recipients}
            recipients += [
                RecipientOutcome(a, "error", code, failure)
                for a in planned_recipients(rec)
                if a.lower() not in known
            ]
        failed = [r for r in recipients if r.status == "error"]
        if any(r.status == "sent" for r in recipients):
            error = None
            if failed:
                names = ", ".join(r.address for r in failed)
                error = f"not delivered to {names}: {failure or reply_text(failed[0])}"
            return self._outcome(rec, "sent", recipients, error, None)
        if failure is None:
            failure = "all recipients refused: " + (
                reply_text(failed[0]) if failed else "none left"
            )
        return self._outcome(
            rec, "error", recipients, failure, code or (failed[0].code if failed else None)
        )

    def _error(self, rec: MessageRecord, error: str, code: int | None = None) -> Outcome:
        """A failure of the message itself (content, attachments, account): final at once."""
        return self._final(rec, list(rec.recipients), error, code)

    def _temporary(self, rec: MessageRecord, error: str, code: int | None) -> Outcome:
        """A temporary failure before any recipient was tried (recipients unchanged)."""
        return self._retry(rec, list(rec.recipients), error, code)

    # -- lookups (briefly cached: one query per account per round, not per message) ----------
    async def _account(self, tenant_id: str, account_id: str) -> Account | None:
        return await self._lookups.account(tenant_id, account_id)

    async def _tenant(self, tenant_id: str) -> Tenant | None:
        return await self._lookups.tenant(tenant_id)
