"""The shared clock (engine/clock.py) on the real storage: an instance whose own clock is
minutes off still writes and compares leases and rate windows on the database's clock.

The skew is given to :class:`SharedClock` as its local clock; tests/reliability/test_clock_skew.py
(L7) does the same with whole services under ``faketime``.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from mail_proxy.ce.storage.sql import SqlStorage
from mail_proxy.core.contracts.model import NewMessage
from mail_proxy.core.contracts.storage import RateLimits
from mail_proxy.core.engine.clock import SharedClock

SKEW = 300.0


def skewed(seconds: float) -> SharedClock:
    return SharedClock(local=lambda: time.time() + seconds)


def msg(i: str) -> NewMessage:
    return NewMessage("default", i, "acc", 2, {"subject": i}, f"<{i}@example.com>")


@pytest.mark.postgres
@pytest.mark.parametrize("skew", [SKEW, -SKEW])
async def test_a_skewed_instance_reads_the_database_clock(pg_url: str, skew: float) -> None:
    store = SqlStorage(None, pg_url)
    try:
        clock = skewed(skew)
        await clock.measure(store)
        remote = await store.database_time()
        assert remote is not None
        # the offset undoes the skew (the test machine's clock is the database's)
        assert abs(clock.offset + skew) < 1.0
        assert abs(clock.now() - remote) < 1.0
    finally:
        await store.close()


async def test_sqlite_has_no_clock_of_its_own(tmp_path: Path) -> None:
    store = SqlStorage(None, f"sqlite:///{tmp_path / 'clock.db'}")
    try:
        clock = skewed(SKEW)
        await clock.measure(store)
        assert await store.database_time() is None
        assert clock.offset == 0.0 and clock.measured
    finally:
        await store.close()


@pytest.mark.postgres
@pytest.mark.parametrize("holder_skew, other_skew", [(0.0, SKEW), (-SKEW, 0.0)])
async def test_a_live_claim_is_not_retaken_by_an_instance_with_another_clock(
    pg_url: str, holder_skew: float, other_skew: float
) -> None:
    store = SqlStorage(None, pg_url)
    await store.start()
    try:
        holder, other = skewed(holder_skew), skewed(other_skew)
        await holder.measure(store)
        await other.measure(store)
        await store.enqueue([msg("a")], holder.now())
        [claimed] = await store.claim_messages("holder", holder.now(), 10, 60, 10)
        # five minutes apart, each on its own clock the lease would look long gone to `other`
        assert await store.claim_messages("other", other.now(), 10, 60, 10) == []
        # ... and once it has run out on the shared clock, `other` takes it over
        [retaken] = await store.claim_messages("other", other.now() + 61, 10, 60, 10)
        assert retaken.pk == claimed.pk and retaken.uncertain
    finally:
        await store.close()


@pytest.mark.postgres
@pytest.mark.parametrize("first_skew, second_skew", [(0.0, SKEW), (-SKEW, 0.0)])
async def test_rate_windows_hold_across_instances_with_different_clocks(
    pg_url: str, first_skew: float, second_skew: float
) -> None:
    store = SqlStorage(None, pg_url)
    await store.start()
    try:
        first, second = skewed(first_skew), skewed(second_skew)
        await first.measure(store)
        await second.measure(store)
        limits = RateLimits(per_minute=5)
        assert (await store.reserve_sends("acct:x", 5, first.now(), limits)).granted == 5
        late = await store.reserve_sends("acct:x", 5, second.now(), limits)
        assert late.granted == 0
        # room comes back one minute after the first sends, on the shared clock
        assert late.next_free_ts is not None
        assert 55 < late.next_free_ts - second.now() <= 61
    finally:
        await store.close()
