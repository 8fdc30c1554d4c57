"""The ``console-pg`` scenario: the console's messages page on 1,000,000 messages in PostgreSQL.

1. A fresh PostgreSQL schema and the service on it, scheduler suspended (its migrations make
   the tables and indexes; nothing is dispatched).
2. 1,000,000 messages of the ``default`` tenant written straight into the table by
   ``INSERT … SELECT generate_series`` in chunks (the API would take many minutes and measure
   the intake, not the listing): 93 % sent, 3 % failed, 2 % pending, 1 % deferred, 1 %
   scheduled; ten accounts; one message in five in a batch of 1,000; created one every 0.5 s
   over the last ~6 days in ``pk`` order, as the queue writes them. Then ``ANALYZE``.
3. Each ``GET /messages`` the messages page makes (newest first, 50 a page), timed over HTTP
   :data:`REPEAT` times after a warm-up: the first page unfiltered, filtered by status, account,
   batch and a one-hour creation window, and pages deep in the cursor (at ``pk`` 500,000
   unfiltered, 300,000 filtered by status).
4. ``EXPLAIN`` of each of those queries as the storage builds it (``list_query``, compiled
   for PostgreSQL): no sequential scan of ``messages`` may appear.

Figures: the median milliseconds of each call (``page_ms.<call>``), the slowest of them
(``max_page_ms``, target ≤ 300), the sequential scans found (``seq_scans``, target 0), the
index each plan used, the fill time, and ``GET /overview`` (``overview_ms``: the overview page's
poll, which counts the whole queue; no target).
"""

from __future__ import annotations

import json
import secrets
import statistics
import time
from typing import TYPE_CHECKING, Any

import aiohttp

from .report import eprint
from .service import TOKEN, Service

if TYPE_CHECKING:
    from .scenarios import Bench, Measured

MESSAGES = 1_000_000
CHUNK = 100_000
PAGE = 50
REPEAT = 15
WARMUP = 3
SPACING_S = 0.5

FILL_SQL = """
INSERT INTO messages (tenant_id, id, account_id, priority, status, batch_code, payload,
    message_id, attempts, deferred_ts, sent_ts, error_ts, error, smtp_code, uncertain,
    claim_token, created_at, updated_at)
SELECT 'default', 'm-' || g, 'acct-' || (g % 10), 2,
    CASE WHEN g % 100 < 93 THEN 'sent' WHEN g % 100 < 96 THEN 'error'
         WHEN g % 100 < 98 THEN 'pending' WHEN g % 100 < 99 THEN 'deferred'
         ELSE 'scheduled' END,
    CASE WHEN g % 5 = 0 THEN 'b-' || lpad((g / 5000)::text, 4, '0') END,
    json_build_object('from', 'Shop <shop@example.com>',
                      'to', json_build_array('c' || g || '@example.org'),
                      'subject', 'Order ' || g),
    '<m-' || g || '@bench.example.com>',
    CASE WHEN g % 100 < 96 THEN 1 ELSE 0 END,
    CASE WHEN g % 100 >= 98 THEN $1::float8 + 86400 END,
    CASE WHEN g % 100 < 93 THEN $2::float8 + g * $3::float8 + 1 END,
    CASE WHEN g % 100 BETWEEN 93 AND 95 THEN $2::float8 + g * $3::float8 + 1 END,
    CASE WHEN g % 100 BETWEEN 93 AND 95
         THEN '550 5.1.1 <c' || g || '@example.org>: Recipient address rejected' END,
    CASE WHEN g % 100 BETWEEN 93 AND 95 THEN 550 END,
    false, 0,
    $2::float8 + g * $3::float8, $2::float8 + g * $3::float8
FROM generate_series($4::bigint, $5::bigint) AS g
"""


def calls(t0: float, count: int) -> dict[str, dict[str, Any]]:
    """The page's calls: name → query string of GET /messages (newest first, 50 a page)."""
    from mail_proxy.ce.api.pagination import encode_cursor

    window = t0 + count * SPACING_S / 2  # a one-hour window in the middle of the data
    return {
        "first": {},
        "status": {"status": "error"},
        "account": {"account_id": "acct-7"},
        "batch": {"batch_code": f"b-{count // 2 // 5000:04d}"},  # one in the middle
        "date": {"since": window, "until": window + 3600},
        "deep": {"cursor": encode_cursor(count // 2, "d1:")},
        "deep_status": {"status": "error", "cursor": encode_cursor(count * 3 // 10, "d1:")},
    }


def query_sql(params: dict[str, Any]) -> str:
    """The SQL the storage runs for these parameters (its own ``list_query``)."""
    from sqlalchemy.dialects import postgresql

    from mail_proxy.ce.api.pagination import decode_cursor
    from mail_proxy.ce.storage.messages import list_query
    from mail_proxy.core.contracts.storage import MessageFilter

    cursor = params.get("cursor")
    flt = MessageFilter(
        tenant_id="default",
        status=params.get("status"),
        batch_code=params.get("batch_code"),
        account_id=params.get("account_id"),
        created_since=params.get("since"),
        created_until=params.get("until"),
        descending=True,
        limit=PAGE + 1,
        after_pk=decode_cursor(cursor, "d1:") if cursor else None,
    )
    compiled = list_query(flt).compile(
        dialect=postgresql.dialect(),  # type: ignore[no-untyped-call]
        compile_kwargs={"literal_binds": True},
    )
    return str(compiled)


def plan_nodes(node: dict[str, Any]) -> list[dict[str, Any]]:
    found = [node]
    for child in node.get("Plans", []):
        found.extend(plan_nodes(child))
    return found


async def fill(conn: Any, t0: float, count: int) -> float:
    started = time.monotonic()
    for start in range(1, count + 1, CHUNK):
        end = min(start + CHUNK - 1, count)
        await conn.execute(FILL_SQL, time.time(), t0, SPACING_S, start, end)
    await conn.execute("ANALYZE messages")
    return time.monotonic() - started


async def time_overview(url: str) -> float:
    """Median ms of ``GET /overview`` (what the overview page polls every 5 s): it counts the
    whole queue, so unlike a page its cost grows with the table (reported, no target)."""
    samples = []
    async with aiohttp.ClientSession(headers={"X-API-Token": TOKEN}) as session:
        for n in range(WARMUP + 5):
            began = time.perf_counter()
            async with session.get(f"{url}/overview") as resp:
                data = await resp.json()
            if resp.status != 200 or not data.get("ok"):
                raise RuntimeError(f"overview: HTTP {resp.status}, {str(data)[:200]}")
            if n >= WARMUP:
                samples.append((time.perf_counter() - began) * 1000)
    return round(statistics.median(samples), 1)


async def time_calls(url: str, queries: dict[str, dict[str, Any]]) -> dict[str, float]:
    medians: dict[str, float] = {}
    async with aiohttp.ClientSession(headers={"X-API-Token": TOKEN}) as session:
        for name, params in queries.items():
            query = {"order": "desc", "limit": str(PAGE), **{k: str(v) for k, v in params.items()}}
            samples = []
            for n in range(WARMUP + REPEAT):
                began = time.perf_counter()
                async with session.get(f"{url}/messages", params=query) as resp:
                    data = await resp.json()
                elapsed = (time.perf_counter() - began) * 1000
                if resp.status != 200 or len(data.get("messages", [])) != PAGE:
                    raise RuntimeError(f"{name}: HTTP {resp.status}, {str(data)[:200]}")
                if n >= WARMUP:
                    samples.append(elapsed)
            medians[name] = round(statistics.median(samples), 2)
    return medians


async def explain(conn: Any, queries: dict[str, dict[str, Any]]) -> dict[str, Any]:
    plans: dict[str, Any] = {}
    for name, params in queries.items():
        raw = await conn.fetchval(f"EXPLAIN (FORMAT JSON) {query_sql(params)}")
        nodes = plan_nodes((json.loads(raw) if isinstance(raw, str) else raw)[0]["Plan"])
        plans[name] = {
            "seq_scans": sum(
                1
                for n in nodes
                if n.get("Node Type") == "Seq Scan" and n.get("Relation Name") == "messages"
            ),
            "indexes": sorted({n["Index Name"] for n in nodes if "Index Name" in n}),
            "nodes": [n["Node Type"] for n in nodes],
        }
    return plans


async def run(bench: Bench) -> Measured:
    import asyncpg

    from .scenarios import Measured, check_postgres, drop_schema, with_schema, without_schema

    count = bench.size(MESSAGES)
    await check_postgres(bench.opts.pg_url)
    schema = f"bench_{secrets.token_hex(4)}"
    url = with_schema(bench.opts.pg_url, schema)
    workdir = bench.opts.workroot / f"console-pg-{bench.run_index}-{secrets.token_hex(3)}"
    workdir.mkdir(parents=True)
    settings = bench.service_settings({"scheduler_active": "false"})
    service = Service(workdir, url, bench.key, settings, "service1")
    conn = None
    try:
        await service.start()
        conn = await asyncpg.connect(
            without_schema(bench.opts.pg_url), server_settings={"search_path": schema}
        )
        t0 = time.time() - count * SPACING_S - 60
        fill_s = await fill(conn, t0, count)
        eprint(f"   filled {count:,} messages in {fill_s:.1f} s")
        queries = calls(t0, count)
        plans = await explain(conn, queries)
        page_ms = await time_calls(service.url, queries)
        overview_ms = await time_overview(service.url)
    except BaseException:
        eprint(f"-- service log tail:\n{service.log_tail()}")
        raise
    finally:
        if conn is not None:
            await conn.close()
        await service.stop()
        await drop_schema(bench.opts.pg_url, schema)
    return Measured(
        {"messages": count, "page": PAGE, "repeat": REPEAT},
        {
            "page_ms": page_ms,
            "max_page_ms": max(page_ms.values()),
            "seq_scans": sum(p["seq_scans"] for p in plans.values()),
            "indexes": {name: p["indexes"] for name, p in plans.items()},
            "overview_ms": overview_ms,
            "fill_s": round(fill_s, 1),
        },
    )
