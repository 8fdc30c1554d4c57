"""The ``large-files`` scenario: the service's memory while the large-files plugin rewrites a
200 MB attachment.

The service runs with the plugin's ``rewrite`` action (``max_size_mb`` 10, a ``file://``
store in the run's work directory) and the ``filesystem`` fetch mode on a temporary directory
holding one 200 MB file of random bytes. After start-up and configuration the resting RSS is
read; then one message with that file is enqueued and the RSS is sampled every 50 ms until
the sink has the message (the file streamed to the store, the link in the body). The stored
copy is checked against the source (size and MD5).

Figures: peak RSS, resting RSS, ``peak_above_resting_mb`` (the target: under 150 MB), the time
from enqueue to delivery, whether the stored file is exact, lost and duplicated.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import secrets
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .service import RssSampler

if TYPE_CHECKING:
    from .scenarios import Bench, Measured

ATTACHMENT_MB = 200
LIMIT_MB = 10


def write_file(path: Path, size_mb: int) -> str:
    """``size_mb`` MB of random bytes at ``path``; their MD5."""
    md5 = hashlib.md5()
    with path.open("wb") as out:
        for _ in range(size_mb):
            chunk = os.urandom(1024 * 1024)
            out.write(chunk)
            md5.update(chunk)
    return md5.hexdigest()


def stored_md5(store: Path) -> tuple[int, str | None]:
    """How many files the store holds, and the MD5 of the one it should hold."""
    files = [p for p in store.rglob("*") if p.is_file()] if store.exists() else []
    if len(files) != 1:
        return len(files), None
    md5 = hashlib.md5()
    with files[0].open("rb") as source:
        while chunk := source.read(1024 * 1024):
            md5.update(chunk)
    return 1, md5.hexdigest()


async def run(bench: Bench) -> Measured:
    from .scenarios import Measured

    size_mb = max(LIMIT_MB + 1, bench.size(ATTACHMENT_MB))
    workdir = bench.opts.workroot / f"large-files-{secrets.token_hex(3)}"
    files, store = workdir / "files", workdir / "store"
    files.mkdir(parents=True)
    source = files / "large-attachment.bin"
    try:
        digest = await asyncio.to_thread(write_file, source, size_mb)
        settings = {"GMP_ATTACHMENT_BASE_DIRS": str(files)}
        async with bench.stack(settings=settings) as stack:
            config = {
                "max_size_mb": LIMIT_MB,
                "action": "rewrite",
                "storage_url": f"file://{store}",
            }
            await stack.api.call("PUT", "/instance/large-files", config)
            svc = stack.services[0]
            resting = svc.rss_mb()
            message: dict[str, Any] = {
                "id": "lf-0",
                "from": "bench@example.com",
                "to": ["sink@example.com"],
                "subject": "a large attachment",
                "body": "See the link below.",
                "attachments": [
                    {
                        "filename": source.name,
                        "storage_path": str(source),
                        "fetch_mode": "filesystem",
                    }
                ],
            }
            with RssSampler(stack.pids) as sampler:
                started = time.monotonic()
                answer = await stack.api.call(
                    "POST", "/commands/add-messages", {"messages": [message]}
                )
                stats = await bench.delivered(stack.sink, 1, stall=120)
                elapsed = time.monotonic() - started
            count, copy = await asyncio.to_thread(stored_md5, store)
    finally:
        for path in sorted(workdir.rglob("*"), reverse=True):
            path.unlink() if path.is_file() else path.rmdir()
        workdir.rmdir()
    metrics = {
        "peak_rss_mb": round(sampler.peak_mb, 1),
        "resting_rss_mb": round(resting, 1),
        "peak_above_resting_mb": round(sampler.peak_mb - resting, 1),
        "attachment_mb": size_mb,
        "offload_s": round(elapsed, 2),
        "stored_files": count,
        "stored_exact": copy == digest,
        "enqueue_errors": 0 if answer.get("queued") == 1 else 1,
        "lost": stats["lost"],
        "duplicated": stats["duplicated"],
    }
    params = {
        "attachment_mb": size_mb,
        "max_size_mb": LIMIT_MB,
        "fetch_mode": "filesystem",
        "storage": "file://",
    }
    return Measured(params, metrics)
