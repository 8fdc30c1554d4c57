"""Offloading one attachment: stream it from its source to the storage, record it, link it.

The bytes go from the fetcher's ``stream`` to the storage chunk by chunk, so a 200 MB file
never sits in memory. When the size is not known in advance (``endpoint``, ``http_url``)
the first ``max_size_mb`` are kept in memory while reading: a file that ends within them is
small after all and goes back into the message as inline content; a longer one is uploaded
from that point on.

An upload is recorded before its first byte is written (state ``uploading``, so a crash
leaves a row the cleanup finds) and marked ``stored`` with its size and MD5 once complete. A
retry of the message finds the stored row (same message, position and source) and reuses the
file: nothing is fetched or uploaded again.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import time
from collections.abc import AsyncGenerator
from typing import TYPE_CHECKING, Any

from mail_proxy.core.contracts.fetch import FetchError, FetchRequest
from mail_proxy.core.engine.attachments import AttachmentSpec

from .config import MB, LargeFileConfig, shown_mb
from .events import OFFLOADED
from .linkblock import Link
from .links import new_file_id, proxy_link
from .locations import StoreMemo, location_for
from .metrics import LargeFileMetrics
from .records import Records, Upload
from .settings import SECTION
from .storage import Location, Writer, delete, safe_name, signed_url

if TYPE_CHECKING:
    from mail_proxy.core.contracts.extensions import DeliveryContext

log = logging.getLogger(__name__)

#: A stored file is reused by a retry only while its link has at least this much life left
#: (or half its lifetime, for short ones); otherwise it is uploaded again.
REUSE_MARGIN_S = 3600.0
CHUNK = 1024 * 1024


def source_of(spec: AttachmentSpec) -> str:
    """What identifies an attachment's content across attempts (mode, path, name)."""
    raw = f"{spec.fetch_mode}\0{spec.storage_path}\0{spec.filename}"
    return hashlib.sha256(raw.encode("utf-8", "surrogatepass")).hexdigest()


async def known_size(att: dict[str, Any], spec: AttachmentSpec) -> int | None:
    """The size before fetching: declared, inline base64, or an absolute file's ``stat``
    (metadata only: the fetcher's path policy applies when the file is read)."""
    from .config import declared_size

    size = declared_size(att)
    if size is not None:
        return size
    if spec.fetch_mode == "filesystem" and os.path.isabs(spec.storage_path):
        with contextlib.suppress(OSError):
            return (await asyncio.to_thread(os.stat, spec.storage_path)).st_size
    return None


class Offloader:
    """Offloads the attachments of one delivery attempt."""

    def __init__(self, ctx: DeliveryContext, config: LargeFileConfig) -> None:
        self.ctx = ctx
        self.rt = ctx.runtime
        self.config = config
        self.records = self.rt.local(Records)
        settings = self.rt.settings
        self.cap = int(settings.section(SECTION).large_files_max_mb * MB)
        self.timeout = settings.attachment_timeout

    # -- one attachment ----------------------------------------------------------------------
    async def from_source(
        self, position: int, spec: AttachmentSpec, *, known_large: bool
    ) -> Link | bytes:
        """Offload the attachment at ``position``: its link, or its bytes when it turned out
        to be within the limit (only when its size was not ``known_large``)."""
        reused = await self._reusable(position, spec)
        if reused is not None:
            return await self.link(reused)
        try:
            fetcher = self.rt.fetchers.get(spec.fetch_mode)
        except Exception:
            raise FetchError(
                f"attachment '{spec.filename}': unknown fetch_mode {spec.fetch_mode!r}"
            ) from None
        request = FetchRequest(
            tenant=self.ctx.tenant,
            storage_path=spec.storage_path,
            filename=spec.filename,
            auth=spec.auth,
            max_bytes=self.cap,
            timeout=self.timeout,
        )
        head = None if known_large else self.config.limit_bytes
        return await self._store(position, spec, fetcher.stream(request, self.rt), head)

    async def from_memory(self, position: int, spec: AttachmentSpec, content: bytes) -> Link:
        """Offload content already fetched (a size declared too small)."""
        reused = await self._reusable(position, spec)
        if reused is not None:
            return await self.link(reused)

        async def chunks() -> AsyncGenerator[bytes, None]:
            view = memoryview(content)
            for start in range(0, len(view), CHUNK):
                yield bytes(view[start : start + CHUNK])

        stored = await self._store(position, spec, chunks(), None)
        assert isinstance(stored, Link)
        return stored

    # -- reuse -------------------------------------------------------------------------------
    async def _reusable(self, position: int, spec: AttachmentSpec) -> Upload | None:
        """The file an earlier attempt stored for this attachment, if still usable; an
        unfinished or nearly expired one is deleted."""
        rec = self.ctx.record
        found = await self.records.find(rec.tenant_id, rec.id, position, source_of(spec))
        if found is None:
            return None
        margin = min(REUSE_MARGIN_S, self.config.ttl_seconds / 2)
        if found.state == "stored" and found.expires_at > time.time() + margin:
            return found
        await self._discard(found)
        return None

    async def _discard(self, upload: Upload) -> None:
        location = await location_for(self.rt, upload.tenant_id, upload.storage_url, self.config)
        with contextlib.suppress(Exception):
            await delete(location, upload.object_key)
        await self.records.delete(upload.pk)

    # -- writing -----------------------------------------------------------------------------
    async def _store(
        self,
        position: int,
        spec: AttachmentSpec,
        chunks: AsyncGenerator[bytes, None],
        head_limit: int | None,
    ) -> Link | bytes:
        name = spec.filename
        head: bytearray | None = bytearray() if head_limit is not None else None
        writer: Writer | None = None
        pk = 0
        try:
            async with contextlib.aclosing(chunks) as stream:
                async for chunk in stream:
                    if writer is None and head is not None:
                        head += chunk
                        if len(head) <= (head_limit or 0):
                            continue
                        chunk, head = bytes(head), None
                    if writer is None:
                        pk, writer = await self._begin(position, spec)
                    await writer.write(chunk)
            if writer is None:
                return bytes(head or b"")
            md5 = await writer.close()
        except FetchError as exc:
            await self._abort(writer, pk)
            text = str(exc)
            if not text.startswith("attachment"):
                text = f"attachment '{name}': {text}"
            raise FetchError(text) from None
        except BaseException:
            await self._abort(writer, pk)
            raise
        if spec.content_md5 is not None and md5 != spec.content_md5:
            await self._abort(writer, pk)
            raise FetchError(f"attachment '{name}': content does not match content_md5")
        upload = await self.records.finish(pk, writer.size, md5)
        self._recorded(upload)
        return await self.link(upload)

    async def _begin(self, position: int, spec: AttachmentSpec) -> tuple[int, Writer]:
        rec = self.ctx.record
        location = await self.rt.local(StoreMemo).remember(rec.tenant_id, self.config)
        file_id = new_file_id()
        key = await asyncio.to_thread(
            location.key, rec.tenant_id, file_id, safe_name(spec.filename)
        )
        pk = await self.records.begin(
            file_id=file_id,
            tenant_id=rec.tenant_id,
            message_id=rec.id,
            position=position,
            source=source_of(spec),
            storage_url=location.url,
            object_key=key,
            filename=spec.filename,
            mime_type=spec.mime_type,
            expires_at=time.time() + self.config.ttl_seconds,
        )
        try:
            return pk, await Writer(location, key).open()
        except BaseException:
            await self.records.delete(pk)
            raise

    async def _abort(self, writer: Writer | None, pk: int) -> None:
        if writer is not None:
            await writer.abort()
        if pk:
            with contextlib.suppress(Exception):
                await self.records.delete(pk)

    def _recorded(self, upload: Upload) -> None:
        size = upload.size or 0
        metrics = self.rt.local(LargeFileMetrics)
        metrics.uploaded.labels(tenant_id=upload.tenant_id).inc()
        metrics.bytes.labels(tenant_id=upload.tenant_id).inc(size)
        self.ctx.add_event(
            OFFLOADED,
            f"{upload.filename} ({shown_mb(size)}) offloaded; link valid until "
            f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(upload.expires_at))}",
            filename=upload.filename,
            size=size,
            md5=upload.md5,
            expires_at=upload.expires_at,
        )

    # -- links -------------------------------------------------------------------------------
    async def link(self, upload: Upload) -> Link:
        """The storage's signed URL of the file, else a link to the proxy's download route."""
        location: Location = await location_for(
            self.rt, upload.tenant_id, upload.storage_url, self.config
        )
        seconds = upload.expires_at - time.time()
        url = await signed_url(location, upload.object_key, seconds, upload.filename)
        if url is None:
            url = await proxy_link(self.rt, self.config, upload.file_id, upload.expires_at)
        return Link(upload.filename, upload.size or 0, url, upload.expires_at)
