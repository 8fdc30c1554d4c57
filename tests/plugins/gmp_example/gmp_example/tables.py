"""The example plugin's own table, on the service's database (``runtime.storage.database``)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from mail_proxy.core.contracts.extensions import NAMING_CONVENTION

if TYPE_CHECKING:
    from mail_proxy.core.engine.runtime import Runtime

metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)

notes = sa.Table(
    "example_notes",
    metadata,
    sa.Column("pk", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("tenant_id", sa.String(128), nullable=False),
    sa.Column("message_id", sa.String(255), nullable=False),
    sa.Column("note", sa.Text, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Index("ix_example_notes_tenant_message", "tenant_id", "message_id"),
)


async def add_note(runtime: Runtime, tenant_id: str, message_id: str, note: str) -> None:
    async with runtime.storage.database.begin() as conn:
        await conn.execute(
            notes.insert().values(
                tenant_id=tenant_id, message_id=message_id, note=note, created_at=time.time()
            )
        )


async def list_notes(runtime: Runtime, tenant_id: str, message_id: str) -> list[dict[str, Any]]:
    c = notes.c
    async with runtime.storage.database.connect() as conn:
        rows = await conn.execute(
            sa.select(c.note, c.created_at)
            .where(c.tenant_id == tenant_id, c.message_id == message_id)
            .order_by(c.pk)
        )
        return [{"note": r.note, "created_at": r.created_at} for r in rows]


async def delete_tenant_notes(runtime: Runtime, tenant_id: str) -> None:
    async with runtime.storage.database.begin() as conn:
        await conn.execute(notes.delete().where(notes.c.tenant_id == tenant_id))
