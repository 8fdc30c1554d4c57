"""Deleting offloaded files: the periodic sweep of expired ones, ``purge``, tenant deletion.

Each file is deleted from the storage, then its row, in batches. The row is deleted only if
it is still due (``expires_at`` not later than the sweep's start), so instances sweeping the
same database each delete a file at most once, and a file whose deletion failed (storage
down) keeps its row and is tried again at the next sweep. Deleting an object that is already
gone counts as done, which makes every sweep safe to repeat.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from mail_proxy.core.contracts.services import PeriodicService

from .locations import StoreMemo, location_for
from .metrics import LargeFileMetrics
from .records import Records
from .settings import SECTION
from .storage import delete

if TYPE_CHECKING:
    from mail_proxy.core.engine.runtime import Runtime

log = logging.getLogger(__name__)


async def purge(
    runtime: Runtime, tenant_id: str | None = None, *, expired_only: bool = True
) -> dict[str, int]:
    """Delete the files (of one tenant or all; expired ones or every one) and their rows;
    ``{"deleted", "failed"}``."""
    records = runtime.local(Records)
    metrics = runtime.local(LargeFileMetrics)
    batch = runtime.settings.section(SECTION).large_files_cleanup_batch
    now = time.time()
    deleted = failed = 0
    after = 0
    tenants: set[str] = set()
    while True:
        rows = await records.listed(
            tenant_id, expired_at=now if expired_only else None, after_pk=after, limit=batch
        )
        if not rows:
            break
        for upload in rows:
            after = upload.pk
            try:
                location = await location_for(runtime, upload.tenant_id, upload.storage_url)
                await delete(location, upload.object_key)
            except Exception as exc:
                failed += 1
                log.warning(
                    "large files: cannot delete %s of tenant %s (%s: %s); kept for the next sweep",
                    upload.file_id,
                    upload.tenant_id,
                    type(exc).__name__,
                    exc,
                )
                continue
            if await records.delete(upload.pk, now if expired_only else None):
                deleted += 1
                tenants.add(upload.tenant_id)
                if expired_only:
                    metrics.expired.labels(tenant_id=upload.tenant_id).inc()
    for tenant in tenants:  # the kept credentials of a deleted tenant, once no file is left
        if await runtime.storage.get_tenant(tenant) is None:
            await records.forget_unused_stores(tenant)
            runtime.local(StoreMemo).forget(tenant)
    return {"deleted": deleted, "failed": failed}


async def delete_tenant_files(runtime: Runtime, tenant_id: str) -> dict[str, int]:
    """A tenant was deleted: all its files are due now, and deleted."""
    await runtime.local(Records).expire_tenant(tenant_id)
    runtime.local(StoreMemo).forget(tenant_id)
    return await purge(runtime, tenant_id, expired_only=True)


class Cleanup(PeriodicService):
    """Deletes expired files every ``GMP_LARGE_FILES_CLEANUP_INTERVAL`` seconds."""

    name = "large-files-cleanup"

    def __init__(self, runtime: Runtime) -> None:
        super().__init__()
        self.interval = runtime.settings.section(SECTION).large_files_cleanup_interval

    @classmethod
    def create(cls, runtime: Runtime) -> Cleanup | None:
        runtime.local(LargeFileMetrics)  # the series exist from the first scrape
        if runtime.storage is None or runtime.storage.database is None:
            log.warning("large files: the storage is not SQL; the plugin is inactive")
            return None
        return cls(runtime)

    async def tick(self) -> None:
        assert self.runtime is not None
        result = await purge(self.runtime, expired_only=True)
        if result["deleted"] or result["failed"]:
            log.info(
                "large files: %d expired file(s) deleted, %d kept for later",
                result["deleted"],
                result["failed"],
            )
