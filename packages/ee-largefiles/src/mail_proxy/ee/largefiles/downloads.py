"""``GET /files/{token}``: the proxy serves an offloaded file itself (public: the signed token
is the credential).

The token is checked in constant time (:class:`~.links.LinkSigner`), then the file's row and
its expiry, then the object. Whatever fails (a forged or altered token, an expired link, a
deleted file) the answer is the same 404, so a caller learns nothing about which. The file
is streamed in chunks with its content type, ``Content-Disposition: attachment`` and its
original name; a single ``Range`` is honoured (206, or 416 beyond the end).
"""

from __future__ import annotations

import mimetypes
import time
from urllib.parse import quote

from aiohttp import web

from mail_proxy.core.contracts.errors import ApiError
from mail_proxy.core.web.app import runtime_of

from .links import LinkSigner
from .locations import location_for
from .metrics import LargeFileMetrics
from .records import Records
from .storage import Reader

CHUNK = 1024 * 1024
MAX_TOKEN = 256


def content_disposition(filename: str) -> str:
    """``attachment`` with an ASCII fallback name and the exact UTF-8 name (RFC 6266)."""
    fallback = "".join(c if 32 <= ord(c) < 127 and c not in '"\\' else "_" for c in filename)
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(filename, safe='')}"


def _not_found() -> ApiError:
    return ApiError(404, "file_not_found", "no such file (the link may have expired)")


def _byte_range(request: web.Request, size: int) -> tuple[int, int] | None:
    """``(start, stop)`` of a valid single ``Range``, None for the whole file; 416 for a
    range that starts beyond the end."""
    if "Range" not in request.headers:
        return None
    try:
        wanted = request.http_range
    except ValueError:
        return None  # malformed or several ranges: the whole file (RFC 9110 allows it)
    start, stop = wanted.start, wanted.stop
    if start is None and stop is None:
        return None
    if start is not None and start < 0:  # suffix: the last -start bytes
        start, stop = max(0, size + start), size
    else:
        start = start or 0
        stop = size if stop is None else min(stop, size)
    if start >= size or start >= stop:
        raise ApiError(
            416, "range_not_satisfiable", f"the range is outside the file ({size} bytes)"
        )
    return start, stop


async def download(request: web.Request) -> web.StreamResponse:
    rt = runtime_of(request)
    token = request.match_info["token"]
    if len(token) > MAX_TOKEN:
        raise _not_found()
    file_id = await rt.local(LinkSigner).check(token)
    upload = await rt.local(Records).by_file_id(file_id) if file_id else None
    if upload is None or upload.state != "stored" or upload.expires_at <= time.time():
        raise _not_found()
    location = await location_for(rt, upload.tenant_id, upload.storage_url)
    reader = Reader(location, upload.object_key)
    try:
        try:
            size = await reader.open()
        except FileNotFoundError:
            raise _not_found() from None
        span = _byte_range(request, size)
        start, stop = span if span is not None else (0, size)
        ctype = (
            upload.mime_type
            or mimetypes.guess_type(upload.filename)[0]
            or "application/octet-stream"
        )
        response = web.StreamResponse(
            status=206 if span is not None else 200,
            headers={
                "Content-Type": ctype,
                "Content-Disposition": content_disposition(upload.filename),
                "Accept-Ranges": "bytes",
                "Cache-Control": "private, no-store",
                "X-Content-Type-Options": "nosniff",
            },
        )
        response.content_length = stop - start
        if span is not None:
            response.headers["Content-Range"] = f"bytes {start}-{stop - 1}/{size}"
        await response.prepare(request)
        rt.local(LargeFileMetrics).downloads.labels(tenant_id=upload.tenant_id).inc()
        offset = start
        while offset < stop:
            chunk = await reader.read(offset, min(CHUNK, stop - offset))
            if not chunk:
                break
            await response.write(chunk)
            offset += len(chunk)
        await response.write_eof()
    finally:
        await reader.close()
    return response
