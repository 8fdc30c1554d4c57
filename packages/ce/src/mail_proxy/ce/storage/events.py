"""The event outbox and the delivery-report sync state."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from mail_proxy.core.contracts.model import (
    EventRecord,
    NewEvent,
    SyncState,
)

from . import schema as t

if TYPE_CHECKING:
    pass

from .base import SqlBase, _chunks


class EventRepository(SqlBase):
    """The event outbox and the delivery-report sync state."""

    # -- events and reports -----------------------------------------------------------------------
    async def add_events(self, events: Sequence[NewEvent]) -> list[EventRecord]:
        if not events:
            return []
        m = t.messages.c
        wanted: dict[str, set[str]] = defaultdict(set)
        for ev in events:
            wanted[ev.tenant_id].add(ev.message_id)
        async with self._write() as conn:
            pks: dict[tuple[str, str], int] = {}  # one query per tenant and 500 ids
            for tenant_id, ids in wanted.items():
                for chunk in _chunks(sorted(ids), 500):
                    found = await conn.execute(
                        sa.select(m.pk, m.id).where(m.tenant_id == tenant_id, m.id.in_(chunk))
                    )
                    pks.update({(tenant_id, r.id): r.pk for r in found})
            rows: list[dict[str, Any]] = []
            for ev in events:
                pk = pks.get((ev.tenant_id, ev.message_id))
                if pk is None:
                    continue
                rows.append(
                    {
                        "tenant_id": ev.tenant_id,
                        "message_pk": pk,
                        "message_id": ev.message_id,
                        "event_type": ev.event_type,
                        "event_ts": ev.event_ts,
                        "description": ev.description,
                        "metadata": ev.metadata,
                        "reportable": True,
                        "reported_ts": None,
                    }
                )
            if rows:
                await self._insert_events(conn, rows)
        return [
            EventRecord(
                0,
                r["tenant_id"],
                r["message_pk"],
                r["message_id"],
                r["event_type"],
                r["event_ts"],
                r["description"],
                r["metadata"],
            )
            for r in rows
        ]

    async def fetch_unreported(
        self, tenant_id: str, limit: int, after_pk: int | None = None
    ) -> list[EventRecord]:
        e = t.events.c
        q = (
            sa.select(t.events)
            .where(e.tenant_id == tenant_id, e.reportable.is_(True), e.reported_ts.is_(None))
            .order_by(e.pk)
            .limit(limit)
        )
        if after_pk is not None:
            q = q.where(e.pk > after_pk)
        async with self._read() as conn:
            return [self._event(r) for r in await conn.execute(q)]

    async def acknowledge_events(self, tenant_id: str, event_pks: Sequence[int], now: float) -> int:
        if not event_pks:
            return 0
        e = t.events.c
        async with self._write() as conn:
            res = await conn.execute(
                t.events.update()
                .where(e.tenant_id == tenant_id, e.pk.in_(list(event_pks)), e.reported_ts.is_(None))
                .values(reported_ts=now)
            )
        return int(res.rowcount or 0)

    async def report_backlog(self) -> dict[str, int]:
        e = t.events.c
        async with self._read() as conn:
            rows = await conn.execute(
                sa.select(e.tenant_id, sa.func.count())
                .where(e.reportable.is_(True), e.reported_ts.is_(None))
                .group_by(e.tenant_id)
            )
            return {r[0]: int(r[1]) for r in rows}

    async def claim_report_sync(
        self, tenant_id: str, owner: str, now: float, lease_seconds: float
    ) -> bool:
        c = t.sync_state.c
        claim = (
            t.sync_state.update()
            .where(
                c.tenant_id == tenant_id,
                sa.or_(c.owner.is_(None), c.owner == owner, c.lease_until < now),
            )
            .values(owner=owner, lease_until=now + lease_seconds)
        )
        async with self._write() as conn:
            if (await conn.execute(claim)).rowcount:
                return True
            exists = await conn.scalar(sa.select(c.tenant_id).where(c.tenant_id == tenant_id))
            if exists is not None:
                return False
        try:
            async with self._write() as conn:
                await conn.execute(
                    t.sync_state.insert().values(
                        tenant_id=tenant_id,
                        failures=0,
                        owner=owner,
                        lease_until=now + lease_seconds,
                    )
                )
        except IntegrityError:
            return False  # another instance created the row (and holds the lease) first
        return True

    async def release_report_sync(self, tenant_id: str, owner: str) -> None:
        c = t.sync_state.c
        async with self._write() as conn:
            await conn.execute(
                t.sync_state.update()
                .where(c.tenant_id == tenant_id, c.owner == owner)
                .values(owner=None, lease_until=None)
            )

    async def get_sync_state(self, tenant_id: str) -> SyncState:
        async with self._read() as conn:
            row = (
                await conn.execute(
                    sa.select(t.sync_state).where(t.sync_state.c.tenant_id == tenant_id)
                )
            ).first()
        if row is None:
            return SyncState(tenant_id)
        return SyncState(
            tenant_id=row.tenant_id,
            last_sync_ts=row.last_sync_ts,
            last_success_ts=row.last_success_ts,
            next_due_ts=row.next_due_ts,
            dnd_until=row.dnd_until,
            failures=row.failures,
            last_error=row.last_error,
        )

    async def save_sync_state(self, state: SyncState) -> None:
        values = {
            "last_sync_ts": state.last_sync_ts,
            "last_success_ts": state.last_success_ts,
            "next_due_ts": state.next_due_ts,
            "dnd_until": state.dnd_until,
            "failures": state.failures,
            "last_error": state.last_error,
        }
        c = t.sync_state.c
        async with self._write() as conn:
            res = await conn.execute(
                t.sync_state.update().where(c.tenant_id == state.tenant_id).values(**values)
            )
            if not res.rowcount:
                await conn.execute(
                    t.sync_state.insert().values(tenant_id=state.tenant_id, **values)
                )
