"""Upgrading an install whose tenant API keys are still columns of ``tenants`` (Community
Edition schema 0004): every key keeps working, unchanged, from the plugin's own table.

The Community Edition's revision 0005 drops the columns after moving the keys to the holding
table ``tenant_api_keys_legacy``; the plugin's first revision adopts them, in the same start
or, when the plugin was disabled during the upgrade, on the first start with it.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command

from mail_proxy.ce.storage.engine import MIGRATIONS, alembic_config, current_heads, make_engine
from mail_proxy.core.engine.encryption import generate_key
from mail_proxy.ee.multitenancy.keys import hash_key, new_api_key
from mail_proxy.ee.multitenancy.tables import metadata
from support.ce_api import Api, start_api
from support.multitenancy import as_tenant

HOLDING = "tenant_api_keys_legacy"


async def old_database(url: str) -> dict[str, str]:
    """A database at the Community Edition's revision 0004 with three tenants: ``acme`` (a
    key), ``late`` (an expired key), ``plain`` (none). Returns the keys by tenant."""
    keys = {"acme": new_api_key(), "late": new_api_key()}
    rows = [
        {"id": "acme", "hash": hash_key(keys["acme"]), "expires": None},
        {"id": "late", "hash": hash_key(keys["late"]), "expires": time.time() - 60},
        {"id": "plain", "hash": None, "expires": None},
    ]
    engine, _, schema = make_engine(url)

    def upgrade(sync_conn: Any) -> None:
        cfg = alembic_config(None, str(MIGRATIONS / "versions"))
        cfg.attributes["connection"] = sync_conn
        command.upgrade(cfg, "0004")

    try:
        async with engine.begin() as conn:
            if schema:
                await conn.execute(sa.text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))
            await conn.run_sync(upgrade)
            await conn.execute(
                sa.text(
                    "INSERT INTO tenants (id, active, api_key_hash, api_key_expires_at, "
                    "created_at, updated_at) VALUES (:id, :active, :hash, :expires, 1, 2)"
                ),
                [{**row, "active": True} for row in rows],
            )
    finally:
        await engine.dispose()
    return keys


async def tables(api: Api) -> set[str]:
    async with api.runtime.storage.database.connect() as conn:
        return set(await conn.run_sync(lambda c: sa.inspect(c).get_table_names()))


async def assert_keys_work(api: Api, keys: dict[str, str]) -> None:
    await as_tenant(api, keys["acme"], "GET", "/tenant/acme")
    late = await as_tenant(api, keys["late"], "GET", "/tenant/late", expect=401)
    assert late["code"] == "token_expired"
    shown = {t["id"]: t for t in (await api.get("/tenants"))["tenants"]}
    assert shown["acme"]["has_api_key"] and shown["acme"]["api_key_expires_at"] is None
    assert shown["late"]["api_key_expires_at"] < time.time()
    assert not shown["plain"]["has_api_key"] and not shown["default"]["has_api_key"]
    assert HOLDING not in await tables(api)


async def test_keys_move_to_the_plugin_table_at_the_upgrade(
    db_url: str, aiohttp_client_factory: Any, make_settings: Any, tmp_path: Path
) -> None:
    keys = await old_database(db_url)
    api = await start_api(aiohttp_client_factory, make_settings, db_url, tmp_path)
    await assert_keys_work(api, keys)
    async with api.runtime.storage.database.connect() as conn:
        assert await current_heads(conn, "multitenancy") == {"multitenancy_0001"}
        columns = await conn.run_sync(lambda c: sa.inspect(c).get_columns("tenants"))
        assert not [c["name"] for c in columns if c["name"].startswith("api_key")]
        diff = await conn.run_sync(compare_plugin_tables)
    assert diff == []
    # rotation and revocation work on the adopted key
    new = (await api.post("/tenant/acme/api-key"))["api_key"]
    await as_tenant(api, keys["acme"], "GET", "/tenant/acme", expect=401)
    await as_tenant(api, new, "GET", "/tenant/acme")


def compare_plugin_tables(sync_conn: Any) -> list[Any]:
    """What differs between the migrated plugin tables and the plugin's metadata."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    own = set(metadata.tables)

    def include(name: str | None, kind: str, parent: Any) -> bool:
        return kind != "table" or name in own

    ctx = MigrationContext.configure(sync_conn, opts={"include_name": include})
    return list(compare_metadata(ctx, metadata))


async def test_keys_wait_for_a_plugin_installed_after_the_upgrade(
    db_url: str, aiohttp_client_factory: Any, make_settings: Any, tmp_path: Path
) -> None:
    keys = await old_database(db_url)
    key = generate_key()
    without = await start_api(
        aiohttp_client_factory,
        make_settings,
        db_url,
        tmp_path,
        disabled_plugins=["multitenancy"],
        encryption_key=key,
    )
    assert HOLDING in await tables(without)
    refused = await as_tenant(without, keys["acme"], "GET", "/messages", expect=401)
    assert refused["code"] == "invalid_token"

    api = await start_api(
        aiohttp_client_factory, make_settings, db_url, tmp_path, encryption_key=key
    )
    await assert_keys_work(api, keys)
