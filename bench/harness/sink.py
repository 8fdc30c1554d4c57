"""The SMTP sink: accepts every message, records its ``X-Genro-Mail-ID``, keeps nothing else.

Run as its own process (``python -m harness.sink [HOST] [DATA_DELAY]``): it prints one JSON line
``{"smtp_port", "control_port"}`` on stdout once both servers listen, then serves until
SIGTERM. The orchestrator reads the figures over a tiny HTTP control server:

* ``GET /stats`` → ``{"received", "unique", "duplicated", "without_id", "first_ts", "last_ts"}``
  (``last_ts``: wall-clock time the newest *new* id arrived);
* ``GET /wait?count=N&stall=S&timeout=T`` → the same, once ``unique >= N``, or no new id came
  for ``S`` seconds, or ``T`` seconds passed.

The sink is a measuring instrument sharing two cores with what it measures, so it must cost
little: the SMTP side is a minimal :class:`asyncio.Protocol` written for this purpose (the
general-purpose aiosmtpd cost ~0.45 ms of CPU per message). It speaks just what an SMTP
client needs to deliver (greeting, EHLO/HELO, MAIL, RCPT, DATA, RSET, NOOP, QUIT; PIPELINING,
8BITMIME, SIZE and SMTPUTF8 advertised), answers every command found in one read with one
write, and of each message keeps only the header block (scanned for the id, no MIME
parsing) and the last few bytes needed to spot the ``<CRLF>.<CRLF>`` terminator.

``DATA_DELAY`` (seconds, default 0) makes the sink take that long to accept each message: the
reply to the end of the data leaves that much later (the session reads nothing meanwhile),
like a server that scans or stores the message before answering. Other sessions go on.
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import sys
import time
from typing import Any, cast

from aiohttp import web

NEEDLE = b"\nx-genro-mail-id:"
DATA_LIMIT = 128 * 1024 * 1024
HOSTNAME = "bench-sink"
#: A command line longer than this without its line end is refused (RFC 5321 allows 512).
MAX_LINE = 8192
#: The end of DATA; the message is preceded by a virtual CRLF so that ``.`` first matches too.
TERMINATOR = b"\r\n.\r\n"

GREETING = f"220 {HOSTNAME} {HOSTNAME}\r\n".encode()
EHLO_REPLY = (
    f"250-{HOSTNAME}\r\n250-SIZE {DATA_LIMIT}\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n"
    "250-PIPELINING\r\n250 HELP\r\n"
).encode()
HELO_REPLY = f"250 {HOSTNAME}\r\n".encode()
OK = b"250 OK\r\n"
START_DATA = b"354 End data with <CR><LF>.<CR><LF>\r\n"
BYE = b"221 Bye\r\n"
HELO_FIRST = b"503 Error: send HELO first\r\n"
NESTED_MAIL = b"503 Error: nested MAIL command\r\n"
NEED_MAIL = b"503 Error: need MAIL command\r\n"
NEED_RCPT = b"503 Error: need RCPT command\r\n"
MAIL_SYNTAX = b"501 Syntax: MAIL FROM: <address>\r\n"
RCPT_SYNTAX = b"501 Syntax: RCPT TO: <address>\r\n"
SIZE_EXCEEDED = b"552 Error: message size exceeds fixed maximum message size\r\n"
TOO_MUCH_DATA = b"552 Error: Too much mail data\r\n"
BAD_SYNTAX = b"500 Error: bad syntax\r\n"
LINE_TOO_LONG = b"500 Command line too long\r\n"


def mail_id(raw: bytes | bytearray) -> str | None:
    """The ``X-Genro-Mail-ID`` value of a raw message, looked up in its header block only."""
    end = raw.find(b"\r\n\r\n")
    if end < 0:
        end = len(raw)
    head = b"\n" + raw[:end].lower()
    pos = head.find(NEEDLE)
    if pos < 0:
        return None
    start = pos + len(NEEDLE)
    stop = head.find(b"\r\n", start)
    # the value is taken from the original bytes (ids are case-sensitive); ``head`` is one
    # byte longer than ``raw[:end]``, and a last header line ends where the block does
    value = raw[start - 1 : (stop - 1) if stop >= 0 else end]
    return bytes(value).strip().decode("utf-8", "replace")


class Recorder:
    """Counts ids of the messages received; wakes a waiter once its count is reached.

    A waiter is woken only when its count is reached (and checks for a stall on its own
    timer), not on every new id: the sink spends nothing per message on being watched.
    """

    def __init__(self) -> None:
        self.seen: dict[str, int] = {}
        self.received = 0
        self.without_id = 0
        self.first_ts: float | None = None
        self.last_ts: float | None = None
        #: ``time.monotonic()`` of the newest new id (for the stall test of waiters)
        self.last_new = 0.0
        self.waiters: list[tuple[int, asyncio.Event]] = []

    def record(self, raw: bytes | bytearray) -> None:
        """One accepted message (``raw``: at least its whole header block)."""
        now = time.time()
        self.received += 1
        if self.first_ts is None:
            self.first_ts = now
        ident = mail_id(raw)
        if ident is None:
            self.without_id += 1
        elif ident in self.seen:
            self.seen[ident] += 1
        else:
            self.seen[ident] = 1
            self.last_ts = now
            self.last_new = time.monotonic()
            if self.waiters:
                unique = len(self.seen)
                for count, reached in self.waiters:
                    if unique >= count:
                        reached.set()

    def stats(self) -> dict[str, Any]:
        unique = len(self.seen)
        return {
            "received": self.received,
            "unique": unique,
            "duplicated": self.received - self.without_id - unique,
            "without_id": self.without_id,
            "first_ts": self.first_ts,
            "last_ts": self.last_ts,
        }

    async def wait(self, count: int, stall: float, timeout: float) -> dict[str, Any]:
        """The stats once ``count`` distinct ids arrived, or none came for ``stall`` seconds
        (counted from the newest one, or from the call), or ``timeout`` seconds passed."""
        started = time.monotonic()
        deadline = started + timeout
        entry = (count, asyncio.Event())
        self.waiters.append(entry)
        try:
            while len(self.seen) < count:
                now = time.monotonic()
                wake_at = min(max(started, self.last_new) + stall, deadline)
                if now >= wake_at:
                    break  # no new id for `stall` seconds: whatever is missing is lost
                try:
                    await asyncio.wait_for(entry[1].wait(), wake_at - now)
                except asyncio.TimeoutError:
                    pass  # new ids may have come meanwhile: look again
        finally:
            self.waiters.remove(entry)
        return self.stats()


def _size_too_large(arg: bytes) -> bool:
    """Whether ``MAIL FROM:<...> SIZE=n`` announces more than :data:`DATA_LIMIT`."""
    rest = arg[5:].strip()
    if rest.startswith(b"<"):
        close = rest.find(b">")
        params = rest[close + 1 :] if close >= 0 else b""
    else:
        params = rest.partition(b" ")[2]
    for param in params.split():
        if param[:5].upper() == b"SIZE=":
            try:
                return int(param[5:]) > DATA_LIMIT
            except ValueError:
                return False
    return False


class SmtpSession(asyncio.Protocol):
    """One SMTP connection: commands in, replies out, messages handed to the recorder.

    ``buf`` holds the bytes not handled yet. In command mode every complete line in it is
    answered in order (pipelining), and the replies to one read leave in one write. After
    ``DATA`` it holds a virtual CRLF followed by the message; the terminator is searched
    only in what arrived since the last search (plus the 4 bytes before it, in case it was
    split across reads). Once the header block is complete it is kept aside and the rest of
    the message is dropped as it arrives, but for those 4 bytes.
    """

    def __init__(self, recorder: Recorder, data_delay: float = 0.0) -> None:
        self.recorder = recorder
        self.data_delay = data_delay
        #: The reply to a message's data is held back (``data_delay``): input waits meanwhile.
        self.holding = False
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.greeted = False
        self.has_mail = False
        self.has_rcpt = False
        self.in_data = False
        self.quitting = False
        # DATA state (see the class doc)
        self.scan = 0
        self.head_scan = 2
        self.head: bytes | None = None
        self.dropped = 0
        self.too_big = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.transport.write(GREETING)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.buf = bytearray()
        self.head = None

    def data_received(self, data: bytes) -> None:
        transport = self.transport
        if transport is None or self.quitting:
            return
        buf = self.buf
        buf += data
        if self.holding:
            return
        out: list[bytes] = []
        while buf:
            if self.in_data:
                if not self._data(out):
                    break
                if self.data_delay:
                    # answer the end of the data later; read nothing more until then
                    reply = out.pop()
                    self.holding = True
                    asyncio.get_running_loop().call_later(self.data_delay, self._release, reply)
                    break
                continue
            end = buf.find(b"\n")
            if end < 0:
                if len(buf) > MAX_LINE:
                    out.append(LINE_TOO_LONG)
                    buf.clear()
                break
            line = bytes(buf[:end]).rstrip(b"\r")
            del buf[: end + 1]
            self._command(line, out)
            if self.quitting:
                break
        if out:
            transport.write(out[0] if len(out) == 1 else b"".join(out))
        if self.quitting:
            transport.close()

    def _release(self, reply: bytes) -> None:
        """Send the held reply to a message's data, then handle what arrived meanwhile."""
        self.holding = False
        if self.transport is None:
            return
        self.transport.write(reply)
        if self.buf:
            self.data_received(b"")

    def _reset(self) -> None:
        self.has_mail = self.has_rcpt = False

    def _command(self, line: bytes, out: list[bytes]) -> None:
        verb, _, arg = line.partition(b" ")
        verb = verb.upper()
        arg = arg.strip()
        if verb in (b"MAIL", b"RCPT", b"DATA") and not self.greeted:
            out.append(HELO_FIRST)
        elif verb == b"MAIL":
            if self.has_mail:
                out.append(NESTED_MAIL)
            elif arg[:5].upper() != b"FROM:":
                out.append(MAIL_SYNTAX)
            elif _size_too_large(arg):
                out.append(SIZE_EXCEEDED)
            else:
                self.has_mail = True
                out.append(OK)
        elif verb == b"RCPT":
            if not self.has_mail:
                out.append(NEED_MAIL)
            elif arg[:3].upper() != b"TO:":
                out.append(RCPT_SYNTAX)
            else:
                self.has_rcpt = True
                out.append(OK)
        elif verb == b"DATA":
            if not self.has_rcpt:
                out.append(NEED_RCPT)
            elif arg:
                out.append(b"501 Syntax: DATA\r\n")
            else:
                out.append(START_DATA)
                self.in_data = True
                self.buf[:0] = b"\r\n"
                self.scan, self.head_scan, self.head = 0, 2, None
                self.dropped, self.too_big = 0, False
        elif verb == b"EHLO" or verb == b"HELO":
            if not arg:
                out.append(b"501 Syntax: %s hostname\r\n" % verb)
            else:
                self.greeted = True
                self._reset()
                out.append(EHLO_REPLY if verb == b"EHLO" else HELO_REPLY)
        elif verb == b"RSET":
            self._reset()
            out.append(b"501 Syntax: RSET\r\n" if arg else OK)
        elif verb == b"NOOP":
            out.append(OK)
        elif verb == b"QUIT":
            out.append(BYE)
            self.quitting = True
        elif not verb:
            out.append(BAD_SYNTAX)
        else:
            name = verb.decode("ascii", "replace")
            out.append(f'500 Error: command "{name}" not recognized\r\n'.encode())

    def _data(self, out: list[bytes]) -> bool:
        """Look for the end of the message; True when it was handled (``buf`` then holds
        what followed it), False when more bytes are needed."""
        buf = self.buf
        end = buf.find(TERMINATOR, self.scan)
        if end < 0:
            self.scan = max(0, len(buf) - 4)
            if self.head is None and not self.too_big:
                head_end = buf.find(b"\r\n\r\n", self.head_scan)
                if head_end >= 0:
                    self.head = bytes(buf[2 : head_end + 4])
                else:
                    self.head_scan = max(2, len(buf) - 3)
                    self.too_big = self.dropped + len(buf) - 2 > DATA_LIMIT
            if (self.head is not None or self.too_big) and len(buf) > 4:
                cut = len(buf) - 4
                del buf[:cut]
                self.dropped += cut
                self.scan = 0
            return False
        # the message is buf[2 : end + 2] (its last CRLF included) after `dropped` bytes
        if self.too_big or self.dropped + end > DATA_LIMIT:
            out.append(TOO_MUCH_DATA)
        else:
            self.recorder.record(self.head if self.head is not None else buf[2 : end + 2])
            out.append(OK)
        del buf[: end + len(TERMINATOR)]
        self.in_data = False
        self.head = None
        self._reset()
        return True


def control_app(recorder: Recorder) -> web.Application:
    async def stats(_request: web.Request) -> web.Response:
        return web.json_response(recorder.stats())

    async def wait(request: web.Request) -> web.Response:
        q = request.query
        result = await recorder.wait(
            int(q["count"]), float(q.get("stall", "30")), float(q.get("timeout", "600"))
        )
        return web.json_response(result)

    app = web.Application()
    app.router.add_get("/stats", stats)
    app.router.add_get("/wait", wait)
    return app


async def serve(host: str, data_delay: float = 0.0) -> None:
    recorder = Recorder()
    loop = asyncio.get_running_loop()
    smtp = await loop.create_server(
        lambda: SmtpSession(recorder, data_delay), host, 0, backlog=1024
    )
    runner = web.AppRunner(control_app(recorder), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, 0)
    await site.start()
    smtp_port = smtp.sockets[0].getsockname()[1]
    control_port = runner.addresses[0][1]
    print(json.dumps({"smtp_port": smtp_port, "control_port": control_port}), flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    smtp.close()
    await runner.cleanup()


class SinkHandle:
    """The orchestrator's side: start the sink process, read its figures, stop it."""

    def __init__(self, data_delay: float = 0.0) -> None:
        self.proc: asyncio.subprocess.Process | None = None
        self.smtp_port = 0
        self.control = ""
        self.data_delay = data_delay

    async def start(self) -> None:
        from .procs import read_json_line, spawn_module

        self.proc = await spawn_module("harness.sink", "127.0.0.1", str(self.data_delay))
        ports = await read_json_line(self.proc, 30)
        self.smtp_port = ports["smtp_port"]
        self.control = f"http://127.0.0.1:{ports['control_port']}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    async def _get(self, path: str, timeout: float = 30) -> dict[str, Any]:
        import aiohttp

        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as s:
            async with s.get(self.control + path) as resp:
                data: dict[str, Any] = await resp.json()
                return data

    async def stats(self) -> dict[str, Any]:
        return await self._get("/stats")

    async def wait(self, count: int, stall: float, timeout: float) -> dict[str, Any]:
        """Figures once ``count`` distinct ids arrived, or nothing new came for ``stall`` s."""
        query = f"/wait?count={count}&stall={stall}&timeout={timeout}"
        return await self._get(query, timeout + 30)

    async def stop(self) -> None:
        from .procs import stop

        if self.proc is not None:
            await stop(self.proc)


def main() -> int:
    logging.basicConfig(level=logging.WARNING)
    host = sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1"
    asyncio.run(serve(host, float(sys.argv[2]) if len(sys.argv) > 2 else 0.0))
    return 0


if __name__ == "__main__":
    sys.exit(main())
