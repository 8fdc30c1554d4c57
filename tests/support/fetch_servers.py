"""Real loopback servers for the attachment-fetch tests.

* :class:`Canary`: a bare TCP listener that only counts accepted connections. A URL the
  address policy must refuse points at a canary; ``canary.connections == 0`` afterwards is the
  proof that no connection was even attempted.
* :class:`FileServer`: an aiohttp application playing the client application that serves
  attachments. It records every request (method, path, headers, JSON body) and knows a few
  routes:

  - ``GET|POST /files/<name>``: the bytes in ``server.files[name]`` (404 if absent);
  - ``POST <endpoint_path>`` (default ``/mail-proxy/attachments``): JSON
    ``{"storage_path": name}`` → ``files[name]``; ``required_auth`` makes it answer 401 to a
    request whose ``Authorization`` header differs;
  - ``GET /redirect?to=<url>&status=<code>``: a redirect to ``to``;
  - ``GET /loop``: redirects to itself forever;
  - ``GET /status/<code>``: an empty answer with that status;
  - ``GET /slow``: waits (until the server stops) before answering;
  - ``GET /stream/<n>``: ``n`` bytes streamed in chunks without a Content-Length;
  - ``GET /declared/<n>``: announces Content-Length ``n`` and sends it.

  ``gate_at = k`` makes ``/files`` and the endpoint hold each request until ``k`` requests
  are in flight together (bounded wait), so a concurrency bound can be observed exactly;
  ``peak`` is the largest number of requests seen in flight at once.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aiohttp import web


class Canary:
    """A TCP listener counting accepted connections (and closing them at once)."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.host = host
        self.port = 0
        self.connections = 0
        self._server: asyncio.AbstractServer | None = None

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        writer.close()

    async def start(self) -> Canary:
        self._server = await asyncio.start_server(self._accept, self.host, 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


class FileServer:
    """The client application's attachment server (see the module doc)."""

    def __init__(self, host: str = "127.0.0.1", endpoint_path: str = "/mail-proxy/attachments"):
        self.host = host
        self.port = 0
        self.endpoint_path = endpoint_path
        self.files: dict[str, bytes] = {}
        self.requests: list[dict[str, Any]] = []
        self.required_auth: str | None = None
        self.gate_at = 0
        self.in_flight = 0
        self.peak = 0
        self._gate = asyncio.Event()
        self._stopping = asyncio.Event()
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def count(self, path: str | None = None) -> int:
        return sum(1 for r in self.requests if path is None or r["path"] == path)

    async def start(self) -> FileServer:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, shutdown_timeout=0.5, handler_cancellation=True)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, 0)
        await site.start()
        self.port = self._runner.addresses[0][1]
        return self

    async def stop(self) -> None:
        self._stopping.set()
        if self._runner is not None:
            await self._runner.cleanup()

    async def _held(self) -> None:
        """Concurrency gate: wait (bounded) until ``gate_at`` requests are in flight."""
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        if self.gate_at and self.in_flight >= self.gate_at:
            self._gate.set()
        if self.gate_at and not self._gate.is_set():
            try:
                await asyncio.wait_for(self._gate.wait(), 5.0)
            except asyncio.TimeoutError:
                pass
        await asyncio.sleep(0.01)  # let any further request arrive while this one is open

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body: Any = None
        if request.can_read_body:
            raw = await request.read()
            try:
                body = json.loads(raw)
            except ValueError:
                body = raw
        path = request.path
        self.requests.append(
            {
                "method": request.method,
                "path": path,
                "headers": dict(request.headers),
                "json": body,
                "query": dict(request.query),
            }
        )
        if self.required_auth is not None and request.headers.get("Authorization") != (
            self.required_auth
        ):
            return web.Response(status=401)
        if path == self.endpoint_path and request.method == "POST":
            name = body.get("storage_path") if isinstance(body, dict) else None
            return await self._file(name)
        if path.startswith("/files/"):
            return await self._file(path[len("/files/") :])
        if path == "/redirect":
            status = int(request.query.get("status", "302"))
            return web.Response(status=status, headers={"Location": request.query["to"]})
        if path == "/loop":
            return web.Response(status=302, headers={"Location": "/loop"})
        if path.startswith("/status/"):
            return web.Response(status=int(path.rsplit("/", 1)[1]))
        if path == "/slow":
            await self._stopping.wait()
            return web.Response(body=b"late")
        if path.startswith("/stream/"):
            return await self._stream(request, int(path.rsplit("/", 1)[1]))
        if path.startswith("/declared/"):
            size = int(path.rsplit("/", 1)[1])
            return web.Response(body=b"x" * size)
        return web.Response(status=404)

    async def _file(self, name: Any) -> web.Response:
        await self._held()
        try:
            if not isinstance(name, str) or name not in self.files:
                return web.Response(status=404)
            return web.Response(body=self.files[name], content_type="application/octet-stream")
        finally:
            self.in_flight -= 1

    async def _stream(self, request: web.Request, size: int) -> web.StreamResponse:
        resp = web.StreamResponse()
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        sent = 0
        try:
            while sent < size:
                chunk = b"y" * min(16 * 1024, size - sent)
                await resp.write(chunk)
                sent += len(chunk)
            await resp.write_eof()
        except (ConnectionError, asyncio.CancelledError):
            pass
        return resp
