"""A short-lived per-process cache of tenants and their accounts, for the enqueue path.

``add-messages`` must stay cheap (thousands of single-message requests per second), so it
must not read the tenant and its accounts from the database on every request. Entries live
``TTL`` seconds, then one request reads the tenant again while the others keep using the
expired entry for the few milliseconds that takes; this instance's own account changes drop
them at once. A change made through
another instance sharing the database is seen within ``TTL`` (an account deleted there may
still accept messages for that long; the dispatcher then fails them with a clear error).
A lookup of an account id the cache does not know re-reads the tenant once the entry is older
than ``MISS_REFRESH`` seconds, so a just-created account works immediately.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from mail_proxy.core.contracts.model import DEFAULT_TENANT, Account, Tenant
from mail_proxy.core.engine.runtime import Runtime
from mail_proxy.core.engine.single_flight import SingleFlight

TTL = 2.0
MISS_REFRESH = 0.1
MAX_ENTRIES = 10_000


@dataclass
class TenantView:
    """A tenant with its accounts, as the validator needs them."""

    tenant: Tenant
    accounts: dict[str, Account] = field(default_factory=dict)
    loaded_at: float = 0.0

    @property
    def default_account(self) -> Account | None:
        for account in self.accounts.values():
            if account.default:
                return account
        return None


class TenantDirectory:
    """Cached :class:`TenantView` lookups for one runtime."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self._views: dict[str, TenantView] = {}
        self._loads: SingleFlight[str, TenantView | None] = SingleFlight()
        #: Bumped by every invalidation: a load that began before one does not store its
        #: (possibly older) answer.
        self._changes = 0

    async def get(self, tenant_id: str, *, fresh: bool = False) -> TenantView | None:
        """The tenant and its accounts, or None when the tenant does not exist."""
        view = self._views.get(tenant_id)
        if view is not None and not fresh and time.monotonic() - view.loaded_at < TTL:
            return view
        # One load at a time per tenant (SingleFlight). While it runs, the other requests
        # keep using the expired entry, or without one share the load's answer, instead of
        # each reading the tenant again: under load that was dozens of reads at once whenever
        # an entry expired, queued on the connection pool, a latency spike every TTL.
        if view is not None and not fresh and self._loads.running(tenant_id):
            return view
        return await self._loads.run(tenant_id, lambda: self._load(tenant_id, time.monotonic()))

    async def account(self, view: TenantView, account_id: str) -> Account | None:
        """An account of ``view``'s tenant, re-reading once on a miss if the view is stale.

        The freshest cached view is used, not only the caller's snapshot: a batch whose
        entries name unknown accounts re-reads the tenant once, not once per entry."""
        view = self._views.get(view.tenant.id, view)
        found = view.accounts.get(account_id)
        if found is None and time.monotonic() - view.loaded_at >= MISS_REFRESH:
            refreshed = await self.get(view.tenant.id, fresh=True)
            if refreshed is not None:
                found = refreshed.accounts.get(account_id)
        return found

    async def _load(self, tenant_id: str, now: float) -> TenantView | None:
        storage = self.runtime.storage
        changes = self._changes
        tenant = await storage.get_tenant(tenant_id)
        if tenant is None:
            if tenant_id != DEFAULT_TENANT:
                self._views.pop(tenant_id, None)
                return None
            tenant = Tenant(id=DEFAULT_TENANT)
        accounts = await storage.list_accounts(tenant_id)
        view = TenantView(tenant, {a.id: a for a in accounts}, now)
        if changes == self._changes:  # no change made meanwhile (else the next get reloads)
            if len(self._views) >= MAX_ENTRIES:
                self._views.clear()
            self._views[tenant_id] = view
        return view

    def invalidate(self, tenant_id: str | None = None) -> None:
        """Forget one tenant (or all): called after account or tenant changes. A load under
        way is not joined by later requests (they read again) and does not store its answer."""
        self._changes += 1
        if tenant_id is None:
            self._views.clear()
            self._loads.forget_all()
        else:
            self._views.pop(tenant_id, None)
            self._loads.forget(tenant_id)


def directory_of(runtime: Runtime) -> TenantDirectory:
    """The directory of ``runtime`` (one per running service, created on first use)."""
    return runtime.local(TenantDirectory)
