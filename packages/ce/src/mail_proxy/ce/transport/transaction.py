"""One mail transaction on an open SMTP connection: ``MAIL``, ``RCPT`` per recipient, ``DATA``,
the content streamed, the final reply.

**PIPELINING (RFC 2920).** When the server's EHLO offers it, ``MAIL FROM``, every ``RCPT TO``
and ``DATA`` leave in one write and the replies are read back in order, each matched to its
command; the content follows once ``DATA`` got ``354``. A message then costs two client writes
and two round trips instead of four. Without the extension the commands go one at a time.
The outcome is the same either way:

* a refused recipient does not fail the others (each refusal is returned with its reply);
* every recipient refused: no content is sent (a server that still answers ``354`` to the
  pipelined ``DATA`` gets the lone ``.`` RFC 2920 asks for), ``RSET``, and the refusals are the
  result;
* ``MAIL`` or ``DATA`` refused, or the final reply not ``250``: ``RSET`` and
  :class:`aiosmtplib.SMTPResponseException` (the session stays usable);
* a disconnect, a timeout or a malformed reply: the connection is closed and
  :class:`aiosmtplib.SMTPServerDisconnected` or :class:`aiosmtplib.SMTPTimeoutError` raised;
  the caller must not reuse it.

aiosmtplib has no pipelining and its protocol object keeps one reply at a time (a reply that
arrives while the previous one waits to be picked up is dropped), so for the transaction the
connection's transport hands its bytes to a :class:`_ReplyReader` of our own
(``transport.set_protocol``), which queues every complete reply; the aiosmtplib protocol is put
back afterwards and keeps serving EHLO, AUTH, NOOP, RSET between messages and QUIT.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import re
from collections import deque
from collections.abc import Iterator
from email.message import EmailMessage
from typing import cast

from aiosmtplib import (
    SMTP,
    SMTPDataError,
    SMTPNotSupported,
    SMTPResponse,
    SMTPResponseException,
    SMTPSenderRefused,
    SMTPServerDisconnected,
    SMTPTimeoutError,
)
from aiosmtplib.email import quote_address
from aiosmtplib.protocol import SMTPProtocol

from mail_proxy.ce.transport.addresses import envelope_address, headers_need_smtputf8
from mail_proxy.ce.transport.wire import DataPieces, data_pieces

#: A reply (all its lines) longer than this is a protocol error (RFC 5321 lines are ≤ 512).
MAX_REPLY_BYTES = 64 * 1024
_REPLY_LINE = re.compile(rb"^([2-5][0-9][0-9])([ -]|\r?$)")
_CONTROL = re.compile(rb"[\x00-\x1f\x7f]")
_ACCEPTED = (250, 251)
_DATA = b"DATA\r\n"


def _time_out(waiter: asyncio.Future[None], timeout: float) -> None:
    if not waiter.done():
        waiter.set_exception(SMTPTimeoutError(f"no reply within {timeout:g}s"))


class _ReplyReader(asyncio.Protocol):
    """Stands in for the aiosmtplib protocol during one transaction: every complete reply
    that arrives is queued, in order, whatever number of them one read brings.

    Flow control and the end of the connection are passed on to the aiosmtplib protocol,
    so that its drain helper and its ``close`` bookkeeping keep working.
    """

    def __init__(self, inner: SMTPProtocol) -> None:
        self._inner = inner
        self._buffer = bytearray()
        self._lines: list[bytes] = []
        self._replies: deque[SMTPResponse] = deque()
        self._failure: Exception | None = None
        self._wakeup: asyncio.Future[None] | None = None

    # -- asyncio.Protocol ----------------------------------------------------------------
    def data_received(self, data: bytes) -> None:
        if self._failure is not None:
            return
        self._buffer += data
        while True:
            end = self._buffer.find(b"\n")
            if end < 0:
                break
            line = bytes(self._buffer[: end + 1])
            del self._buffer[: end + 1]
            self._line(line)
            if self._failure is not None:
                return
        if len(self._buffer) + sum(len(x) for x in self._lines) > MAX_REPLY_BYTES:
            self._fail(SMTPServerDisconnected("reply too long: connection dropped"))

    def eof_received(self) -> bool | None:
        self._fail(SMTPServerDisconnected("the server closed the connection mid-reply"))
        return self._inner.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        detail = f": {exc}" if exc else ""
        self._fail(SMTPServerDisconnected(f"connection lost{detail}"))
        self._inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()

    # -- replies -------------------------------------------------------------------------
    def _line(self, line: bytes) -> None:
        match = _REPLY_LINE.match(line)
        if match is None or (self._lines and self._lines[0][:3] != line[:3]):
            shown = line[:80].decode("ascii", "replace").strip()
            self._fail(SMTPServerDisconnected(f"malformed reply {shown!r}: connection dropped"))
            return
        self._lines.append(line)
        if match.group(2) == b"-":
            return  # continued on the next line
        code = int(match.group(1))
        text = b"\n".join(x[4:].strip(b" \t\r\n") for x in self._lines)
        self._lines = []
        self._replies.append(SMTPResponse(code, text.decode("utf-8", "surrogateescape")))
        self._wake()

    def _fail(self, exc: Exception) -> None:
        if self._failure is None:
            self._failure = exc
        self._wake()

    def _wake(self) -> None:
        if self._wakeup is not None and not self._wakeup.done():
            self._wakeup.set_result(None)

    async def read(self, timeout: float) -> SMTPResponse:
        """The next reply in order; waits at most ``timeout`` seconds for it."""
        while not self._replies:
            if self._failure is not None:
                raise self._failure
            loop = asyncio.get_running_loop()
            waiter = self._wakeup = loop.create_future()
            # a plain timer on the future (asyncio.wait_for costs a task's worth of callbacks
            # per reply, and there are three or four replies per message)
            timer = loop.call_later(timeout, _time_out, waiter, timeout)
            try:
                await waiter
            finally:
                timer.cancel()
                self._wakeup = None
        return self._replies.popleft()

    @property
    def idle(self) -> bool:
        """Nothing received beyond the replies read (else the session is out of step)."""
        return not (self._replies or self._lines or self._buffer or self._failure)


class _Exchange:
    """Commands out, replies in, on one connection, while :class:`_ReplyReader` listens."""

    def __init__(self, smtp: SMTP, timeout: float) -> None:
        protocol = smtp.protocol
        if protocol is None or protocol.transport is None or protocol.transport.is_closing():
            raise SMTPServerDisconnected("connection lost before the transaction")
        self.smtp = smtp
        self.protocol = protocol
        self.transport = cast(asyncio.Transport, protocol.transport)
        self.timeout = timeout
        self.replies = _ReplyReader(protocol)

    def write(self, data: bytes) -> None:
        self.protocol.write(data)

    async def read(self) -> SMTPResponse:
        return await self.replies.read(self.timeout)

    async def drain(self) -> None:
        """Wait until the socket took the buffered bytes below the low-water mark."""
        if self.transport.get_write_buffer_size():
            # aiosmtplib's protocol has the stdlib flow control (pause/resume_writing)
            try:
                await asyncio.wait_for(self.protocol._drain_helper(), self.timeout)
            except asyncio.TimeoutError:
                raise SMTPTimeoutError("timed out sending the message content") from None
            except ConnectionError as exc:
                raise SMTPServerDisconnected(f"connection lost during DATA: {exc}") from None

    async def reset(self) -> None:
        """``RSET`` after a failed transaction; a session that cannot be reset is closed."""
        try:
            self.write(b"RSET\r\n")
            reply = await self.read()
        except (SMTPServerDisconnected, SMTPTimeoutError, OSError):
            self.smtp.close()
            return
        if reply.code != 250:
            self.smtp.close()

    @contextlib.contextmanager
    def listening(self) -> Iterator[None]:
        self.transport.set_protocol(self.replies)
        try:
            yield
        except SMTPResponseException:
            raise  # a clean refusal, answered in step and followed by RSET: the session goes on
        except BaseException:
            # timeout, disconnect, malformed reply, cancellation: the next reply would be
            # read as the answer to some later command
            self.smtp.close()
            raise
        finally:
            if not self.transport.is_closing():
                self.transport.set_protocol(self.protocol)
                if not self.replies.idle:
                    self.smtp.close()  # the server said more than it was asked


@functools.lru_cache(maxsize=1024)
def _quoted(address: str) -> str:
    """``<address>`` as aiosmtplib quotes it (``ValueError`` for one it refuses); remembered,
    as the same senders and recipients come back message after message."""
    return quote_address(address)


def envelope_line(verb: bytes, address: str, options: list[str], encoding: str) -> bytes:
    """``MAIL FROM:<addr> OPTIONS`` or ``RCPT TO:<addr>`` for an address in wire form;
    ``ValueError`` for one that cannot be put on a command line (control characters, spaces,
    brackets)."""
    wire = _quoted(address).encode(encoding) if address else b"<>"
    if _CONTROL.search(wire):
        raise ValueError(f"address {address!r} contains a control character")
    parts = [verb + wire, *(o.encode("ascii") for o in options)]
    return b" ".join(parts) + b"\r\n"


async def run_transaction(
    smtp: SMTP, message: EmailMessage, sender: str, recipients: list[str], timeout: float
) -> tuple[dict[str, SMTPResponse], str]:
    """Deliver ``message`` on ``smtp`` (see the module doc); ``timeout`` bounds each reply.

    Addresses go out in their wire form (:func:`~mail_proxy.ce.transport.addresses.
    envelope_address`: internationalised domains as A-labels). ``SMTPUTF8`` is asked for when
    a local part is not ASCII (in the envelope or an address header), and the message is
    refused (:class:`aiosmtplib.SMTPNotSupported`, permanent) when the server does not offer
    it; ``BODY=8BITMIME`` when offered, else 7bit re-encoding; ``SIZE`` when offered. The
    content goes out in slices (:mod:`mail_proxy.ce.transport.wire`). Returns ``(refused
    recipients → reply, final reply text)``, keyed by the recipients as given; the text is
    empty when every recipient was refused.
    """
    wire_sender, sender_utf8 = envelope_address(sender)
    wire_rcpts = [envelope_address(r) for r in recipients]
    needs_utf8 = [a for a, (_wire, utf8) in zip(recipients, wire_rcpts, strict=True) if utf8]
    if sender_utf8:
        needs_utf8.insert(0, sender)
    utf8 = bool(needs_utf8) or headers_need_smtputf8(message)
    if utf8 and not smtp.supports_extension("smtputf8"):
        what = f"the address {needs_utf8[0]!r}" if needs_utf8 else "an address header"
        raise SMTPNotSupported(
            f"{what} has a non-ASCII local part, which needs SMTPUTF8 (RFC 6531), and the "
            "server does not offer it"
        )
    options = ["SMTPUTF8"] if utf8 else []
    eight_bit = smtp.supports_extension("8bitmime")
    if eight_bit:
        options.append("BODY=8BITMIME")
    data = data_pieces(message, utf8=utf8, cte_type="8bit" if eight_bit else "7bit")
    if smtp.supports_extension("size"):
        options.insert(0, f"SIZE={data.size}")
    encoding = "utf-8" if utf8 else "ascii"
    # every command line is built before anything is written: a bad address fails here,
    # with the session untouched
    mail = envelope_line(b"MAIL FROM:", wire_sender, options, encoding)
    rcpts = [envelope_line(b"RCPT TO:", wire, [], encoding) for wire, _utf8 in wire_rcpts]
    exchange = _Exchange(smtp, timeout)
    with exchange.listening():
        if smtp.supports_extension("pipelining"):
            mail_reply, rcpt_replies, data_reply = await _pipelined(exchange, mail, rcpts)
        else:
            mail_reply, rcpt_replies, data_reply = await _stepwise(exchange, mail, rcpts)
        # (no RCPT replies at all after a MAIL refused one step at a time)
        replies = zip(recipients, rcpt_replies, strict=False)
        refused = {r: reply for r, reply in replies if reply.code not in _ACCEPTED}
        nobody = mail_reply.code != 250 or len(refused) == len(recipients)
        if nobody and data_reply is not None and data_reply.code == 354:
            # a pipelined DATA the server took although nobody is to receive it: RFC 2920
            # says to send the lone "." (no content) and ignore the reply
            exchange.write(b".\r\n")
            await exchange.read()
        if mail_reply.code != 250:
            await exchange.reset()
            raise SMTPSenderRefused(mail_reply.code, mail_reply.message, sender)
        if nobody:
            await exchange.reset()
            return refused, ""
        assert data_reply is not None  # some recipient was accepted: DATA was sent
        if data_reply.code != 354:
            await exchange.reset()
            raise SMTPDataError(data_reply.code, data_reply.message)
        reply = await _content(exchange, data)
        if reply.code != 250:
            await exchange.reset()
            raise SMTPDataError(reply.code, reply.message)
    return refused, reply.message


async def _pipelined(
    exchange: _Exchange, mail: bytes, rcpts: list[bytes]
) -> tuple[SMTPResponse, list[SMTPResponse], SMTPResponse | None]:
    """MAIL, every RCPT and DATA in one write; their replies, matched in order."""
    exchange.write(b"".join((mail, *rcpts, _DATA)))
    mail_reply = await exchange.read()
    rcpt_replies = [await exchange.read() for _ in rcpts]
    return mail_reply, rcpt_replies, await exchange.read()


async def _stepwise(
    exchange: _Exchange, mail: bytes, rcpts: list[bytes]
) -> tuple[SMTPResponse, list[SMTPResponse], SMTPResponse | None]:
    """One command per round trip; no RCPT after a refused MAIL, no DATA without a
    recipient (``None`` for the DATA reply then)."""
    exchange.write(mail)
    mail_reply = await exchange.read()
    if mail_reply.code != 250:
        return mail_reply, [], None
    rcpt_replies = []
    for line in rcpts:
        exchange.write(line)
        rcpt_replies.append(await exchange.read())
    if all(r.code not in _ACCEPTED for r in rcpt_replies):
        return mail_reply, rcpt_replies, None
    exchange.write(_DATA)
    return mail_reply, rcpt_replies, await exchange.read()


async def _content(exchange: _Exchange, data: DataPieces) -> SMTPResponse:
    """The content chunk by chunk (at most one chunk buffered beyond the socket), the final
    ``.`` in the same write as the last chunk, and the server's reply."""
    last = b""
    for chunk in data.chunks():
        if last:
            exchange.write(last)
            await exchange.drain()
        last = chunk
    exchange.write(last + b".\r\n")
    return await exchange.read()
