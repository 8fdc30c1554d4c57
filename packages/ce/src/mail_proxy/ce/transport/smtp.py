"""SMTP delivery through a pool of aiosmtplib connections per account.

One :class:`SmtpTransport` serves the whole service. It keeps a pool per account, keyed by
everything that shapes a connection (tenant, account id, host, port, user, password token,
TLS settings): editing an account starts a fresh pool, and the old one drains away through
the idle sweep.

Pool rules:

* at most ``max_sends_per_account`` connections per account; a send waits for a free one;
* a connection is reused (most recently used first); one idle for more than ``noop_after``
  seconds is checked with ``NOOP`` first, one idle longer than ``smtp_idle_timeout`` is closed
  (also by a background sweep, so an account that stops sending lets its connections go);
* a connection whose last exchange broke (timeout, disconnect, TLS error, cancellation) is
  closed, never returned. A clean SMTP refusal (a 4xx/5xx reply, after which the client sent
  ``RSET``) leaves the session usable, so that connection is kept.

TLS: port 465 (or ``use_tls: true``) → implicit TLS. Otherwise STARTTLS whenever the server
offers it; with ``starttls: true`` it is mandatory: a server that does not offer it fails the
message permanently before any AUTH, and there is no plaintext fallback. Certificates are
verified against the system store, or against ``options["tls_ca_file"]`` (a private CA);
``options["tls_verify"] = False`` turns verification off explicitly.

Errors become :class:`TransportError`: connection refused, timeouts, disconnects (also during
DATA) and 4xx replies are temporary; 5xx replies, authentication refused with 5xx, TLS
certificate/handshake failures and configuration problems are permanent. ``code`` carries the
SMTP reply code when there was one. The account password is decrypted only to log in and is
never part of an error text or a log line.
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
from typing import TYPE_CHECKING, cast

from aiosmtplib import (
    SMTP,
    SMTPAuthenticationError,
    SMTPDataError,
    SMTPException,
    SMTPHeloError,
    SMTPNotSupported,
    SMTPRecipientRefused,
    SMTPResponse,
    SMTPResponseException,
    SMTPServerDisconnected,
    SMTPStatus,
    SMTPTimeoutError,
)

from mail_proxy.ce.settings import SMTP as SMTP_SETTINGS
from mail_proxy.ce.transport.wire import DataPieces, data_pieces
from mail_proxy.core.contracts.transport import SendResult, Transport, TransportError

if TYPE_CHECKING:
    from mail_proxy.core.contracts.model import Account
    from mail_proxy.core.engine.runtime import Runtime

log = logging.getLogger(__name__)

#: A pooled connection idle longer than this is probed with NOOP before reuse (seconds).
NOOP_AFTER = 5.0
#: Bound on the polite QUIT sent to connections the pool retires (seconds).
QUIT_TIMEOUT = 2.0
IMPLICIT_TLS_PORT = 465
#: Per-command timeout of MAIL/RCPT/DATA when the account sets none (seconds).
SEND_TIMEOUT = 60.0


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
    tls_ca_file: str | None
    tls_verify: bool

    @classmethod
    def of(cls, account: Account) -> _PoolKey:
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
            tls_ca_file=str(ca_file) if ca_file else None,
            tls_verify=options.get("tls_verify") is not False,
        )

    @property
    def where(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass
class _Conn:
    smtp: SMTP
    last_used: float


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


async def _transaction(
    smtp: SMTP, message: EmailMessage, sender: str, recipients: list[str], timeout: float
) -> tuple[dict[str, SMTPResponse], str]:
    """One mail transaction: ``MAIL``, ``RCPT`` per recipient, ``DATA`` streamed.

    The same exchange as aiosmtplib's ``send_message`` (SMTPUTF8 when an address needs it,
    ``BODY=8BITMIME`` when offered, else 7bit re-encoding, ``SIZE`` when offered, ``RSET``
    after a refusal), except that every recipient refused is not an exception but a result
    (no DATA is sent; the dispatcher decides from the replies, as for some refused), and
    that the content goes out in slices (:mod:`mail_proxy.ce.transport.wire`): a message with large
    attachments is never flattened into one buffer, nor copied again for line ends and
    dot-stuffing. Returns ``(refused recipients, final reply text)``.
    """
    utf8 = not (sender.isascii() and all(r.isascii() for r in recipients))
    if utf8 and not smtp.supports_extension("smtputf8"):
        raise SMTPNotSupported("an address is not ASCII and the server does not offer SMTPUTF8")
    options = ["SMTPUTF8"] if utf8 else []
    eight_bit = smtp.supports_extension("8bitmime")
    if eight_bit:
        options.append("BODY=8BITMIME")
    data = data_pieces(message, utf8=utf8, cte_type="8bit" if eight_bit else "7bit")
    if smtp.supports_extension("size"):
        options.insert(0, f"SIZE={data.size}")
    encoding = "utf-8" if utf8 else "ascii"
    try:
        await smtp.mail(sender, options=options, encoding=encoding, timeout=timeout)
        refused: list[SMTPRecipientRefused] = []
        for rcpt in recipients:
            try:
                await smtp.rcpt(rcpt, encoding=encoding, timeout=timeout)
            except SMTPRecipientRefused as exc:
                refused.append(exc)
        errors = {r.recipient: SMTPResponse(r.code, r.message) for r in refused}
        if len(refused) == len(recipients):
            # nobody to send to: end the transaction; the caller maps each refusal
            await _reset(smtp, timeout)
            return errors, ""
        reply = await _send_data(smtp, data, timeout)
    except SMTPResponseException:
        await _reset(smtp, timeout)
        raise
    return errors, reply.message


async def _reset(smtp: SMTP, timeout: float) -> None:
    """``RSET`` after a refusal, so the pooled session can carry the next message."""
    with contextlib.suppress(ConnectionError, SMTPException):
        await smtp.rset(timeout=timeout)


async def _send_data(smtp: SMTP, data: DataPieces, timeout: float) -> SMTPResponse:
    """``DATA``, the content chunk by chunk (waiting for the socket to drain between chunks, so
    at most one chunk is buffered), the final ``.``, the server's reply."""
    start = await smtp.execute_command(b"DATA", timeout=timeout)
    if start.code != SMTPStatus.start_input:
        raise SMTPDataError(start.code, start.message)
    protocol = smtp.protocol
    if protocol is None:
        raise SMTPServerDisconnected("connection lost before the message content")
    transport = cast(asyncio.WriteTransport, protocol.transport)
    try:
        last = b""
        for chunk in data.chunks():
            if last:
                protocol.write(last)
                if transport.get_write_buffer_size():
                    # aiosmtplib's protocol has the stdlib flow control (pause/resume_writing):
                    # wait until the socket took the chunk below the low-water mark.
                    await asyncio.wait_for(protocol._drain_helper(), timeout)
            last = chunk
        protocol.write(last + b".\r\n")  # one write for a small message
        reply = await protocol.read_response(timeout=timeout)
    except (asyncio.TimeoutError, SMTPTimeoutError) as exc:
        smtp.close()
        raise SMTPTimeoutError("timed out sending the message content") from exc
    except (SMTPServerDisconnected, ConnectionError) as exc:
        smtp.close()
        raise SMTPServerDisconnected(f"connection lost during DATA: {exc}") from exc
    if reply.code != SMTPStatus.completed:
        raise SMTPDataError(reply.code, reply.message)
    return reply


class SmtpTransport(Transport):
    """Pooled SMTP delivery (see the module doc). Safe for concurrent ``send`` calls."""

    def __init__(self, runtime: Runtime, *, noop_after: float = NOOP_AFTER) -> None:
        settings = runtime.settings
        self._runtime = runtime
        self._pool_size = max(1, int(settings.max_sends_per_account))
        smtp = settings.section(SMTP_SETTINGS)
        self._idle_timeout = float(smtp.smtp_idle_timeout)
        self._connect_timeout = float(smtp.smtp_connect_timeout)
        self._noop_after = noop_after
        self._pools: dict[_PoolKey, _Pool] = {}
        self._tls_contexts: dict[tuple[str | None, bool], asyncio.Future[ssl.SSLContext]] = {}
        self._local_hostname: str | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self._quitting: set[asyncio.Task[None]] = set()
        self._closed = False
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
        key = _PoolKey.of(account)
        pool = self._pools.get(key)
        if pool is None:
            pool = self._pools[key] = _Pool(key, asyncio.Semaphore(self._pool_size))
        pool.users += 1
        try:
            async with pool.slots:
                return await self._send_on_pool(pool, account, message, sender, recipients)
        finally:
            pool.users -= 1

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
        conn = await self._checkout(pool, account)
        reusable = False
        try:
            try:
                errors, response = await _transaction(
                    conn.smtp, message, sender, recipients, timeout
                )
            except (SMTPResponseException, ValueError) as exc:
                # A clean refusal (aiosmtplib sent RSET) or an address refused before
                # anything was sent: the session can carry on unless the server closed it.
                reusable = True
                raise _classify(exc, where) from None
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
    async def _checkout(self, pool: _Pool, account: Account) -> _Conn:
        """A live connection for the caller, who holds one of the pool's slots."""
        while pool.idle:
            conn = pool.idle.pop()
            idle_for = time.monotonic() - conn.last_used
            if not conn.smtp.is_connected:
                conn.smtp.close()
                continue
            if idle_for > self._idle_timeout:
                self._retire(conn)
                continue
            if idle_for > self._noop_after:
                try:
                    await conn.smtp.noop(timeout=self._connect_timeout)
                except BaseException as exc:
                    conn.smtp.close()
                    if not isinstance(exc, Exception):
                        raise  # cancelled: the connection is closed, not leaked
                    log.debug("%s: pooled connection failed NOOP (%s)", pool.key.where, exc)
                    continue
            return conn
        return await self._connect(pool.key, account)

    def _checkin(self, pool: _Pool, conn: _Conn, reusable: bool) -> None:
        if reusable and not self._closed and conn.smtp.is_connected:
            conn.last_used = time.monotonic()
            pool.idle.append(conn)
        else:
            conn.smtp.close()

    def _retire(self, conn: _Conn) -> None:
        """Say QUIT (bounded, in the background) and close."""
        task = asyncio.get_running_loop().create_task(self._quit(conn.smtp))
        self._quitting.add(task)
        task.add_done_callback(self._quitting.discard)

    @staticmethod
    async def _quit(smtp: SMTP) -> None:
        try:
            if smtp.is_connected:
                await smtp.quit(timeout=QUIT_TIMEOUT)
        except Exception:
            pass
        finally:
            smtp.close()

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
                    conn.smtp.close()
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
            if not key.implicit_tls:
                try:
                    await smtp.ehlo()
                except SMTPHeloError:
                    await smtp.helo()
                if smtp.supports_extension("starttls"):
                    await smtp.starttls(tls_context=await self._tls_context(key))
                    await smtp.ehlo()
                elif key.starttls_required:
                    raise TransportError(
                        f"{key.where}: the account requires STARTTLS but the server does not "
                        "offer it (not sending credentials or mail in clear text)",
                        permanent=True,
                    )
            if key.user:
                password = self._password(account)
                if password:
                    secret.append(password)
                await smtp.login(key.user, password)
        except BaseException:
            smtp.close()
            raise
        return smtp

    def _password(self, account: Account) -> str:
        if not account.password_enc:
            return ""
        try:
            return self._runtime.decrypt(account.password_enc)
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
