"""The PEC plugin's tables come from its own migration branch and match its metadata, on
SQLite and PostgreSQL (the service creates them at startup)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import sqlalchemy as sa

from mail_proxy.ee.pec.tables import metadata
from support.ce_api import Api


async def test_the_branch_creates_tables_that_match_the_metadata(
    db_url: str, aiohttp_client_factory: Any, make_settings: Any, tmp_path: Path
) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    api = Api(await aiohttp_client_factory(make_settings(database_url=db_url)), tmp_path)
    engine = api.runtime.storage.database
    ours = set(metadata.tables)

    def compare(conn: Any) -> Any:
        ctx = MigrationContext.configure(
            conn,
            opts={
                "compare_type": True,
                "include_name": lambda name, kind, _parent: kind != "table" or name in ours,
            },
        )
        return compare_metadata(ctx, metadata)

    async with engine.connect() as conn:
        assert ours <= set(await conn.run_sync(lambda c: sa.inspect(c).get_table_names()))
        version = await conn.scalar(sa.text("SELECT version_num FROM alembic_version_pec"))
        assert version == "pec_0001"
        assert await conn.run_sync(compare) == []
