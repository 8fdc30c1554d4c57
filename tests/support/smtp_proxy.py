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
"""

from __future__ import annotations

import asyncio
import contextlib
import re

_CAPABILITY = re.compile(rb"^250[- ]([A-Za-z0-9-]+)")


class SmtpProxy:
    def __init__(self, upstream_port: int, host: str = "127.0.0.1") -> None:
        self.host = host
        self.upstream_port = upstream_port
        self.port = 0
        #: EHLO capabilities removed from the server's replies (upper case).
        self.strip: set[str] = set()
        #: What the client sent, one entry per read, per connection.
        self.client_chunks: list[list[bytes]] = []
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

    async def _serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        server_r, server_w = await asyncio.open_connection(self.host, self.upstream_port)
        self._writers.update((client_w, server_w))
        chunks: list[bytes] = []
        self.client_chunks.append(chunks)
        strip = {s.upper().encode() for s in self.strip}
        up = asyncio.ensure_future(self._pump(client_r, server_w, chunks, None))
        down = asyncio.ensure_future(self._pump(server_r, client_w, None, strip))
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

    @staticmethod
    async def _pump(
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        record: list[bytes] | None,
        strip: set[bytes] | None,
    ) -> None:
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            if strip:
                # line by line while the session is in clear text (it stays so: STARTTLS,
                # if stripped, is never started)
                while line := await reader.readline():
                    match = _CAPABILITY.match(line)
                    if match and match.group(1).upper() in strip:
                        continue
                    writer.write(line)
                    await writer.drain()
                return
            while data := await reader.read(65536):
                if record is not None:
                    record.append(data)
                writer.write(data)
                await writer.drain()
