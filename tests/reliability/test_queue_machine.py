"""L8: a Hypothesis state machine over the real storage (SQLite and PostgreSQL).

Two dispatcher instances (A and B) share one queue. Rules: enqueue, claim, complete a held
claim as ``sent`` / 4xx (deferred) / 5xx (error) / given back, crash an instance (its claims
are forgotten, their leases run on), let time pass (leases expire, deferrals come due),
restart the storage. The clock is the machine's own (``now`` goes into every call).

Invariants, checked after every step against the database:
- every message is in exactly one row, in one state; finished states never change;
- ``attempts`` never goes down;
- a message is recorded ``sent`` at most once, and an outcome is applied only for the claim
  that holds the message (a stale instance's completion changes nothing: fencing);
- no message is handed out again while a lease on it runs;
- a message retaken from another process after a lease expired is flagged ``uncertain``.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from mail_proxy.ce import plugin as ce_plugin
from mail_proxy.ce.storage.sql import SqlStorage
from mail_proxy.core.contracts.model import MessageRecord, NewMessage, Outcome
from mail_proxy.core.engine.runtime import Runtime
from mail_proxy.core.plugins.loader import create_plugin_manager

pytestmark = [pytest.mark.reliability, pytest.mark.timeout(240)]

LEASE = 10.0
INSTANCES = ("A", "B")
FINAL = ("sent", "error")
_tenants = itertools.count()


@dataclass
class Seen:
    """What the machine knows about one message."""

    status: str = "pending"
    attempts: int = 0
    sent_outcomes: int = 0
    #: (instance, lease_until) of the claim the storage last handed out
    holder: tuple[str, float] | None = None
    retaken: bool = False


@dataclass
class World:
    runtime: Any = None
    url: str = ""


WORLD = World()


class QueueMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.tenant = f"m{next(_tenants)}-{int(time.time() * 1000) % 100000}"
        self.now = time.time()
        self.storage = self._run(self._open())
        self.seen: dict[str, Seen] = {}
        self.held: dict[str, list[MessageRecord]] = {i: [] for i in INSTANCES}
        #: A crashed instance comes back as a new process: a new instance id.
        self.generation: dict[str, int] = dict.fromkeys(INSTANCES, 0)
        self.next_id = itertools.count()

    def _id(self, instance: str) -> str:
        return f"{instance}{self.generation[instance]}"

    # -- plumbing ----------------------------------------------------------------------------
    def _run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    async def _open(self) -> SqlStorage:
        storage = SqlStorage(WORLD.runtime, WORLD.url)
        await storage.start()
        return storage

    def teardown(self) -> None:
        try:  # park this example's messages: later examples' claims skip them
            self._run(self.storage.suspend(self.tenant, None))
            self._run(self.storage.close())
        finally:
            self.loop.close()

    def _rows(self) -> dict[str, MessageRecord]:
        async def read() -> list[MessageRecord]:
            from mail_proxy.core.contracts.storage import MessageFilter

            return await self.storage.list_messages(
                MessageFilter(tenant_id=self.tenant, limit=1000)
            )

        return {r.id: r for r in self._run(read())}

    # -- rules -------------------------------------------------------------------------------
    @rule(count=st.integers(1, 3))
    def enqueue(self, count: int) -> None:
        ids = [f"q{next(self.next_id)}" for _ in range(count)]
        batch = [
            NewMessage(self.tenant, i, "acc", 2, {"subject": i}, f"<{i}@example.com>") for i in ids
        ]
        self._run(self.storage.enqueue(batch, self.now))
        for i in ids:
            self.seen[i] = Seen()

    @rule(instance=st.sampled_from(INSTANCES))
    def claim(self, instance: str) -> None:
        me = self._id(instance)
        records = self._run(self.storage.claim_messages(me, self.now, 4, LEASE, 100))
        for rec in records:
            if rec.tenant_id != self.tenant:  # another example's leftover: not ours
                continue
            seen = self.seen[rec.id]
            if seen.holder is not None:
                other, lease_until = seen.holder
                # handed out again only after the previous lease ran out
                assert lease_until < self.now, (rec.id, seen.holder, self.now)
                if other != me:  # from another process (a live one adopts its own)
                    assert rec.uncertain, (rec.id, "retaken but not flagged")
                    seen.retaken = True
                for held in self.held.values():
                    held[:] = [r for r in held if r.id != rec.id]
            assert seen.status not in FINAL, (rec.id, seen.status)
            seen.holder = (me, self.now + LEASE)
            seen.status = "sending"
            self.held[instance].append(rec)

    @precondition(lambda self: any(self.held.values()))
    @rule(
        pick=st.integers(0, 100),
        kind=st.sampled_from(["sent", "4xx", "5xx", "released"]),
        stale=st.booleans(),
    )
    def complete(self, pick: int, kind: str, stale: bool) -> None:
        holders = [i for i in INSTANCES if self.held[i]]
        instance = holders[pick % len(holders)]
        rec = self.held[instance].pop(pick % len(self.held[instance]))
        outcome = {
            "sent": Outcome(rec.pk, rec.claim_token or 0, "sent", self.now),
            "4xx": Outcome(
                rec.pk,
                rec.claim_token or 0,
                "deferred",
                self.now,
                error="451 later",
                deferred_ts=self.now + 1,
            ),
            "5xx": Outcome(rec.pk, rec.claim_token or 0, "error", self.now, error="550 no"),
            "released": Outcome(rec.pk, rec.claim_token or 0, "released", self.now),
        }[kind]
        applied = self._run(self.storage.record_outcomes([outcome]))
        seen = self.seen[rec.id]
        current = seen.holder is not None and seen.holder[0] == self._id(instance)
        assert bool(applied) == current, (rec.id, kind, seen.holder, instance)
        if not applied:
            return
        seen.holder = None
        if kind == "sent":
            seen.sent_outcomes += 1
        if kind != "released":
            seen.attempts += 1
        seen.status = {"sent": "sent", "4xx": "deferred", "5xx": "error"}.get(kind, "pending")

    @rule(instance=st.sampled_from(INSTANCES))
    def crash(self, instance: str) -> None:
        """The instance dies: it forgets its claims; their leases run on in the database. It
        comes back as a new process."""
        self.held[instance] = []
        self.generation[instance] += 1

    @rule(seconds=st.sampled_from([0.5, 2.0, LEASE + 1.0]))
    def advance(self, seconds: float) -> None:
        self.now += seconds

    @rule()
    def restart(self) -> None:
        self._run(self.storage.close())
        self.storage = self._run(self._open())

    # -- invariants ----------------------------------------------------------------------------
    @invariant()
    def one_state_per_message_as_expected(self) -> None:
        rows = self._rows()
        assert set(rows) == set(self.seen)
        for msg_id, row in rows.items():
            seen = self.seen[msg_id]
            status = "pending" if row.status == "scheduled" else row.status
            if seen.status != "deferred":  # (a due deferral may read pending)
                assert status == seen.status, (msg_id, status, seen)
            assert row.attempts == seen.attempts, (msg_id, row.attempts, seen)
            assert seen.sent_outcomes <= 1
            if seen.retaken:
                assert row.uncertain, (msg_id, "retaken but not flagged")


def run_machine(runtime: Any, url: str) -> None:
    WORLD.runtime, WORLD.url = runtime, url
    run_state_machine_as_test(
        QueueMachine,
        settings=settings(
            max_examples=25,
            stateful_step_count=30,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        ),
    )


def test_l8_queue_state_machine(db_url: str, make_settings: Any) -> None:
    runtime = Runtime.create(
        make_settings(database_url=db_url),
        create_plugin_manager(extra_plugins=[("ce", ce_plugin)], load_entry_points=False),
    )
    runtime.load_cipher()
    run_machine(runtime, db_url)
