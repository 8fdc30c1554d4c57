"""L7: two instances on one PostgreSQL database, one of them under a skewed clock.

The skewed instance runs under libfaketime (Debian package ``faketime``, preloaded into the
service process only) five minutes ahead of the machine's clock, or five minutes behind. The
other runs on the machine's clock, which is the database's. Shown:

- **no early lease theft**: while one instance holds claims under a live lease (its SMTP
  sessions held in DATA by the sink), the other, claiming all the while, takes none of them:
  every message is delivered once and nothing is flagged ``uncertain``; both ways round;
- **no late takeover**: the instance whose clock is ahead is stopped (``SIGSTOP``) holding
  claims; the other takes them over once the lease has run out on the database's clock (not
  five minutes later), at most one extra copy each, flagged;
- **no rate-limit bypass**: an account limited to 5 messages a minute sends 5 through the
  instance whose clock is behind; 5 more through the instance whose clock is ahead are all
  deferred (none reaches the SMTP server), to when the first sends leave the window.

Before the shared clock (engine/clock.py) each instance wrote and compared leases and
rate windows on its own clock, and each of the three failed.
"""

from __future__ import annotations

import glob
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from reliability.harness import (
    Accounting,
    Fleet,
    Sink,
    add_account,
    db_rows,
    in_flight,
    message,
    record,
    uncertain_ids,
    wait_final,
    wait_until,
)

from mail_proxy.core.testing.service import ServiceProcess

pytestmark = [pytest.mark.reliability, pytest.mark.postgres, pytest.mark.timeout(240)]

SKEW = 300  # seconds
LEASE = 8.0
HOLD = 3.0  # how long the sink holds each message in DATA (well inside the lease)
LIMIT = 5  # the limited account's messages per minute


def libfaketime() -> str:
    found = sorted(
        glob.glob("/usr/lib/*/faketime/libfaketime.so.1") + glob.glob("/usr/lib/faketime/*.so.1")
    )
    if not found:
        why = "libfaketime not installed (Debian package faketime: scripts/ci-packages)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(why)
        pytest.skip(why)
    return found[0]


def skewed_env(seconds: int) -> dict[str, str]:
    """The environment that runs a process ``seconds`` off the machine's clock."""
    return {
        "LD_PRELOAD": libfaketime(),
        "FAKETIME": f"{seconds:+d}",
        # asyncio's timers and the service's timeouts run on the monotonic clock: real time
        "FAKETIME_DONT_FAKE_MONOTONIC": "1",
    }


def measured_skew(env: dict[str, str]) -> float:
    """What a process started with ``env`` sees, minus what this one sees."""
    before = time.time()
    out = subprocess.run(
        [sys.executable, "-c", "import time; print(time.time())"],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        check=True,
    )
    return float(out.stdout) - (before + time.time()) / 2


async def instance_id(svc: ServiceProcess) -> str:
    return str((await svc.call("GET", "/instance"))["instance"]["instance_id"])


async def set_scheduler(svc: ServiceProcess, active: bool) -> None:
    await svc.call("PUT", "/instance", json={"scheduler_active": active})


async def enqueue(svc: ServiceProcess, ids: list[str], **fields: str) -> None:
    body = {"messages": [message(i, **fields) for i in ids]}
    data = await svc.call("POST", "/commands/add-messages", json=body)
    assert data["queued"] == len(ids), data


async def database_now(url: str) -> float:
    [(now,)] = await db_rows(url, "SELECT extract(epoch FROM clock_timestamp())")
    return float(now)


@pytest.mark.parametrize("skew", [SKEW, -SKEW], ids=["ahead", "behind"])
async def test_l7_an_instance_with_a_skewed_clock(tmp_path: Path, pg_url: str, skew: int) -> None:
    env = skewed_env(skew)
    seen = measured_skew(env)
    assert abs(seen - skew) < 5, f"faketime did not skew the clock: {seen:+.1f} s"
    async with Sink() as sink:
        async with Fleet(tmp_path, pg_url, GMP_CLAIM_LEASE_SECONDS=str(LEASE)) as fleet:
            normal = await fleet.start()
            off = await fleet.start(**env)
            ids_of = {"normal": await instance_id(normal), "skewed": await instance_id(off)}
            assert ids_of["normal"] != ids_of["skewed"]
            await add_account(normal, sink, max_connections=10)
            await normal.call(
                "POST",
                "/account",
                json={
                    "id": "limited",
                    "host": "127.0.0.1",
                    "port": sink.port,
                    "limit_per_minute": LIMIT,
                },
            )
            ahead, behind = (off, normal) if skew > 0 else (normal, off)
            figures: dict[str, int] = {"skew": skew}
            expected: set[str] = set()

            # 1. live leases: the other instance, claiming all along, takes none of them
            for name, holder, other in (("a", normal, off), ("b", off, normal)):
                await set_scheduler(other, False)
                await set_scheduler(holder, True)
                sink.data_delay = HOLD
                ids = [f"live{name}{i}" for i in range(10)]
                expected.update(ids)
                await enqueue(holder, ids)
                await sink.wait_until(lambda ids=ids: set(ids) <= set(sink.copies()), timeout=30)
                await set_scheduler(other, True)  # the held claims are there to take
                await wait_final(other, len(expected), timeout=60)
            live = {i for i in expected if i.startswith("live")}
            copies = sink.copies()
            figures["live_sent_twice"] = sum(copies[i] > 1 for i in live)
            figures["live_flagged"] = len(live & await uncertain_ids(pg_url))
            assert figures["live_sent_twice"] == 0 and figures["live_flagged"] == 0, figures

            # 2. the instance ahead stops holding claims: the other takes them over when the
            #    lease has run out on the database's clock
            await set_scheduler(behind, False)
            await set_scheduler(ahead, True)
            ids = [f"stop{i}" for i in range(10)]
            expected.update(ids)
            await enqueue(ahead, ids)
            await sink.wait_until(lambda: set(ids) <= set(sink.copies()), timeout=30)
            ahead_id = ids_of["skewed" if ahead is off else "normal"]
            held = await in_flight(pg_url, claimed_by=ahead_id)
            fleet.stop_signal(ahead, signal.SIGSTOP)
            assert held, "the instance ahead held no claim when stopped"
            await set_scheduler(behind, True)
            # LEASE + 30 s: five minutes of skew would not fit in it
            await wait_final(behind, len(expected), timeout=LEASE + 30)
            fleet.stop_signal(ahead, signal.SIGCONT)
            copies = sink.copies()
            flagged = await uncertain_ids(pg_url)
            taken_over = {i for i in ids if copies[i] > 1}
            figures["stopped_holding"] = len(held)
            figures["taken_over"] = len(taken_over)
            assert max(copies[i] for i in ids) <= 2
            assert taken_over <= flagged

            # 3. the rate limit: 5 a minute through the instance behind, then none through
            #    the instance ahead
            sink.data_delay = 0.0
            await set_scheduler(ahead, False)
            await set_scheduler(behind, True)
            first = [f"rate{i}" for i in range(LIMIT)]
            expected.update(first)
            await enqueue(behind, first, account_id="limited")
            await wait_final(behind, len(expected), timeout=30)
            await set_scheduler(behind, False)
            await set_scheduler(ahead, True)
            second = [f"rate{i}" for i in range(LIMIT, 2 * LIMIT)]
            await enqueue(ahead, second, account_id="limited")
            quoted = ", ".join(f"'{i}'" for i in second)

            async def decided() -> bool:
                rows = await db_rows(pg_url, f"SELECT status FROM messages WHERE id IN ({quoted})")
                return all(status in ("deferred", "sent", "error") for (status,) in rows)

            await wait_until(decided, 30, "the instance ahead deciding on its messages")
            rows = await db_rows(
                pg_url, f"SELECT id, status, deferred_ts FROM messages WHERE id IN ({quoted})"
            )
            now = await database_now(pg_url)
            copies = sink.copies()
            figures["rate_sent_in_window"] = sum(copies[i] for i in first + second)
            figures["rate_deferred"] = sum(status == "deferred" for _, status, _ in rows)
            record(f"L7 clock {'ahead' if skew > 0 else 'behind'}", **figures)
            assert figures["rate_sent_in_window"] == LIMIT, figures
            assert {status for _, status, _ in rows} == {"deferred"}, rows
            # deferred to when the first sends leave the window: within the minute, on the
            # database's clock (not five minutes off)
            assert all(now < ts <= now + 61 for _, _, ts in rows), (now, rows)

            account = Accounting(expected, copies)
            assert not account.lost and not account.unexpected
            log = (tmp_path / "service-2.log").read_text()
            assert "off the database's" in log  # the skewed instance noticed
