"""The storage suite: the same tests on SQLite and on a real PostgreSQL (``db_url``)."""

from __future__ import annotations

import time

import pytest
import sqlalchemy as sa

from mail_proxy.ce import plugin as ce_plugin
from mail_proxy.ce.storage.engine import current_heads
from mail_proxy.ce.storage.sql import SqlStorage
from mail_proxy.core.contracts.model import (
    Account,
    CommandLogEntry,
    NewEvent,
    NewMessage,
    Outcome,
    Tenant,
)
from mail_proxy.core.contracts.storage import MessageFilter, RateLimits
from mail_proxy.core.engine.encryption import account_password_context
from mail_proxy.core.engine.runtime import Runtime
from mail_proxy.core.plugins.loader import create_plugin_manager


def msg(i: int | str, priority: int = 2, tenant: str = "default", **kw) -> NewMessage:  # type: ignore[no-untyped-def]
    return NewMessage(
        tenant,
        f"m{i}",
        kw.pop("account_id", "acc"),
        priority,
        {"subject": f"s{i}"},
        f"<{i}@example.com>",
        **kw,
    )


def _ce_heads() -> set[str]:
    from alembic.script import ScriptDirectory

    from mail_proxy.ce.storage.engine import MIGRATIONS, alembic_config

    script = ScriptDirectory.from_config(alembic_config(None, str(MIGRATIONS / "versions")))
    heads = set(script.get_heads())
    assert len(heads) == 1, f"the CE migrations must form one line, found heads {heads}"
    return heads


async def test_schema_comes_from_migrations(storage: SqlStorage) -> None:
    async with storage.engine.connect() as conn:
        assert await current_heads(conn) == _ce_heads()  # the newest CE revision
        tables = await conn.run_sync(lambda c: set(sa.inspect(c).get_table_names()))
    assert {
        "messages",
        "events",
        "accounts",
        "tenants",
        "command_log",
        "instance_settings",
    } <= tables
    assert (await storage.get_tenant("default")) is not None


async def test_migrated_schema_matches_metadata(storage: SqlStorage) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from mail_proxy.ce.storage.schema import metadata

    async with storage.engine.connect() as conn:
        diff = await conn.run_sync(
            lambda c: compare_metadata(MigrationContext.configure(c), metadata)
        )
    assert diff == []


async def test_start_twice_is_idempotent(storage: SqlStorage, db_url: str) -> None:
    again = SqlStorage(storage.runtime, db_url)
    await again.start()
    assert [t.id for t in await again.list_tenants()] == ["default"]
    await again.close()


async def test_insert_and_list_in_fifo_order_within_priority(storage: SqlStorage) -> None:
    now = time.time()
    # Same timestamp for all: order must come from insertion, not from a clock.
    await storage.enqueue([msg(i) for i in range(5)], now)
    await storage.enqueue([msg(i) for i in range(5, 10)], now)
    listed = await storage.list_messages(MessageFilter(tenant_id="default"))
    assert [m.id for m in listed] == [f"m{i}" for i in range(10)]
    assert all(m.status == "pending" for m in listed)
    claimed = await storage.claim_messages("i1", now, 100, 60, 100)
    assert [m.id for m in claimed] == [f"m{i}" for i in range(10)]


async def test_claim_order_priority_then_fifo(storage: SqlStorage) -> None:
    now = time.time()
    await storage.enqueue([msg(1, 3), msg(2, 2), msg(3, 0), msg(4, 2), msg(5, 0), msg(6, 1)], now)
    claimed = await storage.claim_messages("i1", now, 100, 60, 100)
    assert [m.id for m in claimed] == ["m3", "m5", "m6", "m2", "m4", "m1"]
    assert all(m.status == "sending" and m.claim_token == 1 for m in claimed)
    assert await storage.claim_messages("i2", now, 100, 60, 100) == []


async def test_claim_respects_per_account_limit_and_deferred_ts(storage: SqlStorage) -> None:
    now = time.time()
    await storage.enqueue(
        [msg(i, account_id="a") for i in range(4)]
        + [msg(i, account_id="b") for i in range(4, 6)]
        + [msg(9, deferred_ts=now + 3600)],
        now,
    )
    listed = {m.id: m for m in await storage.list_messages(MessageFilter(tenant_id="default"))}
    assert listed["m9"].status == "scheduled"
    claimed = await storage.claim_messages("i1", now, 100, 86400, 2)
    assert [m.id for m in claimed] == ["m0", "m1", "m4", "m5"]
    later = await storage.claim_messages("i1", now + 7200, 100, 60, 10)
    assert [m.id for m in later] == ["m2", "m3", "m9"]


async def test_an_accounts_batch_size_overrides_the_default_per_account_limit(
    storage: SqlStorage,
) -> None:
    now = time.time()
    await storage.save_account(Account("default", "small", host="h", port=25, batch_size=2))
    await storage.enqueue(
        [msg(i, account_id="small") for i in range(4)]
        + [msg(i, account_id="big") for i in range(4, 8)],
        now,
    )
    claimed = await storage.claim_messages("i1", now, 100, 600, 3)
    assert [m.id for m in claimed] == ["m0", "m1", "m4", "m5", "m6"]


async def test_expired_lease_is_retaken_and_stale_outcome_is_fenced(storage: SqlStorage) -> None:
    now = time.time()
    await storage.enqueue([msg(1)], now)
    [first] = await storage.claim_messages("dead", now, 10, 30, 10)
    assert await storage.claim_messages("other", now + 10, 10, 30, 10) == []
    [second] = await storage.claim_messages("other", now + 31, 10, 30, 10)
    assert second.claim_token == first.claim_token + 1
    # The dead instance wakes up and reports: ignored.
    stale = Outcome(first.pk, first.claim_token or 0, "error", now + 32, error="late")
    assert await storage.record_outcomes([stale]) == []
    fresh = Outcome(second.pk, second.claim_token or 0, "sent", now + 33)
    assert await storage.record_outcomes([fresh]) == [second.pk]
    rec = await storage.get_message("default", "m1")
    assert rec is not None and rec.status == "sent" and rec.error is None and rec.attempts == 1


async def test_outcomes_write_events_in_the_same_transaction(storage: SqlStorage) -> None:
    now = time.time()
    await storage.enqueue([msg(1), msg(2), msg(3)], now)
    c = await storage.claim_messages("i", now, 10, 60, 10)
    await storage.record_outcomes(
        [
            Outcome(c[0].pk, c[0].claim_token or 0, "sent", now + 1),
            Outcome(
                c[1].pk,
                c[1].claim_token or 0,
                "error",
                now + 1,
                error="550 no such user",
                smtp_code=550,
            ),
            Outcome(
                c[2].pk,
                c[2].claim_token or 0,
                "deferred",
                now + 1,
                error="451 later",
                smtp_code=451,
                deferred_ts=now + 61,
                deferred_reason="451 later",
            ),
        ]
    )
    events = await storage.list_events("default", "m2")
    assert events is not None
    assert [e.event_type for e in events] == ["queued", "error"]
    assert events[1].metadata["smtp_code"] == 550
    pending = await storage.fetch_unreported("default", 10)
    assert [(e.message_id, e.event_type) for e in pending] == [
        ("m1", "sent"),
        ("m2", "error"),
        ("m3", "deferred"),
    ]
    assert pending[2].metadata["deferred_ts"] == now + 61
    assert await storage.acknowledge_events("default", [pending[0].pk], now) == 1
    assert [e.message_id for e in await storage.fetch_unreported("default", 10)] == ["m2", "m3"]
    assert await storage.report_backlog() == {"default": 2}


async def test_resubmit_replaces_queued_and_rejects_sent(storage: SqlStorage) -> None:
    now = time.time()
    await storage.enqueue([msg(1), msg(2)], now)
    [c] = await storage.claim_messages("i", now, 1, 60, 10)
    await storage.record_outcomes([Outcome(c.pk, c.claim_token or 0, "sent", now)])
    again = await storage.enqueue(
        [msg(1), NewMessage("default", "m2", "acc", 0, {"subject": "new"}, "<x@y>")], now
    )
    assert again.queued == 1 and again.rejected == [("m1", "already sent")]
    rec = await storage.get_message("default", "m2")
    assert rec is not None and rec.payload == {"subject": "new"} and rec.priority == 0


async def test_delete_and_cleanup(storage: SqlStorage) -> None:
    now = time.time()
    await storage.enqueue([msg(1), msg(2)], now)
    [c] = await storage.claim_messages("i", now, 1, 60, 10)
    await storage.record_outcomes([Outcome(c.pk, c.claim_token or 0, "sent", now)])
    res = await storage.delete_messages("default", ["m1", "m2", "nope"])
    assert (res.removed, res.not_found, res.unauthorized) == (1, ["nope"], ["m1"])
    # m1 is sent but its report is not acknowledged: cleanup keeps it.
    assert await storage.cleanup_messages("default", now + 100) == 0
    [ev] = await storage.fetch_unreported("default", 10)
    await storage.acknowledge_events("default", [ev.pk], now)
    assert await storage.cleanup_messages("default", now + 100) == 1
    assert await storage.list_events("default", "m1") is None


async def test_suspension_holds_tenant_and_batches(storage: SqlStorage) -> None:
    now = time.time()
    await storage.enqueue([msg(1, batch_code="A"), msg(2, batch_code="B"), msg(3)], now)
    assert await storage.suspend("default", "A") == ["A"]
    assert [m.id for m in await storage.claim_messages("i", now, 10, 60, 10)] == ["m2", "m3"]
    await storage.enqueue([msg(4)], now)
    assert await storage.suspend("default", None) == ["*", "A"]
    assert await storage.claim_messages("i", now, 10, 60, 10) == []
    assert await storage.activate("default", None) == []
    assert [m.id for m in await storage.claim_messages("i", now, 10, 60, 10)] == ["m1", "m4"]


async def test_inactive_tenant_is_not_claimed(storage: SqlStorage) -> None:
    now = time.time()
    await storage.save_tenant(Tenant(id="acme", active=False))
    await storage.enqueue([msg(1, tenant="acme"), msg(2)], now)
    assert [m.id for m in await storage.claim_messages("i", now, 10, 60, 10)] == ["m2"]


async def test_rate_limit_reservations_are_sliding_windows(storage: SqlStorage) -> None:
    now = 1_000_000.0
    limits = RateLimits(per_minute=3)
    first = await storage.reserve_sends("b", 2, now, limits)
    assert first.granted == 2
    second = await storage.reserve_sends("b", 5, now + 10, limits)
    assert second.granted == 1
    assert second.next_free_ts == pytest.approx(now + 60)
    assert (await storage.reserve_sends("b", 1, now + 59, limits)).granted == 0
    assert (await storage.reserve_sends("b", 5, now + 60.5, limits)).granted == 2
    await storage.release_sends("b", 1, now + 60.5)
    assert (await storage.reserve_sends("b", 5, now + 61, limits)).granted == 1
    assert await storage.prune_send_log(now + 1) == 2


async def test_accounts_tenants_secrets(storage: SqlStorage, db_url: str) -> None:
    rt = storage.runtime
    assert rt is not None
    await storage.save_account(
        Account(
            "default",
            "a1",
            host="smtp.x",
            port=587,
            password_enc=rt.encrypt("s3cret", account_password_context("default", "a1")),
            default=True,
        )
    )
    await storage.save_account(Account("default", "a2", host="smtp.y", port=25, default=True))
    accounts = {a.id: a for a in await storage.list_accounts("default")}
    assert accounts["a2"].default and not accounts["a1"].default
    place = account_password_context("default", "a1")
    assert rt.decrypt(accounts["a1"].password_enc or "", place) == "s3cret"
    await storage.save_tenant(
        Tenant(
            id="acme",
            client_auth={"method": "bearer", "token": "tok-XYZ"},
            sync_secret="whsec_abc",
        )
    )
    found = await storage.get_tenant("acme")
    assert found is not None and found.client_auth == {"method": "bearer", "token": "tok-XYZ"}
    assert found.sync_secret == "whsec_abc"
    async with storage.engine.connect() as conn:
        raw = (
            await conn.execute(
                sa.text("SELECT client_auth_enc, sync_secret_enc FROM tenants WHERE id='acme'")
            )
        ).one()
        pw = await conn.scalar(sa.text("SELECT password_enc FROM accounts WHERE id='a1'"))
    assert "tok-XYZ" not in raw[0] and "whsec_abc" not in raw[1] and "s3cret" not in pw
    assert await storage.delete_tenant("acme")
    assert await storage.get_tenant("acme") is None


async def test_settings_command_log_and_plugin_events(storage: SqlStorage) -> None:
    assert (await storage.put_settings({"a": 1, "b": [1, 2]}))["b"] == [1, 2]
    assert (await storage.put_settings({"a": 2}))["a"] == 2
    now = time.time()
    await storage.log_commands(
        [CommandLogEntry(0, now, "admin", None, "POST", f"/x{i}", 200) for i in range(3)]
    )
    page = await storage.list_command_log(limit=2)
    assert [e.path for e in page] == ["/x0", "/x1"]
    assert [e.path for e in await storage.list_command_log(after_pk=page[-1].pk)] == ["/x2"]
    await storage.enqueue([msg(1)], now)
    added = await storage.add_events(
        [
            NewEvent("default", "m1", "bounce", now, "550 user unknown", {"bounce_type": "hard"}),
            NewEvent("default", "nope", "bounce", now),
        ]
    )
    assert [(e.message_id, e.message_pk) for e in added] == [("m1", added[0].message_pk)]
    assert added[0].message_pk
    [ev] = await storage.fetch_unreported("default", 10)
    assert ev.event_type == "bounce" and ev.metadata == {"bounce_type": "hard"}


async def test_concurrent_enqueues_group_commit_like_separate_calls(storage: SqlStorage) -> None:
    import asyncio

    now = time.time()
    await storage.enqueue([msg("sent")], now)
    [c] = await storage.claim_messages("i", now, 1, 60, 10)
    await storage.record_outcomes([Outcome(c.pk, c.claim_token or 0, "sent", now)])
    calls = [[msg(i)] for i in range(20)] + [[msg(3, priority=0), msg("sent")], [msg(5)]]
    results = await asyncio.gather(*(storage.enqueue(batch, now) for batch in calls))
    assert [r.queued for r in results] == [1] * 20 + [1, 1]
    assert results[20].rejected == [("msent", "already sent")]
    listed = await storage.list_messages(MessageFilter(tenant_id="default", active_only=True))
    assert sorted(m.id for m in listed) == sorted(f"m{i}" for i in range(20))
    assert (await storage.get_message("default", "m3")).priority == 0  # type: ignore[union-attr]


async def test_report_sync_lease_is_exclusive_until_it_expires(storage: SqlStorage) -> None:
    now = 1000.0
    assert await storage.claim_report_sync("default", "a", now, 30)
    assert not await storage.claim_report_sync("default", "b", now + 1, 30)
    assert await storage.claim_report_sync("default", "a", now + 2, 30)  # renewal
    assert await storage.claim_report_sync("default", "b", now + 40, 30)  # expired
    await storage.release_report_sync("default", "a")  # not the owner: no effect
    assert not await storage.claim_report_sync("default", "a", now + 41, 30)
    await storage.release_report_sync("default", "b")
    assert await storage.claim_report_sync("default", "a", now + 42, 30)
    state = await storage.get_sync_state("default")
    await storage.save_sync_state(state)  # bookkeeping writes leave the lease alone
    assert not await storage.claim_report_sync("default", "b", now + 43, 30)


async def test_a_group_that_clashes_with_another_writer_is_retried_call_by_call(
    pg_url: str, make_settings
) -> None:  # type: ignore[no-untyped-def]
    """Another instance inserts the same (tenant, id) while a group commit is in flight: the
    group fails on the unique index and its calls are committed one by one."""
    import asyncio

    import asyncpg

    rt = Runtime.create(
        make_settings(database_url=pg_url),
        create_plugin_manager(extra_plugins=[("ce", ce_plugin)], load_entry_points=False),
    )
    store = SqlStorage(rt, pg_url)
    await store.start()
    schema = pg_url.rsplit("schema=", 1)[1]
    other = await asyncpg.connect(pg_url.split("?")[0], server_settings={"search_path": schema})
    watcher = await asyncpg.connect(pg_url.split("?")[0])
    try:
        now = time.time()
        tx = other.transaction()
        await tx.start()
        await other.execute(
            "INSERT INTO messages (tenant_id, id, account_id, priority, status, payload,"
            " message_id, created_at, updated_at) VALUES ('default', 'm1', 'acc', 2, 'pending',"
            " '{}', '<x@y>', $1, $1)",
            now,
        )
        calls = asyncio.gather(store.enqueue([msg(1)], now), store.enqueue([msg(2)], now))
        # Commit only once the group's INSERT waits on the other transaction (a backend
        # blocked by ``other``; other tests' lock waits on the same server do not count).
        blocker = other.get_server_pid()
        deadline = time.monotonic() + 10
        while not await watcher.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE $1 = ANY(pg_blocking_pids(pid))", blocker
        ):
            assert not calls.done(), f"the group did not wait on the other insert: {calls}"
            assert time.monotonic() < deadline, "the group never waited on the other insert"
            await asyncio.sleep(0.02)
        await tx.commit()
        results = await asyncio.wait_for(calls, 10)
        assert [r.queued for r in results] == [1, 1]
        ids = [m.id for m in await store.list_messages(MessageFilter(tenant_id="default"))]
        assert sorted(ids) == ["m1", "m2"]
        rec = await store.get_message("default", "m1")
        assert rec is not None and rec.payload == {"subject": "s1"}  # replaced the clashing row
    finally:
        await other.close()
        await watcher.close()
        await store.close()
