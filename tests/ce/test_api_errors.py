"""The error middleware (core/web/app.py): what a client gets when something fails."""

from __future__ import annotations

import socket
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from support.ce_api import Api


def _closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_a_database_error_raised_outside_the_storage_is_a_503(
    api: Api, monkeypatch: Any
) -> None:
    """A query that is not the storage's own (a plugin's, on its own connection) and finds
    the database gone answers 503 ``database_unavailable``, as the storage's own do, not 500.
    The error is the driver's real one: a PostgreSQL engine on a port nobody listens on."""
    away = create_async_engine(f"postgresql+asyncpg://postgres@127.0.0.1:{_closed_port()}/test")

    async def plugin_query(*args: Any, **kwargs: Any) -> Any:
        async with away.connect() as conn:
            return await conn.execute(sa.text("SELECT 1"))

    monkeypatch.setattr(api.runtime.storage, "list_messages", plugin_query)
    try:
        answer = await api.call("GET", "/messages", expect=503)
    finally:
        await away.dispose()
    assert answer["code"] == "database_unavailable"

    async def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("a bug, not an outage")

    monkeypatch.setattr(api.runtime.storage, "list_messages", broken)
    answer = await api.call("GET", "/messages", expect=500)
    assert answer["code"] == "internal_error"
