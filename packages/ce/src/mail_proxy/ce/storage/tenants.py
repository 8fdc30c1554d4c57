"""Tenants and their accounts."""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING

import sqlalchemy as sa

from mail_proxy.core.contracts.model import (
    Account,
    Tenant,
)
from mail_proxy.core.engine.encryption import tenant_secret_context

from . import schema as t

if TYPE_CHECKING:
    pass

from .base import SqlBase


class TenantRepository(SqlBase):
    """Tenants and their accounts."""

    async def get_tenant(self, tenant_id: str) -> Tenant | None:
        async with self._read() as conn:
            row = (
                await conn.execute(sa.select(t.tenants).where(t.tenants.c.id == tenant_id))
            ).first()
        return self._tenant(row) if row else None

    async def list_tenants(self) -> list[Tenant]:
        async with self._read() as conn:
            rows = (await conn.execute(sa.select(t.tenants).order_by(t.tenants.c.id))).all()
        return [self._tenant(r) for r in rows]

    async def save_tenant(self, tenant: Tenant) -> Tenant:
        now = time.time()
        values = {
            "name": tenant.name,
            "active": tenant.active,
            "client_base_url": tenant.client_base_url,
            "client_sync_path": tenant.client_sync_path,
            "client_attachment_path": tenant.client_attachment_path,
            "client_auth_enc": self._encrypt(
                json.dumps(tenant.client_auth),
                tenant_secret_context("client_auth_enc", tenant.id),
            )
            if tenant.client_auth
            else None,
            "rate_limits": tenant.rate_limits,
            "sync_secret_enc": self._encrypt(
                tenant.sync_secret, tenant_secret_context("sync_secret_enc", tenant.id)
            )
            if tenant.sync_secret
            else None,
            "updated_at": now,
        }
        async with self._write() as conn:
            found = await conn.scalar(
                sa.select(t.tenants.c.created_at).where(t.tenants.c.id == tenant.id)
            )
            if found is None:
                await conn.execute(
                    t.tenants.insert().values(id=tenant.id, created_at=now, **values)
                )
                tenant.created_at = now
            else:
                await conn.execute(
                    t.tenants.update().where(t.tenants.c.id == tenant.id).values(**values)
                )
                tenant.created_at = found
        tenant.updated_at = now
        return tenant

    async def delete_tenant(self, tenant_id: str) -> bool:
        async with self._write() as conn:
            gone = (
                await conn.execute(t.tenants.delete().where(t.tenants.c.id == tenant_id))
            ).rowcount
            for table in (
                t.accounts,
                t.messages,
                t.events,
                t.suspensions,
                t.sync_state,
                t.tenant_settings,
            ):
                await conn.execute(table.delete().where(table.c.tenant_id == tenant_id))
            await conn.execute(
                # exact match: '_' in a tenant id is a LIKE wildcard (another tenant's buckets)
                t.send_log.delete().where(
                    t.send_log.c.bucket.contains(f":{tenant_id}:", autoescape=True)
                )
            )
        return bool(gone)

    async def save_account(self, account: Account) -> Account:
        now = time.time()
        values = {
            "host": account.host,
            "port": account.port,
            "user": account.user,
            "password_enc": account.password_enc,
            "use_tls": account.use_tls,
            "starttls": account.starttls,
            "timeout": account.timeout,
            "message_timeout": account.message_timeout,
            "max_connections": account.max_connections,
            "allow_plaintext_auth": account.allow_plaintext_auth,
            "batch_size": account.batch_size,
            "limit_per_minute": account.limit_per_minute,
            "limit_per_hour": account.limit_per_hour,
            "limit_per_day": account.limit_per_day,
            "limit_behavior": account.limit_behavior,
            "is_default": account.default,
            "transport": account.transport,
            "options": account.options,
            "extra": account.extra,
            "updated_at": now,
        }
        a = t.accounts.c
        async with self._write() as conn:
            if account.default:
                await conn.execute(
                    t.accounts.update()
                    .where(a.tenant_id == account.tenant_id, a.id != account.id)
                    .values(is_default=False)
                )
            found = await conn.scalar(
                sa.select(a.created_at).where(a.tenant_id == account.tenant_id, a.id == account.id)
            )
            if found is None:
                await conn.execute(
                    t.accounts.insert().values(
                        tenant_id=account.tenant_id, id=account.id, created_at=now, **values
                    )
                )
                account.created_at = now
            else:
                await conn.execute(
                    t.accounts.update()
                    .where(a.tenant_id == account.tenant_id, a.id == account.id)
                    .values(**values)
                )
                account.created_at = found
        account.updated_at = now
        return account

    async def get_account(self, tenant_id: str, account_id: str) -> Account | None:
        a = t.accounts.c
        async with self._read() as conn:
            row = (
                await conn.execute(
                    sa.select(t.accounts).where(a.tenant_id == tenant_id, a.id == account_id)
                )
            ).first()
        return self._account(row) if row else None

    async def list_accounts(self, tenant_id: str | None = None) -> list[Account]:
        q = sa.select(t.accounts).order_by(t.accounts.c.tenant_id, t.accounts.c.id)
        if tenant_id is not None:
            q = q.where(t.accounts.c.tenant_id == tenant_id)
        async with self._read() as conn:
            rows = (await conn.execute(q)).all()
        return [self._account(r) for r in rows]

    async def delete_account(self, tenant_id: str, account_id: str) -> bool:
        a = t.accounts.c
        async with self._write() as conn:
            res = await conn.execute(
                t.accounts.delete().where(a.tenant_id == tenant_id, a.id == account_id)
            )
        return bool(res.rowcount)

    async def count_active_messages(self, tenant_id: str, account_id: str | None = None) -> int:
        m = t.messages.c
        q = sa.select(sa.func.count()).where(m.tenant_id == tenant_id, m.status.in_(t.ACTIVE))
        if account_id is not None:
            q = q.where(m.account_id == account_id)
        async with self._read() as conn:
            return int(await conn.scalar(q) or 0)
