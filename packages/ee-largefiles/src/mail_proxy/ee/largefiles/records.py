"""Reading and writing the plugin's tables (:mod:`.tables`) on ``runtime.storage.database``.

Plain SQLAlchemy Core that runs the same on SQLite and PostgreSQL. Deletions are
conditional (``WHERE pk = … AND expires_at <= …``), so several instances sweeping the same
rows each delete a row at most once and never one that a retry just renewed.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from mail_proxy.core.engine.encryption import secret_context

from .tables import secrets, stores, uploads

if TYPE_CHECKING:
    from mail_proxy.core.engine.runtime import Runtime

#: An upload left ``uploading`` this long (its instance died) is swept.
STALE_UPLOAD_S = 86400.0


def url_hash(url: str) -> str:
    return hashlib.sha256(url.encode()).hexdigest()


@dataclass
class Upload:
    """One row of ``largefiles_uploads``."""

    pk: int
    file_id: str
    tenant_id: str
    message_id: str
    position: int
    source: str
    storage_url: str
    object_key: str
    filename: str
    mime_type: str | None
    size: int | None
    md5: str | None
    state: str
    created_at: float
    expires_at: float

    def public(self) -> dict[str, Any]:
        """What ``GET /large-files`` shows (no key, no token)."""
        return {
            "file_id": self.file_id,
            "tenant_id": self.tenant_id,
            "message_id": self.message_id,
            "filename": self.filename,
            "size": self.size,
            "md5": self.md5,
            "state": self.state,
            "storage_url": self.storage_url,
            "created_at": self.created_at,
            "expires_at": self.expires_at,
        }


def _upload(row: Any) -> Upload:
    return Upload(**{c.name: row._mapping[c.name] for c in uploads.c})


class Records:
    """The plugin's database access; one per runtime (``runtime.local(Records)``)."""

    def __init__(self, runtime: Runtime) -> None:
        self.rt = runtime

    @property
    def db(self) -> Any:
        return self.rt.storage.database

    # -- uploads --------------------------------------------------------------------------
    async def find(
        self, tenant_id: str, message_id: str, position: int, source: str
    ) -> Upload | None:
        c = uploads.c
        async with self.db.connect() as conn:
            row = (
                await conn.execute(
                    sa.select(uploads).where(
                        c.tenant_id == tenant_id,
                        c.message_id == message_id,
                        c.position == position,
                        c.source == source,
                    )
                )
            ).first()
        return _upload(row) if row is not None else None

    async def by_file_id(self, file_id: str) -> Upload | None:
        async with self.db.connect() as conn:
            row = (
                await conn.execute(sa.select(uploads).where(uploads.c.file_id == file_id))
            ).first()
        return _upload(row) if row is not None else None

    async def begin(self, **values: Any) -> int:
        """Insert a row in state ``uploading``; its pk."""
        now = time.time()
        async with self.db.begin() as conn:
            result = await conn.execute(
                uploads.insert().values(state="uploading", created_at=now, **values)
            )
        return int(result.inserted_primary_key[0])

    async def finish(self, pk: int, size: int, md5: str) -> Upload:
        """Mark an upload complete; the row as it is now."""
        async with self.db.begin() as conn:
            await conn.execute(
                uploads.update()
                .where(uploads.c.pk == pk)
                .values(state="stored", size=size, md5=md5)
            )
            row = (await conn.execute(sa.select(uploads).where(uploads.c.pk == pk))).one()
        return _upload(row)

    async def delete(self, pk: int, expired_before: float | None = None) -> bool:
        """Delete one row (only if it expired before ``expired_before``, when given)."""
        query = uploads.delete().where(uploads.c.pk == pk)
        if expired_before is not None:
            query = query.where(uploads.c.expires_at <= expired_before)
        async with self.db.begin() as conn:
            return bool((await conn.execute(query)).rowcount)

    async def listed(
        self,
        tenant_id: str | None = None,
        *,
        expired_at: float | None = None,
        after_pk: int = 0,
        limit: int = 200,
    ) -> list[Upload]:
        """Rows by pk, of one tenant or all; with ``expired_at`` only those expired by then
        (and uploads left unfinished for a day)."""
        c = uploads.c
        query = sa.select(uploads).where(c.pk > after_pk).order_by(c.pk).limit(limit)
        if tenant_id is not None:
            query = query.where(c.tenant_id == tenant_id)
        if expired_at is not None:
            query = query.where(
                sa.or_(
                    c.expires_at <= expired_at,
                    sa.and_(c.state == "uploading", c.created_at <= expired_at - STALE_UPLOAD_S),
                )
            )
        async with self.db.connect() as conn:
            return [_upload(r) for r in await conn.execute(query)]

    async def expire_tenant(self, tenant_id: str) -> None:
        """Make every file of a tenant due for deletion now."""
        async with self.db.begin() as conn:
            await conn.execute(
                uploads.update().where(uploads.c.tenant_id == tenant_id).values(expires_at=0.0)
            )

    # -- stores: the options (credentials) files were written with -----------------------------
    async def remember_store(self, tenant_id: str, url: str, options: dict[str, Any]) -> None:
        """Keep ``options`` (sealed) for ``(tenant_id, url)``, replacing what was kept."""
        key = url_hash(url)
        sealed = (
            self.rt.encrypt(json.dumps(options), store_place(tenant_id, key)) if options else None
        )
        c = stores.c
        async with self.db.begin() as conn:
            changed = await conn.execute(
                stores.update()
                .where(c.tenant_id == tenant_id, c.url_hash == key)
                .values(options_enc=sealed, updated_at=time.time(), storage_url=url)
            )
            if not changed.rowcount:
                await conn.execute(
                    stores.insert().values(
                        tenant_id=tenant_id,
                        url_hash=key,
                        storage_url=url,
                        options_enc=sealed,
                        updated_at=time.time(),
                    )
                )

    async def store_options(self, tenant_id: str, url: str) -> dict[str, Any] | None:
        """The options kept for ``(tenant_id, url)`` (decrypted), {} without any, None when
        nothing was kept."""
        c = stores.c
        async with self.db.connect() as conn:
            row = (
                await conn.execute(
                    sa.select(c.options_enc, c.url_hash).where(
                        c.tenant_id == tenant_id, c.url_hash == url_hash(url)
                    )
                )
            ).first()
        if row is None:
            return None
        if row.options_enc is None:
            return {}
        value = json.loads(self.rt.decrypt(row.options_enc, store_place(tenant_id, row.url_hash)))
        return value if isinstance(value, dict) else {}

    async def forget_unused_stores(self, tenant_id: str) -> None:
        """Drop a tenant's kept options once none of its files is left."""
        async with self.db.begin() as conn:
            left = await conn.scalar(
                sa.select(sa.func.count())
                .select_from(uploads)
                .where(uploads.c.tenant_id == tenant_id)
            )
            if not left:
                await conn.execute(stores.delete().where(stores.c.tenant_id == tenant_id))

    # -- the instance secret ---------------------------------------------------------------------
    async def secret(self, name: str, make: Any) -> str:
        """The sealed secret ``name``, created with ``make()`` (sealed) by the first instance
        that needs it; every instance then reads the same one."""
        async with self.db.connect() as conn:
            found = await conn.scalar(sa.select(secrets.c.value_enc).where(secrets.c.name == name))
        if found is not None:
            return str(found)
        try:
            async with self.db.begin() as conn:
                await conn.execute(
                    secrets.insert().values(name=name, value_enc=make(), created_at=time.time())
                )
        except sa.exc.IntegrityError:
            pass  # another instance created it first: use theirs
        async with self.db.connect() as conn:
            return str(
                await conn.scalar(sa.select(secrets.c.value_enc).where(secrets.c.name == name))
            )

    async def reencrypt(self, transform: Any) -> int:
        """Key rotation (and the upgrade to place-bound tokens): every sealed value of these
        tables rewritten by ``transform(token, context)``."""
        changed = 0
        async with self.db.begin() as conn:
            for row in (await conn.execute(sa.select(secrets.c.name, secrets.c.value_enc))).all():
                new = transform(row.value_enc, secret_place(row.name))
                if new != row.value_enc:
                    changed += 1
                    await conn.execute(
                        secrets.update().where(secrets.c.name == row.name).values(value_enc=new)
                    )
            c = stores.c
            query = sa.select(c.tenant_id, c.url_hash, c.options_enc).where(
                c.options_enc.is_not(None)
            )
            for row in (await conn.execute(query)).all():
                new = transform(row.options_enc, store_place(row.tenant_id, row.url_hash))
                if new != row.options_enc:
                    changed += 1
                    await conn.execute(
                        stores.update()
                        .where(c.tenant_id == row.tenant_id, c.url_hash == row.url_hash)
                        .values(options_enc=new)
                    )
        return changed


def secret_place(name: str) -> str:
    """Where the plugin's own secret ``name`` is stored (its encryption context)."""
    return secret_context(secrets.name, "value_enc", name)


def store_place(tenant_id: str, url_key: str) -> str:
    """Where a tenant's options for one storage URL are stored (its encryption context)."""
    return secret_context(stores.name, "options_enc", tenant_id, url_key)
