"""What the storage keeps for plugins: per-tenant plugin settings (``tenant_settings``) and
the lookup of messages by the Message-ID the proxy generated (bounces and receipts quote it).

A mixin of :class:`~mail_proxy.ce.storage.sql.SqlStorage`, which provides the connections.
Secret members of a setting are stored as ``{"$enc": token}`` (sealed by the engine), so key
rotation can find and re-encrypt them without knowing the plugin.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from mail_proxy.core.contracts.model import MessageRef
from mail_proxy.core.engine.sealed import SEALED

from . import schema as t

if TYPE_CHECKING:
    from contextlib import AbstractAsyncContextManager

    from sqlalchemy.ext.asyncio import AsyncConnection


class PluginDataMixin:
    """Tenant plugin settings and message lookup by Message-ID."""

    if TYPE_CHECKING:  # provided by SqlStorage
        _pg: bool

        def _write(self) -> AbstractAsyncContextManager[AsyncConnection]: ...
        def _read(self) -> AbstractAsyncContextManager[AsyncConnection]: ...

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

    async def _reencrypt_plugin_values(
        self, conn: AsyncConnection, transform: Callable[[str], str]
    ) -> int:
        """Re-encrypt every sealed member of the plugins' tenant settings and account fields
        (key rotation), in the caller's transaction."""
        changed = 0
        for table, keys, column in (
            (t.tenant_settings, ("tenant_id", "name"), "value"),
            (t.accounts, ("tenant_id", "id"), "extra"),
        ):
            cols = [table.c[k] for k in keys]
            query = sa.select(*cols, table.c[column]).where(table.c[column].is_not(None))
            if self._pg:
                query = query.with_for_update()
            for row in (await conn.execute(query)).all():
                count = [0]
                value = _reseal(row[-1], transform, count)
                if count[0]:
                    changed += count[0]
                    where = [c == row[i] for i, c in enumerate(cols)]
                    await conn.execute(table.update().where(*where).values({column: value}))
        return changed


def _reseal(value: Any, transform: Callable[[str], str], count: list[int]) -> Any:
    if isinstance(value, dict):
        if set(value) == {SEALED} and isinstance(value[SEALED], str):
            new = transform(value[SEALED])
            count[0] += new != value[SEALED]
            return {SEALED: new}
        return {k: _reseal(v, transform, count) for k, v in value.items()}
    if isinstance(value, list):
        return [_reseal(v, transform, count) for v in value]
    return value
