"""Fixtures of the PEC plugin tests: the provider, the report receiver, the service
(see :mod:`ee_pec.world`)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from ee_pec.world import PecProviderSmtp, PecWorld, pec_overrides

from mail_proxy.core.engine.encryption import generate_key
from mail_proxy.core.testing.reports import ReportClient
from support.ce_api import Api
from support.dovecot import Dovecot


@pytest.fixture
async def provider(dovecot: Dovecot) -> AsyncIterator[PecProviderSmtp]:
    server = await PecProviderSmtp(dovecot).start()
    yield server
    await server.stop()


@pytest.fixture
async def reports() -> AsyncIterator[ReportClient]:
    async with ReportClient() as client:
        yield client


@pytest.fixture
def start_world(
    db_url: str,
    aiohttp_client_factory: Any,
    make_settings: Any,
    tmp_path: Path,
    dovecot: Dovecot,
    provider: PecProviderSmtp,
    reports: ReportClient,
) -> Callable[..., Any]:
    """``await start_world(**settings)`` → a :class:`PecWorld` (a fresh mailbox user); call
    it again with ``user=(name, password)`` to restart the service on the same database."""

    key = generate_key()  # the same on every start: a restart reads its own secrets

    async def start(user: tuple[str, str] | None = None, **overrides: Any) -> PecWorld:
        name, password = user or dovecot.new_user("pec")
        values = pec_overrides(reports, **overrides)
        settings = make_settings(database_url=db_url, encryption_key=key, **values)
        client = await aiohttp_client_factory(settings)
        api = Api(client, tmp_path)
        return PecWorld(api, provider, reports, dovecot, name, password, values)

    return start
