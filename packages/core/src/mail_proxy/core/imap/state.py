"""Where an IMAP poller keeps its place in a mailbox, and who may poll it.

A mailbox's state is two numbers: the folder's UIDVALIDITY and the highest UID already handled
(:class:`MailboxState`). The poller loads it at each cycle and saves it as it goes.

The lease makes one instance at a time poll a mailbox when several share a database: an owner
takes it for ``ttl_seconds`` and renews it while working; whoever finds it free or expired may
take it over. Lease times are the instances' wall clocks (``time.time()``), so their clocks
must agree to well within the TTL.

:class:`SqlMailboxStateStore` keeps both in one table that the plugin using the kit creates in
its own metadata (and migration) with :func:`mailbox_state_table`; it runs on SQLite and
PostgreSQL. :class:`MemoryMailboxStateStore` is for a single process (and tests).
SQLAlchemy is imported only by the SQL store, so the poller itself does not need it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from sqlalchemy import MetaData, Table
    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine


@dataclass(frozen=True)
class MailboxState:
    """The folder's UIDVALIDITY (``None``: never seen) and the last UID handled there."""

    uidvalidity: int | None = None
    last_uid: int = 0


class MailboxStateStore(Protocol):
    """Persistence of :class:`MailboxState` per mailbox key, plus the polling lease."""

    async def load(self, key: str) -> MailboxState:
        """The saved state, or ``MailboxState()`` for a mailbox never polled."""
        ...

    async def save(self, key: str, state: MailboxState) -> None: ...

    async def try_lease(self, key: str, owner: str, ttl_seconds: float) -> bool:
        """Take or renew the lease: true when ``owner`` holds it for ``ttl_seconds`` from now."""
        ...

    async def release(self, key: str, owner: str) -> None:
        """Give the lease up (nothing happens when someone else holds it)."""
        ...


class MemoryMailboxStateStore:
    """A :class:`MailboxStateStore` in memory: one process, nothing survives a restart."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self.states: dict[str, MailboxState] = {}
        self.leases: dict[str, tuple[str, float]] = {}

    async def load(self, key: str) -> MailboxState:
        return self.states.get(key, MailboxState())

    async def save(self, key: str, state: MailboxState) -> None:
        self.states[key] = state

    async def try_lease(self, key: str, owner: str, ttl_seconds: float) -> bool:
        now = self.clock()
        holder = self.leases.get(key)
        if holder is not None and holder[0] != owner and holder[1] >= now:
            return False
        self.leases[key] = (owner, now + ttl_seconds)
        return True

    async def release(self, key: str, owner: str) -> None:
        holder = self.leases.get(key)
        if holder is not None and holder[0] == owner:
            del self.leases[key]


def mailbox_state_table(metadata: MetaData, name: str) -> Table:
    """The state table for :class:`SqlMailboxStateStore`, defined in the caller's metadata.

    Columns: ``mailbox_key`` (primary key), ``uidvalidity`` and ``last_uid`` (the state),
    ``lease_owner`` and ``lease_until`` (the lease; epoch seconds), ``updated_at`` (epoch
    seconds of the last write).
    """
    import sqlalchemy as sa

    return sa.Table(
        name,
        metadata,
        sa.Column("mailbox_key", sa.String(255), primary_key=True),
        sa.Column("uidvalidity", sa.BigInteger, nullable=True),
        sa.Column("last_uid", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("lease_owner", sa.String(255), nullable=True),
        sa.Column("lease_until", sa.Float, nullable=True),
        sa.Column("updated_at", sa.Float, nullable=True),
    )


class SqlMailboxStateStore:
    """A :class:`MailboxStateStore` on a table made by :func:`mailbox_state_table`.

    The lease is a conditional write, safe between instances on SQLite and PostgreSQL: the row
    is inserted if missing (``INSERT ... ON CONFLICT DO NOTHING``), then
    ``UPDATE ... SET lease_owner = me WHERE lease_owner = me OR lease is free or expired``;
    the row count says who won (PostgreSQL re-checks the condition after a concurrent update's
    commit; SQLite has one writer at a time). Other dialects insert under a savepoint instead.
    """

    def __init__(
        self, engine: AsyncEngine, table: Table, clock: Callable[[], float] = time.time
    ) -> None:
        self.engine = engine
        self.table = table
        self.clock = clock

    async def load(self, key: str) -> MailboxState:
        import sqlalchemy as sa

        t = self.table
        async with self.engine.connect() as conn:
            row = (
                await conn.execute(
                    sa.select(t.c.uidvalidity, t.c.last_uid).where(t.c.mailbox_key == key)
                )
            ).first()
        if row is None:
            return MailboxState()
        return MailboxState(
            uidvalidity=None if row.uidvalidity is None else int(row.uidvalidity),
            last_uid=int(row.last_uid or 0),
        )

    async def save(self, key: str, state: MailboxState) -> None:
        import sqlalchemy as sa

        t = self.table
        values = {
            "uidvalidity": state.uidvalidity,
            "last_uid": state.last_uid,
            "updated_at": self.clock(),
        }
        async with self.engine.begin() as conn:
            result = await conn.execute(sa.update(t).where(t.c.mailbox_key == key).values(**values))
            if result.rowcount == 0:
                await self._insert_missing(conn, {"mailbox_key": key, **values})
                await conn.execute(sa.update(t).where(t.c.mailbox_key == key).values(**values))

    async def try_lease(self, key: str, owner: str, ttl_seconds: float) -> bool:
        import sqlalchemy as sa

        t = self.table
        now = self.clock()
        async with self.engine.begin() as conn:
            await self._insert_missing(conn, {"mailbox_key": key, "last_uid": 0, "updated_at": now})
            result = await conn.execute(
                sa.update(t)
                .where(
                    t.c.mailbox_key == key,
                    sa.or_(
                        t.c.lease_owner == owner,
                        t.c.lease_owner.is_(None),
                        t.c.lease_until.is_(None),
                        t.c.lease_until < now,
                    ),
                )
                .values(lease_owner=owner, lease_until=now + ttl_seconds, updated_at=now)
            )
            return result.rowcount == 1

    async def release(self, key: str, owner: str) -> None:
        import sqlalchemy as sa

        t = self.table
        async with self.engine.begin() as conn:
            await conn.execute(
                sa.update(t)
                .where(t.c.mailbox_key == key, t.c.lease_owner == owner)
                .values(lease_owner=None, lease_until=None, updated_at=self.clock())
            )

    async def _insert_missing(self, conn: AsyncConnection, values: dict[str, Any]) -> None:
        """Insert the row unless one with that key exists (never an error for a race)."""
        import sqlalchemy as sa

        t = self.table
        dialect = conn.dialect.name
        if dialect == "postgresql":
            from sqlalchemy.dialects import postgresql

            pg_insert = postgresql.insert(t).values(**values)
            await conn.execute(pg_insert.on_conflict_do_nothing(index_elements=[t.c.mailbox_key]))
            return
        if dialect == "sqlite":
            from sqlalchemy.dialects import sqlite

            lite_insert = sqlite.insert(t).values(**values)
            await conn.execute(lite_insert.on_conflict_do_nothing(index_elements=[t.c.mailbox_key]))
            return
        exists = (
            await conn.execute(
                sa.select(t.c.mailbox_key).where(t.c.mailbox_key == values["mailbox_key"])
            )
        ).first()
        if exists is None:
            try:
                async with conn.begin_nested():
                    await conn.execute(sa.insert(t).values(**values))
            except sa.exc.IntegrityError:
                pass  # inserted meanwhile by another instance
