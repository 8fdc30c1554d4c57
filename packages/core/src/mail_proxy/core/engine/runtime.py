"""The runtime: one object holding what a running service is made of.

Settings, the plugin manager, the registries plugins filled, the storage, the cipher for
secrets, the metrics and the services. The web application keeps it under
``app[RUNTIME]``; services and plugins receive it as an argument. Nothing here is global.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from mail_proxy.core.contracts.errors import ConfigError
from mail_proxy.core.contracts.extensions import (
    AccountFields,
    Event,
    EventType,
    MessageStep,
    MigrationBranch,
    SettingsSection,
    TenantSetting,
)
from mail_proxy.core.contracts.fetch import Fetcher
from mail_proxy.core.contracts.model import EventRecord, NewEvent, Principal
from mail_proxy.core.contracts.reports import ReportSink
from mail_proxy.core.contracts.transport import Transport, TransportFactory
from mail_proxy.core.engine.clock import SharedClock
from mail_proxy.core.engine.controls import ReportSync, Scheduler
from mail_proxy.core.engine.encryption import (
    LEGACY_PREFIX,
    Cipher,
    EncryptionError,
    load_key,
    secret_context,
)
from mail_proxy.core.engine.intake import IntakePressure
from mail_proxy.core.plugins.manager import PluginManager
from mail_proxy.core.plugins.registry import Registry

if TYPE_CHECKING:
    from aiohttp import web

    from mail_proxy.core.contracts.config import Settings
    from mail_proxy.core.contracts.services import Service
    from mail_proxy.core.contracts.storage import Storage
    from mail_proxy.core.engine.metrics import Metrics

log = logging.getLogger(__name__)
T = TypeVar("T")

KEY_CHECK_SETTING = "encryption_key_check"
KEY_CHECK_PLAINTEXT = "genro-mail-proxy key check"
KEY_CHECK_CONTEXT = secret_context("instance_settings", "value", KEY_CHECK_SETTING)
#: Recorded once every stored secret is bound to its place (:meth:`Runtime.upgrade_secrets`).
SECRETS_FORMAT_SETTING = "secrets_format"
SECRETS_FORMAT = 2
#: Settings ``PUT /instance`` may change while running; stored values win over the config.
LIVE_SETTINGS = (
    "instance_name",
    "send_loop_interval",
    "max_retries",
    "retry_delays",
    "sync_interval",
)


class StorageFactory(Protocol):
    def __call__(self, runtime: Runtime, url: str) -> Storage: ...


ServiceFactory = Callable[["Runtime"], "Service | None"]


class Runtime:
    """Everything a running instance needs; built by :meth:`create`, then :meth:`start`."""

    def __init__(self, settings: Settings, plugins: PluginManager) -> None:
        from mail_proxy.core.engine.metrics import Metrics

        self.settings = settings
        self.plugins = plugins
        self.instance_id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.storage_backends: Registry[StorageFactory] = Registry("storage backend")
        self.fetchers: Registry[Fetcher] = Registry("fetch mode")
        self.transport_factories: Registry[TransportFactory] = Registry("transport")
        self.report_sinks: Registry[ReportSink] = Registry("report sink")
        self.service_factories: Registry[ServiceFactory] = Registry("service")
        self.metrics: Metrics = Metrics()
        self.cipher: Cipher | None = None
        self.key_source: str | None = None
        #: Keys that also decrypt (never encrypt) while and after a rotation: objects read
        #: before the swap (cached accounts) still hold tokens of the previous key.
        self._decrypt_fallbacks: list[Cipher] = []
        self._rotation_lock = asyncio.Lock()
        self.storage: Storage = None  # type: ignore[assignment]  # set by start()
        #: Wall-clock time for what instances compare (leases, rate windows, deferrals): the
        #: database's clock (clock.py). ``time.time()`` only for what stays in this process.
        self.clock = SharedClock()
        self.services: list[Service] = []
        self._transports: dict[str, Transport] = {}
        #: Set to wake the dispatcher now (new messages, run-now).
        self.dispatch_wakeup = asyncio.Event()
        #: Messages being accepted right now; the dispatcher yields to a busy intake.
        self.intake = IntakePressure()
        #: Set to wake the reporter now (new events, run-now).
        self.report_wakeup = asyncio.Event()
        #: Pause/resume the dispatcher; ask for a delivery-report sync now.
        self.scheduler = Scheduler(settings.scheduler_active, self.dispatch_wakeup)
        self.report_sync = ReportSync(self.report_wakeup)
        #: What plugins declared beyond engines (contracts/extensions.py).
        self.settings_sections: Registry[SettingsSection] = Registry("settings section")
        self.migration_branches: Registry[MigrationBranch] = Registry("migration branch")
        self.tenant_settings: Registry[TenantSetting] = Registry("tenant setting")
        self.account_fields: Registry[AccountFields] = Registry("account fields")
        self.event_types: Registry[EventType] = Registry("event type")
        self.message_steps: Registry[MessageStep] = Registry("message step")
        self._locals: dict[type, Any] = {}
        self.started_at = time.time()

    # -- construction -----------------------------------------------------------------
    @classmethod
    def create(cls, settings: Settings, plugins: PluginManager) -> Runtime:
        """Fill the registries from the plugins' ``register_*`` hooks."""
        rt = cls(settings, plugins)
        for hook_name, argument, registry in (
            ("register_settings", "sections", rt.settings_sections),
            ("register_storage_backends", "registry", rt.storage_backends),
            ("register_migrations", "branches", rt.migration_branches),
            ("register_fetchers", "registry", rt.fetchers),
            ("register_transports", "registry", rt.transport_factories),
            ("register_report_sinks", "registry", rt.report_sinks),
            ("register_services", "services", rt.service_factories),
            ("register_tenant_settings", "settings", rt.tenant_settings),
            ("register_account_fields", "fields", rt.account_fields),
            ("register_event_types", "event_types", rt.event_types),
            ("register_message_steps", "steps", rt.message_steps),
        ):
            plugins.fill(hook_name, argument, registry)
        settings.bind_sections(
            {name: rt.settings_sections.get(name).settings for name in rt.settings_sections}
        )
        return rt

    def local(self, cls: type[T], factory: Callable[[Runtime], T] | None = None) -> T:
        """This runtime's one instance of ``cls`` (built on first use with ``factory``, or
        ``cls(runtime)``): per-runtime state a plugin or module keeps, typed, in one place."""
        found = self._locals.get(cls)
        if found is None:
            make: Callable[[Runtime], T] = factory or cls  # type: ignore[assignment]
            found = self._locals[cls] = make(self)
        return found  # type: ignore[no-any-return]

    def load_cipher(self) -> None:
        """Load the encryption key (startup error if it is bad or unreadable)."""
        try:
            found = load_key(self.settings.encryption_key, self.settings.instance_dir)
        except EncryptionError as exc:
            raise ConfigError("MAIL_PROXY_ENCRYPTION_KEY", str(exc)) from None
        if found is not None:
            self.cipher = Cipher(found[0])
            self.key_source = found[1]

    async def start(self) -> None:
        """Open storage (migrations included), verify the key, start the services."""
        self.load_cipher()
        url = self.settings.resolved_database_url()
        scheme = url.split(":", 1)[0].split("+", 1)[0]
        if scheme == "postgres":
            scheme = "postgresql"
        try:
            factory = self.storage_backends.get(scheme)
        except Exception as exc:
            raise ConfigError("GMP_DATABASE_URL", str(exc)) from None
        self.storage = factory(self, url)
        await self.storage.start()
        await self.clock.start(self.storage)
        await self._verify_key()
        stored = await self.storage.get_settings()
        if "scheduler_active" in stored:
            self.scheduler.set(bool(stored["scheduler_active"]))
        for key in LIVE_SETTINGS:  # changed with PUT /instance: they outlive a restart
            if key in stored:
                setattr(self.settings, key, stored[key])
        for name in self.service_factories:
            service = self.service_factories.get(name)(self)
            if service is None:
                continue
            await service.start(self)
            self.services.append(service)
            log.debug("service %s started", name)

    async def _verify_key(self) -> None:
        stored = (await self.storage.get_settings()).get(KEY_CHECK_SETTING)
        if stored and self.cipher is None:
            raise ConfigError(
                "MAIL_PROXY_ENCRYPTION_KEY",
                "the database holds encrypted secrets but no encryption key is configured",
            )
        if stored and self.cipher is not None:
            try:
                if stored.startswith(LEGACY_PREFIX):  # upgraded right after this check
                    ok = self.cipher.decrypt_legacy(stored) == KEY_CHECK_PLAINTEXT
                else:
                    ok = self.cipher.decrypt(stored, KEY_CHECK_CONTEXT) == KEY_CHECK_PLAINTEXT
            except EncryptionError:
                ok = False
            if not ok:
                raise ConfigError(
                    "MAIL_PROXY_ENCRYPTION_KEY",
                    f"the key from {self.key_source} is not the key this database was "
                    "encrypted with (see docs/security.md: key rotation)",
                )
        elif self.cipher is not None:
            await self.storage.put_settings(
                {
                    KEY_CHECK_SETTING: self.cipher.encrypt(KEY_CHECK_PLAINTEXT, KEY_CHECK_CONTEXT),
                    SECRETS_FORMAT_SETTING: SECRETS_FORMAT,
                }
            )

    async def upgrade_secrets(self) -> int:
        """The one-time migration to place-bound ciphertexts: every ``gcm1:`` token (no
        associated data) is re-encrypted as ``gcm2:`` bound to its table, column and row, in
        the storage's tables (one transaction) and then in the plugins' own tables
        (``reencrypt_secrets``); ``secrets_format`` is recorded last, so an interrupted
        upgrade runs again at the next start (tokens already bound are left as they are).
        Runs at startup, before any service reads a secret. Returns how many changed."""
        if self.cipher is None:
            return 0
        if (await self.storage.get_settings()).get(SECRETS_FORMAT_SETTING) == SECRETS_FORMAT:
            return 0
        cipher = self.cipher

        def bind(token: str, context: str) -> str:
            if not token.startswith(LEGACY_PREFIX):
                return token
            return cipher.encrypt(cipher.decrypt_legacy(token), context)

        try:
            changed = await self.storage.reencrypt_secrets(bind)
            changed += await self.plugins.reencrypt_secrets(bind, self)
        except EncryptionError as exc:
            raise ConfigError(
                "MAIL_PROXY_ENCRYPTION_KEY",
                f"upgrading the stored secrets to place-bound encryption failed: {exc}",
            ) from None
        await self.storage.put_settings({SECRETS_FORMAT_SETTING: SECRETS_FORMAT})
        if changed:
            log.info("stored secrets bound to their place: %d value(s) re-encrypted", changed)
        return changed

    async def stop(self) -> None:
        for service in reversed(self.services):
            try:
                await service.stop()
            except Exception:
                log.exception("service %s failed to stop", service.name)
        self.services.clear()
        # transports hold SMTP pools, sinks and fetchers HTTP sessions: one failing to close
        # must not keep the others (and the storage) open
        closable: list[tuple[str, str, Transport | ReportSink | Fetcher]] = [
            *(("transport", name, t) for name, t in self._transports.items()),
            *(("report sink", name, self.report_sinks.get(name)) for name in self.report_sinks),
            *(("fetch mode", name, self.fetchers.get(name)) for name in self.fetchers),
        ]
        for kind, name, item in closable:
            try:
                await item.close()
            except Exception:
                log.exception("%s %s failed to close", kind, name)
        self._transports.clear()
        await self.clock.stop()
        if self.storage is not None:
            await self.storage.close()

    # -- helpers used by the engine and routes ---------------------------------------------
    def transport(self, name: str) -> Transport:
        """The (lazily built, shared) transport registered as ``name``."""
        if name not in self._transports:
            self._transports[name] = self.transport_factories.get(name)(self)
        return self._transports[name]

    def encrypt(self, secret: str, context: str) -> str:
        """``secret`` encrypted for the place ``context`` names (:func:`secret_context`)."""
        if self.cipher is None:
            from mail_proxy.core.contracts.errors import ApiError

            raise ApiError(
                400,
                "encryption_key_missing",
                "storing a secret needs an encryption key: set MAIL_PROXY_ENCRYPTION_KEY "
                "(generate one with `mail-proxy keygen`) and restart",
            )
        return self.cipher.encrypt(secret, context)

    def decrypt(self, token: str, context: str) -> str:
        """The secret stored at ``context``; :class:`EncryptionError` when the token was
        written elsewhere (another row, column or tenant) or under an unknown key."""
        if self.cipher is None:
            raise EncryptionError("no encryption key configured")
        try:
            return self.cipher.decrypt(token, context)
        except EncryptionError:
            for fallback in self._decrypt_fallbacks:
                try:
                    return fallback.decrypt(token, context)
                except EncryptionError:
                    continue
            raise

    async def rotate_key(self, new_key: bytes) -> int:
        """Re-encrypt every stored secret with ``new_key`` and use it from now on.

        One storage transaction rewrites every value (``old.decrypt`` → ``new.encrypt``); if
        any value does not decrypt with the current key, it rolls back and nothing changes
        (:class:`EncryptionError`). Then this instance switches to the new key, keeping the
        old one for decryption only: accounts the dispatcher cached before the swap still
        carry old tokens. A second pass re-encrypts values that requests encrypted with the
        old key while the first pass ran. Returns how many values were rewritten.

        Other instances sharing the database keep the old key until they are restarted
        with the new one (docs/security.md).
        """
        old = self.cipher
        if old is None:
            raise EncryptionError("no encryption key is configured: there is nothing to rotate")
        new = Cipher(new_key)

        def transform(token: str, context: str) -> str:
            try:
                new.decrypt(token, context)
                return token  # already under the new key (written during the rotation)
            except EncryptionError:
                return new.encrypt(old.decrypt(token, context), context)

        async with self._rotation_lock:
            # values committed by the rotation may be read before the swap below
            self._decrypt_fallbacks.insert(0, new)
            try:
                changed = await self.storage.reencrypt_secrets(transform)
            except BaseException:
                self._decrypt_fallbacks.remove(new)
                raise
            self.cipher = new
            self._decrypt_fallbacks = [old]
            try:
                changed += await self.storage.reencrypt_secrets(transform)
            except Exception:  # the rotation itself is committed: report, do not undo
                log.warning("key rotation: the sweep for late writes failed", exc_info=True)
            try:  # the plugins' own tables, now that the new key is in use
                changed += await self.plugins.reencrypt_secrets(transform, self)
            except Exception:
                log.error(
                    "key rotation: a plugin could not re-encrypt its own secrets (they decrypt "
                    "with the previous key until this process stops)",
                    exc_info=True,
                )
        log.info("encryption key rotated: %d stored value(s) re-encrypted", changed)
        return changed

    def wake_dispatcher(self) -> None:
        """``run-now``: wake the dispatcher (also in test mode)."""
        self.dispatch_wakeup.set()

    def notify_enqueued(self) -> None:
        """New messages were stored: deliver them now (test mode waits for run-now)."""
        if not self.settings.test_mode:
            self.dispatch_wakeup.set()

    def wake_reporter(self) -> None:
        self.report_wakeup.set()

    def emit(self, event: Event) -> None:
        """Tell plugins (metrics, audit, services) about a committed event."""
        self.plugins.on_event(event, self)

    async def record_events(self, events: Sequence[NewEvent]) -> list[EventRecord]:
        """Record events on existing messages from a service (a delivery notice read from a mailbox, ...): stored in
        one transaction, then each one told to plugins and the reporter woken. Events naming
        an unknown message are ignored; the recorded ones are returned."""
        recorded = await self.storage.add_events(events)
        for rec in recorded:
            self.emit(
                Event(
                    rec.event_type,
                    rec.tenant_id,
                    rec.metadata.get("account_id"),
                    rec.message_pk,
                    rec.message_id,
                    rec.event_ts,
                    rec.metadata,
                )
            )
        if recorded:
            self.wake_reporter()
        return recorded

    async def tenant_changed(self, tenant_id: str) -> None:
        """A tenant (or its accounts, its settings) changed: every owner clears its cache."""
        await self.plugins.tenant_changed(tenant_id, self)

    async def tenant_deleted(self, tenant_id: str) -> None:
        """A tenant was deleted: every owner deletes and drops what it holds of it."""
        self.report_sync.forget(tenant_id)
        await self.plugins.tenant_deleted(tenant_id, self)

    async def authenticate(self, request: web.Request, token: str) -> Principal | None:
        """The first ``authenticate`` implementation's answer, in hook order."""
        return await self.plugins.authenticate(request, token, self)  # type: ignore[no-any-return]
