"""The storage interface: everything the service keeps, behind one abstract class.

Implementations are registered by plugins through ``register_storage_backends`` under the URL
scheme they serve (``sqlite``, ``postgresql``). The Community Edition ships one SQLAlchemy
implementation for both. Dialect differences (row claiming, upserts, locking) live inside the
backend; the rest of the code never asks which database it runs on.

All times are Unix epoch seconds (float). Times that instances compare (leases, rate windows,
deferrals) are passed in as ``now`` from the caller's shared clock, which follows the
database's (:meth:`Storage.database_time`, engine/clock.py): instances whose own clocks
disagree still compare like with like.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from mail_proxy.core.contracts.model import (
    Account,
    CommandLogEntry,
    EventRecord,
    MessageRecord,
    MessageRef,
    NewEvent,
    NewMessage,
    Outcome,
    SyncState,
    Tenant,
)


@dataclass
class EnqueueResult:
    queued: int
    #: ``(client id, reason)`` for entries refused by the database state (``already sent``).
    rejected: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class DeleteResult:
    removed: int
    not_found: list[str] = field(default_factory=list)
    #: Ids that exist but cannot be removed (already sent, or being sent).
    unauthorized: list[str] = field(default_factory=list)


@dataclass
class MessageFilter:
    tenant_id: str | None = None
    status: str | None = None
    batch_code: str | None = None
    active_only: bool = False
    limit: int = 100
    #: Opaque cursor from a previous page (the last ``pk`` seen): the page continues after it
    #: (below it when ``descending``).
    after_pk: int | None = None
    account_id: str | None = None
    #: ``created_at`` bounds: at or after ``created_since``, before ``created_until``. With
    #: either, the page is in ``(created_at, pk)`` order and continues after
    #: ``(after_created_at, after_pk)``: the index on the creation time serves the page
    #: (``pk`` order would make the database walk every newer row to reach an old window).
    created_since: float | None = None
    created_until: float | None = None
    after_created_at: float | None = None
    #: Newest first (``pk`` descending) instead of oldest first.
    descending: bool = False


@dataclass
class RequeueResult:
    """The answer of ``requeue_messages``."""

    requeued: int
    not_found: list[str] = field(default_factory=list)
    #: Ids that exist but did not fail (only ``error`` messages can be queued again).
    not_failed: list[str] = field(default_factory=list)


@dataclass
class QueueOverview:
    """What the overview shows about one tenant's queue, or every tenant's."""

    #: Messages by status (``scheduled`` rows whose time has come count as ``pending``).
    counts: dict[str, int]
    #: ``sent``, ``error`` and ``deferred`` events since the time asked for.
    recent: dict[str, int]
    oldest_pending_created_at: float | None
    #: Reportable events not yet acknowledged by the client.
    report_backlog: int


@dataclass(frozen=True)
class ActiveQueue:
    """The messages not yet sent or failed, every tenant's (``Storage.active_queue``)."""

    #: By status: ``pending``, ``scheduled``, ``deferred``, ``sending``, each present (0 when
    #: none); ``scheduled`` rows whose time has come count as ``pending``, as the API shows them.
    counts: dict[str, int]
    oldest_created_at: float | None

    @property
    def total(self) -> int:
        return sum(self.counts.values())


@dataclass(frozen=True)
class Suspension:
    tenant_id: str
    #: ``*`` for the whole tenant.
    batch_code: str
    created_at: float


@dataclass
class RateLimits:
    per_minute: int | None = None
    per_hour: int | None = None
    per_day: int | None = None

    def any(self) -> bool:
        return bool(self.per_minute or self.per_hour or self.per_day)


@dataclass
class Reservation:
    """The answer of ``reserve_sends``: how many sends may start now, and when room returns."""

    granted: int
    next_free_ts: float | None = None


class Storage(abc.ABC):
    """Abstract storage backend. One instance per running service."""

    #: ``"sqlite"`` or ``"postgresql"`` (shown by ``GET /status``).
    dialect: str = "?"

    # -- lifecycle -----------------------------------------------------------------
    @abc.abstractmethod
    async def start(self) -> None:
        """Connect, create or upgrade the schema (migrations), ensure the ``default`` tenant."""

    @abc.abstractmethod
    async def close(self) -> None: ...

    @abc.abstractmethod
    async def ping(self) -> bool:
        """True when the database answers (used by ``/status`` and the 503 path)."""

    def is_unavailable(self, exc: BaseException) -> bool:
        """Whether ``exc``, raised by a query on :attr:`database`, means the database cannot
        be reached (refused, dropped, restarting). A plugin's own query that fails so then
        answers the client 503 ``database_unavailable``, like the storage's own queries
        (which raise :class:`~mail_proxy.core.contracts.errors.StorageUnavailable`), not 500."""
        return False

    async def database_time(self) -> float | None:
        """The database server's clock (Unix time), or None when it has none of its own
        apart from this machine's (an embedded database). Instances align the times they
        write for each other to it (engine/clock.py)."""
        return None

    # -- tenants -------------------------------------------------------------------
    @abc.abstractmethod
    async def get_tenant(self, tenant_id: str) -> Tenant | None: ...

    @abc.abstractmethod
    async def list_tenants(self) -> list[Tenant]: ...

    @abc.abstractmethod
    async def save_tenant(self, tenant: Tenant) -> Tenant:
        """Insert or replace the tenant row (secrets are encrypted by the backend)."""

    @abc.abstractmethod
    async def delete_tenant(self, tenant_id: str) -> bool:
        """Delete the tenant with its accounts, messages, events and sync state."""

    # -- accounts ------------------------------------------------------------------
    @abc.abstractmethod
    async def save_account(self, account: Account) -> Account:
        """Insert or update (same tenant and id) an account."""

    @abc.abstractmethod
    async def get_account(self, tenant_id: str, account_id: str) -> Account | None: ...

    @abc.abstractmethod
    async def list_accounts(self, tenant_id: str | None = None) -> list[Account]: ...

    @abc.abstractmethod
    async def delete_account(self, tenant_id: str, account_id: str) -> bool: ...

    @abc.abstractmethod
    async def count_active_messages(self, tenant_id: str, account_id: str | None = None) -> int:
        """Messages not yet sent or failed (pending, scheduled, deferred, sending)."""

    # -- messages ------------------------------------------------------------------
    @abc.abstractmethod
    async def enqueue(self, messages: Sequence[NewMessage], now: float) -> EnqueueResult:
        """Insert a batch in one durable transaction, with a ``queued`` event each.

        A message whose (tenant, id) is still queued is replaced (campaign correction); one
        already sent or failed is rejected with reason ``already sent``. The transaction is
        committed (and on SQLite fsynced) before this returns.
        """

    @abc.abstractmethod
    async def list_messages(self, flt: MessageFilter) -> list[MessageRecord]:
        """Messages in ``pk`` order after ``flt.after_pk``, at most ``flt.limit``."""

    @abc.abstractmethod
    async def get_message(self, tenant_id: str, message_id: str) -> MessageRecord | None: ...

    @abc.abstractmethod
    async def list_events(self, tenant_id: str, message_id: str) -> list[EventRecord] | None:
        """The events of one message in order, or None when the message does not exist."""

    @abc.abstractmethod
    async def delete_messages(self, tenant_id: str, ids: Sequence[str]) -> DeleteResult: ...

    @abc.abstractmethod
    async def requeue_messages(
        self, tenant_id: str, ids: Sequence[str], now: float
    ) -> RequeueResult:
        """Queue failed (``error``) messages again, as new: status ``pending``, no attempts,
        no error; a ``requeued`` event (not reported) keeps the error they had."""

    @abc.abstractmethod
    async def queue_overview(self, tenant_id: str | None, since_ts: float) -> QueueOverview:
        """Counts for the operator's overview: one tenant, or every tenant (None)."""

    @abc.abstractmethod
    async def cleanup_messages(self, tenant_id: str | None, older_than_ts: float) -> int:
        """Delete finished messages (sent/error) finished before ``older_than_ts`` whose
        events are all reported, with their events. ``tenant_id`` None = all tenants."""

    @abc.abstractmethod
    async def count_pending(self, tenant_id: str | None = None) -> int:
        """Active messages (not sent, not failed)."""

    @abc.abstractmethod
    async def oldest_pending_created_at(self) -> float | None: ...

    @abc.abstractmethod
    async def active_queue(self, now: float) -> ActiveQueue:
        """Active messages by status and the oldest one's creation time, every tenant's, in
        one grouped query over the active rows only (read at each Prometheus scrape: its
        cost follows the backlog, never the sent/failed history kept for retention)."""

    # -- suspension ----------------------------------------------------------------
    @abc.abstractmethod
    async def suspend(self, tenant_id: str, batch_code: str | None) -> list[str]:
        """Suspend a whole tenant (``batch_code`` None, stored as ``*``) or one batch.
        Returns the tenant's suspended batch codes afterwards."""

    @abc.abstractmethod
    async def activate(self, tenant_id: str, batch_code: str | None) -> list[str]:
        """Lift a suspension (``batch_code`` None lifts all of the tenant's)."""

    @abc.abstractmethod
    async def suspended_batches(self, tenant_id: str) -> list[str]: ...

    @abc.abstractmethod
    async def list_suspensions(self, tenant_id: str | None = None) -> list[Suspension]:
        """The suspensions of one tenant, or of every tenant (None)."""

    # -- dispatch ------------------------------------------------------------------
    @abc.abstractmethod
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
        """Claim up to ``limit`` ready messages for delivery, in priority order (0 first)
        and FIFO (``pk``) inside a priority, at most ``per_account_limit`` per account (or the
        account's own ``batch_size`` when it has one), none of the ``(tenant_id,
        account_id)`` pairs in ``skip_accounts`` (accounts whose connections are all busy), and for
        each account no more than ``per_connection`` × its ``max_connections`` minus its
        deliveries in ``busy`` (this instance's, in flight).

        Ready: status pending/scheduled/deferred with ``deferred_ts`` None or ≤ ``now``, or
        status sending with an expired lease (a dead instance's claim). Skips suspended
        tenants and batches and inactive tenants. Each claimed row gets status ``sending``,
        ``lease_until = now + lease_seconds`` and a new ``claim_token``. Safe across several
        instances on one database (PostgreSQL: ``FOR UPDATE SKIP LOCKED``).
        """

    @abc.abstractmethod
    async def record_outcomes(self, outcomes: Sequence[Outcome]) -> list[int]:
        """Apply delivery outcomes and write their events, in one transaction.

        An outcome applies only while the row is still ``sending`` with the same
        ``claim_token`` (fencing); the pks actually applied are returned.
        """

    @abc.abstractmethod
    async def reserve_sends(
        self, bucket: str, want: int, now: float, limits: RateLimits
    ) -> Reservation:
        """Atomically grant up to ``want`` sends in the sliding windows of ``limits`` for
        ``bucket`` (e.g. ``"acct:<tenant>:<account>"``) and record the granted ones.
        Holds across instances sharing the database."""

    @abc.abstractmethod
    async def release_sends(self, bucket: str, count: int, now: float) -> None:
        """Give back ``count`` reservations made at ``now`` that were not used."""

    @abc.abstractmethod
    async def prune_send_log(self, older_than_ts: float) -> int: ...

    # -- events and reports ---------------------------------------------------------
    @abc.abstractmethod
    async def add_events(self, events: Sequence[NewEvent]) -> list[EventRecord]:
        """Record events produced outside dispatch (by a plugin's service) for existing
        messages, in one transaction. Events naming an unknown (tenant, message id) are
        ignored; the recorded ones are returned (their outbox ``pk`` is not read back: 0).
        Services call ``Runtime.record_events``, which also tells the plugins."""

    @abc.abstractmethod
    async def fetch_unreported(
        self, tenant_id: str, limit: int, after_pk: int | None = None
    ) -> list[EventRecord]:
        """Reportable events of a tenant not yet acknowledged, in ``pk`` order."""

    @abc.abstractmethod
    async def acknowledge_events(
        self, tenant_id: str, event_pks: Sequence[int], now: float
    ) -> int: ...

    @abc.abstractmethod
    async def report_backlog(self) -> dict[str, int]:
        """Unacknowledged reportable events per tenant."""

    @abc.abstractmethod
    async def claim_report_sync(
        self, tenant_id: str, owner: str, now: float, lease_seconds: float
    ) -> bool:
        """Take (or renew) the right to push this tenant's reports for ``lease_seconds``.
        False while another live instance holds it: instances sharing a database never
        push the same events concurrently."""

    @abc.abstractmethod
    async def release_report_sync(self, tenant_id: str, owner: str) -> None: ...

    @abc.abstractmethod
    async def get_sync_state(self, tenant_id: str) -> SyncState: ...

    @abc.abstractmethod
    async def save_sync_state(self, state: SyncState) -> None: ...

    # -- what plugins keep (contracts/extensions.py) ---------------------------------
    @abc.abstractmethod
    async def get_tenant_settings(self, tenant_id: str) -> dict[str, Any]:
        """The plugins' stored settings of a tenant, by name (secret members sealed)."""

    @abc.abstractmethod
    async def put_tenant_setting(self, tenant_id: str, name: str, value: Any | None) -> None:
        """Store (or with None remove) one plugin setting of a tenant."""

    @abc.abstractmethod
    async def find_messages_by_message_id(self, message_ids: Sequence[str]) -> list[MessageRef]:
        """The messages whose generated Message-ID (with its angle brackets) is one of
        ``message_ids``, across tenants: the caller checks the tenant it expects."""

    @property
    def database(self) -> Any:
        """The SQLAlchemy ``AsyncEngine`` on which plugins keep their own tables (created by
        their ``MigrationBranch``), or None for a storage that is not SQL."""
        return None

    # -- instance settings and audit -------------------------------------------------
    @abc.abstractmethod
    async def get_settings(self) -> dict[str, Any]: ...

    @abc.abstractmethod
    async def put_settings(self, values: dict[str, Any]) -> dict[str, Any]:
        """Merge ``values`` into the stored settings and return them all."""

    @abc.abstractmethod
    async def reencrypt_secrets(self, transform: Callable[[str, str], str]) -> int:
        """Replace every encrypted value (accounts' passwords, tenants' ``client_auth`` and
        sync secrets, the ``encryption_key_check`` setting, attachment credentials in
        payloads, sealed members of tenant settings and account fields) by
        ``transform(token, context)`` in ONE transaction, ``context`` being the value's place
        (``secret_context``: table, column, row key, as it was encrypted for); return how many
        values changed.

        Key rotation: ``transform`` decrypts with the old key and encrypts with the new one;
        the upgrade binds legacy tokens to their place. If it raises for any value, the
        transaction rolls back and nothing changes.
        """

    @abc.abstractmethod
    async def log_commands(self, entries: Sequence[CommandLogEntry]) -> None:
        """Append audit entries (written in batches by the web layer)."""

    @abc.abstractmethod
    async def list_command_log(
        self, limit: int = 100, after_pk: int | None = None, since_ts: float | None = None
    ) -> list[CommandLogEntry]: ...
