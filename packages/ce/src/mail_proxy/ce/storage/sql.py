"""SqlStorage: the core Storage interface on SQLAlchemy 2 async (SQLite and PostgreSQL).

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
import zlib
from collections import defaultdict, deque
from collections.abc import AsyncIterator, Callable, Collection, Sequence
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection

from mail_proxy.core.contracts.errors import StorageUnavailable
from mail_proxy.core.contracts.model import (
    DEFAULT_TENANT,
    Account,
    CommandLogEntry,
    EventRecord,
    MessageRecord,
    NewEvent,
    NewMessage,
    Outcome,
    RecipientOutcome,
    SyncState,
    Tenant,
)
from mail_proxy.core.contracts.storage import (
    DeleteResult,
    EnqueueResult,
    MessageFilter,
    RateLimits,
    Reservation,
    Storage,
)
from mail_proxy.core.engine.attachments import SEALED_AUTH
from mail_proxy.core.engine.runtime import KEY_CHECK_SETTING

from . import schema as t
from .engine import make_engine, migrate
from .plugin_data import PluginDataMixin

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


class SqlStorage(PluginDataMixin, Storage):
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

    @property
    def database(self) -> Any:
        """The engine plugins keep their own tables on (their migration branches)."""
        return self.engine

    async def start(self) -> None:
        try:
            found = [] if self.runtime is None else self.runtime.migration_branches.items()
            branches = [(name, b.versions_dir, b.metadata) for name, b in found]
            await migrate(self.engine, self.schema, branches)
        except (OperationalError, DBAPIError, OSError) as exc:
            if _is_connection_error(exc):
                raise StorageUnavailable(f"cannot open the database: {exc}") from exc
            raise
        now = time.time()
        async with self._write() as conn:
            # (instances starting together on a new database both try: one row, no error)
            await conn.execute(
                self._insert_if_absent(t.tenants).values(
                    id=DEFAULT_TENANT,
                    name="Default tenant",
                    active=True,
                    created_at=now,
                    updated_at=now,
                )
            )

    def _insert_if_absent(self, table: sa.Table) -> Any:
        """``INSERT ... ON CONFLICT DO NOTHING`` in this database's dialect: an insert that a
        concurrent writer of the same key (another instance) cannot turn into an error."""
        insert = postgresql.insert if self._pg else sqlite.insert
        return insert(table).on_conflict_do_nothing()

    async def close(self) -> None:
        await self.engine.dispose()

    async def ping(self) -> bool:
        try:
            async with self._read() as conn:
                await conn.execute(sa.text("SELECT 1"))
            return True
        except Exception:
            return False

    # -- secrets --------------------------------------------------------------------------
    def _encrypt(self, value: str | None) -> str | None:
        if value is None:
            return None
        if self.runtime is None:
            raise RuntimeError("storing secrets needs a runtime with an encryption key")
        return self.runtime.encrypt(value)

    def _decrypt(self, value: str | None) -> str | None:
        if value is None or self.runtime is None:
            return None
        return self.runtime.decrypt(value)

    # -- tenants --------------------------------------------------------------------------
    def _tenant(self, row: Any) -> Tenant:
        auth = self._decrypt(row.client_auth_enc)
        return Tenant(
            id=row.id,
            name=row.name,
            active=bool(row.active),
            client_base_url=row.client_base_url,
            client_sync_path=row.client_sync_path,
            client_attachment_path=row.client_attachment_path,
            client_auth=json.loads(auth) if auth else None,
            rate_limits=row.rate_limits,
            sync_secret=self._decrypt(row.sync_secret_enc),
            created_at=row.created_at,
            updated_at=row.updated_at,
        )

    async def get_tenant(self, tenant_id: str) -> Tenant | None:
        async with self._read() as conn:
            row = (
                await conn.execute(sa.select(t.tenants).where(t.tenants.c.id == tenant_id))
            ).first()
        return self._tenant(row) if row else None

    async def list_tenants(self) -> list[Tenant]:
        async with self._read() as conn:
            rows = (await conn.execute(sa.select(t.tenants).order_by(t.tenants.c.id))).all()
        return [self._tenant(r) for r in rows]

    async def save_tenant(self, tenant: Tenant) -> Tenant:
        now = time.time()
        values = {
            "name": tenant.name,
            "active": tenant.active,
            "client_base_url": tenant.client_base_url,
            "client_sync_path": tenant.client_sync_path,
            "client_attachment_path": tenant.client_attachment_path,
            "client_auth_enc": self._encrypt(json.dumps(tenant.client_auth))
            if tenant.client_auth
            else None,
            "rate_limits": tenant.rate_limits,
            "sync_secret_enc": self._encrypt(tenant.sync_secret) if tenant.sync_secret else None,
            "updated_at": now,
        }
        async with self._write() as conn:
            found = await conn.scalar(
                sa.select(t.tenants.c.created_at).where(t.tenants.c.id == tenant.id)
            )
            if found is None:
                await conn.execute(
                    t.tenants.insert().values(id=tenant.id, created_at=now, **values)
                )
                tenant.created_at = now
            else:
                await conn.execute(
                    t.tenants.update().where(t.tenants.c.id == tenant.id).values(**values)
                )
                tenant.created_at = found
        tenant.updated_at = now
        return tenant

    async def delete_tenant(self, tenant_id: str) -> bool:
        async with self._write() as conn:
            gone = (
                await conn.execute(t.tenants.delete().where(t.tenants.c.id == tenant_id))
            ).rowcount
            for table in (
                t.accounts,
                t.messages,
                t.events,
                t.suspensions,
                t.sync_state,
                t.tenant_settings,
            ):
                await conn.execute(table.delete().where(table.c.tenant_id == tenant_id))
            await conn.execute(
                # exact match: '_' in a tenant id is a LIKE wildcard (another tenant's buckets)
                t.send_log.delete().where(
                    t.send_log.c.bucket.contains(f":{tenant_id}:", autoescape=True)
                )
            )
        return bool(gone)

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

    async def save_account(self, account: Account) -> Account:
        now = time.time()
        values = {
            "host": account.host,
            "port": account.port,
            "user": account.user,
            "password_enc": account.password_enc,
            "use_tls": account.use_tls,
            "starttls": account.starttls,
            "timeout": account.timeout,
            "message_timeout": account.message_timeout,
            "max_connections": account.max_connections,
            "allow_plaintext_auth": account.allow_plaintext_auth,
            "batch_size": account.batch_size,
            "limit_per_minute": account.limit_per_minute,
            "limit_per_hour": account.limit_per_hour,
            "limit_per_day": account.limit_per_day,
            "limit_behavior": account.limit_behavior,
            "is_default": account.default,
            "transport": account.transport,
            "options": account.options,
            "extra": account.extra,
            "updated_at": now,
        }
        a = t.accounts.c
        async with self._write() as conn:
            if account.default:
                await conn.execute(
                    t.accounts.update()
                    .where(a.tenant_id == account.tenant_id, a.id != account.id)
                    .values(is_default=False)
                )
            found = await conn.scalar(
                sa.select(a.created_at).where(a.tenant_id == account.tenant_id, a.id == account.id)
            )
            if found is None:
                await conn.execute(
                    t.accounts.insert().values(
                        tenant_id=account.tenant_id, id=account.id, created_at=now, **values
                    )
                )
                account.created_at = now
            else:
                await conn.execute(
                    t.accounts.update()
                    .where(a.tenant_id == account.tenant_id, a.id == account.id)
                    .values(**values)
                )
                account.created_at = found
        account.updated_at = now
        return account

    async def get_account(self, tenant_id: str, account_id: str) -> Account | None:
        a = t.accounts.c
        async with self._read() as conn:
            row = (
                await conn.execute(
                    sa.select(t.accounts).where(a.tenant_id == tenant_id, a.id == account_id)
                )
            ).first()
        return self._account(row) if row else None

    async def list_accounts(self, tenant_id: str | None = None) -> list[Account]:
        q = sa.select(t.accounts).order_by(t.accounts.c.tenant_id, t.accounts.c.id)
        if tenant_id is not None:
            q = q.where(t.accounts.c.tenant_id == tenant_id)
        async with self._read() as conn:
            rows = (await conn.execute(q)).all()
        return [self._account(r) for r in rows]

    async def delete_account(self, tenant_id: str, account_id: str) -> bool:
        a = t.accounts.c
        async with self._write() as conn:
            res = await conn.execute(
                t.accounts.delete().where(a.tenant_id == tenant_id, a.id == account_id)
            )
        return bool(res.rowcount)

    async def count_active_messages(self, tenant_id: str, account_id: str | None = None) -> int:
        m = t.messages.c
        q = sa.select(sa.func.count()).where(m.tenant_id == tenant_id, m.status.in_(t.ACTIVE))
        if account_id is not None:
            q = q.where(m.account_id == account_id)
        async with self._read() as conn:
            return int(await conn.scalar(q) or 0)

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

    def _lock_for_change(self, query: sa.Select[Any]) -> sa.Select[Any]:
        """On PostgreSQL, lock the message rows read before replacing or deleting them.

        Without the lock, a claim by another transaction (or instance) could commit between
        our status check and our DELETE: the message would be removed while being sent, and
        sent again as its replacement. Locked rows are skipped by claims (``SKIP LOCKED``); a
        row a claim took first makes us wait and then read ``sending``. (SQLite serialises
        writers already.)"""
        return query.with_for_update(of=t.messages) if self._pg else query

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
        m = t.messages.c
        q = sa.select(t.messages).order_by(m.pk).limit(flt.limit)
        if flt.tenant_id is not None:
            q = q.where(m.tenant_id == flt.tenant_id)
        if flt.status is not None:
            q = q.where(m.status == flt.status)
        if flt.batch_code is not None:
            q = q.where(m.batch_code == flt.batch_code)
        if flt.active_only:
            q = q.where(m.status.in_(t.ACTIVE))
        if flt.after_pk is not None:
            q = q.where(m.pk > flt.after_pk)
        now = time.time()
        async with self._read() as conn:
            return [self._record(r, now) for r in await conn.execute(q)]

    async def get_message(self, tenant_id: str, message_id: str) -> MessageRecord | None:
        m = t.messages.c
        async with self._read() as conn:
            row = (
                await conn.execute(
                    sa.select(t.messages).where(m.tenant_id == tenant_id, m.id == message_id)
                )
            ).first()
        return self._record(row) if row else None

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

    async def delete_messages(self, tenant_id: str, ids: Sequence[str]) -> DeleteResult:
        m = t.messages.c
        wanted = list(dict.fromkeys(ids))
        async with self._write() as conn:
            found = {
                r.id: r
                for r in await conn.execute(
                    self._lock_for_change(
                        sa.select(m.pk, m.id, m.status).where(
                            m.tenant_id == tenant_id, m.id.in_(wanted)
                        )
                    )
                )
            }
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

    async def suspended_batches(self, tenant_id: str) -> list[str]:
        s = t.suspensions.c
        async with self._read() as conn:
            rows = await conn.execute(
                sa.select(s.batch_code).where(s.tenant_id == tenant_id).order_by(s.batch_code)
            )
            return [r.batch_code for r in rows]

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
    ) -> list[MessageRecord]:
        m = t.messages.c
        s = t.suspensions.c
        ready = sa.or_(
            sa.and_(
                m.status.in_(REPLACEABLE), sa.or_(m.deferred_ts.is_(None), m.deferred_ts <= now)
            ),
            # A lease that ran out: the claimer died or stalled. Never our own: a live
            # instance gives every claim an outcome, however slow the send or the database.
            sa.and_(
                m.status == "sending",
                m.lease_until < now,
                sa.or_(m.claimed_by.is_(None), m.claimed_by != instance_id),
            ),
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
        q = (
            sa.select(m.pk, m.tenant_id, m.account_id, account_batch)
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
            for row in candidates:
                key = (row.tenant_id, row.account_id)
                if per_account[key] < (row.account_batch or per_account_limit):
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
                    # retaken after its lease expired mid-send: it may have been delivered
                    uncertain=sa.case((m.status == "sending", sa.true()), else_=m.uncertain),
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

    # -- instance settings and audit ----------------------------------------------------------------
    async def get_settings(self) -> dict[str, Any]:
        async with self._read() as conn:
            rows = await conn.execute(sa.select(t.instance_settings))
            return {r.key: r.value for r in rows}

    async def put_settings(self, values: dict[str, Any]) -> dict[str, Any]:
        c = t.instance_settings.c
        async with self._write() as conn:
            for key, value in values.items():
                res = await conn.execute(
                    t.instance_settings.update().where(c.key == key).values(value=value)
                )
                if not res.rowcount:
                    await conn.execute(t.instance_settings.insert().values(key=key, value=value))
        return await self.get_settings()

    async def reencrypt_secrets(self, transform: Callable[[str], str]) -> int:
        """Rewrite every encrypted value with ``transform`` in one transaction (key rotation).

        The rows are read and rewritten inside the same write transaction, locked on
        PostgreSQL (``FOR UPDATE``), so a secret saved concurrently is never overwritten with
        a stale value. An exception from ``transform`` rolls everything back.
        """
        a, tn, st = t.accounts.c, t.tenants.c, t.instance_settings.c
        changed = 0
        async with self._write() as conn:
            accounts = sa.select(a.tenant_id, a.id, a.password_enc).where(
                a.password_enc.is_not(None)
            )
            tenants = sa.select(tn.id, tn.client_auth_enc, tn.sync_secret_enc).where(
                sa.or_(tn.client_auth_enc.is_not(None), tn.sync_secret_enc.is_not(None))
            )
            check = sa.select(st.value).where(st.key == KEY_CHECK_SETTING)
            if self._pg:  # no concurrent save slips between our read and our write
                accounts = accounts.with_for_update()
                tenants = tenants.with_for_update()
                check = check.with_for_update()

            account_rows = []
            for row in await conn.execute(accounts):
                new = transform(row.password_enc)
                if new != row.password_enc:
                    account_rows.append({"b_tenant": row.tenant_id, "b_id": row.id, "b_pw": new})
            tenant_rows = []
            for row in await conn.execute(tenants):
                auth = _apply(transform, row.client_auth_enc)
                secret = _apply(transform, row.sync_secret_enc)
                moved = (auth != row.client_auth_enc) + (secret != row.sync_secret_enc)
                if moved:
                    changed += moved
                    tenant_rows.append({"b_id": row.id, "b_auth": auth, "b_secret": secret})
            stored_check = await conn.scalar(check)
            new_check = _apply(transform, stored_check) if isinstance(stored_check, str) else None

            if account_rows:
                await conn.execute(
                    t.accounts.update()
                    .where(a.tenant_id == sa.bindparam("b_tenant"), a.id == sa.bindparam("b_id"))
                    .values(password_enc=sa.bindparam("b_pw")),
                    account_rows,
                )
                changed += len(account_rows)
            if tenant_rows:
                await conn.execute(
                    t.tenants.update()
                    .where(tn.id == sa.bindparam("b_id"))
                    .values(
                        client_auth_enc=sa.bindparam("b_auth"),
                        sync_secret_enc=sa.bindparam("b_secret"),
                    ),
                    tenant_rows,
                )
            changed += await self._reencrypt_attachment_auth(conn, transform)
            changed += await self._reencrypt_plugin_values(conn, transform)
            if new_check is not None and new_check != stored_check:
                await conn.execute(
                    t.instance_settings.update()
                    .where(st.key == KEY_CHECK_SETTING)
                    .values(value=new_check)
                )
                changed += 1
        return changed

    async def _reencrypt_attachment_auth(
        self, conn: AsyncConnection, transform: Callable[[str], str]
    ) -> int:
        """Key rotation of the attachment credentials sealed in message payloads
        (``core.attachments.seal_auth``); only payloads that mention one are read."""
        m = t.messages.c
        query = sa.select(m.pk, m.payload).where(
            sa.cast(m.payload, sa.Text).like(f'%"{SEALED_AUTH}"%')
        )
        if self._pg:
            query = query.with_for_update()
        rows = []
        changed = 0
        for row in await conn.execute(query):
            payload = dict(row.payload)
            attachments = [dict(att) for att in payload.get("attachments") or []]
            moved = 0
            for att in attachments:
                sealed = att.get(SEALED_AUTH)
                if isinstance(sealed, str):
                    att[SEALED_AUTH] = transform(sealed)
                    moved += att[SEALED_AUTH] != sealed
            if moved:
                payload["attachments"] = attachments
                rows.append({"b_pk": row.pk, "b_payload": payload})
                changed += moved
        if rows:
            await conn.execute(
                t.messages.update()
                .where(m.pk == sa.bindparam("b_pk"))
                .values(payload=sa.bindparam("b_payload")),
                rows,
            )
        return changed

    async def log_commands(self, entries: Sequence[CommandLogEntry]) -> None:
        if not entries:
            return
        async with self._write() as conn:
            await conn.execute(
                t.command_log.insert(),
                [
                    {
                        "ts": e.ts,
                        "principal": e.principal,
                        "tenant_id": e.tenant_id,
                        "method": e.method,
                        "path": e.path,
                        "status": e.status,
                        "summary": e.summary,
                    }
                    for e in entries
                ],
            )

    async def list_command_log(
        self, limit: int = 100, after_pk: int | None = None, since_ts: float | None = None
    ) -> list[CommandLogEntry]:
        c = t.command_log.c
        q = sa.select(t.command_log).order_by(c.pk).limit(limit)
        if after_pk is not None:
            q = q.where(c.pk > after_pk)
        if since_ts is not None:
            q = q.where(c.ts >= since_ts)
        async with self._read() as conn:
            return [
                CommandLogEntry(
                    pk=r.pk,
                    ts=r.ts,
                    principal=r.principal,
                    tenant_id=r.tenant_id,
                    method=r.method,
                    path=r.path,
                    status=r.status,
                    summary=r.summary or {},
                )
                for r in await conn.execute(q)
            ]


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


def _apply(transform: Callable[[str], str], value: str | None) -> str | None:
    return None if value is None else transform(value)


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
