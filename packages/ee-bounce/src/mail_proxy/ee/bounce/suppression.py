"""The suppression list: per tenant, addresses new messages are not accepted for.

An address gets on the list through a **hard** bounce whose reason says the address itself is
bad (:data:`SUPPRESSING_REASONS`: the mailbox or the domain does not exist, the person left),
or by hand (``POST /suppressions``). Soft bounces, and hard ones for other reasons (a policy
block, the content, a full mailbox), never suppress: the address may work tomorrow.

At enqueue, :class:`SuppressionStep` refuses a message with a suppressed recipient (``to``,
``cc`` or ``bcc``) with the reason ``suppressed: <address> (hard bounce <code> on
<YYYY-MM-DD>)`` (``(added by hand on <date>)`` for manual entries), unless the entry says
``"ignore_suppression": true``.

Enqueue is a hot path, so each tenant's list is held in memory (:class:`Suppressions`) and
checked against the database at most every :data:`RECHECK_SECONDS` (one small query: count
and last change): a change made through another instance applies within that time, one made
through this instance at once.

Addresses are compared in lower case, with the domain in its ASCII (A-label) form.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from mail_proxy.core.contracts.extensions import EnqueueContext, EnqueueRejected, MessageStep
from mail_proxy.core.engine.single_flight import SingleFlight

from . import schema
from .sqlutil import upsert

if TYPE_CHECKING:
    from mail_proxy.core.engine.runtime import Runtime

#: Reasons of a hard bounce that put the address on the list.
SUPPRESSING_REASONS = ("user_unknown", "host_unknown", "has_moved")
RECHECK_SECONDS = 2.0
_UPDATED = ("reason", "code", "source", "note", "message_id", "updated_at")


def normalize(address: str) -> str:
    """``Jane@Bücher.DE`` → ``jane@xn--bcher-kva.de`` (unchanged when not an address)."""
    from mail_proxy.core.engine.idn import DomainError, ascii_domain

    local, at, domain = address.strip().rpartition("@")
    if not at:
        return address.strip().lower()
    try:
        domain = ascii_domain(domain)
    except DomainError:
        pass
    return f"{local}@{domain}".lower()


@dataclass
class Suppression:
    tenant_id: str
    address: str
    reason: str
    code: str | None
    source: str
    note: str | None
    message_id: str | None
    created_at: float
    updated_at: float

    def public(self) -> dict[str, Any]:
        return asdict(self)

    def rejection(self) -> str:
        """The reason shown in ``rejected`` (docs/bounce.md "Suppression")."""
        day = time.strftime("%Y-%m-%d", time.gmtime(self.updated_at))
        if self.source == "bounce":
            return f"suppressed: {self.address} (hard bounce {self.code or '5.0.0'} on {day})"
        return f"suppressed: {self.address} (added by hand on {day})"


@dataclass
class _Cached:
    checked_at: float
    signature: tuple[int, float]
    by_address: dict[str, Suppression]


class Suppressions:
    """The tenants' lists (``runtime.local(Suppressions)``): reads, writes, the cache."""

    def __init__(self, runtime: Runtime) -> None:
        self.rt = runtime
        self._cache: dict[str, _Cached] = {}
        self._rechecks: SingleFlight[str, dict[str, Suppression]] = SingleFlight()

    @property
    def _engine(self) -> Any:
        return self.rt.storage.database

    # -- the check at enqueue -----------------------------------------------------------
    async def any_listed(self, tenant_id: str) -> bool:
        """Whether the tenant's list has any entry (from the cache, rechecked every
        :data:`RECHECK_SECONDS`)."""
        return bool(await self._current(tenant_id))

    async def find(self, tenant_id: str, addresses: list[str]) -> Suppression | None:
        """The first of ``addresses`` on the tenant's list, or None."""
        listed = await self._current(tenant_id)
        if not listed:
            return None
        for address in addresses:
            found = listed.get(normalize(address))
            if found is not None:
                return found
        return None

    async def _current(self, tenant_id: str) -> dict[str, Suppression]:
        cached = self._cache.get(tenant_id)
        if cached is not None and time.monotonic() - cached.checked_at < RECHECK_SECONDS:
            return cached.by_address
        # One recheck at a time per tenant (SingleFlight). While it runs, the other checks
        # use the list as last read (or, before the first read, share the recheck's answer)
        # instead of each sending the same query: 50 at once under load, queued on the
        # connection pool, a latency spike every RECHECK_SECONDS.
        if cached is not None and self._rechecks.running(tenant_id):
            return cached.by_address
        return await self._rechecks.run(
            tenant_id, lambda: self._recheck(tenant_id, cached, time.monotonic())
        )

    async def _recheck(
        self, tenant_id: str, cached: _Cached | None, now: float
    ) -> dict[str, Suppression]:
        signature = await self._signature(tenant_id)
        if cached is None or cached.signature != signature:
            rows = await self._select(tenant_id, None, None) if signature[0] else []
            cached = _Cached(now, signature, {s.address: s for s in rows})
            self._cache[tenant_id] = cached
        cached.checked_at = now
        return cached.by_address

    async def _signature(self, tenant_id: str) -> tuple[int, float]:
        c = schema.suppressions.c
        query = sa.select(sa.func.count(), sa.func.max(c.updated_at)).where(
            c.tenant_id == tenant_id
        )
        async with self._engine.connect() as conn:
            row = (await conn.execute(query)).one()
        return int(row[0] or 0), float(row[1] or 0.0)

    # -- reads ----------------------------------------------------------------------------
    async def page(
        self, tenant_id: str, limit: int = 100, after: str | None = None
    ) -> list[Suppression]:
        """The tenant's list in address order, ``limit`` entries after ``after``."""
        return await self._select(tenant_id, limit, after)

    async def get(self, tenant_id: str, address: str) -> Suppression | None:
        c = schema.suppressions.c
        query = sa.select(schema.suppressions).where(
            c.tenant_id == tenant_id, c.address == normalize(address)
        )
        async with self._engine.connect() as conn:
            row = (await conn.execute(query)).first()
        return Suppression(**row._mapping) if row is not None else None

    async def _select(
        self, tenant_id: str, limit: int | None, after: str | None
    ) -> list[Suppression]:
        c = schema.suppressions.c
        query = sa.select(schema.suppressions).where(c.tenant_id == tenant_id).order_by(c.address)
        if after is not None:
            query = query.where(c.address > after)
        if limit is not None:
            query = query.limit(limit)
        async with self._engine.connect() as conn:
            return [Suppression(**row._mapping) for row in await conn.execute(query)]

    # -- writes ---------------------------------------------------------------------------
    async def add(self, entries: list[Suppression], conn: Any = None) -> None:
        """Insert or refresh entries (the latest bounce's code and date win); in ``conn``'s
        transaction when given."""
        if not entries:
            return
        rows = [{**e.public(), "address": normalize(e.address)} for e in entries]
        if conn is not None:
            await upsert(conn, schema.suppressions, rows, _UPDATED)
        else:
            async with self._engine.begin() as own:
                await upsert(own, schema.suppressions, rows, _UPDATED)
        for tenant_id in {e.tenant_id for e in entries}:
            self._cache.pop(tenant_id, None)

    async def remove(self, tenant_id: str, address: str) -> bool:
        c = schema.suppressions.c
        async with self._engine.begin() as conn:
            result = await conn.execute(
                schema.suppressions.delete().where(
                    c.tenant_id == tenant_id, c.address == normalize(address)
                )
            )
        self._cache.pop(tenant_id, None)
        return bool(result.rowcount)

    async def delete_tenant(self, tenant_id: str) -> int:
        """Remove a deleted tenant's list (``tenant_deleted``)."""
        c = schema.suppressions.c
        async with self._engine.begin() as conn:
            result = await conn.execute(
                schema.suppressions.delete().where(c.tenant_id == tenant_id)
            )
        self._cache.pop(tenant_id, None)
        return int(result.rowcount or 0)


class SuppressionStep(MessageStep):
    """``at_enqueue``: refuse messages to suppressed addresses (see the module docstring)."""

    name = "bounce-suppression"
    message_fields = {"ignore_suppression": bool}

    async def at_enqueue(self, ctx: EnqueueContext) -> None:
        if ctx.options.get("ignore_suppression"):
            return
        if ctx.runtime.storage.database is None:
            return
        suppressions = ctx.runtime.local(Suppressions)
        if not await suppressions.any_listed(ctx.tenant.id):
            return  # nothing listed (the usual case): no need to parse the recipients
        from mail_proxy.core.engine.mime import addresses

        payload = ctx.payload
        wanted = [a for name in ("to", "cc", "bcc") for a in addresses(payload.get(name) or [])]
        found = await suppressions.find(ctx.tenant.id, wanted)
        if found is not None:
            raise EnqueueRejected(found.rejection())
