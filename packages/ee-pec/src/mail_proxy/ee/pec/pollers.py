"""The service that reads every PEC account's mailbox.

One poller per PEC account (:mod:`.mailboxes`, on the core IMAP kit): UID and UIDVALIDITY
kept in ``pec_mailboxes``, IDLE when the server offers it (else a read every
``pec_poll_interval``), reconnection with backoff, a lease so that one instance at a time reads
a mailbox when several share the database. Each message goes to a :class:`~.receipts.ReceiptHandler`
and is flagged ``\\Seen`` once handled.

The set of pollers follows the accounts: at start, whenever an account of this instance's
tenants changes (``tenant_changed``), and every ``pec_account_refresh`` seconds (accounts
changed through another instance).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING, Any

from mail_proxy.core.contracts.services import Service
from mail_proxy.core.imap.poller import MailboxSettings
from mail_proxy.core.imap.state import SqlMailboxStateStore

from . import tables
from .accounts import mailbox_key, pec_fields
from .mailboxes import Mailbox, MailboxGroup
from .metrics import PecMetrics
from .receipts import ReceiptHandler
from .settings import SECTION

if TYPE_CHECKING:
    from mail_proxy.core.engine.runtime import Runtime

log = logging.getLogger(__name__)


class PecPollers(Service):
    """One per runtime (``runtime.local(PecPollers)``); registered as service ``pec-pollers``."""

    name = "pec-pollers"

    def __init__(self, runtime: Runtime) -> None:
        self.rt = runtime
        self.group: MailboxGroup | None = None
        self._task: asyncio.Task[None] | None = None
        #: one refresh at a time: a slow one must not apply an older account list last
        self._refreshing = asyncio.Lock()

    @classmethod
    def create(cls, runtime: Runtime) -> PecPollers:
        return runtime.local(PecPollers)

    @property
    def running(self) -> bool:
        return self.group is not None

    async def start(self, runtime: Runtime) -> None:
        engine = runtime.storage.database
        if engine is None:
            log.warning("pec: the storage is not SQL; PEC mailboxes are not polled")
            return
        store = SqlMailboxStateStore(engine, tables.mailboxes)
        self.group = MailboxGroup(store, owner=runtime.instance_id)
        runtime.local(PecMetrics).watch(self.readings)
        await self.refresh()
        self._task = asyncio.create_task(self._refresh_loop(), name="pec-account-refresh")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self.rt.local(PecMetrics).unwatch(self.readings)
        group, self.group = self.group, None
        if group is not None:
            await group.stop_all()

    async def refresh(self) -> None:
        """Poll exactly the PEC accounts now stored (errors are logged, tried again later)."""
        async with self._refreshing:
            await self._refresh()

    async def _refresh(self) -> None:
        group = self.group
        if group is None:
            return
        try:
            accounts = await self.rt.storage.list_accounts()
        except Exception as exc:
            log.warning("pec: reading the accounts failed (%s); trying again later", exc)
            return
        wanted = []
        for account in accounts:
            try:
                fields = pec_fields(self.rt, account)
            except Exception as exc:  # e.g. a password the key does not decrypt
                log.error("pec: account %s/%s unusable: %s", account.tenant_id, account.id, exc)
                continue
            if fields is None:
                continue
            settings = MailboxSettings(
                host=fields.imap_host or "",
                port=fields.port,
                user=fields.imap_user or "",
                password=fields.imap_password or "",
                folder=fields.imap_folder,
                use_tls=fields.imap_use_tls,
                poll_interval=self.rt.settings.section(SECTION).pec_poll_interval,
            )
            wanted.append(
                Mailbox(
                    mailbox_key(account.tenant_id, account.id),
                    settings,
                    ReceiptHandler(self.rt, account.tenant_id, account.id),
                    (fields.fingerprint(), settings.poll_interval),
                    {"tenant_id": account.tenant_id, "account_id": account.id},
                )
            )
        await group.reconcile(wanted)

    async def _refresh_loop(self) -> None:
        interval = self.rt.settings.section(SECTION).pec_account_refresh
        while True:
            await asyncio.sleep(interval)
            try:
                await self.refresh()
            except Exception:
                log.exception("pec: refreshing the PEC mailboxes failed")

    # -- status -----------------------------------------------------------------------------
    def poller_status(self, tenant_id: str, account_id: str) -> dict[str, Any] | None:
        """What this instance's poller of the account knows (None: not polled here)."""
        group = self.group
        poller = group.poller(mailbox_key(tenant_id, account_id)) if group else None
        return poller.status() if poller is not None else None

    def readings(self) -> list[tuple[str, str, float | None, int]]:
        """Poll lag and failures of the mailboxes polled here (for :class:`PecMetrics`)."""
        group = self.group
        if group is None:
            return []
        return [
            (m.labels["tenant_id"], m.labels["account_id"], p.last_poll_ts, p.failures)
            for m, p in group.mailboxes()
            if p.has_lease or p.failures
        ]
