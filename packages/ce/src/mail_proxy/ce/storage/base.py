"""The SQL storage's plumbing, shared by its repositories: connections (one writer at a time on
SQLite), secrets, row conversions, and the constants the repositories share.

Hot paths use SQLAlchemy Core with batched statements: one transaction per enqueue batch,
one claim statement pair per dispatch round, one transaction per group of outcomes.

Concurrency:
- PostgreSQL: claims take rows with ``FOR UPDATE SKIP LOCKED``, so several instances split the
  queue; rate-limit reservations serialise per bucket with a transaction-scoped advisory lock.
- SQLite: one writer. Every write transaction of this process goes through ``_write_lock``
  (SQLite itself allows one writer at a time; serialising here avoids busy waits and
  lock-upgrade deadlocks). Run one instance per SQLite file.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection

from mail_proxy.core.contracts.errors import StorageUnavailable
from mail_proxy.core.contracts.model import (
    Account,
    EventRecord,
    MessageRecord,
    NewMessage,
    RecipientOutcome,
    Tenant,
)
from mail_proxy.core.contracts.storage import (
    EnqueueResult,
)
from mail_proxy.core.engine.encryption import tenant_secret_context

from . import schema as t
from .engine import make_engine

if TYPE_CHECKING:
    from mail_proxy.core.engine.runtime import Runtime

REPLACEABLE = ("pending", "scheduled", "deferred")


# The partial index ix_messages_ready covers exactly these rows. The condition is written with
# literals (not bound parameters) so the planners can match it to the index's WHERE and walk
# it in (priority, pk) order instead of sorting the whole backlog on every claim.
def _status_literal(statuses: Sequence[str]) -> sa.TextClause:
    return sa.text(f"messages.status IN ({', '.join(repr(x) for x in statuses)})")


ACTIVE_LITERAL = _status_literal(t.ACTIVE)
FINISHED_LITERAL = _status_literal(t.FINISHED)
#: One waiting ``enqueue`` call: its messages, its time, the future its caller awaits.
_Job = tuple[list[NewMessage], float, "asyncio.Future[EnqueueResult]"]
#: Largest enqueue group committed in one transaction (messages; one call is never split).
MAX_GROUP_MESSAGES = 5000
EVENTS_LOCK = 7236002  # advisory lock key serialising outbox writers on PostgreSQL
WINDOWS = (("per_minute", 60.0), ("per_hour", 3600.0), ("per_day", 86400.0))


class SqlBase:
    """Connections, secrets and row conversions of the SQL storage."""

    def __init__(self, runtime: Runtime | None, url: str) -> None:
        self.runtime = runtime
        self.engine, self.dialect, self.schema = make_engine(url)
        self._write_lock = asyncio.Lock()
        self._enqueue_jobs: deque[_Job] = deque()
        self._enqueue_task: asyncio.Task[None] | None = None
        self._pg = self.dialect == "postgresql"

    # -- plumbing -----------------------------------------------------------------------
    @contextlib.asynccontextmanager
    async def _write(self) -> AsyncIterator[AsyncConnection]:
        """A write transaction (serialised in-process on SQLite)."""
        lock = contextlib.nullcontext() if self._pg else self._write_lock
        try:
            async with lock, self.engine.begin() as conn:  # type: ignore[attr-defined]
                yield conn
        except (OperationalError, DBAPIError, OSError) as exc:
            if _is_connection_error(exc):
                raise StorageUnavailable(str(exc).splitlines()[0]) from exc
            raise

    @contextlib.asynccontextmanager
    async def _read(self) -> AsyncIterator[AsyncConnection]:
        try:
            async with self.engine.connect() as conn:
                yield conn
        except (OperationalError, DBAPIError, OSError) as exc:
            if _is_connection_error(exc):
                raise StorageUnavailable(str(exc).splitlines()[0]) from exc
            raise

    def _insert_if_absent(self, table: sa.Table) -> Any:
        """``INSERT ... ON CONFLICT DO NOTHING`` in this database's dialect: an insert that a
        concurrent writer of the same key (another instance) cannot turn into an error."""
        insert = postgresql.insert if self._pg else sqlite.insert
        return insert(table).on_conflict_do_nothing()

    # -- secrets --------------------------------------------------------------------------
    def _encrypt(self, value: str | None, context: str) -> str | None:
        """``value`` encrypted for its place ``context`` (``secret_context``)."""
        if value is None:
            return None
        if self.runtime is None:
            raise RuntimeError("storing secrets needs a runtime with an encryption key")
        return self.runtime.encrypt(value, context)

    def _decrypt(self, value: str | None, context: str) -> str | None:
        if value is None or self.runtime is None:
            return None
        return self.runtime.decrypt(value, context)

    # -- tenants --------------------------------------------------------------------------
    def _tenant(self, row: Any) -> Tenant:
        auth = self._decrypt(row.client_auth_enc, tenant_secret_context("client_auth_enc", row.id))
        return Tenant(
            id=row.id,
            name=row.name,
            active=bool(row.active),
            client_base_url=row.client_base_url,
            client_sync_path=row.client_sync_path,
            client_attachment_path=row.client_attachment_path,
            client_auth=json.loads(auth) if auth else None,
            rate_limits=row.rate_limits,
            sync_secret=self._decrypt(
                row.sync_secret_enc, tenant_secret_context("sync_secret_enc", row.id)
            ),
            created_at=row.created_at,
            updated_at=row.updated_at,
        )

    # -- accounts ---------------------------------------------------------------------------
    @staticmethod
    def _account(row: Any) -> Account:
        return Account(
            tenant_id=row.tenant_id,
            id=row.id,
            host=row.host,
            port=row.port,
            user=row.user,
            password_enc=row.password_enc,
            use_tls=row.use_tls,
            starttls=row.starttls,
            timeout=row.timeout,
            message_timeout=row.message_timeout,
            max_connections=row.max_connections,
            allow_plaintext_auth=bool(row.allow_plaintext_auth),
            batch_size=row.batch_size,
            limit_per_minute=row.limit_per_minute,
            limit_per_hour=row.limit_per_hour,
            limit_per_day=row.limit_per_day,
            limit_behavior=row.limit_behavior,
            default=bool(row.is_default),
            transport=row.transport,
            options=row.options or {},
            extra=row.extra or {},
            created_at=row.created_at,
            updated_at=row.updated_at,
        )

    # -- messages ---------------------------------------------------------------------------
    def _record(self, row: Any, now: float | None = None) -> MessageRecord:
        status = row.status
        if status == "scheduled" and (
            row.deferred_ts is None or row.deferred_ts <= (now or time.time())
        ):
            status = "pending"
        return MessageRecord(
            pk=row.pk,
            tenant_id=row.tenant_id,
            id=row.id,
            account_id=row.account_id,
            priority=row.priority,
            status=status,
            payload=row.payload,
            message_id=row.message_id,
            batch_code=row.batch_code,
            attempts=row.attempts,
            deferred_ts=row.deferred_ts,
            sent_ts=row.sent_ts,
            error_ts=row.error_ts,
            error=row.error,
            smtp_code=row.smtp_code,
            created_at=row.created_at,
            recipients=[RecipientOutcome.from_json(r) for r in row.recipients or ()],
            uncertain=bool(row.uncertain),
            claim_token=row.claim_token,
            lease_until=row.lease_until,
        )

    def _lock_for_change(self, query: sa.Select[Any]) -> sa.Select[Any]:
        """On PostgreSQL, lock the message rows read before replacing or deleting them.

        Without the lock, a claim by another transaction (or instance) could commit between
        our status check and our DELETE: the message would be removed while being sent, and
        sent again as its replacement. Locked rows are skipped by claims (``SKIP LOCKED``); a
        row a claim took first makes us wait and then read ``sending``. (SQLite serialises
        writers already.)"""
        return query.with_for_update(of=t.messages) if self._pg else query

    @staticmethod
    def _event(row: Any) -> EventRecord:
        return EventRecord(
            pk=row.pk,
            tenant_id=row.tenant_id,
            message_pk=row.message_pk,
            message_id=row.message_id,
            event_type=row.event_type,
            event_ts=row.event_ts,
            description=row.description,
            metadata=row.metadata or {},
            reported_ts=row.reported_ts,
        )

    async def _insert_events(self, conn: AsyncConnection, rows: list[dict[str, Any]]) -> None:
        """Insert outbox events so that ``pk`` order is commit order.

        On PostgreSQL, concurrent transactions could otherwise commit a lower ``pk`` after a
        higher one, and a pull client paging with ``after=<pk>`` would skip it. The
        transaction-scoped advisory lock serialises event writers (short transactions) until
        commit; SQLite has one writer anyway.
        """
        if self._pg:
            await conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": EVENTS_LOCK})
        await conn.execute(t.events.insert(), rows)


#: PostgreSQL error codes of a server that is away: class 08 (connection exception), and
#: admin/crash shutdown and "cannot connect now" (starting up, shutting down, in recovery).
_SERVER_AWAY = ("08", "57P01", "57P02", "57P03")


def _is_connection_error(exc: BaseException) -> bool:
    if isinstance(exc, OSError | ConnectionError):
        return True
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    cause: BaseException | None = exc
    for _ in range(8):  # the driver's error under SQLAlchemy's wrappers
        if cause is None:
            break
        code = getattr(cause, "sqlstate", None) or getattr(cause, "pgcode", None)
        if isinstance(code, str) and code.startswith(_SERVER_AWAY):
            return True
        cause = getattr(cause, "orig", None) or cause.__cause__
    text = str(exc).lower()
    return any(
        s in text
        for s in (
            "connection refused",
            "could not connect",
            "connection was closed",
            "unable to open database",
            "cannot connect",
        )
    )


def _apply(transform: Callable[[str, str], str], value: str | None, context: str) -> str | None:
    return None if value is None else transform(value, context)


def _chunks(items: list[str], size: int) -> list[list[str]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def _message_row(msg: NewMessage, now: float) -> dict[str, Any]:
    future = msg.deferred_ts is not None and msg.deferred_ts > now
    return {
        "tenant_id": msg.tenant_id,
        "id": msg.id,
        "account_id": msg.account_id,
        "priority": msg.priority,
        "status": "scheduled" if future else "pending",
        "batch_code": msg.batch_code,
        "payload": msg.payload,
        "message_id": msg.message_id,
        "deferred_ts": msg.deferred_ts,
        "created_at": now,
        "updated_at": now,
    }
