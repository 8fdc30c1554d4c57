"""Scenarios with a distant, slow SMTP server: a relay adds a round-trip time between the
service and the sink, and the sink takes a while to accept each message's data.

* ``e2e-latency``: one account, 50 ms RTT, 200 ms to accept the data, 5,000 messages, with
  ``max_connections`` 10 and then 50;
* ``e2e-many-accounts``: 20 accounts of 10 connections each, the same server, 5,000 messages;
* ``e2e-stalled-neighbour``: 4 healthy accounts (as above, 1,000 messages each) next to a fifth
  whose server never answers the data (1,000 messages, enqueued first); the healthy accounts'
  rate is compared with a run without the stalled account. The wait for the healthy messages
  ends when none arrived for 30 s: what is not delivered by then is reported as
  ``still_queued`` (not lost: it is still in the queue).

The ideal rate is what the connections could carry if nothing but the network and the server
took time: ``connections / (round_trips × RTT + data acceptance)``, with ``round_trips`` the
client writes per message seen by the relay, less one EHLO per connection opened (each write
waits for a reply: 2 with PIPELINING — envelope, content —, 4 without). ``of_ideal`` = measured / ideal. The dispatcher's own bounds
(``GMP_MAX_SENDS_PER_ACCOUNT``, ``GMP_MAX_CONCURRENT_SENDS``) are raised to the connections
asked for, so that they do not hide what the transport can do; ``--set`` overrides that.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from .service import CpuMeter
from .sink import SinkHandle

if TYPE_CHECKING:
    from .scenarios import Bench, Measured, Stack

RTT_MS = 50.0
DATA_ACCEPT_S = 0.2
#: A server that never answers the end of the data (within the run).
STALL_S = 3600.0
BODY = 1024


def _settings(accounts: int, connections: int) -> dict[str, str]:
    return {
        "max_sends_per_account": str(max(8, connections)),
        "max_concurrent_sends": str(max(64, accounts * connections)),
    }


def _accounts(prefix: str, count: int, connections: int) -> list[dict[str, Any]]:
    return [
        {"account_id": f"{prefix}{n}", "default": n == 0, "max_connections": connections}
        for n in range(count)
    ]


def ideal_rate(connections: int, round_trips: int) -> float:
    """Messages per second the connections carry when only latency counts."""
    return connections / (round_trips * RTT_MS / 1000 + DATA_ACCEPT_S)


async def _deliver(
    bench: Bench, stack: Stack, prefix: str, count: int, account_ids: list[str]
) -> dict[str, Any]:
    """Enqueue ``count`` messages over ``account_ids`` and wait until the sink has them all;
    the figures of that delivery."""
    assert stack.relay is not None
    spec = bench.batches_spec(stack, prefix, count, body_bytes=BODY, clients=2)
    spec["accounts"] = account_ids
    before = await stack.relay.stats()
    cpu = CpuMeter(stack.pids)
    load = await bench.load(spec)
    stats = await bench.delivered(stack.sink, count)
    cpu_ms = cpu.ms_per(count)
    after = await stack.relay.stats()
    total = (stats["last_ts"] or load["t_end"]) - load["t_start"]
    writes = after["client_writes"] - before["client_writes"]
    first = stats["first_ts"]
    return {
        "delivered": stats["unique"],
        "delivered_per_s": round(stats["unique"] / total, 1) if total > 0 else 0.0,
        "total_s": round(total, 3),
        "first_delivery_s": round(first - load["t_start"], 3) if first else None,
        "writes_per_msg": round(writes / max(1, stats["unique"]), 2),
        "connections_opened": after["connections"] - before["connections"],
        "writes": writes,
        "lost": stats["lost"],
        "duplicated": stats["duplicated"],
        "enqueue_errors": load["errors"],
        "service_cpu_ms_per_msg": cpu_ms,
    }


def _against_ideal(figures: dict[str, Any], connections: int) -> dict[str, Any]:
    # each new connection writes its EHLO once: not a round trip of any one message
    per_message = figures.pop("writes") - figures["connections_opened"]
    round_trips = max(1, round(per_message / max(1, figures["delivered"])))
    ideal = ideal_rate(connections, round_trips)
    return figures | {
        "round_trips_per_msg": round_trips,
        "ideal_per_s": round(ideal, 1),
        "of_ideal": round(figures["delivered_per_s"] / ideal, 3),
    }


def _no_loss_totals(parts: list[dict[str, Any]]) -> dict[str, int]:
    return {k: sum(p[k] for p in parts) for k in ("lost", "duplicated", "enqueue_errors")}


def _measured(params: dict[str, Any], metrics: dict[str, Any]) -> Measured:
    from .scenarios import Measured

    return Measured(params, metrics)


async def _latency_run(
    bench: Bench, prefix: str, accounts: int, connections: int, count: int
) -> dict[str, Any]:
    settings = _settings(accounts, connections)
    spec = _accounts("acct", accounts, connections)
    async with bench.stack(
        settings=settings, sink_delay=DATA_ACCEPT_S, rtt_ms=RTT_MS, accounts=spec
    ) as stack:
        figures = await _deliver(bench, stack, prefix, count, [a["account_id"] for a in spec])
    return _against_ideal(figures, accounts * connections)


async def e2e_latency(bench: Bench) -> Measured:
    count = bench.size(5_000)
    parts = {}
    for connections in (10, 50):
        parts[f"c{connections}"] = await _latency_run(
            bench, f"lat{connections}", 1, connections, count
        )
    params = {
        "messages": count,
        "accounts": 1,
        "max_connections": [10, 50],
        "rtt_ms": RTT_MS,
        "data_accept_s": DATA_ACCEPT_S,
        "body_bytes": BODY,
    }
    return _measured(params, {**parts, **_no_loss_totals(list(parts.values()))})


async def e2e_many_accounts(bench: Bench) -> Measured:
    count, accounts, connections = bench.size(5_000), 20, 10
    figures = await _latency_run(bench, "many", accounts, connections, count)
    params = {
        "messages": count,
        "accounts": accounts,
        "max_connections": connections,
        "rtt_ms": RTT_MS,
        "data_accept_s": DATA_ACCEPT_S,
        "body_bytes": BODY,
    }
    return _measured(params, figures)


async def e2e_stalled_neighbour(bench: Bench) -> Measured:
    """The four healthy accounts' rate, without and then with a stalled fifth account."""
    per_account, healthy, connections = bench.size(1_000), 4, 10
    count = per_account * healthy
    ids = [f"acct{n}" for n in range(healthy)]
    spec = _accounts("acct", healthy, connections)

    alone_settings = _settings(healthy, connections)
    async with bench.stack(
        settings=alone_settings, sink_delay=DATA_ACCEPT_S, rtt_ms=RTT_MS, accounts=spec
    ) as stack:
        alone = await _deliver(bench, stack, "alone", count, ids)
    alone = _against_ideal(alone, healthy * connections)

    stalled_sink = SinkHandle(STALL_S)
    await stalled_sink.start()
    try:
        settings = _settings(healthy + 1, connections)
        async with bench.stack(
            settings=settings, sink_delay=DATA_ACCEPT_S, rtt_ms=RTT_MS, accounts=spec
        ) as stack:
            await stack.api.add_account(
                stalled_sink.smtp_port, "stalled", default=False, max_connections=connections
            )
            # the stalled account's messages first: they are claimed before the others
            stalled_spec = bench.batches_spec(stack, "stall", per_account, body_bytes=BODY)
            stalled_spec["accounts"] = ["stalled"]
            await bench.load(stalled_spec)
            await asyncio.sleep(1.0)  # its connections are open and stuck in DATA
            beside = await _deliver(bench, stack, "beside", count, ids)
            status = await stack.api.status()
    finally:
        await stalled_sink.stop()
    # what the healthy accounts did not deliver within the wait is still queued, not lost:
    # the queue holds it beside the stalled account's messages (none of which can be sent)
    waiting = max(0, status["pending_messages"] - per_account)
    beside["still_queued"] = waiting
    beside["lost"] = count - beside["delivered"] - waiting
    beside = _against_ideal(beside, healthy * connections)
    metrics = {
        "alone": alone,
        "beside_stalled": beside,
        "ratio": round(beside["delivered_per_s"] / alone["delivered_per_s"], 3)
        if alone["delivered_per_s"]
        else None,
        "pending_after": status["pending_messages"],
        **_no_loss_totals([alone, beside]),
    }
    params = {
        "messages_per_account": per_account,
        "healthy_accounts": healthy,
        "max_connections": connections,
        "rtt_ms": RTT_MS,
        "data_accept_s": DATA_ACCEPT_S,
        "stalled_data_accept_s": STALL_S,
    }
    return _measured(params, metrics)
