"""Two statements the plugin needs on SQLite and PostgreSQL alike: insert-or-ignore and
insert-or-update by primary key (each dialect's ``INSERT ... ON CONFLICT``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import sqlalchemy as sa
    from sqlalchemy.ext.asyncio import AsyncConnection


def _insert(conn: AsyncConnection, table: sa.Table) -> Any:
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects import postgresql

        return postgresql.insert(table)
    if conn.dialect.name == "sqlite":
        from sqlalchemy.dialects import sqlite

        return sqlite.insert(table)
    raise NotImplementedError(
        f"the bounce plugin supports SQLite and PostgreSQL, not {conn.dialect.name}"
    )


def _keys(table: sa.Table) -> list[Any]:
    return list(table.primary_key.columns)


async def insert_ignore(
    conn: AsyncConnection, table: sa.Table, rows: Sequence[dict[str, Any]]
) -> None:
    """Insert ``rows``; those whose primary key exists already are left as they are."""
    if rows:
        stmt = _insert(conn, table).on_conflict_do_nothing(index_elements=_keys(table))
        await conn.execute(stmt, list(rows))


async def upsert(
    conn: AsyncConnection, table: sa.Table, rows: Sequence[dict[str, Any]], update: Sequence[str]
) -> None:
    """Insert ``rows``; for an existing primary key, overwrite the columns in ``update``."""
    if rows:
        stmt = _insert(conn, table)
        stmt = stmt.on_conflict_do_update(
            index_elements=_keys(table), set_={c: stmt.excluded[c] for c in update}
        )
        await conn.execute(stmt, list(rows))
