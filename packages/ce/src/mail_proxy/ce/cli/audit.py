"""``mail-proxy NAME command-log list|export``: the audit trail (``/command-log``)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from cyclopts import App

from mail_proxy.core.cli.errors import CliError
from mail_proxy.core.cli.output import Progress, fmt_ts, print_json, print_table
from mail_proxy.core.cli.target import current

app = App(name="command-log", help="Audit trail of the state-changing API calls.")

COLUMNS = [
    ("pk", "#"),
    ("when", "WHEN"),
    ("principal", "WHO"),
    ("tenant_id", "TENANT"),
    ("method", "METHOD"),
    ("path", "PATH"),
    ("status", "STATUS"),
    ("summary", "SUMMARY"),
]


@app.command(name="list")
def list_entries(
    *,
    since: float | None = None,
    limit: int | None = None,
    cursor: str | None = None,
    json: bool = False,
) -> int:
    """List audit entries, oldest first (paginated: --limit, --cursor).

    Parameters
    ----------
    since
        Only entries at or after this Unix time.
    limit
        Page size.
    cursor
        Continue after a previous page (its next_cursor).
    json
        Print the GET /command-log answer.
    """
    target = current()
    query: dict[str, Any] = {"since": since, "limit": limit, "cursor": cursor}
    answer = target.client().get("/command-log", query)
    if json:
        print_json(answer)
        return 0
    rows = [{**e, "when": fmt_ts(e.get("ts"))} for e in answer.get("entries", [])]
    print_table(rows, COLUMNS, empty="(no entries)")
    if answer.get("next_cursor"):
        print(f"more: --cursor {answer['next_cursor']}", file=sys.stderr)
    return 0


@app.command
def export(*, output: Path | None = None, since: float | None = None) -> int:
    """Export the whole audit trail as JSON lines (one entry per line), streamed.

    A count of the entries written is shown on a terminal (stderr), nothing on a pipe.

    Parameters
    ----------
    output
        Write to this file (default: standard output).
    since
        Only entries at or after this Unix time.
    """
    target = current()
    client = target.client()
    client.timeout = max(client.timeout, 600.0)
    count = 0
    with Progress(None, "exporting", unit=" entries") as progress:
        if output is None:
            sink = sys.stdout.buffer
            count = _copy(client.lines("/command-log/export", {"since": since}), sink, progress)
            sink.flush()
        else:
            tmp = output.with_name(f".{output.name}.part")
            try:
                with open(tmp, "wb") as fh:
                    count = _copy(
                        client.lines("/command-log/export", {"since": since}), fh, progress
                    )
            except BaseException:
                tmp.unlink(missing_ok=True)
                raise
            tmp.replace(output)
    if output is not None:
        print(f"exported {count} entries to {output}", file=sys.stderr)
    return 0


def _copy(lines: Any, sink: Any, progress: Progress) -> int:
    count = 0
    for line in lines:
        if not line.endswith(b"\n"):
            raise CliError(f"the export ended in the middle of an entry ({count} written)")
        sink.write(line)
        count += 1
        progress.advance()
    return count
