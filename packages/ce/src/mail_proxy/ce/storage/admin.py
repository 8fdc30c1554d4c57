"""Instance settings, the audit trail and key rotation."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from mail_proxy.core.contracts.model import (
    CommandLogEntry,
)
from mail_proxy.core.engine.attachments import SEALED_AUTH
from mail_proxy.core.engine.encryption import (
    account_password_context,
    attachment_auth_context,
    tenant_secret_context,
)
from mail_proxy.core.engine.runtime import KEY_CHECK_CONTEXT, KEY_CHECK_SETTING
from mail_proxy.core.engine.sealed import SEALED, SecretPlace

from . import schema as t

if TYPE_CHECKING:
    pass

from .base import SqlBase, _apply


class AdminRepository(SqlBase):
    """Instance settings, the audit trail and key rotation."""

    # -- instance settings and audit ----------------------------------------------------------------
    async def get_settings(self) -> dict[str, Any]:
        async with self._read() as conn:
            rows = await conn.execute(sa.select(t.instance_settings))
            return {r.key: r.value for r in rows}

    async def put_settings(self, values: dict[str, Any]) -> dict[str, Any]:
        c = t.instance_settings.c
        async with self._write() as conn:
            for key, value in values.items():
                res = await conn.execute(
                    t.instance_settings.update().where(c.key == key).values(value=value)
                )
                if not res.rowcount:
                    await conn.execute(t.instance_settings.insert().values(key=key, value=value))
        return await self.get_settings()

    async def reencrypt_secrets(self, transform: Callable[[str, str], str]) -> int:
        """Rewrite every encrypted value with ``transform(token, context)`` in one
        transaction (key rotation, the upgrade to place-bound tokens).

        The rows are read and rewritten inside the same write transaction, locked on
        PostgreSQL (``FOR UPDATE``), so a secret saved concurrently is never overwritten with
        a stale value. An exception from ``transform`` rolls everything back.
        """
        a, tn, st = t.accounts.c, t.tenants.c, t.instance_settings.c
        changed = 0
        async with self._write() as conn:
            accounts = sa.select(a.tenant_id, a.id, a.password_enc).where(
                a.password_enc.is_not(None)
            )
            tenants = sa.select(tn.id, tn.client_auth_enc, tn.sync_secret_enc).where(
                sa.or_(tn.client_auth_enc.is_not(None), tn.sync_secret_enc.is_not(None))
            )
            check = sa.select(st.value).where(st.key == KEY_CHECK_SETTING)
            if self._pg:  # no concurrent save slips between our read and our write
                accounts = accounts.with_for_update()
                tenants = tenants.with_for_update()
                check = check.with_for_update()

            account_rows = []
            for row in await conn.execute(accounts):
                new = transform(row.password_enc, account_password_context(row.tenant_id, row.id))
                if new != row.password_enc:
                    account_rows.append({"b_tenant": row.tenant_id, "b_id": row.id, "b_pw": new})
            tenant_rows = []
            for row in await conn.execute(tenants):
                auth = _apply(
                    transform, row.client_auth_enc, tenant_secret_context("client_auth_enc", row.id)
                )
                secret = _apply(
                    transform, row.sync_secret_enc, tenant_secret_context("sync_secret_enc", row.id)
                )
                moved = (auth != row.client_auth_enc) + (secret != row.sync_secret_enc)
                if moved:
                    changed += moved
                    tenant_rows.append({"b_id": row.id, "b_auth": auth, "b_secret": secret})
            stored_check = await conn.scalar(check)
            new_check = (
                _apply(transform, stored_check, KEY_CHECK_CONTEXT)
                if isinstance(stored_check, str)
                else None
            )

            if account_rows:
                await conn.execute(
                    t.accounts.update()
                    .where(a.tenant_id == sa.bindparam("b_tenant"), a.id == sa.bindparam("b_id"))
                    .values(password_enc=sa.bindparam("b_pw")),
                    account_rows,
                )
                changed += len(account_rows)
            if tenant_rows:
                await conn.execute(
                    t.tenants.update()
                    .where(tn.id == sa.bindparam("b_id"))
                    .values(
                        client_auth_enc=sa.bindparam("b_auth"),
                        sync_secret_enc=sa.bindparam("b_secret"),
                    ),
                    tenant_rows,
                )
            changed += await self._reencrypt_attachment_auth(conn, transform)
            changed += await self._reencrypt_plugin_values(conn, transform)
            if new_check is not None and new_check != stored_check:
                await conn.execute(
                    t.instance_settings.update()
                    .where(st.key == KEY_CHECK_SETTING)
                    .values(value=new_check)
                )
                changed += 1
        return changed

    async def _reencrypt_attachment_auth(
        self, conn: AsyncConnection, transform: Callable[[str, str], str]
    ) -> int:
        """Key rotation of the attachment credentials sealed in message payloads
        (``core.attachments.seal_auth``); only payloads that mention one are read."""
        m = t.messages.c
        query = sa.select(m.pk, m.tenant_id, m.id, m.payload).where(
            sa.cast(m.payload, sa.Text).like(f'%"{SEALED_AUTH}"%')
        )
        if self._pg:
            query = query.with_for_update()
        rows = []
        changed = 0
        for row in await conn.execute(query):
            payload = dict(row.payload)
            attachments = [dict(att) for att in payload.get("attachments") or []]
            moved = 0
            for att in attachments:
                sealed = att.get(SEALED_AUTH)
                if isinstance(sealed, str):
                    att[SEALED_AUTH] = transform(
                        sealed, attachment_auth_context(row.tenant_id, row.id)
                    )
                    moved += att[SEALED_AUTH] != sealed
            if moved:
                payload["attachments"] = attachments
                rows.append({"b_pk": row.pk, "b_payload": payload})
                changed += moved
        if rows:
            await conn.execute(
                t.messages.update()
                .where(m.pk == sa.bindparam("b_pk"))
                .values(payload=sa.bindparam("b_payload")),
                rows,
            )
        return changed

    async def log_commands(self, entries: Sequence[CommandLogEntry]) -> None:
        if not entries:
            return
        async with self._write() as conn:
            await conn.execute(
                t.command_log.insert(),
                [
                    {
                        "ts": e.ts,
                        "principal": e.principal,
                        "tenant_id": e.tenant_id,
                        "method": e.method,
                        "path": e.path,
                        "status": e.status,
                        "summary": e.summary,
                    }
                    for e in entries
                ],
            )

    async def list_command_log(
        self, limit: int = 100, after_pk: int | None = None, since_ts: float | None = None
    ) -> list[CommandLogEntry]:
        c = t.command_log.c
        q = sa.select(t.command_log).order_by(c.pk).limit(limit)
        if after_pk is not None:
            q = q.where(c.pk > after_pk)
        if since_ts is not None:
            q = q.where(c.ts >= since_ts)
        async with self._read() as conn:
            return [
                CommandLogEntry(
                    pk=r.pk,
                    ts=r.ts,
                    principal=r.principal,
                    tenant_id=r.tenant_id,
                    method=r.method,
                    path=r.path,
                    status=r.status,
                    summary=r.summary or {},
                )
                for r in await conn.execute(q)
            ]

    async def _reencrypt_plugin_values(
        self, conn: AsyncConnection, transform: Callable[[str, str], str]
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
                key = tuple(row[: len(cols)])
                place = SecretPlace(table.name, column, key)
                value = _reseal(row[-1], transform, count, place, ())
                if count[0]:
                    changed += count[0]
                    where = [c == row[i] for i, c in enumerate(cols)]
                    await conn.execute(table.update().where(*where).values({column: value}))
        return changed


def _reseal(
    value: Any,
    transform: Callable[[str, str], str],
    count: list[int],
    place: SecretPlace,
    path: tuple[str, ...],
) -> Any:
    """``value`` with every sealed member re-encrypted for its place: the row's
    :class:`SecretPlace` and the member's path in the JSON column."""
    if isinstance(value, dict):
        if set(value) == {SEALED} and isinstance(value[SEALED], str):
            new = transform(value[SEALED], place.context(".".join(path)))
            count[0] += new != value[SEALED]
            return {SEALED: new}
        return {k: _reseal(v, transform, count, place, (*path, k)) for k, v in value.items()}
    if isinstance(value, list):
        return [_reseal(v, transform, count, place, (*path, str(i))) for i, v in enumerate(value)]
    return value
