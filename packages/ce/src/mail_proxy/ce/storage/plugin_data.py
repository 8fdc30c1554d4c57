"""What the storage keeps for plugins: per-tenant plugin settings (``tenant_settings``) and
the lookup of messages by the Message-ID the proxy generated (bounces and receipts quote it).

A repository of :class:`~mail_proxy.ce.storage.sql.SqlStorage`, on :class:`.base.SqlBase`.
Secret members of a setting are stored as ``{"$enc": token}`` (sealed by the engine), so key
rotation (:mod:`.admin`) can find and re-encrypt them without knowing the plugin.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from mail_proxy.core.contracts.model import MessageRef

from . import schema as t
from .base import SqlBase


class PluginDataRepository(SqlBase):
    """Tenant plugin settings and message lookup by Message-ID."""

    async def get_tenant_settings(self, tenant_id: str) -> dict[str, Any]:
        ts = t.tenant_settings.c
        async with self._read() as conn:
            rows = await conn.execute(sa.select(ts.name, ts.value).where(ts.tenant_id == tenant_id))
            return {r.name: r.value for r in rows}

    async def put_tenant_setting(self, tenant_id: str, name: str, value: Any | None) -> None:
        ts = t.tenant_settings.c
        async with self._write() as conn:
            await conn.execute(
                t.tenant_settings.delete().where(ts.tenant_id == tenant_id, ts.name == name)
            )
            if value is not None:
                await conn.execute(
                    t.tenant_settings.insert().values(
                        tenant_id=tenant_id, name=name, value=value, updated_at=time.time()
                    )
                )

    async def find_messages_by_message_id(self, message_ids: Sequence[str]) -> list[MessageRef]:
        m = t.messages.c
        found: list[MessageRef] = []
        async with self._read() as conn:
            for start in range(0, len(message_ids), 500):
                chunk = list(message_ids[start : start + 500])
                rows = await conn.execute(
                    sa.select(m.pk, m.tenant_id, m.id, m.account_id, m.status, m.message_id).where(
                        m.message_id.in_(chunk)
                    )
                )
                found += [
                    MessageRef(r.pk, r.tenant_id, r.id, r.account_id, r.status, r.message_id)
                    for r in rows
                ]
        return found
