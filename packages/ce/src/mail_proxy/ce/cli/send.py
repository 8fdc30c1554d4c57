"""``mail-proxy NAME [TENANT] send FILE.eml [FILE2.eml ...|DIR]``: queue RFC 5322 files.

Files are read and converted a batch at a time (at most ``BATCH_FILES`` files or about
``BATCH_BYTES`` of JSON per ``POST /commands/add-messages``), so memory stays bounded however
many files are given. A file that cannot be converted is reported and skipped; the exit code
is 1 when any file was not queued.
"""

from __future__ import annotations

import json as jsonlib
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mail_proxy.core.cli.errors import CliError, UsageError
from mail_proxy.core.cli.output import Progress, print_json
from mail_proxy.core.cli.target import current
from mail_proxy.core.contracts.model import PRIORITY_NAMES

from .eml import EmlError, message_from_eml, message_id_to_id

BATCH_FILES = 100
BATCH_BYTES = 4 * 1024 * 1024
PRIORITIES = {*PRIORITY_NAMES, *(str(v) for v in PRIORITY_NAMES.values())}


def send(
    *paths: Path,
    account: str | None = None,
    priority: str | None = None,
    batch: str | None = None,
    json: bool = False,
) -> int:
    """Queue .eml files (a directory means every *.eml in it) for delivery.

    Parameters
    ----------
    paths
        .eml files or directories.
    account
        SMTP account id (default: the tenant's default account).
    priority
        0-3 or immediate, high, medium, low (default 2, medium).
    batch
        Batch code, to suspend/activate the campaign as a whole.
    json
        Print {"ok", "queued", "rejected": [{"id", "file", "reason"}]}.
    """
    files = expand(paths)
    if priority is not None and priority not in PRIORITIES:
        raise UsageError(f"invalid --priority {priority!r}: use 0-3, immediate, high, medium, low")
    target = current()
    client = target.client()
    common: dict[str, Any] = {
        "account_id": account,
        "batch_code": batch,
        "tenant_id": target.tenant,
    }
    if priority is not None:
        common["priority"] = int(priority) if priority.isdigit() else priority
    common = {k: v for k, v in common.items() if v is not None}
    queued, rejected = 0, []
    progress = Progress(len(files), "sending")
    try:
        for chunk, names, local in batches(files, common):
            rejected += local
            if chunk:
                try:
                    answer = client.post(
                        "/commands/add-messages", {"messages": chunk}, target.tenant_query()
                    )
                except CliError as exc:
                    raise CliError(f"{exc.message} ({queued} message(s) queued before)") from None
                queued += int(answer.get("queued", 0))
                rejected += [
                    {**r, "file": names.get(str(r.get("id")))} for r in answer.get("rejected") or []
                ]
            progress.advance(len(chunk) + len(local))
    finally:
        progress.close()
    return report(queued, rejected, json)


def expand(paths: tuple[Path, ...]) -> list[Path]:
    """The files to send: files as given, directories as their ``*.eml`` (sorted)."""
    if not paths:
        raise UsageError("give at least one .eml file or directory")
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files += sorted(p for p in path.glob("*.eml") if p.is_file())
        elif path.is_file():
            files.append(path)
        else:
            raise UsageError(f"no such file or directory: {path}")
    if not files:
        raise UsageError("no .eml files found")
    return files


def batches(
    files: list[Path], common: dict[str, Any]
) -> Iterator[tuple[list[dict[str, Any]], dict[str, str], list[dict[str, Any]]]]:
    """Yield ``(messages, id → file name, local rejections)`` a bounded batch at a time."""
    chunk: list[dict[str, Any]] = []
    names: dict[str, str] = {}
    local: list[dict[str, Any]] = []
    size = 0
    for path in files:
        try:
            message = message_from_eml(path.read_bytes())
        except (OSError, EmlError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            local.append({"id": None, "file": str(path), "reason": reason})
            continue
        message["id"] = message_id_to_id(message.get("message_id", "")) or uuid.uuid4().hex
        message.update(common)
        names[message["id"]] = str(path)
        chunk.append(message)
        size += len(jsonlib.dumps(message))
        if len(chunk) >= BATCH_FILES or size >= BATCH_BYTES:
            yield chunk, names, local
            chunk, names, local, size = [], {}, [], 0
    if chunk or local:
        yield chunk, names, local


def report(queued: int, rejected: list[dict[str, Any]], json: bool) -> int:
    if json:
        print_json({"ok": not rejected, "queued": queued, "rejected": rejected})
    else:
        print(f"queued {queued} message(s)")
        for item in rejected:
            label = item.get("file") or item.get("id")
            print(f"rejected {label}: {item.get('reason')}", file=sys.stderr)
    if rejected:
        raise CliError(f"{len(rejected)} message(s) not queued")
    return 0
