"""A TCP proxy for SMTP tests: sits between the client and a real server on 127.0.0.1.

It records what the client sends, one entry per read (``client_chunks``: on loopback a client
write that fits the socket buffer arrives in one read, so this counts the client's writes),
and can play the man in the middle: with ``strip = {"STARTTLS"}`` it removes those
capabilities from every EHLO reply before the client sees them (a STARTTLS-stripping attack,
or a server that does not offer PIPELINING). A session that does start TLS through the proxy
is passed on byte for byte from then on::

    async with SmtpProxy(server.port) as proxy:
        ...connect to ("127.0.0.1", proxy.port)...
        proxy.strip = {"STARTTLS"}   # applies to connections opened from now on

It can also break connections: each new connection takes the next :class:`Fault` of
``faults`` (none left: it is passed on untouched), which strikes once the client has sent
``after`` bytes through it: ``reset`` (TCP RST to both sides), ``cut`` (both sides closed
cleanly, like a network cut a firewall reports) or ``stall`` (nothing passes either way any
more, the connection stays open until the client gives up). ``struck`` lists the faults that
struck, in order::

    proxy.faults.extend([Fault("reset"), Fault("cut", after=300), Fault("stall", after=300)])
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
import struct
from collections import deque
from dataclasses import dataclass, field
from typing import Literal

_CAPABILITY = re.compile(rb"^250[- ]([A-Za-z0-9-]+)")


@dataclass
class Fault:
    """What happens to one proxied connection once the client has sent ``after`` bytes."""

    kind: Literal["reset", "cut", "stall"]
    after: int = 0


@dataclass
class _Connection:
    client_w: asyncio.StreamWriter
    server_w: asyncio.StreamWriter
    fault: Fault | None
    #: Set when a stall struck: nothing is passed on any more.
    stalled: asyncio.Event = field(default_factory=asyncio.Event)


class SmtpProxy:
    def __init__(self, upstream_port: int, host: str = "127.0.0.1") -> None:
        self.host = host
        self.upstream_port = upstream_port
        self.port = 0
        #: EHLO capabilities removed from the server's replies (upper case).
        self.strip: set[str] = set()
        #: What the client sent, one entry per read, per connection.
        self.client_chunks: list[list[bytes]] = []
        #: Faults for the next connections, one each, in order.
        self.faults: deque[Fault] = deque()
        #: The faults that struck, in order.
        self.struck: list[Fault] = []
        self._server: asyncio.AbstractServer | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    async def __aenter__(self) -> SmtpProxy:
        self._server = await asyncio.start_server(self._serve, self.host, 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            writer.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def drop_all(self) -> None:
        """Close every proxied connection (both sides)."""
        for writer in list(self._writers):
            writer.close()

    def client_bytes(self) -> bytes:
        """Everything every client sent through the proxy, concatenated."""
        return b"".join(b"".join(chunks) for chunks in self.client_chunks)

    async def _serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        server_r, server_w = await asyncio.open_connection(self.host, self.upstream_port)
        self._writers.update((client_w, server_w))
        conn = _Connection(client_w, server_w, self.faults.popleft() if self.faults else None)
        chunks: list[bytes] = []
        self.client_chunks.append(chunks)
        strip = {s.upper().encode() for s in self.strip}
        up = asyncio.ensure_future(self._up(client_r, conn, chunks))
        down = asyncio.ensure_future(self._down(server_r, conn, strip))
        self._tasks.update((up, down))
        try:
            await asyncio.wait((up, down), return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (up, down):
                task.cancel()
                self._tasks.discard(task)
            for writer in (client_w, server_w):
                writer.close()
                self._writers.discard(writer)

    async def _up(
        self, reader: asyncio.StreamReader, conn: _Connection, record: list[bytes]
    ) -> None:
        """Client to server, counting the bytes a fault waits for."""
        passed = 0
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            while data := await reader.read(65536):
                record.append(data)
                if conn.stalled.is_set():
                    continue  # read and dropped: the client's close ends the connection
                fault = conn.fault
                if fault is not None and passed + len(data) > fault.after:
                    head = data[: fault.after - passed]
                    if head:
                        conn.server_w.write(head)
                        await conn.server_w.drain()
                    self.struck.append(fault)
                    if fault.kind == "stall":
                        conn.stalled.set()
                        continue
                    self._break(conn, reset=fault.kind == "reset")
                    return
                passed += len(data)
                conn.server_w.write(data)
                await conn.server_w.drain()

    async def _down(
        self, reader: asyncio.StreamReader, conn: _Connection, strip: set[bytes]
    ) -> None:
        """Server to client, without the stripped capabilities."""
        writer = conn.client_w
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            if strip:
                # line by line while the session is in clear text (it stays so: STARTTLS,
                # if stripped, is never started)
                while line := await reader.readline():
                    match = _CAPABILITY.match(line)
                    if (match and match.group(1).upper() in strip) or conn.stalled.is_set():
                        continue
                    writer.write(line)
                    await writer.drain()
                return
            while data := await reader.read(65536):
                if conn.stalled.is_set():
                    continue
                writer.write(data)
                await writer.drain()

    @staticmethod
    def _break(conn: _Connection, *, reset: bool) -> None:
        for writer in (conn.client_w, conn.server_w):
            if reset:  # linger 0: close() sends RST instead of FIN
                sock = writer.get_extra_info("socket")
                if sock is not None:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                writer.transport.abort()
            else:
                writer.close()
