"""Messages: enqueue (group commit), listing, deletion, cleanup, suspensions."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import defaultdict
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from mail_proxy.core.contracts.model import (
    EventRecord,
    MessageRecord,
    NewMessage,
)
from mail_proxy.core.contracts.storage import (
    ActiveQueue,
    DeleteResult,
    EnqueueResult,
    MessageFilter,
    QueueOverview,
    RequeueResult,
    Suspension,
)

from . import schema as t

if TYPE_CHECKING:
    pass

from .base import (
    ACTIVE_LITERAL,
    FINISHED_LITERAL,
    MAX_GROUP_MESSAGES,
    REPLACEABLE,
    SqlBase,
    _chunks,
    _Job,
    _message_row,
)


class MessageRepository(SqlBase):
    """Messages: enqueue (group commit), listing, deletion, cleanup, suspensions."""

    async def enqueue(self, messages: Sequence[NewMessage], now: float) -> EnqueueResult:
        """Group commit: concurrent calls that arrive while a commit is in progress are
        written together in the next transaction (one fsync for all), and each caller is
        answered only after that commit."""
        if not messages:
            return EnqueueResult(0)
        future: asyncio.Future[EnqueueResult] = asyncio.get_running_loop().create_future()
        self._enqueue_jobs.append((list(messages), now, future))
        if self._enqueue_task is None or self._enqueue_task.done():
            self._enqueue_task = asyncio.create_task(self._enqueue_flusher())
        return await future

    async def _enqueue_flusher(self) -> None:
        while self._enqueue_jobs:
            jobs = self._next_group()
            try:
                await self._commit_jobs(jobs, retry_later=True)
            except IntegrityError:
                # Rows clashed with another writer's insert of the same (tenant, id), committed
                # after our read: commit the calls one by one, each reading the rows again, so
                # only a call that still clashes fails.
                for job in jobs:
                    with contextlib.suppress(IntegrityError):
                        await self._commit_jobs([job], retry_later=False)

    def _next_group(self) -> list[_Job]:
        """The waiting calls, in arrival order, up to about MAX_GROUP_MESSAGES messages."""
        group: list[_Job] = []
        size = 0
        while self._enqueue_jobs and (not group or size < MAX_GROUP_MESSAGES):
            job = self._enqueue_jobs.popleft()
            group.append(job)
            size += len(job[0])
        return group

    async def _commit_jobs(
        self,
        jobs: list[_Job],
        *,
        retry_later: bool,
    ) -> None:
        """Commit ``jobs`` together and answer their callers. An integrity error is raised
        without answering when ``retry_later`` (the flusher then retries call by call)."""
        try:
            results = await self._enqueue_group(jobs)
        except BaseException as exc:
            if isinstance(exc, IntegrityError) and retry_later:
                raise
            for _, _, future in jobs:
                if not future.done():
                    future.set_exception(exc)
            if isinstance(exc, asyncio.CancelledError | IntegrityError):
                raise
            return
        for (_, _, future), result in zip(jobs, results, strict=True):
            if not future.done():
                future.set_result(result)

    async def _enqueue_group(self, jobs: list[_Job]) -> list[EnqueueResult]:
        """One transaction for several enqueue calls, in arrival order. A later entry with the
        same (tenant, id) replaces an earlier queued one, exactly as separate calls would."""
        m = t.messages.c
        wanted: dict[str, set[str]] = defaultdict(set)
        for msgs, _, _ in jobs:
            for msg in msgs:
                wanted[msg.tenant_id].add(msg.id)
        results: list[EnqueueResult] = []
        async with self._write() as conn:
            existing: dict[tuple[str, str], Any] = {}
            for tenant_id, ids in sorted(wanted.items()):
                for chunk in _chunks(sorted(ids), 500):
                    rows = await conn.execute(
                        self._lock_for_change(
                            sa.select(m.pk, m.id, m.status).where(
                                m.tenant_id == tenant_id, m.id.in_(chunk)
                            )
                        )
                    )
                    existing.update({(tenant_id, r.id): r for r in rows})
            inserts: dict[tuple[str, str], dict[str, Any]] = {}
            replace: list[int] = []
            for msgs, now, _ in jobs:
                result = EnqueueResult(0)
                for msg in msgs:
                    key = (msg.tenant_id, msg.id)
                    row = existing.get(key)
                    if row is not None and key not in inserts:
                        if row.status == "sending":
                            result.rejected.append((msg.id, "being sent"))
                            continue
                        if row.status not in REPLACEABLE:
                            result.rejected.append((msg.id, "already sent"))
                            continue
                        replace.append(row.pk)
                    inserts.pop(key, None)  # re-added last: a replacement queues anew
                    inserts[key] = _message_row(msg, now)
                    result.queued += 1
                results.append(result)
            if replace:
                await conn.execute(t.events.delete().where(t.events.c.message_pk.in_(replace)))
                await conn.execute(t.messages.delete().where(m.pk.in_(replace)))
            if inserts:
                await conn.execute(t.messages.insert(), list(inserts.values()))
        return results

    async def list_messages(self, flt: MessageFilter) -> list[MessageRecord]:
        now = time.time()
        async with self._read() as conn:
            return [self._record(r, now) for r in await conn.execute(list_query(flt))]

    async def get_message(self, tenant_id: str, message_id: str) -> MessageRecord | None:
        m = t.messages.c
        async with self._read() as conn:
            row = (
                await conn.execute(
                    sa.select(t.messages).where(m.tenant_id == tenant_id, m.id == message_id)
                )
            ).first()
        return self._record(row) if row else None

    async def list_events(self, tenant_id: str, message_id: str) -> list[EventRecord] | None:
        m = t.messages.c
        e = t.events.c
        async with self._read() as conn:
            found = (
                await conn.execute(
                    sa.select(m.pk, m.created_at).where(
                        m.tenant_id == tenant_id, m.id == message_id
                    )
                )
            ).first()
            if found is None:
                return None
            pk, created = found
            rows = await conn.execute(sa.select(t.events).where(e.message_pk == pk).order_by(e.pk))
            # ``queued`` is not stored (it would double the writes of every enqueue): it is the
            # message's own creation, shown first.
            queued = EventRecord(
                0, tenant_id, pk, message_id, "queued", created, reported_ts=created
            )
            return [queued, *(self._event(r) for r in rows)]

    async def _rows_by_id(
        self, conn: AsyncConnection, tenant_id: str, ids: list[str], *columns: Any
    ) -> dict[str, Any]:
        """The tenant's messages among ``ids`` (with ``columns``), by id, locked for the change
        the caller makes in the same transaction (PostgreSQL: FOR UPDATE)."""
        m = t.messages.c
        query = sa.select(m.id, *columns).where(m.tenant_id == tenant_id, m.id.in_(ids))
        return {r.id: r for r in await conn.execute(self._lock_for_change(query))}

    async def delete_messages(self, tenant_id: str, ids: Sequence[str]) -> DeleteResult:
        m = t.messages.c
        wanted = list(dict.fromkeys(ids))
        async with self._write() as conn:
            found = await self._rows_by_id(conn, tenant_id, wanted, m.pk, m.status)
            removable = [
                found[i].pk for i in wanted if i in found and found[i].status in REPLACEABLE
            ]
            if removable:
                await conn.execute(t.events.delete().where(t.events.c.message_pk.in_(removable)))
                await conn.execute(t.messages.delete().where(m.pk.in_(removable)))
        return DeleteResult(
            removed=len(removable),
            not_found=[i for i in wanted if i not in found],
            unauthorized=[i for i in wanted if i in found and found[i].status not in REPLACEABLE],
        )

    async def requeue_messages(
        self, tenant_id: str, ids: Sequence[str], now: float
    ) -> RequeueResult:
        m = t.messages.c
        wanted = list(dict.fromkeys(ids))
        async with self._write() as conn:
            found = await self._rows_by_id(
                conn, tenant_id, wanted, m.pk, m.status, m.error, m.smtp_code, m.recipients
            )
            failed = [found[i] for i in wanted if i in found and found[i].status == "error"]
            if failed:
                await conn.execute(
                    t.messages.update()
                    .where(m.pk == sa.bindparam("b_pk"), m.status == "error")
                    .values(
                        status="pending",
                        attempts=0,
                        error=None,
                        error_ts=None,
                        smtp_code=None,
                        deferred_ts=None,
                        lease_until=None,
                        claimed_by=None,
                        updated_at=now,
                        recipients=sa.bindparam("v_recipients"),
                    ),
                    [
                        # recipients that took the message keep it (no second copy); the
                        # refused ones are tried again
                        {"b_pk": r.pk, "v_recipients": _delivered_recipients(r.recipients)}
                        for r in failed
                    ],
                )
                await self._insert_events(
                    conn,
                    [
                        {
                            "tenant_id": tenant_id,
                            "message_pk": r.pk,
                            "message_id": r.id,
                            "event_type": "requeued",
                            "event_ts": now,
                            "description": "queued again after a final error",
                            "metadata": {"previous_error": r.error, "smtp_code": r.smtp_code},
                            # the client had the error; the next outcome is reported as usual
                            "reportable": False,
                            "reported_ts": None,
                        }
                        for r in failed
                    ],
                )
        return RequeueResult(
            requeued=len(failed),
            not_found=[i for i in wanted if i not in found],
            not_failed=[i for i in wanted if i in found and found[i].status != "error"],
        )

    async def queue_overview(self, tenant_id: str | None, since_ts: float) -> QueueOverview:
        m = t.messages.c
        e = t.events.c
        counts_q = sa.select(m.status, sa.func.count()).group_by(m.status)
        # scheduled rows whose time has come are shown as pending (as _record does)
        due_q = (
            sa.select(sa.func.count())
            .select_from(t.messages)
            .where(
                m.status == "scheduled",
                sa.or_(m.deferred_ts.is_(None), m.deferred_ts <= time.time()),
            )
        )
        oldest_q = sa.select(sa.func.min(m.created_at)).where(ACTIVE_LITERAL)
        recent_q = (
            sa.select(e.event_type, sa.func.count())
            .where(e.event_ts >= since_ts, e.event_type.in_(("sent", "error", "deferred")))
            .group_by(e.event_type)
        )
        backlog_q = (
            sa.select(sa.func.count())
            .select_from(t.events)
            .where(e.reportable.is_(True), e.reported_ts.is_(None))
        )
        if tenant_id is not None:
            counts_q = counts_q.where(m.tenant_id == tenant_id)
            due_q = due_q.where(m.tenant_id == tenant_id)
            oldest_q = oldest_q.where(m.tenant_id == tenant_id)
            recent_q = recent_q.where(e.tenant_id == tenant_id)
            backlog_q = backlog_q.where(e.tenant_id == tenant_id)
        async with self._read() as conn:
            counts = {str(r[0]): int(r[1]) for r in await conn.execute(counts_q)}
            due = int(await conn.scalar(due_q) or 0) if counts.get("scheduled") else 0
            recent = {str(r[0]): int(r[1]) for r in await conn.execute(recent_q)}
            oldest = await conn.scalar(oldest_q)
            backlog = int(await conn.scalar(backlog_q) or 0)
        for status in (*t.ACTIVE, *t.FINISHED):
            counts.setdefault(status, 0)
        counts["scheduled"] -= due
        counts["pending"] += due
        for kind in ("sent", "error", "deferred"):
            recent.setdefault(kind, 0)
        return QueueOverview(
            counts=counts,
            recent=recent,
            oldest_pending_created_at=float(oldest) if oldest is not None else None,
            report_backlog=backlog,
        )

    async def cleanup_messages(self, tenant_id: str | None, older_than_ts: float) -> int:
        m = t.messages.c
        e = t.events.c
        unreported = (
            sa.select(e.pk)
            .where(e.message_pk == m.pk, e.reportable.is_(True), e.reported_ts.is_(None))
            .exists()
        )
        q = sa.select(m.pk).where(FINISHED_LITERAL, m.updated_at < older_than_ts, ~unreported)
        if tenant_id is not None:
            q = q.where(m.tenant_id == tenant_id)
        removed = 0
        while True:
            async with self._write() as conn:
                pks = list((await conn.execute(q.limit(1000))).scalars())
                if not pks:
                    return removed
                await conn.execute(t.events.delete().where(e.message_pk.in_(pks)))
                await conn.execute(t.messages.delete().where(m.pk.in_(pks)))
                removed += len(pks)

    async def count_pending(self, tenant_id: str | None = None) -> int:
        m = t.messages.c
        q = sa.select(sa.func.count()).select_from(t.messages).where(ACTIVE_LITERAL)
        if tenant_id is not None:
            q = q.where(m.tenant_id == tenant_id)
        async with self._read() as conn:
            return int(await conn.scalar(q) or 0)

    async def oldest_pending_created_at(self) -> float | None:
        m = t.messages.c
        async with self._read() as conn:
            value = await conn.scalar(sa.select(sa.func.min(m.created_at)).where(ACTIVE_LITERAL))
        return float(value) if value is not None else None

    async def active_queue(self, now: float) -> ActiveQueue:
        m = t.messages.c
        # Due scheduled rows count as pending (as _record shows them). The CASE sits in a
        # subquery so that GROUP BY names it once: repeated, each copy would carry its own
        # bound ``now`` and PostgreSQL would not see them as one expression. The WHERE is the
        # claim index's (ix_messages_ready): only active rows are read, however many sent and
        # failed ones retention keeps (docs/operations.md, Prometheus: the measured cost).
        shown = sa.case(
            (
                sa.and_(
                    m.status == "scheduled",
                    sa.or_(m.deferred_ts.is_(None), m.deferred_ts <= now),
                ),
                "pending",
            ),
            else_=m.status,
        ).label("shown")
        rows = sa.select(shown, m.created_at).where(ACTIVE_LITERAL).subquery()
        q = sa.select(rows.c.shown, sa.func.count(), sa.func.min(rows.c.created_at)).group_by(
            rows.c.shown
        )
        async with self._read() as conn:
            found = (await conn.execute(q)).all()
        counts = dict.fromkeys(t.ACTIVE, 0)
        oldest = [float(r[2]) for r in found if r[2] is not None]
        for status, count, _ in found:
            counts[str(status)] = int(count)
        return ActiveQueue(counts=counts, oldest_created_at=min(oldest) if oldest else None)

    # -- suspension -------------------------------------------------------------------------------
    async def suspend(self, tenant_id: str, batch_code: str | None) -> list[str]:
        code = batch_code or "*"
        async with self._write() as conn:
            await conn.execute(
                self._insert_if_absent(t.suspensions).values(
                    tenant_id=tenant_id, batch_code=code, created_at=time.time()
                )
            )
        return await self.suspended_batches(tenant_id)

    async def activate(self, tenant_id: str, batch_code: str | None) -> list[str]:
        s = t.suspensions.c
        q = t.suspensions.delete().where(s.tenant_id == tenant_id)
        if batch_code is not None:
            q = q.where(s.batch_code == batch_code)
        async with self._write() as conn:
            await conn.execute(q)
        return await self.suspended_batches(tenant_id)

    async def list_suspensions(self, tenant_id: str | None = None) -> list[Suspension]:
        s = t.suspensions.c
        q = sa.select(s.tenant_id, s.batch_code, s.created_at).order_by(s.tenant_id, s.batch_code)
        if tenant_id is not None:
            q = q.where(s.tenant_id == tenant_id)
        async with self._read() as conn:
            return [
                Suspension(r.tenant_id, r.batch_code, float(r.created_at))
                for r in await conn.execute(q)
            ]

    async def suspended_batches(self, tenant_id: str) -> list[str]:
        s = t.suspensions.c
        async with self._read() as conn:
            rows = await conn.execute(
                sa.select(s.batch_code).where(s.tenant_id == tenant_id).order_by(s.batch_code)
            )
            return [r.batch_code for r in rows]


def list_query(flt: MessageFilter) -> sa.Select[Any]:
    """The query of ``list_messages``: a keyset page in ``pk`` order (either way) from the
    cursor, or ``(created_at, pk)`` order with a creation-time filter, filtered on columns
    that follow ``tenant_id`` in an index (ix_messages_tenant_*), so a page costs the same at
    the start and deep in a million rows. (bench ``console-pg`` checks its plans with
    EXPLAIN.)"""
    m = t.messages.c
    by_time = flt.created_since is not None or flt.created_until is not None
    keys = (m.created_at, m.pk) if by_time else (m.pk,)
    q = sa.select(t.messages).limit(flt.limit)
    q = q.order_by(*(k.desc() for k in keys) if flt.descending else keys)
    if flt.tenant_id is not None:
        q = q.where(m.tenant_id == flt.tenant_id)
    if flt.status is not None:
        q = q.where(m.status == flt.status)
    if flt.batch_code is not None:
        q = q.where(m.batch_code == flt.batch_code)
    if flt.account_id is not None:
        q = q.where(m.account_id == flt.account_id)
    if flt.created_since is not None:
        q = q.where(m.created_at >= flt.created_since)
    if flt.created_until is not None:
        q = q.where(m.created_at < flt.created_until)
    if flt.active_only:
        q = q.where(m.status.in_(t.ACTIVE))
    if flt.after_pk is not None:
        if by_time:
            position = sa.tuple_(m.created_at, m.pk)
            after = sa.tuple_(sa.literal(flt.after_created_at or 0.0), sa.literal(flt.after_pk))
            q = q.where(position < after if flt.descending else position > after)
        else:
            q = q.where(m.pk < flt.after_pk if flt.descending else m.pk > flt.after_pk)
    return q


def _delivered_recipients(stored: Any) -> list[dict[str, Any]] | None:
    """The stored recipient outcomes of a failed message, keeping only those delivered."""
    if not stored:
        return None
    kept = [r for r in stored if not isinstance(r, dict) or r.get("status") == "sent"]
    return kept or None
