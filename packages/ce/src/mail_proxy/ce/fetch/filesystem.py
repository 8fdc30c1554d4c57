"""``filesystem`` fetch mode: read a file below the operator's base directories.

Disabled unless ``GMP_ATTACHMENT_BASE_DIRS`` names at least one directory. A relative path
is taken relative to the first base directory; an absolute one must lie below one of them.

Checks, in order (the message fails with a clear error at the first one that does not hold):

1. at enqueue, lexically: no NUL, no ``..`` component, inside a base directory, not under
   ``/proc``, ``/sys`` or ``/dev``;
2. at send time, in a worker thread: the real path (all symlinks resolved) is still inside the
   real path of a base directory and not under ``/proc``, ``/sys`` or ``/dev``;
3. ``stat`` says it is a regular file (devices, FIFOs, sockets, directories are refused before
   anything is opened: opening some devices has side effects, opening a FIFO blocks) no larger
   than the cap;
4. it is opened with ``O_NOFOLLOW | O_NONBLOCK``, ``fstat`` must show the same regular file,
   and on Linux the descriptor's own path (``/proc/self/fd/N``) must still be inside the base:
   a file swapped for a symlink between the checks is caught;
5. at most cap + 1 bytes are read: a file that grew meanwhile is refused, not truncated.

``stream`` makes the same checks and hands the file over in 1 MB chunks (for the large-files
plugin, which uploads attachments to object storage without holding them).
"""

from __future__ import annotations

import asyncio
import os
import stat
from collections.abc import AsyncGenerator
from typing import TYPE_CHECKING

from mail_proxy.ce.settings import FETCH
from mail_proxy.core.contracts.fetch import Fetcher, FetchError, FetchRequest

if TYPE_CHECKING:
    from mail_proxy.core.engine.runtime import Runtime

FORBIDDEN_ROOTS = ("/proc", "/sys", "/dev")
MAX_PATH = 4096
CHUNK = 1024 * 1024


def _inside(path: str, root: str) -> bool:
    root = root.rstrip(os.sep) or os.sep
    return path == root or path.startswith(root if root == os.sep else root + os.sep)


def lexical_path(storage_path: str, bases: list[str]) -> str:
    """The absolute, normalised path ``storage_path`` names; ``ValueError`` says why not."""
    if not bases:
        raise ValueError(
            "filesystem fetch mode is disabled (no GMP_ATTACHMENT_BASE_DIRS configured)"
        )
    if not storage_path:
        raise ValueError("empty path")
    if len(storage_path) > MAX_PATH:
        raise ValueError(f"path longer than {MAX_PATH} characters")
    if "\x00" in storage_path:
        raise ValueError("path contains NUL")
    if ".." in storage_path.replace("\\", "/").split("/"):
        raise ValueError("path must not contain '..'")
    abs_bases = [os.path.normpath(os.path.abspath(b)) for b in bases]
    if os.path.isabs(storage_path):
        candidate = os.path.normpath(storage_path)
    else:
        candidate = os.path.normpath(os.path.join(abs_bases[0], storage_path))
    if any(_inside(candidate, root) for root in FORBIDDEN_ROOTS):
        raise ValueError("/proc, /sys and /dev are never readable")
    if not any(_inside(candidate, base) for base in abs_bases):
        raise ValueError("path is outside the allowed base directories")
    return candidate


def open_checked(storage_path: str, bases: list[str], max_bytes: int) -> tuple[int, int]:
    """Blocking: checks 1 to 4 of the module doc; ``(open descriptor, size)``. The caller
    reads at most ``max_bytes`` + 1 bytes and closes the descriptor."""
    try:
        candidate = lexical_path(storage_path, bases)
    except ValueError as exc:
        raise FetchError(str(exc)) from None
    real = os.path.realpath(candidate)
    real_bases = [os.path.realpath(b) for b in bases]
    if any(_inside(real, root) for root in FORBIDDEN_ROOTS):
        raise FetchError("path leads into /proc, /sys or /dev")
    if not any(_inside(real, base) for base in real_bases):
        raise FetchError("path escapes the allowed base directories (symlink)")
    try:
        before = os.stat(real)
    except FileNotFoundError:
        raise FetchError(f"file not found: {storage_path}") from None
    except OSError as exc:
        raise FetchError(f"cannot access {storage_path}: {exc.strerror}") from None
    _check_regular(before, max_bytes)
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    flags |= getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(real, flags)
    except OSError as exc:
        raise FetchError(f"cannot open {storage_path}: {exc.strerror}") from None
    try:
        after = os.fstat(fd)
        _check_regular(after, max_bytes)
        if (after.st_dev, after.st_ino) != (before.st_dev, before.st_ino):
            raise FetchError("file changed while being opened")
        _check_descriptor(fd, real_bases)
    except BaseException:
        os.close(fd)
        raise
    return fd, after.st_size


def read_file(storage_path: str, bases: list[str], max_bytes: int) -> bytes:
    """Blocking: the checked read described in the module doc (run it in a thread)."""
    fd, size = open_checked(storage_path, bases, max_bytes)
    try:
        chunks: list[bytes] = []
        total = 0
        # The first read asks for the whole file (+1 to see growth): usually it is the only
        # one, and the content is returned without a second copy.
        want = size + 1
        while True:
            chunk = os.read(fd, min(want, max_bytes + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
            if total > max_bytes:
                raise FetchError(f"attachment too large: more than {max_bytes} bytes")
            want = CHUNK
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)
    finally:
        os.close(fd)


def _check_regular(st: os.stat_result, max_bytes: int) -> None:
    if not stat.S_ISREG(st.st_mode):
        raise FetchError("not a regular file (directory, device, FIFO or socket)")
    if st.st_size > max_bytes:
        raise FetchError(f"attachment too large: {st.st_size} bytes (limit {max_bytes})")


def _check_descriptor(fd: int, real_bases: list[str]) -> None:
    """On Linux, where the open descriptor really points must still be inside a base."""
    link = f"/proc/self/fd/{fd}"
    try:
        target = os.readlink(link)
    except OSError:
        return  # no /proc (other systems): the checks above stand
    if not any(_inside(target, base) for base in real_bases):
        raise FetchError("path escapes the allowed base directories")


class FilesystemFetcher(Fetcher):
    description = "files below GMP_ATTACHMENT_BASE_DIRS (disabled when unset)"

    def validate(self, storage_path: str, runtime: Runtime) -> str | None:
        try:
            lexical_path(storage_path, runtime.settings.section(FETCH).attachment_base_dirs)
        except ValueError as exc:
            return str(exc)
        return None

    async def fetch(self, request: FetchRequest, runtime: Runtime) -> bytes:
        bases = list(runtime.settings.section(FETCH).attachment_base_dirs)
        return await asyncio.to_thread(read_file, request.storage_path, bases, request.max_bytes)

    async def stream(self, request: FetchRequest, runtime: Runtime) -> AsyncGenerator[bytes, None]:
        """The same checks, then the file in chunks of :data:`CHUNK` (each read in a thread)."""
        bases = list(runtime.settings.section(FETCH).attachment_base_dirs)
        max_bytes = request.max_bytes
        fd, _size = await asyncio.to_thread(open_checked, request.storage_path, bases, max_bytes)
        try:
            total = 0
            while True:
                chunk = await asyncio.to_thread(os.read, fd, CHUNK)
                if not chunk:
                    return
                total += len(chunk)
                if total > max_bytes:  # the file grew since it was checked
                    raise FetchError(f"attachment too large: more than {max_bytes} bytes")
                yield chunk
        finally:
            os.close(fd)
