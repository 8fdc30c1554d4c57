"""The bounce service: one IMAP poller per configured mailbox, kept in step with the
configuration.

At start, and whenever the configuration changes (``PUT /instance/bounce``, a tenant's
``bounce`` setting, ``POST /instance/reload-bounce``, or every ``GMP_BOUNCE_CONFIG_REFRESH``
seconds for changes made through another instance), :meth:`BounceService.reload` compares the
mailboxes wanted (:meth:`.config.BounceConfigs.mailboxes`) with the pollers running: a poller
whose mailbox is gone or whose settings changed is stopped (it logs out and gives its lease
up), a new mailbox gets a poller. Pollers are the core IMAP kit's
(:class:`~mail_proxy.core.imap.poller.ImapPoller`): incremental by UID with UIDVALIDITY,
IDLE when offered, reconnection with backoff, a lease in the database so that one instance at
a time reads a mailbox, their state in ``bounce_mailbox_state``.

The service also keeps the metrics that are not events (poll lag, connection, messages left
unread for their size) and purges ``bounce_seen`` rows older than the retention.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mail_proxy.core.contracts.services import Service

from . import schema
from .config import SECTION, BounceConfig, BounceConfigs
from .correlate import Correlator
from .metrics import BounceMetrics
from .processor import FlushingStateStore, MailboxProcessor

if TYPE_CHECKING:
    from mail_proxy.core.engine.runtime import Runtime
    from mail_proxy.core.imap.poller import ImapPoller

log = logging.getLogger(__name__)

#: How often the service looks at its pollers (metrics), seconds.
WATCH_INTERVAL = 1.0
#: ``bounce_seen`` rows are kept at least this long (and at least the report retention).
SEEN_RETENTION = 30 * 86400.0
PURGE_INTERVAL = 3600.0


def state_key(mailbox_key: str) -> str:
    """The mailbox's key in the plugin's tables (long keys are digested)."""
    if len(mailbox_key) <= 200:
        return mailbox_key
    return "sha256:" + hashlib.sha256(mailbox_key.encode()).hexdigest()


@dataclass
class _Running:
    config: BounceConfig
    poller: ImapPoller
    processor: MailboxProcessor
    task: asyncio.Task[None]
    started_at: float
    too_large_seen: int = 0


class BounceService(Service):
    """One per runtime (``runtime.local(BounceService)``; see the module docstring)."""

    name = "bounce"

    def __init__(self, runtime: Runtime) -> None:
        self.rt = runtime
        self.running: dict[str, _Running] = {}
        self._lock = asyncio.Lock()
        self._watch: asyncio.Task[None] | None = None
        self.last_reload_error: str | None = None

    @classmethod
    def create(cls, runtime: Runtime) -> BounceService | None:
        if runtime.storage is None or runtime.storage.database is None:
            log.warning("bounce: the storage is not SQL, bounce detection is off")
            return None
        return runtime.local(cls)

    async def start(self, runtime: Runtime) -> None:
        runtime.local(BounceMetrics).lag_source = self._lag
        await self.reload()
        self._watch = asyncio.create_task(self._watch_loop(), name="bounce-watch")

    async def stop(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
            self._watch = None
        async with self._lock:
            for key in list(self.running):
                await self._stop_one(key)

    # -- configuration ------------------------------------------------------------------
    async def reload(self) -> None:
        """Read the configuration again and make the pollers match it."""
        from mail_proxy.core.engine.tenant_settings import TenantSettings

        async with self._lock:
            settings = self.rt.local(TenantSettings)
            for tenant in await self.rt.storage.list_tenants():
                settings.forget(tenant.id)  # changes made through another instance too
            configs = self.rt.local(BounceConfigs)
            configs.forget()
            try:
                wanted = await configs.mailboxes()
            except Exception as exc:  # a config that no longer decrypts, ...
                self.last_reload_error = f"{type(exc).__name__}: {exc}"
                log.error("bounce: the configuration cannot be read: %s", self.last_reload_error)
                return
            self.last_reload_error = None
            return_paths = await self._return_paths()
            for key, running in list(self.running.items()):
                if wanted.get(key) != running.config:
                    await self._stop_one(key)
                else:
                    running.processor.correlator.return_paths = return_paths
            for key, config in wanted.items():
                if key not in self.running:
                    self._start_one(key, config, return_paths)

    async def _return_paths(self) -> set[str]:
        """Every configured return path (a VERP address is recognised in any mailbox; the
        tenant check then decides)."""
        configs = self.rt.local(BounceConfigs)
        found = set()
        for tenant in await self.rt.storage.list_tenants():
            own = await configs.own(tenant.id)
            if own is not None and own.return_path:
                found.add(own.return_path.lower())
        return found

    def _start_one(self, key: str, config: BounceConfig, return_paths: set[str]) -> None:
        from mail_proxy.core.imap.poller import ImapPoller, MailboxSettings
        from mail_proxy.core.imap.state import SqlMailboxStateStore

        section = self.rt.settings.section(SECTION)
        skey = state_key(key)
        processor = MailboxProcessor(self.rt, skey, Correlator(self.rt, key, return_paths))
        store = SqlMailboxStateStore(self.rt.storage.database, schema.mailbox_state)
        mailbox = MailboxSettings(
            host=config.host or "",
            port=config.effective_port,
            user=config.user or "",
            password=config.password or "",
            folder=config.folder,
            use_tls=config.use_tls,
            starttls=config.starttls,
            poll_interval=config.poll_interval,
            batch_size=section.bounce_batch_size,
            max_message_bytes=section.bounce_max_message_bytes,
            processed_folder=config.processed_folder,
        )
        poller = ImapPoller(
            mailbox,
            FlushingStateStore(store, processor),
            processor.handle,
            skey,
            owner=self.rt.instance_id,
        )
        task = asyncio.create_task(poller.run(), name=f"bounce-poller {key}")
        self.running[key] = _Running(config, poller, processor, task, time.time())
        log.info("bounce: polling %s every %ss", key, config.poll_interval)

    async def _stop_one(self, key: str) -> None:
        running = self.running.pop(key)
        running.poller.stop()
        try:
            await asyncio.wait_for(asyncio.shield(running.task), 15)
        except Exception:
            running.task.cancel()
            with contextlib.suppress(BaseException):
                await running.task
        with contextlib.suppress(Exception):
            await running.processor.flush()
        log.info("bounce: stopped polling %s", key)

    # -- status and metrics ---------------------------------------------------------------
    def status(self) -> list[dict[str, Any]]:
        """Each mailbox's poller status (``GET /instance/bounce``)."""
        out = []
        for key, running in sorted(self.running.items()):
            state = running.poller.status()
            state["mailbox"] = key
            state["poll_interval"] = running.config.poll_interval
            state["state"] = _state(running.poller)
            out.append(state)
        return out

    def _lag(self) -> dict[str, tuple[float, bool]]:
        return {
            key: (r.poller.last_poll_ts or r.started_at, r.poller.connected)
            for key, r in self.running.items()
            if r.poller.has_lease or r.poller.last_error  # the instance that polls it
        }

    async def _watch_loop(self) -> None:
        section = self.rt.settings.section(SECTION)
        next_reload = time.monotonic() + section.bounce_config_refresh
        next_purge = time.monotonic()
        metrics = self.rt.local(BounceMetrics)
        while True:
            await asyncio.sleep(WATCH_INTERVAL)
            for running in list(self.running.values()):
                delta = running.poller.skipped_too_large - running.too_large_seen
                if delta > 0:
                    metrics.rejected.labels(why="too_large").inc(delta)
                    running.too_large_seen += delta
            try:
                if time.monotonic() >= next_reload:
                    next_reload = time.monotonic() + section.bounce_config_refresh
                    await self.reload()
                if time.monotonic() >= next_purge:
                    next_purge = time.monotonic() + PURGE_INTERVAL
                    await self._purge_seen()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning("bounce: periodic work failed", exc_info=True)

    async def _purge_seen(self) -> None:
        keep = max(SEEN_RETENTION, float(getattr(self.rt.settings, "report_retention_seconds", 0)))
        t = schema.seen
        async with self.rt.storage.database.begin() as conn:
            await conn.execute(t.delete().where(t.c.seen_at < time.time() - keep))


def _state(poller: ImapPoller) -> str:
    if poller.last_error:
        return "failing"
    if not poller.has_lease:
        return "standby" if poller.last_poll_ts is None else "handed_over"
    return "polling" if poller.connected else "connecting"


async def tenant_changed(runtime: Runtime, tenant_id: str) -> None:
    """A tenant changed: when its bounce setting did, apply it now."""
    from mail_proxy.core.engine.tenant_settings import TenantSettings

    configs = runtime.local(BounceConfigs)
    before = await configs.own(tenant_id)
    configs.forget(tenant_id)
    runtime.local(TenantSettings).forget(tenant_id)  # whichever hook runs first
    after = await configs.own(tenant_id)
    if before != after and runtime.services and runtime.local(BounceService) in runtime.services:
        await runtime.local(BounceService).reload()
