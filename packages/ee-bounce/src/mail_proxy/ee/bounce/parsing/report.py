"""A command-line-free helper: parse bounce files into plain dicts (for ``--json`` output).

The integrator wires ``mail-proxy bounce parse FILE... --json`` to :func:`parse_files`; the
dicts carry the fields an operator needs to see, one per file, in the order given.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .parser import parse_bounce

_RECIPIENT_KEYS = ("address", "status", "type", "reason", "diagnostic", "rule")


def parse_files(paths: list[str]) -> Iterator[dict[str, Any]]:
    """For each path: ``file``, ``is_bounce``, ``kind``, ``recipients``, ``message_id``,
    ``mail_id`` (a file that cannot be read gives an ``error`` entry instead)."""
    for path in paths:
        try:
            raw = Path(path).read_bytes()
        except OSError as exc:
            yield {"file": path, "error": str(exc)}
            continue
        report = parse_bounce(raw)
        yield {
            "file": path,
            "is_bounce": report.is_bounce,
            "kind": report.kind,
            "recipients": [
                {key: getattr(r, key) for key in _RECIPIENT_KEYS} for r in report.recipients
            ],
            "message_id": report.message_id,
            "mail_id": report.mail_id,
        }
