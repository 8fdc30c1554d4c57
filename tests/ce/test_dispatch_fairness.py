"""One account whose server stalls holds only its own connections' worth of the dispatcher:
the other accounts' messages are claimed and delivered meanwhile (issue 18, fairness)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from mail_proxy.core.testing.smtp import SmtpTestServer
from support.api import add_account, enqueue, message, wait_status


class StalledServer:
    """Accepts TCP connections and never answers (no greeting): a server that stalls."""

    def __init__(self) -> None:
        self.connections = 0
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []

    async def start(self) -> StalledServer:
        async def hold(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.connections += 1
            self._writers.append(writer)

        self._server = await asyncio.start_server(hold, "127.0.0.1", 0)
        return self

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        for writer in self._writers:
            writer.close()
        if self._server is not None:
            self._server.close()


@pytest.fixture
async def stalled() -> AsyncIterator[StalledServer]:
    server = await StalledServer().start()
    yield server
    await server.stop()


async def test_a_stalled_account_does_not_hold_the_slots_of_the_others(
    aiohttp_client_factory: Any, make_settings: Any, stalled: StalledServer
) -> None:
    async with SmtpTestServer() as healthy:
        # few global slots, so that the stalled account could take them all (it may hold
        # 10 per connection: 20 of 30)
        client = await aiohttp_client_factory(make_settings(max_concurrent_sends=30))
        await add_account(client, stalled, "stalled", max_connections=2, timeout=60)
        await add_account(client, healthy, "healthy", default=True)
        # the stalled account's messages come first in the queue (FIFO)
        await enqueue(client, [message(id=f"s{i}", account_id="stalled") for i in range(60)])
        await enqueue(client, [message(id=f"h{i}", account_id="healthy") for i in range(10)])
        for i in range(10):
            await wait_status(client, f"h{i}", "sent", timeout=15)
        assert len(healthy.messages) == 10
        assert stalled.connections <= 2  # the stalled account kept to its own connections
