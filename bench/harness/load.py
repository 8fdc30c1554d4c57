"""The load generator: drives ``POST /commands/add-messages`` from its own process.

``python -m harness.load '<json spec>'`` prints one JSON result line. Two modes:

* ``single``: ``requests`` one-message requests from ``clients`` concurrent clients (after
  ``warmup`` untimed ones) → requests/s and latency percentiles;
* ``batches``: ``count`` messages in requests of ``batch`` messages, ``clients`` requests in
  flight, spread round-robin over ``urls`` → accepted messages/s, with the wall-clock
  ``t_start``/``t_end`` the orchestrator compares with the sink's arrival times.

Request bodies are encoded before the clock starts, so the generator spends its time on
HTTP, not on JSON.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from .messages import api_message, filler

TOKEN_HEADER = "X-API-Token"


@dataclass
class Tally:
    """What the service answered."""

    accepted: int = 0
    rejected: int = 0
    errors: int = 0
    samples: list[float] = field(default_factory=list)
    first_error: str | None = None

    def record(self, status: int, data: dict[str, Any] | None, text: str) -> None:
        if status != 200 or data is None:
            self.errors += 1
            self.first_error = self.first_error or f"{status}: {text[:300]}"
            return
        self.accepted += int(data.get("queued", 0))
        rejected = data.get("rejected") or []
        self.rejected += len(rejected)
        if rejected and self.first_error is None:
            self.first_error = f"rejected: {rejected[0]}"


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of already sorted values."""
    if not sorted_values:
        return 0.0
    rank = max(0, min(len(sorted_values) - 1, round(q / 100 * len(sorted_values)) - 1))
    return sorted_values[rank]


def encode(messages: list[dict[str, Any]]) -> bytes:
    return json.dumps({"messages": messages}).encode()


async def post(
    session: aiohttp.ClientSession, url: str, body: bytes, headers: dict[str, str], tally: Tally
) -> None:
    async with session.post(url, data=body, headers=headers) as resp:
        text = await resp.text()
        try:
            data = json.loads(text)
        except ValueError:
            data = None
        tally.record(resp.status, data, text)


def _session(spec: dict[str, Any]) -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(limit=int(spec["clients"]), limit_per_host=0)
    timeout = aiohttp.ClientTimeout(total=float(spec.get("request_timeout", 300)))
    return aiohttp.ClientSession(connector=connector, timeout=timeout)


def _headers(spec: dict[str, Any]) -> dict[str, str]:
    return {TOKEN_HEADER: spec["token"], "Content-Type": "application/json"}


async def run_single(spec: dict[str, Any]) -> dict[str, Any]:
    """Single-message requests: throughput and latency."""
    body = filler(int(spec.get("body_bytes", 200)))
    prefix, warmup, total = spec["prefix"], int(spec["warmup"]), int(spec["requests"])
    bodies = [encode([api_message(f"{prefix}-{i}", body)]) for i in range(warmup + total)]
    url = spec["urls"][0] + "/commands/add-messages"
    headers = _headers(spec)
    tally = Tally()

    async def client(queue: list[bytes], timed: bool) -> None:
        while queue:
            payload = queue.pop()
            started = time.perf_counter()
            await post(session, url, payload, headers, tally)
            if timed:
                tally.samples.append(time.perf_counter() - started)

    async with _session(spec) as session:
        clients = int(spec["clients"])
        warm = bodies[:warmup]
        await asyncio.gather(*(client(warm, False) for _ in range(clients)))
        timed = bodies[warmup:]
        timed.reverse()  # pop() from the end keeps ids in order
        tally = Tally()
        started = time.perf_counter()
        await asyncio.gather(*(client(timed, True) for _ in range(clients)))
        elapsed = time.perf_counter() - started
    lat = sorted(tally.samples)
    return {
        "requests": total,
        "clients": clients,
        "elapsed_s": round(elapsed, 3),
        "requests_per_s": round(total / elapsed, 1),
        "latency_ms": {
            "p50": round(percentile(lat, 50) * 1000, 2),
            "p90": round(percentile(lat, 90) * 1000, 2),
            "p99": round(percentile(lat, 99) * 1000, 2),
            "max": round((lat[-1] if lat else 0.0) * 1000, 2),
        },
        "accepted": tally.accepted,
        "rejected": tally.rejected,
        "errors": tally.errors,
        "first_error": tally.first_error,
    }


def batch_bodies(spec: dict[str, Any]) -> list[bytes]:
    """Encode every request: ``count`` messages from ``start``, ``batch`` per request."""
    body = filler(int(spec.get("body_bytes", 200)))
    prefix, start, count, size = spec["prefix"], spec["start"], spec["count"], spec["batch"]
    attachments: list[list[dict[str, Any]]] = spec.get("attachments") or []
    bodies = []
    for first in range(start, start + count, size):
        last = min(first + size, start + count)
        bodies.append(
            encode(
                [
                    api_message(
                        f"{prefix}-{i}",
                        body,
                        attachments[i % len(attachments)] if attachments else None,
                    )
                    for i in range(first, last)
                ]
            )
        )
    return bodies


async def run_batches(spec: dict[str, Any]) -> dict[str, Any]:
    """Batched enqueue as fast as the service accepts it."""
    bodies = batch_bodies(spec)
    urls = itertools.cycle([u + "/commands/add-messages" for u in spec["urls"]])
    jobs = [(next(urls), body) for body in bodies]
    jobs.reverse()
    headers = _headers(spec)
    tally = Tally()

    async def client() -> None:
        while jobs:
            url, payload = jobs.pop()
            await post(session, url, payload, headers, tally)

    async with _session(spec) as session:
        t_start = time.time()
        started = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(int(spec["clients"]))))
        elapsed = time.perf_counter() - started
        t_end = time.time()
    return {
        "messages": spec["count"],
        "batch": spec["batch"],
        "clients": spec["clients"],
        "t_start": t_start,
        "t_end": t_end,
        "elapsed_s": round(elapsed, 3),
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
