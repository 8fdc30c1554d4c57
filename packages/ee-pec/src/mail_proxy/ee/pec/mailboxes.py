"""A changing set of polled mailboxes: one :class:`~mail_proxy.core.imap.poller.ImapPoller`
per mailbox, started, stopped and restarted as the configuration changes.

Nothing here is PEC-specific: the owner describes the mailboxes it wants
(:class:`Mailbox`: a key, the settings, a handler, a fingerprint of what a connection
depends on) and calls :meth:`MailboxGroup.reconcile` whenever the configuration may have
changed. A mailbox no longer wanted is stopped (its lease released), a new one started, one
whose fingerprint changed restarted with a fresh connection; the others keep running
untouched (and keep their IDLE connection).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Hashable, Iterable
from dataclasses import dataclass, field

from mail_proxy.core.imap.poller import Handler, ImapPoller, MailboxSettings
from mail_proxy.core.imap.state import MailboxStateStore

log = logging.getLogger(__name__)

#: how long a stopping poller may take to log out before it is cancelled
STOP_TIMEOUT = 10.0


@dataclass
class Mailbox:
    """One mailbox to poll."""

    key: str
    settings: MailboxSettings
    handler: Handler
    #: what the connection depends on (host, user, password, folder, ...)
    fingerprint: Hashable
    #: free-form labels for status and metrics (e.g. tenant and account)
    labels: dict[str, str] = field(default_factory=dict)


@dataclass
class _Running:
    mailbox: Mailbox
    poller: ImapPoller
    task: asyncio.Task[None]


class MailboxGroup:
    """The pollers of a set of mailboxes sharing one state store (see the module docstring)."""

    def __init__(
        self,
        store: MailboxStateStore,
        *,
        owner: str | None = None,
        backoff_initial: float = 1.0,
        backoff_max: float = 300.0,
    ) -> None:
        self.store = store
        self.owner = owner
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self._running: dict[str, _Running] = {}
        self._lock = asyncio.Lock()

    @property
    def keys(self) -> list[str]:
        return sorted(self._running)

    def poller(self, key: str) -> ImapPoller | None:
        running = self._running.get(key)
        return running.poller if running is not None else None

    def mailboxes(self) -> list[tuple[Mailbox, ImapPoller]]:
        return [(r.mailbox, r.poller) for _, r in sorted(self._running.items())]

    async def reconcile(self, wanted: Iterable[Mailbox]) -> None:
        """Make the running pollers match ``wanted``."""
        async with self._lock:
            target = {m.key: m for m in wanted}
            for key in [k for k in self._running if k not in target]:
                await self._stop(key)
                log.info("imap %s: no longer polled", key)
            for key, mailbox in target.items():
                running = self._running.get(key)
                if running is not None and running.mailbox.fingerprint == mailbox.fingerprint:
                    running.mailbox = mailbox  # same connection; labels may have changed
                    continue
                if running is not None:
                    await self._stop(key)
                    log.info("imap %s: settings changed, reconnecting", key)
                self._start(mailbox)

    async def stop_all(self) -> None:
        async with self._lock:
            for key in list(self._running):
                await self._stop(key)

    def _start(self, mailbox: Mailbox) -> None:
        poller = ImapPoller(
            mailbox.settings,
            self.store,
            mailbox.handler,
            mailbox.key,
            owner=self.owner,
            backoff_initial=self.backoff_initial,
            backoff_max=self.backoff_max,
        )
        task = asyncio.create_task(poller.run(), name=f"imap:{mailbox.key}")
        self._running[mailbox.key] = _Running(mailbox, poller, task)

    async def _stop(self, key: str) -> None:
        running = self._running.pop(key)
        running.poller.stop()
        try:
            await asyncio.wait_for(asyncio.shield(running.task), STOP_TIMEOUT)
        except asyncio.TimeoutError:
            running.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await running.task
        except Exception:  # run() lets nothing escape but cancellation; be safe anyway
            log.exception("imap %s: poller ended with an error", key)
