"""The SMTP sink: accepts every message, records its ``X-Genro-Mail-ID``, keeps nothing else.

Run as its own process (``python -m harness.sink``): it prints one JSON line
``{"smtp_port", "control_port"}`` on stdout once both servers listen, then serves until
SIGTERM. The orchestrator reads the figures over a tiny HTTP control server:

* ``GET /stats`` → ``{"received", "unique", "duplicated", "without_id", "first_ts", "last_ts"}``
  (``last_ts``: wall-clock time the newest *new* id arrived);
* ``GET /wait?count=N&stall=S&timeout=T`` → the same, once ``unique >= N``, or no new id came
  for ``S`` seconds, or ``T`` seconds passed.

The handler is kept cheap on purpose: it scans only the header block of the raw bytes (no
MIME parsing) and drops the content at once, so the sink is not what limits the figures.
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import sys
import time
from typing import Any

from aiohttp import web
from aiosmtpd.smtp import SMTP, Envelope, Session

NEEDLE = b"\nx-genro-mail-id:"
DATA_LIMIT = 128 * 1024 * 1024


def mail_id(raw: bytes) -> str | None:
    """The ``X-Genro-Mail-ID`` value of a raw message, looked up in its header block only."""
    end = raw.find(b"\r\n\r\n")
    head = b"\n" + (raw if end < 0 else raw[:end]).lower()
    pos = head.find(NEEDLE)
    if pos < 0:
        return None
    start = pos + len(NEEDLE)
    stop = head.find(b"\r\n", start)
    # the value is taken from the original bytes (ids are case-sensitive)
    value = raw[start - 1 : (stop - 1) if stop >= 0 else len(raw)]
    return value.strip().decode("utf-8", "replace")


class Recorder:
    """aiosmtpd handler counting ids; wakes waiters on each new id."""

    def __init__(self) -> None:
        self.seen: dict[str, int] = {}
        self.received = 0
        self.without_id = 0
        self.first_ts: float | None = None
        self.last_ts: float | None = None
        self.changed = asyncio.Event()

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or b""
        envelope.original_content = envelope.content = None  # free it now
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
            self.changed.set()
        return "250 OK"

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
        deadline = time.monotonic() + timeout
        while len(self.seen) < count:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            self.changed.clear()
            try:
                await asyncio.wait_for(self.changed.wait(), min(stall, remaining))
            except asyncio.TimeoutError:
                break  # no new id for `stall` seconds: whatever is missing is lost
        return self.stats()


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


async def serve(host: str) -> None:
    recorder = Recorder()
    loop = asyncio.get_running_loop()
    smtp = await loop.create_server(
        lambda: SMTP(
            recorder,
            hostname="bench-sink",
            ident="bench-sink",
            data_size_limit=DATA_LIMIT,
            enable_SMTPUTF8=True,
            auth_require_tls=False,
            loop=loop,
        ),
        host,
        0,
        backlog=1024,
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

    def __init__(self) -> None:
        self.proc: asyncio.subprocess.Process | None = None
        self.smtp_port = 0
        self.control = ""

    async def start(self) -> None:
        from .procs import read_json_line, spawn_module

        self.proc = await spawn_module("harness.sink")
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
    logging.getLogger("mail.log").setLevel(logging.WARNING)
    asyncio.run(serve(sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
