"""A real, scriptable SMTP server for tests, built on aiosmtpd.

It runs in the test's own event loop (``loop.create_server`` on 127.0.0.1, ephemeral port),
so there is no thread, no port race, and no "trigger" connection polluting the counts::

    async with SmtpTestServer() as server:
        ...send to ("127.0.0.1", server.port)...
        assert server.messages[0].rcpt_tos == ["a@example.com"]

What it records: every accepted message (:class:`ReceivedMessage`: envelope, raw bytes,
parsed ``EmailMessage``, time, connection id, whether the session was encrypted and who
authenticated), every connection (:class:`ConnectionInfo`), every AUTH attempt
(:class:`AuthAttempt`, also those refused before credentials were read) and every command
verb per connection.

What it can be told to do (change the attributes at any time):

* ``script_rcpt = {"addr": "450 4.2.0 try later"}``: reply to RCPT for that address;
* ``mail_reply = "451 ..."``: reply to every MAIL FROM;
* ``data_replies.append("451 4.3.0 temp")``: replies to the end of the content, one consumed
  per message (default ``250 OK``);
* ``data_command_reply = "554 ..."``: reply to the ``DATA`` command itself (no ``354``, so no
  content follows);
* ``drop_data = 1``: drop the connection after the data is received, before replying, that
  many times;
* ``data_delay = 2.0``: stall that long before answering DATA;
* ``auth=("user", "pw")``: offer AUTH and accept only those credentials; with
  ``auth_required=True`` MAIL is refused until authenticated;
* ``starttls=True`` offers STARTTLS, ``implicit_tls=True`` makes the port TLS from the first
  byte; ``auth_require_tls`` (default: on when TLS is configured) hides AUTH before TLS;
* ``pipelining=False``: do not offer PIPELINING (RFC 2920) in the EHLO reply. aiosmtpd reads
  commands one line at a time from a buffer, so it answers pipelined commands in order; it
  just does not advertise the extension, which this server adds by default.

Certificates are minted with ``trustme`` for ``127.0.0.1`` and ``localhost``; clients trust
them through ``server.ca_file``. ``tls_context`` serves another certificate instead (e.g. a
self-signed one: then there is no ``ca_file``).
"""

from __future__ import annotations

import asyncio
import shutil
import ssl
import tempfile
import time
from collections import deque
from dataclasses import dataclass, field
from email import message_from_bytes
from email import policy as email_policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any, cast

import trustme
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

SERVER_NAME = "smtp.test.invalid"


@dataclass
class ReceivedMessage:
    mail_from: str
    rcpt_tos: list[str]
    raw: bytes
    message: EmailMessage
    received_at: float
    connection_id: int
    tls: bool
    authenticated_as: str | None
    mail_options: list[str] = field(default_factory=list)


@dataclass
class ConnectionInfo:
    id: int
    opened_at: float
    closed_at: float | None = None
    tls: bool = False
    commands: list[str] = field(default_factory=list)

    @property
    def open(self) -> bool:
        return self.closed_at is None


@dataclass
class AuthAttempt:
    connection_id: int
    tls: bool
    mechanism: str
    #: ``None`` when the server refused before reading credentials (e.g. TLS required).
    success: bool | None
    login: str | None = None


class _Handler:
    """aiosmtpd hooks, delegating to the owning :class:`SmtpTestServer`."""

    def __init__(self, owner: SmtpTestServer) -> None:
        self.owner = owner

    async def handle_EHLO(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        hostname: str,
        responses: list[str],
    ) -> list[str]:
        session.host_name = hostname
        if self.owner.auth is None:
            responses = [r for r in responses if not r[4:].upper().startswith("AUTH")]
        if self.owner.pipelining:
            responses.insert(1, "250-PIPELINING")
        return responses

    async def handle_MAIL(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        mail_options: list[str],
    ) -> str:
        if self.owner.mail_reply:
            return self.owner.mail_reply
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        self.owner.rcpts.append(address)
        scripted = self.owner.script_rcpt.get(address) or self.owner.script_rcpt.get(
            address.lower()
        )
        if scripted:
            return scripted
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        owner = self.owner
        proto = cast(_RecordingSMTP, server)
        raw = bytes(envelope.original_content or b"")
        if owner.drop_data > 0:
            owner.drop_data -= 1
            owner.dropped.append(raw)
            cast(asyncio.Transport, server.transport).abort()
            # connection_lost cancels this handler; the sleep only waits for that.
            await asyncio.sleep(30)
            return "421 dropped"
        if owner.data_delay:
            await asyncio.sleep(owner.data_delay)
        reply = owner.data_replies.popleft() if owner.data_replies else "250 OK"
        if reply.startswith("2"):
            auth = session.auth_data
            login = auth.login.decode() if isinstance(auth, LoginPassword) else None
            owner.messages.append(
                ReceivedMessage(
                    mail_from=envelope.mail_from or "",
                    rcpt_tos=list(envelope.rcpt_tos),
                    raw=raw,
                    message=cast(
                        EmailMessage, message_from_bytes(raw, policy=email_policy.default)
                    ),
                    received_at=time.time(),
                    connection_id=proto.conn_id,
                    tls=proto.is_tls,
                    authenticated_as=login,
                    mail_options=list(envelope.mail_options),
                )
            )
            owner._received.set()
        else:
            owner.refused_data.append(raw)
        return reply

    async def handle_exception(self, error: Exception) -> str:
        """Record session errors (e.g. a client refusing our certificate) instead of logging."""
        self.owner.errors.append(error)
        return "421 4.3.0 session error"


class _RecordingSMTP(SMTP):
    """aiosmtpd's protocol plus connection, command and AUTH bookkeeping."""

    def __init__(self, owner: SmtpTestServer, **kwargs: Any) -> None:
        super().__init__(_Handler(owner), **kwargs)
        self.owner = owner
        self.conn_id = 0
        self.implicit_tls = owner.implicit_tls
        self._current_attempt: AuthAttempt | None = None

    @property
    def is_tls(self) -> bool:
        return self.implicit_tls or self._tls_protocol is not None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        first = self.conn_id == 0
        super().connection_made(transport)
        if first:
            self.owner._next_id += 1
            self.conn_id = self.owner._next_id
            info = ConnectionInfo(self.conn_id, time.monotonic(), tls=self.implicit_tls)
            self.owner.connections.append(info)
            self.owner._live[self.conn_id] = self
        else:  # the same connection after STARTTLS
            self.owner.connection(self.conn_id).tls = True

    def connection_lost(self, error: Exception | None) -> None:
        if self.conn_id:
            info = self.owner.connection(self.conn_id)
            if info.closed_at is None:
                info.closed_at = time.monotonic()
            self.owner._live.pop(self.conn_id, None)
        super().connection_lost(error)

    async def _record(self, verb: str) -> None:
        self.owner.connection(self.conn_id).commands.append(verb)

    async def smtp_NOOP(self, arg: str) -> None:
        await self._record("NOOP")
        await super().smtp_NOOP(arg)

    async def smtp_MAIL(self, arg: str | None) -> None:
        await self._record("MAIL")
        await super().smtp_MAIL(arg)

    async def smtp_DATA(self, arg: str) -> None:
        await self._record("DATA")
        scripted = self.owner.data_command_reply
        if scripted and self.envelope is not None and self.envelope.rcpt_tos:
            await self.push(scripted)
            return
        await super().smtp_DATA(arg)

    async def smtp_RSET(self, arg: str) -> None:
        await self._record("RSET")
        await super().smtp_RSET(arg)

    async def smtp_STARTTLS(self, arg: str) -> None:
        await self._record("STARTTLS")
        await super().smtp_STARTTLS(arg)

    async def smtp_QUIT(self, arg: str) -> None:
        await self._record("QUIT")
        await super().smtp_QUIT(arg)

    async def smtp_AUTH(self, arg: str) -> None:
        await self._record("AUTH")
        mechanism = (arg or "").split(" ", 1)[0].upper()
        attempt = AuthAttempt(self.conn_id, self.is_tls, mechanism, success=None)
        self.owner.auth_attempts.append(attempt)
        self._current_attempt = attempt
        await super().smtp_AUTH(arg)
        if self.session is not None and self.session.authenticated:
            attempt.success = True


class SmtpTestServer:
    """A scriptable SMTP server on 127.0.0.1 (see the module doc). Use ``async with``."""

    def __init__(
        self,
        *,
        starttls: bool = False,
        implicit_tls: bool = False,
        auth: tuple[str, str] | None = None,
        auth_required: bool = False,
        auth_require_tls: bool | None = None,
        ca: trustme.CA | None = None,
        host: str = "127.0.0.1",
        idle_timeout: float = 300.0,
        pipelining: bool = True,
        tls_context: ssl.SSLContext | None = None,
    ) -> None:
        self.host = host
        self.port = 0
        self.starttls = starttls
        self.implicit_tls = implicit_tls
        self.auth = auth
        self.auth_required = auth_required
        tls = starttls or implicit_tls
        self.auth_require_tls = tls if auth_require_tls is None else auth_require_tls
        self.idle_timeout = idle_timeout
        self.pipelining = pipelining
        # Scripting.
        self.script_rcpt: dict[str, str] = {}
        #: Every RCPT address the server was given, refused or not, in order.
        self.rcpts: list[str] = []
        self.mail_reply: str | None = None
        self.data_replies: deque[str] = deque()
        self.data_command_reply: str | None = None
        self.drop_data = 0
        self.data_delay = 0.0
        # Records.
        self.messages: list[ReceivedMessage] = []
        self.connections: list[ConnectionInfo] = []
        self.auth_attempts: list[AuthAttempt] = []
        self.dropped: list[bytes] = []
        self.refused_data: list[bytes] = []
        #: Exceptions raised inside sessions (TLS handshake failures, ...).
        self.errors: list[Exception] = []
        # TLS material.
        self._tmpdir: Path | None = None
        self.ca: trustme.CA | None = ca
        if ca is None and tls and tls_context is None:
            self.ca = trustme.CA()
        self.ca_file: str | None = None
        self._ssl: ssl.SSLContext | None = tls_context
        # Internals.
        self._next_id = 0
        self._live: dict[int, _RecordingSMTP] = {}
        self._received = asyncio.Event()
        self._server: asyncio.AbstractServer | None = None

    # -- lifecycle -------------------------------------------------------------------
    async def start(self) -> SmtpTestServer:
        if self.ca is not None:
            self._tmpdir = Path(tempfile.mkdtemp(prefix="smtp-test-"))
            ca_path = self._tmpdir / "ca.pem"
            self.ca.cert_pem.write_to_path(str(ca_path))
            self.ca_file = str(ca_path)
            if self._ssl is None:
                self._ssl = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
                self.ca.issue_cert("127.0.0.1", "localhost").configure_cert(self._ssl)
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            self._factory,
            host=self.host,
            port=0,
            ssl=self._ssl if self.implicit_tls else None,
        )
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for proto in list(self._live.values()):
                if proto.transport is not None:
                    cast(asyncio.Transport, proto.transport).abort()
            await asyncio.sleep(0)
            try:
                await asyncio.wait_for(self._server.wait_closed(), 5)
            except asyncio.TimeoutError:
                pass
            self._server = None
        if self._tmpdir is not None:
            shutil.rmtree(self._tmpdir, ignore_errors=True)
            self._tmpdir = None

    async def __aenter__(self) -> SmtpTestServer:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def _factory(self) -> _RecordingSMTP:
        return _RecordingSMTP(
            self,
            hostname=SERVER_NAME,
            enable_SMTPUTF8=True,
            tls_context=self._ssl if self.starttls else None,
            auth_required=self.auth_required,
            # aiosmtpd only knows STARTTLS as "TLS": on an implicit-TLS port every session
            # is already encrypted, so its own check must be off.
            auth_require_tls=self.auth_require_tls and not self.implicit_tls,
            authenticator=self._authenticate,
            timeout=self.idle_timeout,
        )

    def _authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        proto = cast(_RecordingSMTP, server)
        ok = (
            self.auth is not None
            and isinstance(data, LoginPassword)
            and (data.login.decode(), data.password.decode()) == self.auth
        )
        attempt = proto._current_attempt
        if attempt is not None:
            attempt.success = ok
            attempt.login = data.login.decode() if isinstance(data, LoginPassword) else None
        return AuthResult(success=ok, handled=False, auth_data=data if ok else None)

    # -- helpers for tests -------------------------------------------------------------
    def connection(self, conn_id: int) -> ConnectionInfo:
        return self.connections[conn_id - 1]

    @property
    def connection_count(self) -> int:
        """Connections accepted so far."""
        return len(self.connections)

    @property
    def open_connections(self) -> list[ConnectionInfo]:
        return [c for c in self.connections if c.open]

    def client_options(self) -> dict[str, Any]:
        """Account ``options`` that make a client trust this server's certificate."""
        return {"tls_ca_file": self.ca_file} if self.ca_file else {}

    def drop_all_connections(self) -> None:
        """Close every open connection from the server side (simulates a server restart)."""
        for proto in list(self._live.values()):
            if proto.transport is not None:
                proto.transport.close()

    async def wait_for_messages(self, count: int, timeout: float = 5.0) -> list[ReceivedMessage]:
        """Wait until ``count`` messages were accepted (bounded by ``timeout``)."""

        async def wait() -> None:
            while len(self.messages) < count:
                self._received.clear()
                await self._received.wait()

        await asyncio.wait_for(wait(), timeout)
        return self.messages

    async def wait_until(self, predicate: Any, timeout: float = 5.0) -> None:
        """Poll ``predicate()`` every 10 ms until true (bounded by ``timeout``)."""

        async def wait() -> None:
            while not predicate():  # noqa: ASYNC110 - any predicate, no event to wait on
                await asyncio.sleep(0.01)

        await asyncio.wait_for(wait(), timeout)
