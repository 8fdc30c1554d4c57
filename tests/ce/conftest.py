"""Fixtures for the CE tests: a real SMTP server, a runtime with a key, SMTP transports, the
storage alone.

Everything started here is stopped at teardown, in reverse order.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from mail_proxy.ce import plugin as ce_plugin
from mail_proxy.ce.storage.sql import SqlStorage
from mail_proxy.core.engine.runtime import Runtime
from mail_proxy.core.plugins.loader import create_plugin_manager
from mail_proxy.core.testing.smtp import SmtpTestServer


@pytest.fixture
def smtp_runtime(make_settings: Callable[..., Any]) -> Callable[..., Runtime]:
    """``smtp_runtime(**settings)`` → a real Runtime with its encryption key loaded."""

    def build(**overrides: Any) -> Runtime:
        rt = Runtime.create(
            make_settings(**overrides),
            create_plugin_manager(extra_plugins=[("ce", ce_plugin)], load_entry_points=False),
        )
        rt.load_cipher()
        return rt

    return build


@pytest.fixture
async def smtp_server_factory() -> AsyncIterator[Callable[..., Any]]:
    """``await smtp_server_factory(**kwargs)`` → a started :class:`SmtpTestServer`."""
    servers: list[SmtpTestServer] = []

    async def start(**kwargs: Any) -> SmtpTestServer:
        server = SmtpTestServer(**kwargs)
        await server.start()
        servers.append(server)
        return server

    yield start
    for server in reversed(servers):
        await server.stop()


@pytest.fixture
async def smtp_server(smtp_server_factory: Callable[..., Any]) -> SmtpTestServer:
    """A plain SMTP server (no TLS, no AUTH) on 127.0.0.1."""
    server: SmtpTestServer = await smtp_server_factory()
    return server


@pytest.fixture
async def smtp_transport_factory() -> AsyncIterator[Callable[..., Any]]:
    """``smtp_transport_factory(runtime, **kwargs)`` → an SmtpTransport closed at teardown."""
    from mail_proxy.ce.transport.smtp import SmtpTransport

    made: list[SmtpTransport] = []

    def build(runtime: Runtime, **kwargs: Any) -> SmtpTransport:
        transport = SmtpTransport(runtime, **kwargs)
        made.append(transport)
        return transport

    yield build
    for transport in reversed(made):
        await transport.close()


@pytest.fixture
async def storage(db_url: str, make_settings: Callable[..., Any]) -> AsyncIterator[SqlStorage]:
    """The CE storage alone on ``db_url`` (SQLite file or a PostgreSQL schema), migrated, with a
    runtime that has the test encryption key and knows its storage; no services, no web app."""
    rt = Runtime.create(
        make_settings(database_url=db_url),
        create_plugin_manager(extra_plugins=[("ce", ce_plugin)], load_entry_points=False),
    )
    rt.load_cipher()
    store = SqlStorage(rt, db_url)
    await store.start()
    rt.storage = store
    yield store
    await store.close()
