"""SqlStorage: the core Storage interface on SQLAlchemy 2 async (SQLite and PostgreSQL), one
facade over per-area repositories: :mod:`.tenants`, :mod:`.messages`, :mod:`.dispatch`,
:mod:`.events`, :mod:`.admin` and :mod:`.plugin_data`, all on :mod:`.base` (connections,
secrets, row conversions). Concurrency notes are in :mod:`.base`.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.exc import DBAPIError, OperationalError

from mail_proxy.core.contracts.errors import StorageUnavailable
from mail_proxy.core.contracts.model import (
    DEFAULT_TENANT,
)
from mail_proxy.core.contracts.storage import (
    Storage,
)

from . import schema as t
from .engine import migrate
from .plugin_data import PluginDataRepository

if TYPE_CHECKING:
    pass

from .admin import AdminRepository
from .base import SqlBase, _is_connection_error
from .dispatch import DispatchRepository
from .events import EventRepository
from .messages import MessageRepository
from .tenants import TenantRepository


class SqlStorage(
    TenantRepository,
    MessageRepository,
    DispatchRepository,
    EventRepository,
    AdminRepository,
    PluginDataRepository,
    SqlBase,
    Storage,
):
    """The Storage of the Community Edition."""

    @property
    def database(self) -> Any:
        """The engine plugins keep their own tables on (their migration branches)."""
        return self.engine

    def is_unavailable(self, exc: BaseException) -> bool:
        return _is_connection_error(exc)

    async def start(self) -> None:
        try:
            found = [] if self.runtime is None else self.runtime.migration_branches.items()
            branches = [(name, b.versions_dir, b.metadata) for name, b in found]
            await migrate(self.engine, self.schema, branches)
        except (OperationalError, DBAPIError, OSError) as exc:
            if _is_connection_error(exc):
                raise StorageUnavailable(f"cannot open the database: {exc}") from exc
            raise
        now = time.time()
        async with self._write() as conn:
            # (instances starting together on a new database both try: one row, no error)
            await conn.execute(
                self._insert_if_absent(t.tenants).values(
                    id=DEFAULT_TENANT,
                    name="Default tenant",
                    active=True,
                    created_at=now,
                    updated_at=now,
                )
            )

    async def close(self) -> None:
        await self.engine.dispose()

    async def database_time(self) -> float | None:
        """PostgreSQL's clock (``clock_timestamp()``: the time now, not the transaction's);
        SQLite has none apart from this machine's (None)."""
        if not self._pg:
            return None
        async with self._read() as conn:
            value = await conn.scalar(sa.text("SELECT extract(epoch FROM clock_timestamp())"))
        return float(value)

    async def ping(self) -> bool:
        try:
            async with self._read() as conn:
                await conn.execute(sa.text("SELECT 1"))
            return True
        except Exception:
            return False
