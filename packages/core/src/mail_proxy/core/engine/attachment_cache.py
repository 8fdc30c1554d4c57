"""The two-tier attachment cache: memory for small items, disk for large ones.

Entries are keyed by ``(tenant_id, key)`` where ``key`` is the ``{MD5:...}`` marker or the
``content_md5`` of an attachment, so one tenant can never read another tenant's content by
guessing a hash. Each tier has a total size cap and a TTL (counted from when the entry was
stored); the memory tier evicts the least recently used entries, the disk tier too.

Disk entries are files named by a SHA-256 of ``(tenant_id, key)`` (never user text, so no
path tricks), written atomically (temporary file + rename) and prefixed by a small header
holding the MD5 of their content: a damaged file is detected when read, dropped, and the
attachment is fetched again. When the caller knows the real MD5 of the content (a 32-digit
key or ``content_md5``) the entry is checked against it too. File reads, writes, hashing and
deletions run in worker threads; the bookkeeping stays on the event loop.

Several processes may share a disk directory: each keeps its own index (built by scanning
the directory at first use), entries verify themselves, and the size cap is enforced by each
process over the entries it knows.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import re
import tempfile
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mail_proxy.core.contracts.config import Settings

log = logging.getLogger(__name__)


def md5_hex(data: bytes) -> str:
    """MD5 of ``data`` as lower-case hex (a content checksum, not a security function)."""
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


@dataclass
class CacheStats:
    """Counters for tests, diagnostics and Prometheus (``gmp_attachment_cache_*``, metrics.py)."""

    memory_hits: int = 0
    disk_hits: int = 0
    misses: int = 0
    stores: int = 0
    #: Entries dropped because their content did not match their MD5.
    corrupt: int = 0
    evictions: int = 0
    expired: int = 0

    @property
    def hits(self) -> int:
        return self.memory_hits + self.disk_hits


_DISK_MAGIC = b"GMPCACHE1 "
_DISK_HEADER = len(_DISK_MAGIC) + 32 + 1
_DISK_NAME = re.compile(r"[0-9a-f]{64}\.bin")
_TMP_PREFIX = ".tmp-"
_CORRUPT = object()


def _disk_read(path: str, expected: str | None) -> Any:
    """Blocking: the content of a disk entry, None if gone, ``_CORRUPT`` if damaged."""
    try:
        with open(path, "rb") as fh:
            raw = fh.read()
    except FileNotFoundError:
        return None
    header, data = raw[:_DISK_HEADER], raw[_DISK_HEADER:]
    if len(header) != _DISK_HEADER or not header.startswith(_DISK_MAGIC):
        return _CORRUPT
    digest = md5_hex(data)
    stored = header[len(_DISK_MAGIC) : -1].decode("ascii", "replace")
    if digest != stored or (expected is not None and digest != expected):
        return _CORRUPT
    return data


def _disk_write(directory: str, name: str, data: bytes) -> float:
    """Blocking: write an entry atomically (temp file + rename); return its mtime."""
    fd, tmp = tempfile.mkstemp(prefix=_TMP_PREFIX, dir=directory)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(_DISK_MAGIC + md5_hex(data).encode("ascii") + b"\n")
            fh.write(data)
        final = os.path.join(directory, name)
        os.replace(tmp, final)
        return os.stat(final).st_mtime
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def _disk_unlink(paths: list[str]) -> None:
    for path in paths:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        except OSError as exc:
            log.warning("attachment cache: cannot remove %s: %s", path, exc)


def _disk_scan(directory: str) -> list[tuple[str, int, float]]:
    """Blocking: create the directory, drop leftover temp files, list ``(name, size, mtime)``."""
    os.makedirs(directory, mode=0o700, exist_ok=True)
    found = []
    with os.scandir(directory) as it:
        for entry in it:
            try:
                if entry.name.startswith(_TMP_PREFIX):
                    os.unlink(entry.path)
                elif _DISK_NAME.fullmatch(entry.name) and entry.is_file(follow_symlinks=False):
                    st = entry.stat(follow_symlinks=False)
                    found.append((entry.name, st.st_size - _DISK_HEADER, st.st_mtime))
            except OSError:
                continue
    found.sort(key=lambda item: item[2])
    return found


class AttachmentCache:
    """Two-tier attachment cache scoped by tenant (see the module doc).

    All bookkeeping happens on the event loop; file reads, writes, hashing of disk entries
    and deletions run in worker threads. ``clock`` (monotonic, memory TTL) and ``wall_clock``
    (disk TTL, which must survive restarts) can be replaced in tests.
    """

    def __init__(
        self,
        *,
        memory_max_bytes: int,
        memory_item_max_bytes: int,
        memory_ttl: float,
        disk_dir: str | None = None,
        disk_max_bytes: int = 0,
        disk_ttl: float = 3600.0,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.memory_max_bytes = memory_max_bytes
        self.memory_item_max_bytes = memory_item_max_bytes
        self.memory_ttl = memory_ttl
        self.disk_dir = os.path.abspath(disk_dir) if disk_dir else None
        self.disk_max_bytes = disk_max_bytes
        self.disk_ttl = disk_ttl
        self.clock = clock
        self.wall_clock = wall_clock
        self.stats = CacheStats()
        self._memory: OrderedDict[tuple[str, str], tuple[bytes, float]] = OrderedDict()
        self._memory_bytes = 0
        #: disk file name → (content size, stored at, wall clock), in LRU order.
        self._disk: OrderedDict[str, tuple[int, float]] = OrderedDict()
        #: disk file name → tenant, for the entries this process stored or read
        #: (file names are hashes: this is what lets :meth:`purge_tenant` find them).
        self._disk_owner: dict[str, str] = {}
        self._disk_bytes = 0
        self._disk_ready = False
        self._disk_lock: asyncio.Lock | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> AttachmentCache:
        mb = 1024 * 1024
        return cls(
            memory_max_bytes=int(settings.cache_memory_max_mb * mb),
            memory_item_max_bytes=int(settings.cache_memory_item_max_kb * 1024),
            memory_ttl=settings.cache_memory_ttl,
            disk_dir=settings.cache_disk_dir,
            disk_max_bytes=int(settings.cache_disk_max_mb * mb),
            disk_ttl=settings.cache_disk_ttl,
        )

    # -- naming ---------------------------------------------------------------------------
    @staticmethod
    def disk_name(tenant_id: str, key: str) -> str:
        """File name of an entry: a hash of (tenant, key), never user text."""
        material = f"gmp-attachment-cache\x00{len(tenant_id)}:{tenant_id}\x00{key}"
        return hashlib.sha256(material.encode("utf-8")).hexdigest() + ".bin"

    def disk_path(self, tenant_id: str, key: str) -> str | None:
        if self.disk_dir is None:
            return None
        return os.path.join(self.disk_dir, self.disk_name(tenant_id, key))

    @property
    def memory_bytes(self) -> int:
        return self._memory_bytes

    @property
    def disk_bytes(self) -> int:
        return self._disk_bytes

    @property
    def memory_entries(self) -> int:
        return len(self._memory)

    @property
    def disk_entries(self) -> int:
        return len(self._disk)

    # -- lookups ----------------------------------------------------------------------------
    async def get(self, tenant_id: str, key: str, expected_md5: str | None = None) -> bytes | None:
        """Cached content for ``(tenant_id, key)``, checked against ``expected_md5`` if given."""
        slot = (tenant_id, key)
        item = self._memory.get(slot)
        if item is not None:
            data, stored = item
            if self.clock() - stored > self.memory_ttl:
                self._drop_memory(slot)
                self.stats.expired += 1
            elif expected_md5 is not None and md5_hex(data) != expected_md5:
                self._drop_memory(slot)
                self.stats.corrupt += 1
            else:
                self._memory.move_to_end(slot)
                self.stats.memory_hits += 1
                return data
        found = await self._disk_get(tenant_id, key, expected_md5)
        if found is not None:
            self.stats.disk_hits += 1
            return found
        self.stats.misses += 1
        return None

    async def _disk_get(self, tenant_id: str, key: str, expected: str | None) -> bytes | None:
        if self.disk_dir is None:
            return None
        await self._ensure_disk()
        name = self.disk_name(tenant_id, key)
        entry = self._disk.get(name)
        if entry is None:
            return None
        if self.wall_clock() - entry[1] > self.disk_ttl:
            self._forget_disk(name)
            self.stats.expired += 1
            await asyncio.to_thread(_disk_unlink, [os.path.join(self.disk_dir, name)])
            return None
        path = os.path.join(self.disk_dir, name)
        try:
            found = await asyncio.to_thread(_disk_read, path, expected)
        except OSError as exc:
            log.warning("attachment cache: cannot read %s: %s", path, exc)
            return None
        if found is None:
            self._forget_disk(name)
            return None
        if found is _CORRUPT:
            log.warning("attachment cache: dropping damaged entry %s", name)
            self.stats.corrupt += 1
            self._forget_disk(name)
            await asyncio.to_thread(_disk_unlink, [path])
            return None
        if name in self._disk:
            self._disk.move_to_end(name)
            self._disk_owner[name] = tenant_id
        return bytes(found)

    # -- stores -----------------------------------------------------------------------------
    async def put(self, tenant_id: str, key: str, data: bytes) -> None:
        """Store content: memory if small enough, else disk if configured and it fits."""
        size = len(data)
        if size <= self.memory_item_max_bytes and size <= self.memory_max_bytes:
            slot = (tenant_id, key)
            self._drop_memory(slot)
            self._memory[slot] = (data, self.clock())
            self._memory_bytes += size
            self.stats.stores += 1
            while self._memory_bytes > self.memory_max_bytes and self._memory:
                self._drop_memory(next(iter(self._memory)))
                self.stats.evictions += 1
            return
        if self.disk_dir is None or size > self.disk_max_bytes:
            return
        await self._ensure_disk()
        name = self.disk_name(tenant_id, key)
        try:
            mtime = await asyncio.to_thread(_disk_write, self.disk_dir, name, data)
        except OSError as exc:
            log.warning("attachment cache: cannot write to %s: %s", self.disk_dir, exc)
            return
        self._forget_disk(name)
        self._disk[name] = (size, mtime)
        self._disk_owner[name] = tenant_id
        self._disk_bytes += size
        self.stats.stores += 1
        await self._enforce_disk_cap()

    def _drop_memory(self, slot: tuple[str, str]) -> None:
        item = self._memory.pop(slot, None)
        if item is not None:
            self._memory_bytes -= len(item[0])

    def _forget_disk(self, name: str) -> None:
        self._disk_owner.pop(name, None)
        entry = self._disk.pop(name, None)
        if entry is not None:
            self._disk_bytes -= entry[0]

    async def _enforce_disk_cap(self) -> None:
        victims = []
        while self._disk_bytes > self.disk_max_bytes and self._disk:
            name = next(iter(self._disk))
            self._forget_disk(name)
            victims.append(name)
            self.stats.evictions += 1
        if victims and self.disk_dir is not None:
            directory = self.disk_dir
            await asyncio.to_thread(_disk_unlink, [os.path.join(directory, n) for n in victims])

    async def _ensure_disk(self) -> None:
        if self._disk_ready or self.disk_dir is None:
            return
        if self._disk_lock is None:
            self._disk_lock = asyncio.Lock()
        async with self._disk_lock:
            if self._disk_ready:
                return
            try:
                found = await asyncio.to_thread(_disk_scan, self.disk_dir)
            except OSError as exc:
                log.warning("attachment cache: disk tier %s unusable: %s", self.disk_dir, exc)
                self.disk_dir = None
                return
            for name, size, mtime in found:
                self._disk[name] = (max(size, 0), mtime)
                self._disk_bytes += max(size, 0)
            self._disk_ready = True
        await self.expire()

    # -- housekeeping -----------------------------------------------------------------------
    async def purge_tenant(self, tenant_id: str) -> int:
        """Drop a tenant's entries (its deletion): every memory entry, and the disk entries
        this process stored or read; others (written before a restart and not read since)
        age out with ``disk_ttl``. Returns how many entries were dropped."""
        slots = [s for s in self._memory if s[0] == tenant_id]
        for slot in slots:
            self._drop_memory(slot)
        names = [n for n, owner in self._disk_owner.items() if owner == tenant_id]
        for name in names:
            self._forget_disk(name)
        if names and self.disk_dir is not None:
            directory = self.disk_dir
            await asyncio.to_thread(_disk_unlink, [os.path.join(directory, n) for n in names])
        return len(slots) + len(names)

    async def expire(self) -> None:
        """Drop expired entries of both tiers and bring the disk tier under its size cap."""
        now = self.clock()
        for slot in [s for s, (_, t) in self._memory.items() if now - t > self.memory_ttl]:
            self._drop_memory(slot)
            self.stats.expired += 1
        if self.disk_dir is None or not self._disk_ready:
            return
        wall = self.wall_clock()
        old = [n for n, (_, t) in self._disk.items() if wall - t > self.disk_ttl]
        for name in old:
            self._forget_disk(name)
            self.stats.expired += 1
        if old:
            directory = self.disk_dir
            await asyncio.to_thread(_disk_unlink, [os.path.join(directory, n) for n in old])
        await self._enforce_disk_cap()
