"""The tenants' API keys in the plugin's table (:mod:`.tables`), read and written through the
storage's SQLAlchemy engine (``runtime.storage.database``).

One :class:`TenantKeys` per runtime (``runtime.local(TenantKeys)``), holding no state: every
lookup reads the database, so a key rotated or revoked through any instance sharing it stops
working on the next request everywhere. Writes are single statements or a delete followed by
an insert, never a read followed by a write, so they queue behind another writer on SQLite
instead of failing.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.exc import DBAPIError

from mail_proxy.core.contracts.errors import StorageUnavailable

from .tables import tenant_api_keys as keys_table

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection

    from mail_proxy.core.engine.runtime import Runtime

_K = keys_table.c


@dataclass(frozen=True)
class ApiKey:
    """A tenant's current key: its digest, expiry (epoch seconds, None = never), issue time."""

    tenant_id: str
    key_hash: str
    expires_at: float | None
    created_at: float


class TenantKeys:
    """Find, issue and revoke tenant keys (one per runtime: ``runtime.local(TenantKeys)``)."""

    def __init__(self, runtime: Runtime) -> None:
        self.rt = runtime

    @contextlib.asynccontextmanager
    async def _conn(self, write: bool) -> AsyncIterator[AsyncConnection]:
        engine = self.rt.storage.database
        if engine is None:
            raise RuntimeError("the multitenancy plugin needs an SQL storage (SQLite, PostgreSQL)")
        try:
            async with engine.begin() if write else engine.connect() as conn:
                yield conn
        except (OSError, DBAPIError) as exc:
            # an unreachable database is a 503 like everywhere else, not an internal error
            if isinstance(exc, OSError) or exc.connection_invalidated:
                raise StorageUnavailable(str(exc).splitlines()[0]) from exc
            raise

    async def find(self, key_hash: str) -> ApiKey | None:
        """The key with this digest (unique index), or None."""
        async with self._conn(write=False) as conn:
            row = (await conn.execute(sa.select(keys_table).where(_K.key_hash == key_hash))).first()
        return _key(row) if row else None

    async def of_tenants(self, tenant_ids: Sequence[str]) -> dict[str, ApiKey]:
        """The current keys of these tenants, by tenant id (tenants without one left out)."""
        found: dict[str, ApiKey] = {}
        async with self._conn(write=False) as conn:
            for start in range(0, len(tenant_ids), 500):
                chunk = list(tenant_ids[start : start + 500])
                rows = await conn.execute(sa.select(keys_table).where(_K.tenant_id.in_(chunk)))
                found.update((r.tenant_id, _key(r)) for r in rows)
        return found

    async def of_tenant(self, tenant_id: str) -> ApiKey | None:
        return (await self.of_tenants([tenant_id])).get(tenant_id)

    async def issue(self, tenant_id: str, key_hash: str, expires_at: float | None) -> ApiKey:
        """Make ``key_hash`` the tenant's key; the previous one stops working with the commit."""
        key = ApiKey(tenant_id, key_hash, expires_at, time.time())
        async with self._conn(write=True) as conn:
            await conn.execute(keys_table.delete().where(_K.tenant_id == tenant_id))
            await conn.execute(
                keys_table.insert().values(
                    tenant_id=tenant_id,
                    key_hash=key_hash,
                    expires_at=expires_at,
                    created_at=key.created_at,
                )
            )
        return key

    async def revoke(self, tenant_id: str) -> bool:
        """Remove the tenant's key; False when it had none."""
        async with self._conn(write=True) as conn:
            gone = await conn.execute(keys_table.delete().where(_K.tenant_id == tenant_id))
        return bool(gone.rowcount)


def _key(row: Any) -> ApiKey:
    return ApiKey(row.tenant_id, row.key_hash, row.expires_at, row.created_at)
