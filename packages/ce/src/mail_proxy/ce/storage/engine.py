"""Engines and migrations for SQLite and PostgreSQL.

URLs as users write them (``sqlite:///path``, ``postgresql://user@host/db``) are turned into
the async drivers' URLs. A ``?schema=NAME`` parameter on a PostgreSQL URL puts every table in
that schema (created if missing) — tests use it to isolate runs on one database.

SQLite runs in WAL mode with ``synchronous=FULL``: a commit is on disk before it returns, so
an accepted message survives a crash or power loss.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

MIGRATIONS = Path(__file__).parent / "migrations"


def make_engine(url: str) -> tuple[AsyncEngine, str, str | None]:
    """Return ``(engine, dialect, schema)`` for a user-facing database URL."""
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        if parsed.database:
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(
            parsed.set(drivername="sqlite+aiosqlite"),
            connect_args={"timeout": 30},
            pool_size=4,
            max_overflow=4,
        )
        _sqlite_pragmas(engine)
        return engine, "sqlite", None
    if backend in ("postgresql", "postgres"):
        schema = parsed.query.get("schema")
        if isinstance(schema, tuple):
            schema = schema[0]
        parsed = parsed.difference_update_query(["schema"]).set(drivername="postgresql+asyncpg")
        connect_args: dict[str, Any] = {"timeout": 10, "command_timeout": 60}
        if schema:
            connect_args["server_settings"] = {"search_path": schema}
        engine = create_async_engine(
            # No pre-ping (a round trip before every transaction): connections are recycled
            # and a dropped one fails its statement (503), which invalidates the pool.
            parsed,
            connect_args=connect_args,
            pool_size=10,
            max_overflow=10,
            pool_recycle=300,
        )
        return engine, "postgresql", schema
    raise ValueError(f"unsupported database URL scheme {parsed.drivername!r}")


def _sqlite_pragmas(engine: AsyncEngine) -> None:
    @sa.event.listens_for(engine.sync_engine, "connect")
    def on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Let SQLAlchemy's BEGIN reach SQLite (pysqlite's implicit transactions off) and
        # make every commit durable.
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=FULL")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()


async def migrate(
    engine: AsyncEngine, schema: str | None, branches: Sequence[tuple[str, str, Any]] = ()
) -> None:
    """Create the schema if needed and upgrade every branch to its newest revision: the
    Community Edition's own, then each installed plugin's ``(name, versions_dir,
    metadata)``. Each plugin branch keeps its revision in its own table
    (``alembic_version_<name>``), so a plugin installed later gets its tables on the next
    start, and an uninstalled plugin's tables and revision are left as they are."""
    async with engine.begin() as conn:
        if schema:
            await conn.execute(sa.text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))
    async with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            # One migrator at a time when several instances start together.
            await conn.execute(sa.text("SELECT pg_advisory_xact_lock(7236001)"))
        await conn.run_sync(_upgrade, None, str(MIGRATIONS / "versions"), None)
        for name, versions_dir, metadata in branches:
            await conn.run_sync(_upgrade, name, versions_dir, metadata)


def _upgrade(sync_conn: Any, branch: str | None, versions_dir: str, metadata: Any) -> None:
    from alembic import command

    cfg = alembic_config(branch, versions_dir, metadata)
    cfg.attributes["connection"] = sync_conn
    command.upgrade(cfg, "heads")


def alembic_config(branch: str | None, versions_dir: str, metadata: Any = None) -> Any:
    """The alembic configuration of one branch (``None``: the Community Edition's)."""
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("path_separator", "os")
    cfg.set_main_option("version_locations", versions_dir)
    cfg.attributes["version_table"] = version_table(branch)
    cfg.attributes["metadata"] = metadata
    return cfg


def version_table(branch: str | None) -> str:
    return "alembic_version" if branch is None else f"alembic_version_{branch}"


async def current_heads(conn: AsyncConnection, branch: str | None = None) -> set[str]:
    """The revisions recorded for ``branch`` (``None``: the Community Edition's)."""

    def read(sync_conn: Any) -> set[str]:
        from alembic.runtime.migration import MigrationContext

        ctx = MigrationContext.configure(sync_conn, opts={"version_table": version_table(branch)})
        return set(ctx.get_current_heads())

    return await conn.run_sync(read)
