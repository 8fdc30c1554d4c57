"""Dispatch: claims, outcomes with their events (fenced), rate-limit reservations."""

from __future__ import annotations

import zlib
from collections import defaultdict
from collections.abc import Collection, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from mail_proxy.core.contracts.model import (
    MessageRecord,
    Outcome,
)
from mail_proxy.core.contracts.storage import (
    RateLimits,
    Reservation,
)

from . import schema as t

if TYPE_CHECKING:
    pass

from .base import ACTIVE_LITERAL, REPLACEABLE, WINDOWS, SqlBase


class DispatchRepository(SqlBase):
    """Dispatch: claims, outcomes with their events (fenced), rate-limit reservations."""

    # -- dispatch ------------------------------------------------------------------------------------
    async def claim_messages(
        self,
        instance_id: str,
        now: float,
        limit: int,
        lease_seconds: float,
        per_account_limit: int,
        *,
        skip_accounts: Collection[tuple[str, str]] = (),
        busy: Mapping[tuple[str, str], int] | None = None,
        per_connection: int = 1,
    ) -> list[MessageRecord]:
        m = t.messages.c
        s = t.suspensions.c
        ready = sa.or_(
            sa.and_(
                m.status.in_(REPLACEABLE), sa.or_(m.deferred_ts.is_(None), m.deferred_ts <= now)
            ),
            # A lease that ran out: the claimer died or stalled (or it is this instance,
            # whose dispatcher carries on with a delivery it still has: Dispatcher._adopt).
            sa.and_(m.status == "sending", m.lease_until < now),
        )
        suspended = (
            sa.select(s.tenant_id)
            .where(
                s.tenant_id == m.tenant_id,
                sa.or_(s.batch_code == "*", s.batch_code == m.batch_code),
            )
            .exists()
        )
        inactive = (
            sa.select(t.tenants.c.id)
            .where(t.tenants.c.id == m.tenant_id, t.tenants.c.active.is_(False))
            .exists()
        )
        a = t.accounts.c
        account_batch = (
            sa.select(a.batch_size)
            .where(a.tenant_id == m.tenant_id, a.id == m.account_id)
            .scalar_subquery()
            .label("account_batch")
        )
        account_connections = (
            sa.select(a.max_connections)
            .where(a.tenant_id == m.tenant_id, a.id == m.account_id)
            .scalar_subquery()
            .label("account_connections")
        )
        q = (
            sa.select(m.pk, m.tenant_id, m.account_id, account_batch, account_connections)
            .where(ACTIVE_LITERAL, ready, ~suspended, ~inactive)
            .order_by(m.priority, m.pk)
            .limit(limit)
        )
        if skip_accounts:  # accounts with every connection busy: leave their queue alone
            q = q.where(~sa.tuple_(m.tenant_id, m.account_id).in_(list(skip_accounts)))
        if self._pg:
            q = q.with_for_update(skip_locked=True, of=t.messages)
        async with self._write() as conn:
            candidates = (await conn.execute(q)).all()
            per_account: dict[tuple[str, str], int] = defaultdict(int)
            chosen: list[int] = []
            in_flight = busy or {}
            for row in candidates:
                key = (row.tenant_id, row.account_id)
                # at most a round's batch, and no more than the account's free connections
                connections = row.account_connections or per_account_limit
                room = per_connection * connections - in_flight.get(key, 0)
                if per_account[key] < min(row.account_batch or per_account_limit, room):
                    per_account[key] += 1
                    chosen.append(row.pk)
            if not chosen:
                return []
            result = await conn.execute(
                t.messages.update()
                .where(m.pk.in_(chosen))
                .values(
                    status="sending",
                    claim_token=m.claim_token + 1,
                    claimed_by=instance_id,
                    lease_until=now + lease_seconds,
                    updated_at=now,
                    # retaken from another instance after its lease expired mid-send: it may
                    # have been delivered already
                    uncertain=sa.case(
                        (sa.and_(m.status == "sending", m.claimed_by != instance_id), sa.true()),
                        else_=m.uncertain,
                    ),
                )
                .returning(*t.messages.c)
            )
            records = [self._record(r, now) for r in result]
        records.sort(key=lambda r: (r.priority, r.pk))
        return records

    async def record_outcomes(self, outcomes: Sequence[Outcome]) -> list[int]:
        if not outcomes:
            return []
        m = t.messages.c
        async with self._write() as conn:
            q = sa.select(m.pk, m.claim_token, m.tenant_id, m.id, m.attempts, m.recipients).where(
                m.pk.in_([o.pk for o in outcomes]), m.status == "sending"
            )
            if self._pg:
                q = q.with_for_update(of=t.messages)
            current = {r.pk: r for r in await conn.execute(q)}
            updates: list[dict[str, Any]] = []
            released: list[dict[str, Any]] = []
            new_events: list[dict[str, Any]] = []
            applied: list[int] = []
            for o in outcomes:
                row = current.get(o.pk)
                if row is None or row.claim_token != o.claim_token:
                    continue  # fenced: another claim owns this message now
                applied.append(o.pk)
                if o.kind == "released":  # untouched: back to pending, no attempt, no event
                    released.append(
                        {
                            "b_pk": o.pk,
                            "b_token": o.claim_token,
                            "v_ts": o.ts,
                            "v_uncertain": bool(o.metadata.get("uncertain")),
                        }
                    )
                    continue
                attempts = row.attempts + (1 if o.count_attempt else 0)
                updates.append(
                    {
                        "b_pk": o.pk,
                        "b_token": o.claim_token,
                        "v_status": o.kind,
                        "v_attempts": attempts,
                        "v_updated_at": o.ts,
                        "v_lease_until": None,
                        "v_claimed_by": None,
                        "v_sent_ts": o.ts if o.kind == "sent" else None,
                        "v_error_ts": o.ts if o.kind == "error" else None,
                        "v_error": o.error,
                        "v_smtp_code": o.smtp_code,
                        "v_deferred_ts": o.deferred_ts if o.kind == "deferred" else None,
                        "v_recipients": row.recipients
                        if o.recipients is None
                        else [r.public() for r in o.recipients],
                    }
                )
                meta = dict(o.metadata)
                if o.smtp_code is not None:
                    meta.setdefault("smtp_code", o.smtp_code)
                meta.setdefault("attempts", attempts)
                if o.kind == "deferred":
                    meta.setdefault("deferred_ts", o.deferred_ts)
                    if o.deferred_reason:
                        meta.setdefault("deferred_reason", o.deferred_reason)
                new_events.append(
                    {
                        "tenant_id": row.tenant_id,
                        "message_pk": o.pk,
                        "message_id": row.id,
                        "event_type": o.kind,
                        "event_ts": o.ts,
                        "description": o.error
                        if o.kind != "deferred"
                        else (o.deferred_reason or o.error),
                        "metadata": meta,
                        "reportable": True,
                        "reported_ts": None,
                    }
                )
            fenced = sa.and_(m.pk == sa.bindparam("b_pk"), m.claim_token == sa.bindparam("b_token"))
            if updates:
                columns = [k[2:] for k in updates[0] if k.startswith("v_")]
                await conn.execute(
                    t.messages.update()
                    .where(fenced)
                    .values({k: sa.bindparam(f"v_{k}") for k in columns}),
                    updates,
                )
            if released:
                await conn.execute(
                    t.messages.update()
                    .where(fenced)
                    .values(
                        status="pending",
                        lease_until=None,
                        claimed_by=None,
                        updated_at=sa.bindparam("v_ts"),
                        # given back mid-send (shutdown): it may have been delivered
                        uncertain=sa.case(
                            (sa.bindparam("v_uncertain", type_=sa.Boolean), sa.true()),
                            else_=m.uncertain,
                        ),
                    ),
                    released,
                )
            if new_events:
                await self._insert_events(conn, new_events)
        return applied

    async def reserve_sends(
        self, bucket: str, want: int, now: float, limits: RateLimits
    ) -> Reservation:
        if not limits.any() or want <= 0:
            return Reservation(max(want, 0))
        sl = t.send_log.c
        async with self._write() as conn:
            if self._pg:
                await conn.execute(
                    sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": zlib.crc32(bucket.encode())}
                )
            longest = max(w for name, w in WINDOWS if getattr(limits, name))
            counts_q = sa.select(
                *[
                    sa.func.coalesce(sa.func.sum(sa.case((sl.ts > now - w, 1), else_=0)), 0).label(
                        name
                    )
                    for name, w in WINDOWS
                ]
            ).where(sl.bucket == bucket, sl.ts > now - longest)
            counts = (await conn.execute(counts_q)).one()
            granted = want
            for name, _w in WINDOWS:
                limit = getattr(limits, name)
                if limit:
                    granted = min(granted, max(0, limit - int(getattr(counts, name))))
            if granted:
                await conn.execute(t.send_log.insert(), [{"bucket": bucket, "ts": now}] * granted)
            next_free: float | None = None
            if granted < want:
                for name, w in WINDOWS:
                    limit = getattr(limits, name)
                    if not limit:
                        continue
                    used = int(getattr(counts, name)) + granted
                    if used < limit:
                        continue
                    # Room returns when the oldest (used - limit + 1) entries leave the window.
                    ts = await conn.scalar(
                        sa.select(sl.ts)
                        .where(sl.bucket == bucket, sl.ts > now - w)
                        .order_by(sl.ts)
                        .offset(used - limit)
                        .limit(1)
                    )
                    if ts is not None:
                        candidate = float(ts) + w
                        next_free = candidate if next_free is None else max(next_free, candidate)
                if next_free is None:
                    next_free = now + 1.0
        return Reservation(granted, next_free)

    async def release_sends(self, bucket: str, count: int, now: float) -> None:
        if count <= 0:
            return
        sl = t.send_log.c
        async with self._write() as conn:
            pks = (
                (
                    await conn.execute(
                        sa.select(sl.pk)
                        .where(sl.bucket == bucket, sl.ts == now)
                        .order_by(sl.pk.desc())
                        .limit(count)
                    )
                )
                .scalars()
                .all()
            )
            if pks:
                await conn.execute(t.send_log.delete().where(sl.pk.in_(pks)))

    async def prune_send_log(self, older_than_ts: float) -> int:
        async with self._write() as conn:
            res = await conn.execute(t.send_log.delete().where(t.send_log.c.ts < older_than_ts))
        return int(res.rowcount or 0)
