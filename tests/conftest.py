"""Shared fixtures: settings, databases (SQLite file and a real PostgreSQL), running apps.

PostgreSQL comes from ``GMP_TEST_DATABASE_URL`` (default
``postgresql://postgres@127.0.0.1:5432/test``). Each test gets its own schema, so parallel
runs never see each other's rows. When the server is unreachable the PostgreSQL variants are
skipped, except under ``CI=true`` where that is a failure.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from mail_proxy.core.contracts.config import Settings, load_settings
from mail_proxy.core.engine.encryption import generate_key
from support.dovecot import dovecot  # noqa: F401  (the real IMAP server fixture)

PG_URL = os.environ.get("GMP_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")
ADMIN_TOKEN = "test-admin-token-0123456789"
_pg_state: dict[str, Any] = {}


def _pg_available() -> bool:
    if "ok" not in _pg_state:

        async def probe() -> bool:
            import asyncpg

            try:
                conn = await asyncpg.connect(PG_URL, timeout=5)
            except Exception:
                return False
            await conn.close()
            return True

        _pg_state["ok"] = asyncio.run(probe())
    return bool(_pg_state["ok"])


def _require_pg() -> None:
    if not _pg_available():
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"PostgreSQL not reachable at {PG_URL} (required under CI=true)")
        pytest.skip(f"PostgreSQL not reachable at {PG_URL}")


def pg_schema_url(schema: str) -> str:
    """The test PostgreSQL URL bound to ``schema`` (search_path) — see SqlStorage."""
    sep = "&" if "?" in PG_URL else "?"
    return f"{PG_URL}{sep}schema={schema}"


async def _drop_schema(schema: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(PG_URL)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty database URL: once a SQLite file, once a PostgreSQL schema."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'gmp.db'}"
        return
    _require_pg()
    schema = f"t_{uuid.uuid4().hex[:12]}"
    yield pg_schema_url(schema)
    asyncio.run(_drop_schema(schema))


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh PostgreSQL schema URL (for tests that only make sense on PostgreSQL)."""
    _require_pg()
    schema = f"t_{uuid.uuid4().hex[:12]}"
    yield pg_schema_url(schema)
    asyncio.run(_drop_schema(schema))


@pytest.fixture
def make_settings(tmp_path: Path) -> Callable[..., Settings]:
    """Build Settings for a test instance in ``tmp_path`` (admin token, key, SQLite)."""

    def build(**overrides: Any) -> Settings:
        base: dict[str, Any] = {
            "instance_dir": str(tmp_path),
            "api_token": ADMIN_TOKEN,
            "encryption_key": generate_key(),
            "send_loop_interval": 0.05,
            "retry_delays": [0.2, 0.4, 0.8],
            "retry_jitter": 0.0,
            "sync_interval": 1.0,
        }
        base.update(overrides)
        return load_settings(env={}, overrides=base)

    return build


@pytest.fixture
async def aiohttp_client_factory(
    request: pytest.FixtureRequest,
) -> AsyncIterator[Callable[..., Any]]:
    """Start the real application on a loopback port; returns an aiohttp TestClient.

    ``await factory(settings)`` → client with ``client.app`` and the admin token preset in
    ``client.admin_headers``.
    """
    from aiohttp.test_utils import TestClient, TestServer

    from mail_proxy.core.web.app import create_app

    # Databases must outlive the apps using them: set them up first, so they are torn down
    # after the apps are closed (a PostgreSQL schema dropped under a running app hangs).
    for name in ("db_url", "pg_url"):
        if name in request.fixturenames:
            request.getfixturevalue(name)
    clients: list[TestClient[Any, Any]] = []

    async def factory(settings: Settings, **kwargs: Any) -> TestClient[Any, Any]:
        app = create_app(settings, **kwargs)
        client: TestClient[Any, Any] = TestClient(TestServer(app, host="127.0.0.1"))
        await client.start_server()
        client.admin_headers = {"X-API-Token": settings.api_token or ""}  # type: ignore[attr-defined]
        clients.append(client)
        return client

    yield factory
    for client in reversed(clients):
        await client.close()


@pytest.fixture
async def api(db_url: str, aiohttp_client_factory: Any, make_settings: Any, tmp_path: Path) -> Any:
    """The real application in test mode over HTTP (support/ce_api.py), on ``db_url``
    (SQLite and PostgreSQL). ``db_url`` comes first: see start_api on teardown order."""
    from support.ce_api import start_api

    return await start_api(aiohttp_client_factory, make_settings, db_url, tmp_path)
