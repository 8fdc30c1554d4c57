"""``mail-proxy bounce parse FILE... [--json]``: parse returned messages, no instance needed.

With ``--json``, one JSON object per file and line: ``file``, ``is_bounce``, ``kind``,
``recipients`` (``address``, ``status``, ``type``, ``reason``, ``diagnostic``, ``rule``),
``message_id`` and ``mail_id``. Without it, a table with one line per recipient.
"""

from __future__ import annotations

import json as jsonlib
import sys
from pathlib import Path

from cyclopts import App

from mail_proxy.core.cli.errors import CliError, UsageError
from mail_proxy.core.cli.output import print_table

app = App(name="bounce", help="Bounce files (bounce plugin).")

COLUMNS = [
    ("file", "FILE"),
    ("kind", "KIND"),
    ("address", "RECIPIENT"),
    ("status", "STATUS"),
    ("type", "TYPE"),
    ("reason", "REASON"),
    ("rule", "RULE"),
]


@app.command
def parse(files: list[Path], /, *, json: bool = False) -> int:
    """Parse bounce files and say, per failed recipient, hard or soft, why, and which rule
    decided. Exit 1 when a file cannot be read.

    Parameters
    ----------
    files
        Message files (.eml, raw RFC 5322).
    json
        One JSON object per file and line.
    """
    from mail_proxy.ee.bounce.parsing.report import parse_files

    if not files:
        raise UsageError("give at least one FILE")
    failed = 0
    rows = []
    for entry in parse_files([str(f) for f in files]):
        if "error" in entry:
            failed += 1
            print(f"mail-proxy: {entry['file']}: {entry['error']}", file=sys.stderr)
            continue
        if json:
            print(jsonlib.dumps(entry, ensure_ascii=False), flush=False)
            continue
        recipients = entry["recipients"] or [{}]
        for recipient in recipients:
            rows.append({"file": entry["file"], "kind": entry["kind"], **recipient})
    if not json:
        print_table(rows, COLUMNS, empty="(no files)")
    if failed:
        raise CliError(f"{failed} file(s) could not be read")
    return 0
