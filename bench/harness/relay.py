"""The latency relay: a TCP proxy between the service and an SMTP sink that makes the sink
look far away.

Run as its own process (``python -m harness.relay '{"upstream_port": P, "rtt_ms": 50}'``): it
prints one JSON line ``{"port", "control_port"}`` once it listens, then serves until SIGTERM.
Every chunk read on either side is written to the other side ``rtt_ms / 2`` later (order
kept), so each request/reply exchange costs one ``rtt_ms`` round trip on top of the sink's
own time. ``GET /stats`` on the control port answers ``{"connections", "client_writes",
"client_bytes", "server_writes"}``: ``client_writes`` counts the reads of the service's bytes
(on loopback, one per write of the service while the relay keeps up), from which the
orchestrator derives writes — and so round trips — per message.

Like the sink it is a minimal :class:`asyncio.Protocol` pair per connection, so that the
instrument costs little CPU next to what it measures.
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import sys
from collections import deque
from typing import Any, cast

from aiohttp import web


class Counters:
    def __init__(self) -> None:
        self.connections = 0
        self.client_writes = 0
        self.client_bytes = 0
        self.server_writes = 0

    def stats(self) -> dict[str, Any]:
        return dict(vars(self))


class _Delayed:
    """Writes chunks to ``transport`` ``delay`` seconds after they were handed in, in order."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.transport: asyncio.Transport | None = None
        self.pending: deque[tuple[float, bytes]] = deque()
        self.closing = False
        self.loop = asyncio.get_running_loop()

    def push(self, data: bytes) -> None:
        due = self.loop.time() + self.delay
        self.pending.append((due, data))
        self.loop.call_at(due, self._flush)

    def close_later(self) -> None:
        """Close once what is pending was written (an EOF travels as late as the data)."""
        self.closing = True
        self.loop.call_at(self.loop.time() + self.delay, self._flush)

    def _flush(self) -> None:
        now = self.loop.time()
        out = []
        while self.pending and self.pending[0][0] <= now:
            out.append(self.pending.popleft()[1])
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        if out:
            transport.write(b"".join(out))
        if self.closing and not self.pending:
            transport.close()


class _Upstream(asyncio.Protocol):
    """The relay's connection to the sink: replies go back to the service, delayed."""

    def __init__(self, to_client: _Delayed, counters: Counters) -> None:
        self.to_client = to_client
        self.counters = counters
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.counters.server_writes += 1
        self.to_client.push(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.to_client.close_later()


class _Downstream(asyncio.Protocol):
    """A service connection: its bytes go to the sink, delayed."""

    def __init__(self, upstream_port: int, delay: float, counters: Counters) -> None:
        self.upstream_port = upstream_port
        self.counters = counters
        self.to_client = _Delayed(delay)
        self.to_server = _Delayed(delay)
        self.transport: asyncio.Transport | None = None
        self.connecting: asyncio.Future[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.to_client.transport = self.transport
        self.counters.connections += 1
        self.transport.pause_reading()  # until the sink is connected
        self.connecting = asyncio.ensure_future(self._connect())

    async def _connect(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            upstream, _ = await loop.create_connection(
                lambda: _Upstream(self.to_client, self.counters), "127.0.0.1", self.upstream_port
            )
        except OSError:
            if self.transport is not None:
                self.transport.close()
            return
        self.to_server.transport = upstream
        if self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()
        else:
            upstream.close()

    def data_received(self, data: bytes) -> None:
        self.counters.client_writes += 1
        self.counters.client_bytes += len(data)
        self.to_server.push(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.to_server.close_later()


async def serve(spec: dict[str, Any]) -> None:
    counters = Counters()
    delay = float(spec.get("rtt_ms", 50)) / 2000
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: _Downstream(int(spec["upstream_port"]), delay, counters),
        "127.0.0.1",
        0,
        backlog=1024,
    )

    async def stats(_request: web.Request) -> web.Response:
        return web.json_response(counters.stats())

    app = web.Application()
    app.router.add_get("/stats", stats)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = server.sockets[0].getsockname()[1]
    print(json.dumps({"port": port, "control_port": runner.addresses[0][1]}), flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    server.close()
    await runner.cleanup()


class RelayHandle:
    """The orchestrator's side: start the relay in front of a sink port, read its counters."""

    def __init__(self, upstream_port: int, rtt_ms: float) -> None:
        self.spec = {"upstream_port": upstream_port, "rtt_ms": rtt_ms}
        self.proc: asyncio.subprocess.Process | None = None
        self.port = 0
        self.control = ""

    async def start(self) -> None:
        from .procs import read_json_line, spawn_module

        self.proc = await spawn_module("harness.relay", json.dumps(self.spec))
        ports = await read_json_line(self.proc, 30)
        self.port = ports["port"]
        self.control = f"http://127.0.0.1:{ports['control_port']}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    async def stats(self) -> dict[str, Any]:
        import aiohttp

        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as s:
            async with s.get(self.control + "/stats") as resp:
                data: dict[str, Any] = await resp.json()
                return data

    async def stop(self) -> None:
        from .procs import stop

        if self.proc is not None:
            await stop(self.proc)


def main() -> int:
    logging.basicConfig(level=logging.WARNING)
    asyncio.run(serve(json.loads(sys.argv[1])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
