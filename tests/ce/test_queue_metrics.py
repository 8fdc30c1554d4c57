"""The queue and attachment-cache series of ``GET /metrics`` against the real state.

- ``gmp_queue_messages{status}`` (with ``gmp_pending_messages`` and
  ``gmp_oldest_pending_age_seconds``, from the same ``Storage.active_queue`` query) after
  real deliveries through an SMTP test server: sent, failed, deferred, scheduled and one held
  in ``sending`` by a stalled server, compared with the messages' own statuses in the API;
- two instances on one PostgreSQL database report the same values (the dashboard takes max);
- ``Storage.active_queue`` alone: due scheduled rows count as pending, finished rows are left
  out, the oldest active message;
- ``gmp_attachment_cache_*``: the same attachment sent twice is fetched once, then found in
  the memory tier; the counters are the cache's own ``CacheStats`` (no double counting).
"""

from __future__ import annotations

import base64
import hashlib
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from mail_proxy.ce.storage.sql import SqlStorage
from mail_proxy.core.contracts.model import NewMessage, Outcome
from mail_proxy.core.engine.attachments import get_resolver
from mail_proxy.core.engine.encryption import generate_key
from mail_proxy.core.testing.smtp import SmtpTestServer
from mail_proxy.core.web.app import RUNTIME
from support.api import add_account, enqueue, get_message, message, wait_status

STATUSES = ("pending", "scheduled", "deferred", "sending")


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """``(sample name, sorted labels) -> value`` of a /metrics page."""
    found = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            found[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return found


async def scrape(client: Any) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    resp = await client.get("/metrics")
    assert resp.status == 200
    return samples(await resp.text())


def queue(found: dict[tuple[str, tuple[tuple[str, str], ...]], float]) -> dict[str, float]:
    return {s: found[("gmp_queue_messages", (("status", s),))] for s in STATUSES}


@pytest.fixture
async def smtp() -> AsyncIterator[SmtpTestServer]:
    async with SmtpTestServer() as server:
        yield server


async def test_queue_by_status_matches_the_messages(
    db_url: str, aiohttp_client_factory: Any, make_settings: Any, smtp: SmtpTestServer
) -> None:
    # one retry an hour away: a temporary failure stays deferred for the whole test
    settings = make_settings(database_url=db_url, retry_delays=[3600.0])
    client = await aiohttp_client_factory(settings)
    await add_account(client, smtp, default=True)
    empty = await scrape(client)
    assert queue(empty) == dict.fromkeys(STATUSES, 0)
    assert empty[("gmp_pending_messages", ())] == 0
    assert empty[("gmp_oldest_pending_age_seconds", ())] == 0

    smtp.script_rcpt = {"nobody@example.org": "550 5.1.1 no such user"}
    await enqueue(client, [message(id="ok1"), message(id="ok2")])
    await enqueue(client, [message(id="bad", to="nobody@example.org")])
    for msg_id in ("ok1", "ok2"):
        await wait_status(client, msg_id, "sent")
    await wait_status(client, "bad", "error")
    smtp.data_replies.append("451 4.3.0 try again later")
    await enqueue(client, [message(id="soft")])
    await wait_status(client, "soft", "deferred")
    later = time.time() + 3600
    await enqueue(client, [message(id=f"later{i}", deferred_ts=later) for i in range(3)])
    smtp.data_delay = 4.0  # the next delivery stalls at DATA: its message stays ``sending``
    await enqueue(client, [message(id="slow")])
    await wait_status(client, "slow", "sending", timeout=3.0)

    found = await scrape(client)
    ids = ["ok1", "ok2", "bad", "soft", "slow", *(f"later{i}" for i in range(3))]
    statuses = [(await get_message(client, i))["status"] for i in ids]
    expected = {s: float(statuses.count(s)) for s in STATUSES}
    assert expected == {"pending": 0, "scheduled": 3, "deferred": 1, "sending": 1}
    assert queue(found) == expected
    assert found[("gmp_pending_messages", ())] == 5  # sent and failed rows are not counted
    assert 0 < found[("gmp_oldest_pending_age_seconds", ())] < 60

    smtp.data_delay = 0.0
    await wait_status(client, "slow", "sent", timeout=10.0)
    assert queue(await scrape(client))["sending"] == 0


@pytest.mark.postgres
async def test_instances_on_one_database_report_the_same_queue(
    pg_url: str, aiohttp_client_factory: Any, make_settings: Any, tmp_path: Any
) -> None:
    key = generate_key()
    clients = []
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        settings = make_settings(
            database_url=pg_url,
            encryption_key=key,
            instance_dir=str(tmp_path / name),
            scheduler_active=False,
        )
        clients.append(await aiohttp_client_factory(settings))
    first, second = clients
    await add_account(first, None, default=True)
    later = time.time() + 3600
    await enqueue(first, [message(id="p1"), message(id="p2")])
    await enqueue(second, [message(id="s1", deferred_ts=later)])
    expected = {"pending": 2.0, "scheduled": 1.0, "deferred": 0.0, "sending": 0.0}
    assert queue(await scrape(first)) == queue(await scrape(second)) == expected


def new(i: str, tenant: str = "t1", **kw: Any) -> NewMessage:
    return NewMessage(tenant, i, "acc", 2, {"subject": i}, f"<{i}@example.com>", **kw)


async def test_active_queue_counts_due_scheduled_as_pending(storage: SqlStorage) -> None:
    t0 = 1_800_000_000.0
    await storage.enqueue([new("p1"), new("p2", tenant="t2")], t0)
    await storage.enqueue(
        [new("s1", deferred_ts=t0 + 100), new("s2", deferred_ts=t0 + 500)], t0 + 1
    )
    await storage.enqueue([new("done"), new("failed")], t0 - 50)
    claimed = await storage.claim_messages("i1", t0 + 2, 10, 300, 10)
    assert {m.id for m in claimed} == {"p1", "p2", "done", "failed"}
    by_id = {m.id: m for m in claimed}
    await storage.record_outcomes(
        [
            Outcome(by_id["done"].pk, by_id["done"].claim_token or 0, "sent", t0 + 3),
            Outcome(by_id["failed"].pk, by_id["failed"].claim_token or 0, "error", t0 + 3),
        ]
    )

    view = await storage.active_queue(t0 + 10)
    assert view.counts == {"pending": 0, "scheduled": 2, "deferred": 0, "sending": 2}
    assert view.total == 4
    assert view.oldest_created_at == t0  # the finished rows, older, are not active

    # s1's time has come (not yet claimed): shown as pending, as the API shows it
    view = await storage.active_queue(t0 + 200)
    assert view.counts == {"pending": 1, "scheduled": 1, "deferred": 0, "sending": 2}
    assert await storage.count_pending() == view.total


async def test_attachment_cache_counters(
    aiohttp_client_factory: Any, make_settings: Any, smtp: SmtpTestServer
) -> None:
    client = await aiohttp_client_factory(make_settings())
    await add_account(client, smtp, default=True)
    found = await scrape(client)  # before any attachment: every series, at zero
    for tier in ("memory", "disk"):
        assert found[("gmp_attachment_cache_hits_total", (("tier", tier),))] == 0
        assert found[("gmp_attachment_cache_bytes", (("tier", tier),))] == 0
    for name in ("misses", "stores", "evictions", "expired", "corrupt"):
        assert found[(f"gmp_attachment_cache_{name}_total", ())] == 0

    content = b"quarterly report " * 64
    digest = hashlib.md5(content, usedforsecurity=False).hexdigest()
    att = {
        "filename": f"report_{{MD5:{digest}}}.txt",
        "storage_path": "base64:" + base64.b64encode(content).decode(),
    }
    # one after the other: a concurrent second fetch would share the first (no lookup)
    for msg_id in ("a1", "a2", "a3"):
        await enqueue(client, [message(id=msg_id, attachments=[att])])
        await wait_status(client, msg_id, "sent")
    assert len(smtp.messages) == 3

    found = await scrape(client)
    stats = get_resolver(client.app[RUNTIME]).cache.stats
    assert (stats.misses, stats.stores, stats.memory_hits, stats.disk_hits) == (1, 1, 2, 0)
    assert found[("gmp_attachment_cache_hits_total", (("tier", "memory"),))] == 2
    assert found[("gmp_attachment_cache_hits_total", (("tier", "disk"),))] == 0
    assert found[("gmp_attachment_cache_misses_total", ())] == 1
    assert found[("gmp_attachment_cache_stores_total", ())] == 1
    assert found[("gmp_attachment_cache_evictions_total", ())] == 0
    assert found[("gmp_attachment_cache_bytes", (("tier", "memory"),))] == len(content)
    assert found[("gmp_attachment_cache_entries", (("tier", "memory"),))] == 1
    assert found[("gmp_attachment_cache_max_bytes", (("tier", "disk"),))] == 0  # no disk tier
    assert found[("gmp_attachment_cache_max_bytes", (("tier", "memory"),))] > 0
    # a second scrape reads the same live counters again: nothing is added twice
    again = await scrape(client)
    cache = {k: v for k, v in found.items() if k[0].startswith("gmp_attachment_cache_")}
    assert {k: again[k] for k in cache} == cache
