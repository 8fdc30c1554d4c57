"""The PEC plugin's own tables (migration branch ``pec``) and the queries on them.

- ``pec_mailboxes``: where each PEC mailbox poller stands (UIDVALIDITY, last UID) and who
  polls it (the lease): the core IMAP kit's state table;
- ``pec_messages``: the messages sent through a PEC account, written before each delivery
  attempt: their recipients (for "delivered to every recipient"), when they were last tried,
  and what is known of them (acceptance, full delivery, timeout);
- ``pec_receipts``: every receipt already handled, keyed by a digest of what identifies it,
  so a receipt read twice (a restart, a UIDVALIDITY change, a copy) is handled once.

Plain SQLAlchemy Core on ``runtime.storage.database``; every statement runs on SQLite and
PostgreSQL alike.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from mail_proxy.core.contracts.extensions import NAMING_CONVENTION
from mail_proxy.core.imap.state import mailbox_state_table

if TYPE_CHECKING:
    from mail_proxy.core.engine.runtime import Runtime

metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)

mailboxes = mailbox_state_table(metadata, "pec_mailboxes")

messages = sa.Table(
    "pec_messages",
    metadata,
    sa.Column("tenant_id", sa.String(128), primary_key=True),
    sa.Column("msg_id", sa.String(255), primary_key=True),  # the client's message id
    sa.Column("message_pk", sa.BigInteger, nullable=False),
    sa.Column("account_id", sa.String(255), nullable=False),
    sa.Column("message_id", sa.Text, nullable=False),  # the generated Message-ID
    sa.Column("recipients", sa.JSON, nullable=False),
    sa.Column("attempt_ts", sa.Float, nullable=False),
    #: the timeout check does not look at the row before this time
    sa.Column("check_after", sa.Float, nullable=False),
    sa.Column("acceptance_ts", sa.Float, nullable=True),
    sa.Column("delivery_ts", sa.Float, nullable=True),
    sa.Column("timeout_ts", sa.Float, nullable=True),
    #: nothing more to wait for (failed, deleted, or replaced message)
    sa.Column("closed", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Index("ix_pec_messages_check_after", "check_after"),
    sa.Index("ix_pec_messages_account", "tenant_id", "account_id"),
)

receipts = sa.Table(
    "pec_receipts",
    metadata,
    sa.Column("receipt_key", sa.String(64), primary_key=True),
    sa.Column("tenant_id", sa.String(128), nullable=False),
    sa.Column("account_id", sa.String(255), nullable=False),
    sa.Column("kind", sa.String(64), nullable=True),
    sa.Column("reference", sa.Text, nullable=True),
    sa.Column("msg_id", sa.String(255), nullable=True),
    #: recorded, unknown_message, other_account, duplicate
    sa.Column("outcome", sa.String(32), nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Index("ix_pec_receipts_created_at", "created_at"),
)


@dataclass
class TrackedMessage:
    """One row of ``pec_messages``."""

    tenant_id: str
    msg_id: str
    message_pk: int
    account_id: str
    message_id: str
    recipients: list[str]
    attempt_ts: float
    acceptance_ts: float | None = None
    delivery_ts: float | None = None
    timeout_ts: float | None = None
    closed: bool = False


def _tracked(row: Any) -> TrackedMessage:
    return TrackedMessage(
        row.tenant_id,
        row.msg_id,
        int(row.message_pk),
        row.account_id,
        row.message_id,
        list(row.recipients or []),
        float(row.attempt_ts),
        row.acceptance_ts,
        row.delivery_ts,
        row.timeout_ts,
        bool(row.closed),
    )


class PecTables:
    """The queries of the PEC plugin on its own tables."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    # -- pec_messages -----------------------------------------------------------------------
    async def track(
        self,
        *,
        tenant_id: str,
        msg_id: str,
        message_pk: int,
        account_id: str,
        message_id: str,
        recipients: Sequence[str],
        now: float,
        timeout: float,
    ) -> None:
        """Note a delivery attempt of a PEC message (insert, or update the row: a later
        attempt adds recipients and moves the timeout; a new message under an old id starts
        afresh)."""
        m = messages.c
        wanted = sorted({r.lower() for r in recipients})
        key = (m.tenant_id == tenant_id, m.msg_id == msg_id)
        async with self.engine.begin() as conn:
            row = (await conn.execute(sa.select(messages).where(*key))).first()
            if row is not None and int(row.message_pk) == message_pk:
                merged = sorted(set(row.recipients or []) | set(wanted))
                values: dict[str, Any] = {"recipients": merged, "attempt_ts": now}
                if row.acceptance_ts is None and row.timeout_ts is None:
                    values["check_after"] = now + timeout
                await conn.execute(sa.update(messages).where(*key).values(**values))
                return
            if row is not None:
                await conn.execute(sa.delete(messages).where(*key))
            await conn.execute(
                sa.insert(messages).values(
                    tenant_id=tenant_id,
                    msg_id=msg_id,
                    message_pk=message_pk,
                    account_id=account_id,
                    message_id=message_id,
                    recipients=wanted,
                    attempt_ts=now,
                    check_after=now + timeout,
                    closed=False,
                    created_at=now,
                )
            )

    async def tracked(self, tenant_id: str, msg_id: str) -> TrackedMessage | None:
        m = messages.c
        async with self.engine.connect() as conn:
            row = (
                await conn.execute(
                    sa.select(messages).where(m.tenant_id == tenant_id, m.msg_id == msg_id)
                )
            ).first()
        return _tracked(row) if row is not None else None

    async def set_acceptance(self, tenant_id: str, msg_id: str, ts: float) -> None:
        """The first acceptance wins (a second one changes nothing)."""
        m = messages.c
        async with self.engine.begin() as conn:
            await conn.execute(
                sa.update(messages)
                .where(m.tenant_id == tenant_id, m.msg_id == msg_id, m.acceptance_ts.is_(None))
                .values(acceptance_ts=ts)
            )

    async def set_delivery(self, tenant_id: str, msg_id: str, ts: float) -> None:
        m = messages.c
        async with self.engine.begin() as conn:
            await conn.execute(
                sa.update(messages)
                .where(m.tenant_id == tenant_id, m.msg_id == msg_id, m.delivery_ts.is_(None))
                .values(delivery_ts=ts)
            )

    async def due_for_timeout(self, now: float, limit: int) -> list[TrackedMessage]:
        """Open rows with no acceptance and no timeout yet whose check time has come."""
        m = messages.c
        async with self.engine.connect() as conn:
            rows = await conn.execute(
                sa.select(messages)
                .where(
                    m.check_after <= now,
                    m.acceptance_ts.is_(None),
                    m.timeout_ts.is_(None),
                    m.closed.is_(False),
                )
                .order_by(m.check_after)
                .limit(limit)
            )
            return [_tracked(r) for r in rows]

    async def postpone(self, tenant_id: str, msg_id: str, until: float) -> None:
        m = messages.c
        async with self.engine.begin() as conn:
            await conn.execute(
                sa.update(messages)
                .where(m.tenant_id == tenant_id, m.msg_id == msg_id)
                .values(check_after=until)
            )

    async def close(self, tenant_id: str, msg_id: str) -> None:
        m = messages.c
        async with self.engine.begin() as conn:
            await conn.execute(
                sa.update(messages)
                .where(m.tenant_id == tenant_id, m.msg_id == msg_id)
                .values(closed=True)
            )

    async def claim_timeout(self, tenant_id: str, msg_id: str, now: float) -> bool:
        """Mark the timeout once: true for the one caller (of any instance) that did."""
        m = messages.c
        async with self.engine.begin() as conn:
            result = await conn.execute(
                sa.update(messages)
                .where(
                    m.tenant_id == tenant_id,
                    m.msg_id == msg_id,
                    m.timeout_ts.is_(None),
                    m.acceptance_ts.is_(None),
                )
                .values(timeout_ts=now)
            )
            return bool(result.rowcount == 1)

    async def waiting(self, tenant_id: str, account_id: str) -> dict[str, int]:
        """Open messages of a PEC account still waiting for their acceptance, and accepted
        ones not yet delivered to every recipient."""
        m = messages.c
        open_rows = sa.and_(
            m.tenant_id == tenant_id, m.account_id == account_id, m.closed.is_(False)
        )
        async with self.engine.connect() as conn:
            acceptance = await conn.scalar(
                sa.select(sa.func.count())
                .select_from(messages)
                .where(open_rows, m.acceptance_ts.is_(None))
            )
            delivery = await conn.scalar(
                sa.select(sa.func.count())
                .select_from(messages)
                .where(open_rows, m.acceptance_ts.is_not(None), m.delivery_ts.is_(None))
            )
        return {"acceptance": int(acceptance or 0), "delivery": int(delivery or 0)}

    # -- pec_receipts -----------------------------------------------------------------------
    async def receipt_seen(self, key: str) -> bool:
        r = receipts.c
        async with self.engine.connect() as conn:
            found = await conn.scalar(sa.select(r.outcome).where(r.receipt_key == key))
        return found is not None

    async def remember_receipt(
        self,
        key: str,
        *,
        tenant_id: str,
        account_id: str,
        kind: str | None,
        reference: str | None,
        msg_id: str | None,
        outcome: str,
    ) -> None:
        """Note a handled receipt (a second note of the same key changes nothing)."""
        async with self.engine.begin() as conn:
            await _insert_ignore(
                conn,
                receipts,
                {
                    "receipt_key": key,
                    "tenant_id": tenant_id,
                    "account_id": account_id,
                    "kind": kind,
                    "reference": reference,
                    "msg_id": msg_id,
                    "outcome": outcome,
                    "created_at": time.time(),
                },
            )

    # -- housekeeping -----------------------------------------------------------------------
    async def prune(self, older_than: float) -> int:
        """Forget receipts and messages older than ``older_than`` (epoch seconds)."""
        async with self.engine.begin() as conn:
            gone = await conn.execute(sa.delete(receipts).where(receipts.c.created_at < older_than))
            gone_messages = await conn.execute(
                sa.delete(messages).where(messages.c.created_at < older_than)
            )
        return int(gone.rowcount or 0) + int(gone_messages.rowcount or 0)

    async def delete_tenant(self, tenant_id: str) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(sa.delete(messages).where(messages.c.tenant_id == tenant_id))
            await conn.execute(sa.delete(receipts).where(receipts.c.tenant_id == tenant_id))
            await conn.execute(
                sa.delete(mailboxes).where(
                    mailboxes.c.mailbox_key.startswith(f"pec:{tenant_id}:", autoescape=True)
                )
            )


def tables_of(runtime: Runtime) -> PecTables:
    """This runtime's :class:`PecTables` (on ``runtime.storage.database``)."""
    return runtime.local(PecTables, lambda rt: PecTables(rt.storage.database))


async def _insert_ignore(conn: AsyncConnection, table: sa.Table, values: dict[str, Any]) -> None:
    """Insert unless a row with the same primary key exists (never an error for a race)."""
    keys = [c.name for c in table.primary_key.columns]
    dialect = conn.dialect.name
    if dialect in ("postgresql", "sqlite"):
        module = postgresql if dialect == "postgresql" else sqlite
        stmt = module.insert(table).values(**values).on_conflict_do_nothing(index_elements=keys)
        await conn.execute(stmt)
        return
    where = [table.c[k] == values[k] for k in keys]
    if (await conn.execute(sa.select(*table.primary_key.columns).where(*where))).first():
        return
    try:
        async with conn.begin_nested():
            await conn.execute(sa.insert(table).values(**values))
    except sa.exc.IntegrityError:
        pass  # inserted meanwhile
