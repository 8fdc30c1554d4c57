"""SMTP delivery through a pool of aiosmtplib connections per account.

One :class:`SmtpTransport` serves the whole service. It keeps a pool per account, keyed by
everything that shapes a connection (tenant, account id, host, port, user, password token,
TLS settings, ``max_connections``, ``allow_plaintext_auth``): editing an account starts a fresh
pool, and the old one drains away through the idle sweep.

Pool rules:

* at most the account's ``max_connections`` connections (default 10), and at most
  ``GMP_SMTP_MAX_CONNECTIONS`` for the whole instance, all accounts together: at that cap a
  new connection first closes the longest-idle connection of any account, or waits for one
  to come back; both limits are per instance (each instance keeps its own connections);
* a connection is opened only when a message needs one and none is idle, and carries message
  after message (most recently used first, no reconnect, ``RSET`` only after a failed
  transaction); one idle for more than ``noop_after`` seconds is checked with ``NOOP`` first,
  one idle longer than ``smtp_idle_timeout`` is closed (also by a background sweep, so an
  account that stops sending lets its connections go);
* a connection whose last exchange broke (timeout, disconnect, malformed reply, TLS error,
  cancellation) is closed, never returned. A clean SMTP refusal (a 4xx/5xx reply, after
  which the client sent ``RSET``) leaves the session usable, so that connection is kept.

The transaction itself (PIPELINING when offered, per-recipient outcomes) is in
:mod:`mail_proxy.ce.transport.transaction`. Timeouts: the account's ``timeout`` bounds each
reply (and each wait for the socket while streaming the content), its ``message_timeout``
the whole transaction of one message, ``GMP_SMTP_CONNECT_TIMEOUT`` connect + TLS + AUTH.

TLS: port 465 (or ``use_tls: true``) → implicit TLS. Otherwise STARTTLS whenever the server
offers it; with ``starttls: true`` it is mandatory: a server that does not offer it fails the
message permanently before any AUTH, and there is no plaintext fallback. An account whose
server offered STARTTLS once is held to it for the life of the process (a connection without
it is refused: a man in the middle can strip STARTTLS from the EHLO reply), unless the account
says ``starttls: false``. Certificates are verified against the system store, or against
``options["tls_ca_file"]`` (a private CA); ``options["tls_verify"] = False`` turns
verification off explicitly.

AUTH is never sent over an unencrypted connection unless the account says
``allow_plaintext_auth: true`` (a relay on a trusted network): otherwise the message fails
permanently, with an error that says why, before the password leaves.

Errors become :class:`TransportError`: connection refused, timeouts, disconnects (also during
DATA) and 4xx replies are temporary; 5xx replies, authentication refused with 5xx, TLS
certificate/handshake failures, missing TLS and configuration problems are permanent.
``code`` carries the SMTP reply code when there was one. The account password is decrypted
only to log in and is never part of an error text or a log line.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
import time
from collections import deque
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import TYPE_CHECKING

from aiosmtplib import (
    SMTP,
    SMTPAuthenticationError,
    SMTPException,
    SMTPHeloError,
    SMTPNotSupported,
    SMTPResponseException,
    SMTPServerDisconnected,
    SMTPTimeoutError,
)

from mail_proxy.ce.settings import SMTP as SMTP_SETTINGS
from mail_proxy.ce.transport.transaction import run_transaction
from mail_proxy.core.contracts.transport import SendResult, Transport, TransportError
from mail_proxy.core.engine.encryption import account_password_context

if TYPE_CHECKING:
    from mail_proxy.core.contracts.model import Account
    from mail_proxy.core.engine.runtime import Runtime

log = logging.getLogger(__name__)

#: A pooled connection idle longer than this is probed with NOOP before reuse (seconds).
NOOP_AFTER = 5.0
#: Bound on the polite QUIT sent to connections the pool retires (seconds).
QUIT_TIMEOUT = 2.0
IMPLICIT_TLS_PORT = 465
#: Per-reply timeout of MAIL/RCPT/DATA when the account sets none (seconds).
SEND_TIMEOUT = 60.0
#: Bound on one message's whole transaction when the account sets none (seconds).
MESSAGE_TIMEOUT = 120.0


@dataclass(frozen=True)
class _PoolKey:
    """What a connection depends on: any change to it means a new pool."""

    tenant_id: str
    account_id: str
    host: str
    port: int
    user: str | None
    password_enc: str | None = field(repr=False)
    implicit_tls: bool
    starttls_required: bool
    #: Whether a server that offered STARTTLS once is held to it (``starttls`` not false).
    starttls_pinned: bool
    allow_plaintext_auth: bool
    tls_ca_file: str | None
    tls_verify: bool
    max_connections: int

    @classmethod
    def of(cls, account: Account, cap: int) -> _PoolKey:
        options = account.options or {}
        implicit = account.use_tls is True or (
            account.use_tls is None and account.port == IMPLICIT_TLS_PORT
        )
        ca_file = options.get("tls_ca_file")
        return cls(
            tenant_id=account.tenant_id,
            account_id=account.id,
            host=account.host,
            port=int(account.port),
            user=account.user or None,
            password_enc=account.password_enc,
            implicit_tls=implicit,
            starttls_required=account.starttls is True and not implicit,
            starttls_pinned=account.starttls is not False,
            allow_plaintext_auth=account.allow_plaintext_auth is True,
            tls_ca_file=str(ca_file) if ca_file else None,
            tls_verify=options.get("tls_verify") is not False,
            max_connections=max(1, min(int(account.max_connections or 1), cap)),
        )

    @property
    def where(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def server(self) -> tuple[str, str, str, int]:
        """The account and server whose STARTTLS offer is remembered."""
        return (self.tenant_id, self.account_id, self.host, self.port)


@dataclass
class _Conn:
    smtp: SMTP
    last_used: float
    #: Still counted among the instance's open connections (until closed).
    counted: bool = True


@dataclass
class _Pool:
    key: _PoolKey
    slots: asyncio.Semaphore
    idle: deque[_Conn] = field(default_factory=deque)
    #: Sends that hold or wait for a slot: the pool is dropped only when none do.
    users: int = 0


def _code_is_permanent(code: int | None) -> bool:
    return code is not None and 500 <= code <= 599


def _in_chain(exc: BaseException, kind: type[BaseException]) -> BaseException | None:
    """The first exception of type ``kind`` in ``exc``'s cause/context chain."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, kind):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def _scrub(text: str, secret: str | None) -> str:
    return text.replace(secret, "***") if secret else text


def _classify(exc: Exception, where: str, secret: str | None = None) -> TransportError:
    """Turn whatever aiosmtplib or the network raised into a :class:`TransportError`."""
    if isinstance(exc, TransportError):
        return exc
    cert = _in_chain(exc, ssl.SSLCertVerificationError)
    if cert is not None:
        detail = getattr(cert, "verify_message", "") or str(cert)
        text = f"{where}: TLS certificate verification failed: {detail}"
        return TransportError(_scrub(text, secret), permanent=True)
    tls = _in_chain(exc, ssl.SSLError)
    if tls is not None and not isinstance(tls, (ssl.SSLEOFError, ssl.SSLZeroReturnError)):
        text = f"{where}: TLS handshake failed: {tls}"
        return TransportError(_scrub(text, secret), permanent=True)
    if isinstance(exc, SMTPAuthenticationError):
        text = f"{where}: authentication refused: {exc.code} {exc.message}"
        return TransportError(
            _scrub(text, secret), permanent=_code_is_permanent(exc.code), code=exc.code
        )
    if isinstance(exc, SMTPResponseException):
        code = exc.code if exc.code > 0 else None
        text = f"{where}: {exc.code} {exc.message}"
        return TransportError(_scrub(text, secret), permanent=_code_is_permanent(code), code=code)
    if isinstance(exc, (SMTPTimeoutError, asyncio.TimeoutError, TimeoutError)):
        text = f"{where}: timed out: {exc}" if str(exc) else f"{where}: timed out"
        return TransportError(_scrub(text, secret), permanent=False)
    if isinstance(exc, (SMTPServerDisconnected, ConnectionError, OSError)):
        # SMTPConnectError (refused, unreachable) is a ConnectionError too.
        return TransportError(_scrub(f"{where}: {exc}", secret), permanent=False)
    if isinstance(exc, (SMTPNotSupported, SMTPException, ValueError)):
        # The server cannot do what the message or the account needs (SMTPUTF8, AUTH),
        # or an address cannot be put on the wire: retrying will not change it.
        return TransportError(_scrub(f"{where}: {exc}", secret), permanent=True)
    text = f"{where}: unexpected {type(exc).__name__}: {exc}"
    return TransportError(_scrub(text, secret), permanent=False)


def _local_fqdn() -> str:
    name = socket.getfqdn()
    if not name or not name.isascii() or any(c.isspace() for c in name):
        return "localhost"
    return name


def _build_tls_context(ca_file: str | None, verify: bool) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=ca_file)
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


class SmtpTransport(Transport):
    """Pooled SMTP delivery (see the module doc). Safe for concurrent ``send`` calls."""

    def __init__(self, runtime: Runtime, *, noop_after: float = NOOP_AFTER) -> None:
        self._runtime = runtime
        smtp = runtime.settings.section(SMTP_SETTINGS)
        self._idle_timeout = float(smtp.smtp_idle_timeout)
        self._connect_timeout = float(smtp.smtp_connect_timeout)
        #: GMP_SMTP_MAX_CONNECTIONS: connections open at once, all accounts together.
        self._cap = max(1, int(smtp.smtp_max_connections))
        self._noop_after = noop_after
        self._pools: dict[_PoolKey, _Pool] = {}
        self._tls_contexts: dict[tuple[str | None, bool], asyncio.Future[ssl.SSLContext]] = {}
        #: Accounts (and their server) that were offered STARTTLS: held to it from then on.
        self._starttls_seen: set[tuple[str, str, str, int]] = set()
        self._local_hostname: str | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self._quitting: set[asyncio.Task[None]] = set()
        self._closed = False
        #: Connections open now (in use, idle, or saying QUIT); never more than ``_cap``.
        self._open_count = 0
        #: Set whenever a connection closes or goes idle (room for a waiting opener).
        self._room = asyncio.Event()
        #: Connections opened so far (observability and tests).
        self.connections_opened = 0

    # -- public API ------------------------------------------------------------------
    async def send(
        self,
        account: Account,
        message: EmailMessage,
        sender: str,
        recipients: list[str],
    ) -> SendResult:
        if self._closed:
            raise TransportError("the SMTP transport is shut down", permanent=False)
        if not recipients:
            raise TransportError("no recipients to send to", permanent=True)
        if not account.host:
            raise TransportError(f"account {account.id}: no SMTP host configured", permanent=True)
        self._ensure_sweeper()
        key = _PoolKey.of(account, self._cap)
        pool = self._pools.get(key)
        if pool is None:
            pool = self._pools[key] = _Pool(key, asyncio.Semaphore(key.max_connections))
        pool.users += 1
        try:
            async with pool.slots:
                return await self._send_on_pool(pool, account, message, sender, recipients)
        finally:
            pool.users -= 1

    async def probe(self, account: Account) -> str:
        """Connect, greet, secure and log in as ``account`` would, then QUIT: what
        "test connection" reports. A new connection outside the pools (what is pooled was
        tested already); failures raise :class:`TransportError` with the password scrubbed."""
        if not account.host:
            raise TransportError(f"account {account.id}: no SMTP host configured", permanent=True)
        key = _PoolKey.of(account, self._cap)
        conn = await self._connect(key, account)
        smtp = conn.smtp
        encrypted = bool(smtp.get_transport_info("sslcontext"))
        try:
            await asyncio.wait_for(smtp.quit(), timeout=self._connect_timeout)
        except Exception:
            smtp.close()
        parts = [f"connected to {key.where}"]
        parts.append("TLS" if encrypted else "no TLS")
        if key.user:
            parts.append(f"logged in as {key.user}")
        return ", ".join(parts)

    @property
    def open_connections(self) -> int:
        """SMTP connections this instance holds open now (all accounts)."""
        return self._open_count

    async def close(self) -> None:
        """Close every pooled connection (QUIT, bounded) and stop the idle sweep."""
        self._closed = True
        if self._sweeper is not None:
            self._sweeper.cancel()
            await asyncio.gather(self._sweeper, return_exceptions=True)
            self._sweeper = None
        for pool in self._pools.values():
            while pool.idle:
                self._retire(pool.idle.pop())
        self._pools.clear()
        if self._quitting:
            await asyncio.gather(*self._quitting, return_exceptions=True)

    # -- sending ----------------------------------------------------------------------
    async def _send_on_pool(
        self,
        pool: _Pool,
        account: Account,
        message: EmailMessage,
        sender: str,
        recipients: list[str],
    ) -> SendResult:
        where = f"{pool.key.where} (account {account.id})"
        timeout = account.timeout if account.timeout and account.timeout > 0 else SEND_TIMEOUT
        limit = account.message_timeout
        limit = limit if limit and limit > 0 else MESSAGE_TIMEOUT
        conn = await self._checkout(pool, account, limit)
        reusable = False
        try:
            try:
                errors, response = await asyncio.wait_for(
                    run_transaction(conn.smtp, message, sender, recipients, timeout), limit
                )
            except (SMTPResponseException, SMTPNotSupported, ValueError) as exc:
                # A clean refusal (followed by RSET), or a message refused before anything
                # was sent (an address, SMTPUTF8 needed and not offered): the session can
                # carry on unless the server closed it.
                reusable = True
                raise _classify(exc, where) from None
            except SMTPTimeoutError as exc:  # one reply late (the account's timeout)
                raise _classify(exc, where) from None
            except asyncio.TimeoutError:  # the whole message late (its message_timeout)
                raise TransportError(
                    f"{where}: timed out: the message was not sent within "
                    f"message_timeout ({limit:g}s)",
                    permanent=False,
                ) from None
            except Exception as exc:
                raise _classify(exc, where) from None
            reusable = True
        finally:
            self._checkin(pool, conn, reusable)
        result = SendResult(response=response)
        for rcpt in recipients:
            refused = errors.get(rcpt)
            if refused is None:
                result.accepted.append(rcpt)
            elif _code_is_permanent(refused.code):
                result.perm_failed[rcpt] = (refused.code, refused.message)
            else:
                result.temp_failed[rcpt] = (refused.code, refused.message)
        return result

    # -- the pool ---------------------------------------------------------------------
    async def _checkout(self, pool: _Pool, account: Account, wait_limit: float) -> _Conn:
        """A live connection for the caller, who holds one of the pool's slots: an idle one,
        else a new one once the instance-wide cap leaves room (waiting at most
        ``wait_limit`` seconds for it)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_limit
        while True:
            conn = await self._take_idle(pool)
            if conn is not None:
                return conn
            if self._open_count < self._cap:
                break
            # at the cap: close the longest-idle connection of any account (its room comes
            # once it said QUIT), or wait for a connection to close or come back idle
            self._evict_idle()
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TransportError(
                    f"{pool.key.where} (account {account.id}): no SMTP connection free within "
                    f"{wait_limit:g}s: all GMP_SMTP_MAX_CONNECTIONS ({self._cap}) are in use",
                    permanent=False,
                )
            self._room.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._room.wait(), remaining)
        self._open_count += 1
        try:
            return await self._connect(pool.key, account)
        except BaseException:
            self._open_count -= 1
            self._room.set()
            raise

    async def _take_idle(self, pool: _Pool) -> _Conn | None:
        """The most recently used idle connection of ``pool`` that is still good."""
        while pool.idle:
            conn = pool.idle.pop()
            idle_for = time.monotonic() - conn.last_used
            if not conn.smtp.is_connected:
                self._discard(conn)
                continue
            if idle_for > self._idle_timeout:
                self._retire(conn)
                continue
            if idle_for > self._noop_after:
                try:
                    await conn.smtp.noop(timeout=self._connect_timeout)
                except BaseException as exc:
                    self._discard(conn)
                    if not isinstance(exc, Exception):
                        raise  # cancelled: the connection is closed, not leaked
                    log.debug("%s: pooled connection failed NOOP (%s)", pool.key.where, exc)
                    continue
            return conn
        return None

    def _evict_idle(self) -> bool:
        """Retire the connection idle the longest, of any account; False if none is idle."""
        oldest: _Pool | None = None
        for pool in self._pools.values():
            if pool.idle and (oldest is None or pool.idle[0].last_used < oldest.idle[0].last_used):
                oldest = pool
        if oldest is None:
            return False
        self._retire(oldest.idle.popleft())
        return True

    def _checkin(self, pool: _Pool, conn: _Conn, reusable: bool) -> None:
        if reusable and not self._closed and conn.smtp.is_connected:
            conn.last_used = time.monotonic()
            pool.idle.append(conn)
            self._room.set()  # an idle connection can make room under the cap
        else:
            self._discard(conn)

    def _discard(self, conn: _Conn) -> None:
        """Close at once (a broken session: no QUIT)."""
        conn.smtp.close()
        self._forget(conn)

    def _forget(self, conn: _Conn) -> None:
        if conn.counted:
            conn.counted = False
            self._open_count -= 1
            self._room.set()

    def _retire(self, conn: _Conn) -> None:
        """Say QUIT (bounded, in the background) and close."""
        task = asyncio.get_running_loop().create_task(self._quit(conn))
        self._quitting.add(task)
        task.add_done_callback(self._quitting.discard)

    async def _quit(self, conn: _Conn) -> None:
        smtp = conn.smtp
        try:
            if smtp.is_connected:
                await smtp.quit(timeout=QUIT_TIMEOUT)
        except Exception:
            pass
        finally:
            smtp.close()
            self._forget(conn)

    def _ensure_sweeper(self) -> None:
        if self._sweeper is None or self._sweeper.done():
            self._sweeper = asyncio.get_running_loop().create_task(self._sweep_loop())

    async def _sweep_loop(self) -> None:
        interval = min(max(self._idle_timeout / 2, 0.05), 30.0)
        while True:
            await asyncio.sleep(interval)
            self._sweep(time.monotonic())

    def _sweep(self, now: float) -> None:
        """Close connections idle too long or closed by the server; drop unused pools."""
        for key, pool in list(self._pools.items()):
            keep: deque[_Conn] = deque()
            for conn in pool.idle:
                if not conn.smtp.is_connected:
                    self._discard(conn)
                elif now - conn.last_used > self._idle_timeout:
                    self._retire(conn)
                else:
                    keep.append(conn)
            pool.idle = keep
            if not keep and pool.users == 0:
                del self._pools[key]

    # -- opening connections -------------------------------------------------------------
    async def _connect(self, key: _PoolKey, account: Account) -> _Conn:
        where = f"{key.where} (account {account.id})"
        secret: list[str] = []
        try:
            smtp = await asyncio.wait_for(
                self._open(key, account, secret), timeout=self._connect_timeout
            )
        except Exception as exc:
            if isinstance(exc, (asyncio.TimeoutError, TimeoutError)) and not str(exc):
                exc = TimeoutError(f"connect/TLS/AUTH took longer than {self._connect_timeout:g}s")
            raise _classify(exc, where, secret[0] if secret else None) from None
        self.connections_opened += 1
        log.debug("%s: new SMTP connection", where)
        return _Conn(smtp, time.monotonic())

    async def _open(self, key: _PoolKey, account: Account, secret: list[str]) -> SMTP:
        """Connect, greet, secure and log in. ``secret`` receives the password for scrubbing."""
        # (a TLS context is built only for a connection that uses TLS: loading the system CA
        # store costs ~0.1 s of CPU)
        context = await self._tls_context(key) if key.implicit_tls else None
        if self._local_hostname is None:
            self._local_hostname = await asyncio.to_thread(_local_fqdn)
        smtp = SMTP(
            hostname=key.host,
            port=key.port,
            use_tls=key.implicit_tls,
            start_tls=False,
            tls_context=context,
            local_hostname=self._local_hostname,
            timeout=self._connect_timeout,
        )
        await smtp.connect()
        try:
            try:
                await smtp.ehlo()
            except SMTPHeloError:
                await smtp.helo()
            encrypted = key.implicit_tls or await self._secure(smtp, key)
            if key.user:
                if not encrypted and not key.allow_plaintext_auth:
                    raise TransportError(
                        f"{key.where}: the connection is not encrypted (the server does not "
                        "offer STARTTLS), so the password is not sent. Use TLS (port 465, or a "
                        "server offering STARTTLS), or set allow_plaintext_auth: true on the "
                        "account for a relay on a trusted network",
                        permanent=True,
                    )
                password = self._password(account)
                if password:
                    secret.append(password)
                await smtp.login(key.user, password)
        except BaseException:
            smtp.close()
            raise
        return smtp

    async def _secure(self, smtp: SMTP, key: _PoolKey) -> bool:
        """STARTTLS when the greeted server offers it; whether the session is now encrypted.
        Refuses a session without TLS for an account that requires it or was offered
        STARTTLS before (see the module doc)."""
        if smtp.supports_extension("starttls"):
            await smtp.starttls(tls_context=await self._tls_context(key))
            await smtp.ehlo()
            if key.starttls_pinned:
                self._starttls_seen.add(key.server)
            return True
        if key.starttls_required:
            raise TransportError(
                f"{key.where}: the account requires STARTTLS but the server does not "
                "offer it (not sending credentials or mail in clear text)",
                permanent=True,
            )
        if key.starttls_pinned and key.server in self._starttls_seen:
            raise TransportError(
                f"{key.where}: the server offered STARTTLS before and does not now; the offer "
                "may have been removed on the way (a downgrade attack), so nothing is sent in "
                "clear text. If the server really stopped offering TLS, save the account with "
                "starttls: false",
                permanent=True,
            )
        return False

    def _password(self, account: Account) -> str:
        if not account.password_enc:
            return ""
        try:
            return self._runtime.decrypt(
                account.password_enc, account_password_context(account.tenant_id, account.id)
            )
        except Exception:
            raise TransportError(
                f"account {account.id}: the stored password cannot be decrypted "
                "(wrong or missing encryption key)",
                permanent=True,
            ) from None

    async def _tls_context(self, key: _PoolKey) -> ssl.SSLContext:
        """The (cached) client TLS context for the key's CA file and verification flag."""
        cache_key = (key.tls_ca_file, key.tls_verify)
        building = self._tls_contexts.get(cache_key)
        if building is None:
            # one build shared by every connection opening meanwhile; a failure is not cached
            building = self._tls_contexts[cache_key] = asyncio.ensure_future(
                asyncio.to_thread(_build_tls_context, key.tls_ca_file, key.tls_verify)
            )
        try:
            return await asyncio.shield(building)
        except (OSError, ssl.SSLError) as exc:
            self._tls_contexts.pop(cache_key, None)
            raise TransportError(
                f"tls_ca_file {key.tls_ca_file!r} cannot be loaded: {exc}", permanent=True
            ) from None
