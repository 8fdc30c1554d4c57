"""SMTP connections per account and per instance, and the per-message timeout."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from mail_proxy.ce.transport.smtp import SmtpTransport
from mail_proxy.core.contracts.transport import TransportError
from mail_proxy.core.engine.runtime import Runtime
from mail_proxy.core.testing.smtp import SmtpTestServer
from support.smtp_send import account_for, send


class PeakOpen:
    """Samples ``transport.open_connections`` every millisecond while running."""

    def __init__(self, transport: SmtpTransport) -> None:
        self.transport = transport
        self.peak = 0
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            self.peak = max(self.peak, self.transport.open_connections)
            await asyncio.sleep(0.001)

    async def __aenter__(self) -> PeakOpen:
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()


async def test_connections_open_as_the_queue_needs_them(
    smtp_server: SmtpTestServer,
    smtp_runtime: Callable[..., Runtime],
    smtp_transport_factory: Callable[..., SmtpTransport],
) -> None:
    transport = smtp_transport_factory(smtp_runtime())
    account = account_for(smtp_server, max_connections=10)
    for i in range(3):  # one at a time: one connection carries them all
        await send(transport, account, mail_id=f"s{i}")
    assert smtp_server.connection_count == 1
    smtp_server.data_delay = 0.1
    await asyncio.gather(*(send(transport, account, mail_id=f"p{i}") for i in range(4)))
    assert smtp_server.connection_count == 4  # the idle one plus three more
    assert "RSET" not in {c for conn in smtp_server.connections for c in conn.commands}


async def test_instance_cap_closes_another_accounts_idle_connection(
    smtp_server: SmtpTestServer,
    smtp_runtime: Callable[..., Runtime],
    smtp_transport_factory: Callable[..., SmtpTransport],
) -> None:
    transport = smtp_transport_factory(smtp_runtime(smtp_max_connections=2))
    one = account_for(smtp_server, id="one", max_connections=5)
    two = account_for(smtp_server, id="two", max_connections=5)
    smtp_server.data_delay = 0.05
    async with PeakOpen(transport) as peak:
        # "one" may have 5 but the instance only 2
        await asyncio.gather(*(send(transport, one, mail_id=f"a{i}") for i in range(4)))
        assert smtp_server.connection_count == 2
        # "two" needs connections too: "one"'s idle ones are closed (QUIT) to make room
        await asyncio.gather(*(send(transport, two, mail_id=f"b{i}") for i in range(2)))
    assert peak.peak <= 2
    assert len(smtp_server.messages) == 6
    assert smtp_server.connection_count == 4
    assert [c.commands[-1] for c in smtp_server.connections[:2]] == ["QUIT", "QUIT"]


async def test_at_the_cap_a_send_waits_for_a_connection_to_come_back(
    smtp_server: SmtpTestServer,
    smtp_runtime: Callable[..., Runtime],
    smtp_transport_factory: Callable[..., SmtpTransport],
) -> None:
    transport = smtp_transport_factory(smtp_runtime(smtp_max_connections=1))
    smtp_server.data_delay = 0.1
    accounts = [account_for(smtp_server, id=f"acc{i}") for i in range(3)]
    async with PeakOpen(transport) as peak:
        results = await asyncio.gather(
            *(send(transport, a, mail_id=a.id) for a in accounts for _ in range(2))
        )
    assert all(r.accepted == ["a@example.com"] for r in results)
    assert peak.peak == 1
    assert len(smtp_server.messages) == 6


async def test_waiting_for_room_is_bounded_by_the_message_timeout(
    smtp_server: SmtpTestServer,
    smtp_runtime: Callable[..., Runtime],
    smtp_transport_factory: Callable[..., SmtpTransport],
) -> None:
    transport = smtp_transport_factory(smtp_runtime(smtp_max_connections=1))
    smtp_server.data_delay = 1.0
    slow = send(transport, account_for(smtp_server, id="slow"), mail_id="slow")
    hurried = account_for(smtp_server, id="hurried", message_timeout=0.2)
    results = await asyncio.gather(
        slow, send(transport, hurried, mail_id="hurried"), return_exceptions=True
    )
    assert not isinstance(results[0], BaseException)
    assert isinstance(results[1], TransportError) and results[1].permanent is False
    assert "GMP_SMTP_MAX_CONNECTIONS" in str(results[1])


async def test_message_timeout_bounds_the_whole_transaction(
    smtp_server: SmtpTestServer,
    smtp_runtime: Callable[..., Runtime],
    smtp_transport_factory: Callable[..., SmtpTransport],
) -> None:
    transport = smtp_transport_factory(smtp_runtime())
    smtp_server.data_delay = 1.0
    # each reply may take 5 s, the whole message only 0.3 s
    account = account_for(smtp_server, timeout=5.0, message_timeout=0.3)
    with pytest.raises(TransportError) as err:
        await send(transport, account)
    assert err.value.permanent is False
    assert "message_timeout" in str(err.value)
    assert transport.open_connections == 0  # a connection cut off mid-transaction goes
    smtp_server.data_delay = 0.0
    assert (await send(transport, account, mail_id="m2")).accepted == ["a@example.com"]
    assert smtp_server.connection_count == 2


@pytest.mark.parametrize("bad", [0, 1001, "5"])
async def test_account_max_connections_is_validated(
    bad: Any, aiohttp_client_factory: Any, make_settings: Any
) -> None:
    client = await aiohttp_client_factory(make_settings())
    body = {"id": "a", "host": "127.0.0.1", "max_connections": bad}
    resp = await client.post("/account", json=body, headers=client.admin_headers)
    assert resp.status == 400
