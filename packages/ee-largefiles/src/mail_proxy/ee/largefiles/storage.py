"""The object storage, through fsspec: where offloaded files are written, read and deleted.

fsspec's file APIs are blocking (s3fs, gcsfs and adlfs run their own event loop in a thread of
theirs), so every call here runs in a worker thread and the service's event loop never waits
on the storage. Files are written in chunks as they arrive (object stores upload them as
multipart parts of :data:`PART_SIZE`): a file is never held whole in memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")

#: Buffer of one multipart part on object stores (S3's minimum part is 5 MB).
PART_SIZE = 8 * 1024 * 1024
#: Longest life of a V4-signed URL (S3 ``X-Amz-Expires``, GCS ``X-Goog-Expires``): 7 days.
#: For a longer file_ttl_days such a URL would stop working early, so the proxy serves the
#: file itself instead. (S3's older signature, s3fs's default, has no such limit.)
V4_LIMIT_S = 7 * 86400
_V4_MARKERS = ("X-Amz-Expires=", "X-Goog-Expires=")
LOCAL = ("file", "local")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


class StorageError(Exception):
    """The storage refused or did not answer; the text says what to check."""


def safe_name(filename: str) -> str:
    """A file name usable in an object key on every store (letters, digits, ``._-``)."""
    cleaned = _UNSAFE.sub("_", filename).strip("._") or "file"
    return cleaned[-100:]


@dataclass(frozen=True)
class Location:
    """A storage URL with its fsspec options (credentials, endpoint)."""

    url: str
    options: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)

    @property
    def protocol(self) -> str:
        from fsspec.core import split_protocol

        return split_protocol(self.url)[0] or "file"

    def filesystem(self) -> tuple[Any, str]:
        """Blocking: the fsspec filesystem and the root path inside it."""
        from fsspec.core import url_to_fs

        fs, root = url_to_fs(self.url, **self.options)
        return fs, str(root).rstrip("/")

    def key(self, *parts: str) -> str:
        """Blocking: the full path of an object below the root."""
        _fs, root = self.filesystem()
        return "/".join([root, *parts])


async def _call(func: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    return await asyncio.to_thread(func, *args, **kwargs)


class Writer:
    """One object being written chunk by chunk; its size and MD5 are counted on the way."""

    def __init__(self, location: Location, path: str) -> None:
        self.location = location
        self.path = path
        self.size = 0
        self._md5 = hashlib.md5(usedforsecurity=False)
        self._fs: Any = None
        self._file: Any = None

    def _open(self) -> None:
        fs, _root = self.location.filesystem()
        if self.location.protocol in LOCAL:
            fs.makedirs(self.path.rsplit("/", 1)[0], exist_ok=True)
        self._fs = fs
        self._file = fs.open(self.path, "wb", block_size=PART_SIZE)

    def _write(self, chunk: bytes) -> None:
        self._file.write(chunk)
        self._md5.update(chunk)
        self.size += len(chunk)

    async def open(self) -> Writer:
        await _call(self._open)
        return self

    async def write(self, chunk: bytes) -> None:
        await _call(self._write, chunk)

    async def close(self) -> str:
        """Finish the object (the last part is uploaded); its MD5 (hex)."""
        await _call(self._file.close)
        return self._md5.hexdigest()

    def _abort(self) -> None:
        if self._file is not None:
            discard = getattr(self._file, "discard", None)  # object stores: drop the parts
            with contextlib.suppress(Exception):
                discard() if callable(discard) else self._file.close()
        if self._fs is not None:
            with contextlib.suppress(Exception):
                self._fs.rm(self.path)

    async def abort(self) -> None:
        """Drop what was written (best effort)."""
        await _call(self._abort)


def _delete(location: Location, path: str) -> bool:
    fs, root = location.filesystem()
    try:
        fs.rm(path)
    except FileNotFoundError:
        return False
    if location.protocol in LOCAL:  # the object's own directory, now empty
        parent = path.rsplit("/", 1)[0]
        if parent != root and parent.startswith(root + "/"):
            with contextlib.suppress(OSError):
                fs.rmdir(parent)
    return True


async def delete(location: Location, path: str) -> bool:
    """Delete one object; False when it was already gone. Other failures raise."""
    return await _call(_delete, location, path)


def _sign(location: Location, path: str, seconds: int, filename: str) -> str | None:
    fs, _root = location.filesystem()
    extra: dict[str, Any] = {}
    if location.protocol in ("s3", "s3a"):
        from .downloads import content_disposition

        extra["ResponseContentDisposition"] = content_disposition(filename)
    try:
        url = str(fs.sign(path, expiration=seconds, **extra))
    except NotImplementedError:
        return None
    if seconds > V4_LIMIT_S and any(marker in url for marker in _V4_MARKERS):
        return None
    return url


async def signed_url(location: Location, path: str, seconds: float, filename: str) -> str | None:
    """The storage's own expiring URL of an object, or None when it cannot sign one for that
    long (local files, a V4 signature beyond 7 days, no signing credentials)."""
    if location.protocol in (*LOCAL, "memory"):
        return None
    try:
        return await _call(_sign, location, path, max(1, int(seconds)), filename)
    except Exception as exc:  # e.g. Azure without an account key: serve it ourselves
        log.info("large files: %s:// cannot sign URLs (%s)", location.protocol, exc)
        return None


class Reader:
    """An object opened for reading (download route): ranges read in a worker thread."""

    def __init__(self, location: Location, path: str) -> None:
        self.location = location
        self.path = path
        self._file: Any = None

    def _open(self) -> int:
        fs, _root = self.location.filesystem()
        size = int(fs.info(self.path)["size"])
        self._file = fs.open(self.path, "rb", block_size=PART_SIZE)
        return size

    async def open(self) -> int:
        """Open the object; its size (``FileNotFoundError`` when it is gone)."""
        return await _call(self._open)

    def _read(self, offset: int, length: int) -> bytes:
        self._file.seek(offset)
        return bytes(self._file.read(length))

    async def read(self, offset: int, length: int) -> bytes:
        return await _call(self._read, offset, length)

    async def close(self) -> None:
        if self._file is not None:
            with contextlib.suppress(Exception):
                await _call(self._file.close)


def _probe(location: Location) -> None:
    fs, root = location.filesystem()
    if location.protocol in LOCAL:
        fs.makedirs(root, exist_ok=True)
    token = secrets.token_hex(8)
    path = f"{root}/.gmp-probe-{token}"
    data = f"genro-mail-proxy storage probe {token}".encode()
    with fs.open(path, "wb") as out:
        out.write(data)
    try:
        with fs.open(path, "rb") as back:
            if back.read() != data:
                raise StorageError("the probe object read back differs from what was written")
    finally:
        fs.rm(path)


async def probe(location: Location, timeout: float) -> None:
    """Write, read back and delete a probe object; :class:`StorageError` says what failed."""
    try:
        await asyncio.wait_for(_call(_probe, location), timeout)
    except StorageError:
        raise
    except asyncio.TimeoutError:
        raise StorageError(f"the storage did not answer within {timeout:g} s") from None
    except FileNotFoundError:
        raise StorageError("bucket, container or directory not found") from None
    except PermissionError as exc:
        raise StorageError(f"permission denied ({_short(exc)})") from None
    except Exception as exc:
        raise StorageError(f"{type(exc).__name__}: {_short(exc)}") from None


def _short(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 300 else text[:297] + "..."
