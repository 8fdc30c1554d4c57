"""The load generator: drives ``POST /commands/add-messages`` from its own process.

``python -m harness.load '<json spec>'`` prints one JSON result line. Two modes:

* ``single``: ``requests`` one-message requests from ``clients`` concurrent clients (after
  ``warmup`` untimed ones) → requests/s and latency percentiles;
* ``batches``: ``count`` messages in requests of ``batch`` messages, ``clients`` requests in
  flight, spread round-robin over ``urls`` (and the messages round-robin over the account ids
  in ``accounts``, if given) → accepted messages/s, with the wall-clock ``t_start``/``t_end``
  the orchestrator compares with the sink's arrival times.

The generator shares the machine with the service it measures, so it must cost little: the
HTTP side is a minimal HTTP/1.1 keep-alive client written for this purpose (an
:class:`asyncio.Protocol`, one connection per concurrent client and service instance, one
request in flight on each). Every request (line, headers and JSON body) is serialized to
bytes before the clock starts; a request costs one write, and its response is parsed just
enough for the figures: status, ``Content-Length`` (or chunks), ``Connection: close``, and
the JSON body only for ``queued`` and ``rejected``. A latency runs from just before the
write (or before the reconnection the request needs, after a ``Connection: close``) to when
the whole response body has been read. A dropped connection, a timeout, a status other than
200 or an unreadable body counts as an error for that request (the next one reconnects), and
only the other requests, the successful ones, count: in ``requests_per_s``, in the latency
percentiles and, for batches, in ``messages_per_s`` (messages the service answered as
queued). A fast failure therefore never raises a rate or lowers a percentile; the errors are
reported beside them.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import sys
import time
from dataclasses import dataclass, field
from typing import Any, cast
from urllib.parse import urlsplit

from .messages import api_message, filler, message_ids

TOKEN_HEADER = "X-API-Token"
PATH = "/commands/add-messages"
#: Longest response head accepted (status line and headers).
MAX_HEAD = 64 * 1024


@dataclass
class Tally:
    """What the service answered."""

    accepted: int = 0
    rejected: int = 0
    errors: int = 0
    samples: list[float] = field(default_factory=list)
    first_error: str | None = None

    def record(self, status: int, data: dict[str, Any] | None, text: str) -> bool:
        """Count one response; whether it is a success (200 with a JSON object body)."""
        if status != 200 or data is None:
            self.error(f"{status}: {text[:300]}")
            return False
        self.accepted += int(data.get("queued", 0))
        rejected = data.get("rejected") or []
        self.rejected += len(rejected)
        if rejected and self.first_error is None:
            self.first_error = f"rejected: {rejected[0]}"
        return True

    def error(self, text: str) -> None:
        self.errors += 1
        self.first_error = self.first_error or text


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of already sorted values."""
    if not sorted_values:
        return 0.0
    rank = max(0, min(len(sorted_values) - 1, round(q / 100 * len(sorted_values)) - 1))
    return sorted_values[rank]


def encode(messages: list[dict[str, Any]]) -> bytes:
    return json.dumps({"messages": messages}).encode()


@dataclass(frozen=True)
class Target:
    """Where requests go: one service instance."""

    host: str
    port: int
    path: str
    host_header: str

    @classmethod
    def of(cls, url: str) -> Target:
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"only http:// URLs are supported: {url!r}")
        path = parts.path.rstrip("/") + PATH
        return cls(parts.hostname, parts.port or 80, path, parts.netloc)

    def request(self, body: bytes, token: str) -> bytes:
        """The whole request, ready for one write."""
        head = (
            f"POST {self.path} HTTP/1.1\r\n"
            f"Host: {self.host_header}\r\n"
            "Content-Type: application/json\r\n"
            f"{TOKEN_HEADER}: {token}\r\n"
            f"Content-Length: {len(body)}\r\n"
            "\r\n"
        )
        return head.encode("latin-1") + body


class ProtocolError(Exception):
    """A response that is not HTTP/1.x as this client reads it."""


class Connection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection carrying one request at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.open = False
        self.buf = bytearray()
        self.waiter: asyncio.Future[tuple[int, bytes]] | None = None
        self._reset_response()

    def _reset_response(self) -> None:
        self.status = 0  # 0: the response head is still awaited
        self.length = -1  # body length from Content-Length; -1: chunked or until close
        self.chunked = False
        self.close_after = False
        self.chunks: list[bytes] = []

    # -- asyncio.Protocol ---------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.open = True

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if self.waiter is not None:
            self._feed()

    def connection_lost(self, exc: Exception | None) -> None:
        self.open = False
        waiter = self.waiter
        if waiter is None or waiter.done():
            return
        if self.status and self.length < 0 and not self.chunked:
            # a body delimited by the end of the connection
            self.waiter = None
            waiter.set_result((self.status, bytes(self.buf)))
        else:
            text = f"connection lost: {exc}" if exc else "connection closed by the server"
            waiter.set_exception(ConnectionResetError(text))

    # -- requests -----------------------------------------------------------------------
    async def request(self, payload: bytes, timeout: float) -> tuple[int, bytes]:
        """Send one pre-serialized request; the status and body of the response."""
        assert self.transport is not None and self.waiter is None
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[tuple[int, bytes]] = loop.create_future()
        self.waiter = waiter
        self._reset_response()
        timer = loop.call_later(timeout, self._fail, TimeoutError(f"no response in {timeout}s"))
        try:
            self.transport.write(payload)
            if self.buf:
                self._feed()  # bytes that arrived unasked (an early error response)
            return await waiter
        finally:
            timer.cancel()
            self.waiter = None

    def close(self, abort: bool = False) -> None:
        self.open = False
        if self.transport is not None:
            if abort:
                self.transport.abort()
            else:
                self.transport.close()

    def _fail(self, exc: Exception) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)
        # whatever comes later on this connection cannot be matched to a request any more
        self.close(abort=True)

    def _done(self, body: bytes) -> None:
        waiter = self.waiter
        status, close_after = self.status, self.close_after
        self._reset_response()
        if close_after:
            self.close()
        if waiter is not None and not waiter.done():
            waiter.set_result((status, body))

    def _feed(self) -> None:
        try:
            self._parse()
        except (ProtocolError, ValueError, IndexError) as exc:
            self._fail(ProtocolError(f"bad response: {exc}"))

    def _parse(self) -> None:
        buf = self.buf
        if not self.status:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if len(buf) > MAX_HEAD:
                    raise ProtocolError("response head too long")
                return
            self._head(bytes(buf[:end]).decode("latin-1"))
            del buf[: end + 4]
        if self.length >= 0:
            if len(buf) >= self.length:
                body = bytes(buf[: self.length])
                del buf[: self.length]
                self._done(body)
        elif self.chunked:
            self._parse_chunks()
        # else: the body ends with the connection (connection_lost)

    def _head(self, head: str) -> None:
        lines = head.split("\r\n")
        version, status, *_ = lines[0].split(" ", 2)
        if not version.startswith("HTTP/1."):
            raise ProtocolError(f"not an HTTP/1.x status line: {lines[0][:80]!r}")
        self.status = int(status)
        self.close_after = version == "HTTP/1.0"
        if self.status in (204, 304) or 100 <= self.status < 200:
            self.length = 0
        for line in lines[1:]:
            name, _, value = line.partition(":")
            name = name.strip().lower()
            if name == "content-length" and self.length < 0:
                self.length = int(value)
            elif name == "transfer-encoding":
                self.chunked = "chunked" in value.lower()
            elif name == "connection":
                value = value.lower()
                if "close" in value:
                    self.close_after = True
                elif "keep-alive" in value:
                    self.close_after = False
        if self.chunked:
            self.length = -1
        elif self.length < 0:
            self.close_after = True  # read until the connection closes
        if 100 <= self.status < 200:
            self.status = 0  # an interim response: the real one follows
            self.length, self.close_after = -1, False

    def _parse_chunks(self) -> None:
        buf = self.buf
        while True:
            line_end = buf.find(b"\r\n")
            if line_end < 0:
                return
            size = int(bytes(buf[:line_end]).split(b";", 1)[0], 16)
            if size == 0:
                # the trailer section: nothing, or header lines, then an empty line
                if buf[line_end : line_end + 4] == b"\r\n\r\n":
                    trailer_end = line_end + 4
                else:
                    found = buf.find(b"\r\n\r\n", line_end)
                    if found < 0:
                        return
                    trailer_end = found + 4
                del buf[:trailer_end]
                self._done(b"".join(self.chunks))
                return
            start = line_end + 2
            if len(buf) < start + size + 2:
                return
            self.chunks.append(bytes(buf[start : start + size]))
            del buf[: start + size + 2]


class Client:
    """One concurrent client: its own connection to each target, one request at a time."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.conns: dict[Target, Connection] = {}

    async def send(self, target: Target, payload: bytes, tally: Tally) -> bool:
        """Send one request and count its answer in ``tally``; whether it succeeded."""
        conn = self.conns.get(target)
        try:
            if conn is None or not conn.open:
                loop = asyncio.get_running_loop()
                _, conn = await loop.create_connection(Connection, target.host, target.port)
                self.conns[target] = conn
            status, body = await conn.request(payload, self.timeout)
        except (OSError, ProtocolError, asyncio.TimeoutError) as exc:
            tally.error(f"{type(exc).__name__}: {exc}")
            if conn is not None:
                conn.close(abort=True)
            self.conns.pop(target, None)
            return False
        data: dict[str, Any] | None = None
        if status == 200:
            try:
                decoded = json.loads(body)
            except ValueError:
                decoded = None
            data = decoded if isinstance(decoded, dict) else None
        text = "" if data is not None else body.decode("utf-8", "replace")
        return tally.record(status, data, text)

    def close(self) -> None:
        for conn in self.conns.values():
            conn.close()
        self.conns.clear()


def _timeout(spec: dict[str, Any]) -> float:
    return float(spec.get("request_timeout", 300))


async def run_single(spec: dict[str, Any]) -> dict[str, Any]:
    """Single-message requests: throughput and latency of the successful ones."""
    body = filler(int(spec.get("body_bytes", 200)))
    prefix, warmup, total = spec["prefix"], int(spec["warmup"]), int(spec["requests"])
    target, token = Target.of(spec["urls"][0]), spec["token"]
    payloads = [
        target.request(encode([api_message(ident, body)]), token)
        for ident in message_ids(prefix, 0, warmup + total)
    ]

    async def client(conn: Client, queue: list[bytes], tally: Tally) -> None:
        while queue:
            payload = queue.pop()
            started = time.perf_counter()
            if await conn.send(target, payload, tally):
                tally.samples.append(time.perf_counter() - started)

    clients = int(spec["clients"])
    pool = [Client(_timeout(spec)) for _ in range(clients)]
    try:
        warm = payloads[:warmup]
        warm.reverse()
        warm_tally = Tally()
        await asyncio.gather(*(client(c, warm, warm_tally) for c in pool))
        timed = payloads[warmup:]
        timed.reverse()  # pop() from the end keeps ids in order
        del payloads
        tally = Tally()
        started = time.perf_counter()
        await asyncio.gather(*(client(c, timed, tally) for c in pool))
        elapsed = time.perf_counter() - started
    finally:
        for c in pool:
            c.close()
    lat = sorted(tally.samples)  # successful requests only

    def ms(seconds: float) -> float | None:
        # no successful request, no latency (not 0 ms, which would meet any bound)
        return round(seconds * 1000, 2) if lat else None

    return {
        "requests": total,
        "succeeded": len(lat),
        "clients": clients,
        "elapsed_s": round(elapsed, 3),
        "requests_per_s": round(len(lat) / elapsed, 1) if elapsed > 0 else 0.0,
        "latency_ms": {
            "p50": ms(percentile(lat, 50)),
            "p90": ms(percentile(lat, 90)),
            "p99": ms(percentile(lat, 99)),
            "max": ms(lat[-1] if lat else 0.0),
        },
        "accepted": tally.accepted,
        "rejected": tally.rejected,
        "errors": tally.errors,
        "first_error": tally.first_error or warm_tally.first_error,
        "warmup_errors": warm_tally.errors,
    }


def batch_bodies(spec: dict[str, Any]) -> list[bytes]:
    """Encode every request: ``count`` messages from ``start``, ``batch`` per request."""
    body = filler(int(spec.get("body_bytes", 200)))
    prefix, start, count, size = spec["prefix"], spec["start"], spec["count"], spec["batch"]
    attachments: list[list[dict[str, Any]]] = spec.get("attachments") or []
    #: messages go round-robin to these accounts (default: the tenant's default account)
    accounts: list[str] = spec.get("accounts") or []
    bodies = []
    for first in range(start, start + count, size):
        last = min(first + size, start + count)
        bodies.append(
            encode(
                [
                    api_message(
                        ident,
                        body,
                        attachments[i % len(attachments)] if attachments else None,
                        accounts[i % len(accounts)] if accounts else None,
                    )
                    for i, ident in enumerate(message_ids(prefix, first, last - first), first)
                ]
            )
        )
    return bodies


async def run_batches(spec: dict[str, Any]) -> dict[str, Any]:
    """Batched enqueue as fast as the service accepts it."""
    targets = itertools.cycle([Target.of(u) for u in spec["urls"]])
    token = spec["token"]
    jobs = []
    for body in batch_bodies(spec):
        target = next(targets)
        jobs.append((target, target.request(body, token)))
    jobs.reverse()
    tally = Tally()

    async def client(conn: Client) -> None:
        while jobs:
            target, payload = jobs.pop()
            await conn.send(target, payload, tally)

    pool = [Client(_timeout(spec)) for _ in range(int(spec["clients"]))]
    try:
        t_start = time.time()
        started = time.perf_counter()
        await asyncio.gather(*(client(c) for c in pool))
        elapsed = time.perf_counter() - started
        t_end = time.time()
    finally:
        for c in pool:
            c.close()
    return {
        "messages": spec["count"],
        "batch": spec["batch"],
        "clients": spec["clients"],
        "t_start": t_start,
        "t_end": t_end,
        "elapsed_s": round(elapsed, 3),
        # messages the service answered as queued: failed and rejected ones do not count
        "messages_per_s": round(tally.accepted / elapsed, 1) if elapsed else 0.0,
        "accepted": tally.accepted,
        "rejected": tally.rejected,
        "errors": tally.errors,
        "first_error": tally.first_error,
    }


def main() -> int:
    spec = json.loads(sys.argv[1])
    runner = run_single if spec["mode"] == "single" else run_batches
    result = asyncio.run(runner(spec))
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
