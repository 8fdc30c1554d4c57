"""Output for people (aligned tables, key/value blocks, a progress bar on a terminal) and for
scripts (``--json``: the REST answer as the server sent it)."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

MAX_CELL = 60


def print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, ensure_ascii=False, sort_keys=False))


def cell(value: Any) -> str:
    """One table cell: ``-`` for nothing, yes/no for booleans, lists joined, long text cut."""
    if value is None or value == "":
        text = "-"
    elif isinstance(value, bool):
        text = "yes" if value else "no"
    elif isinstance(value, list | tuple):
        text = ", ".join(cell(v) for v in value) or "-"
    elif isinstance(value, dict):
        text = json.dumps(value, ensure_ascii=False)
    else:
        text = str(value)
    text = " ".join(text.split())
    return text if len(text) <= MAX_CELL else text[: MAX_CELL - 1] + "…"


def print_table(
    rows: Iterable[Mapping[str, Any]], columns: Sequence[tuple[str, str]], empty: str = "(none)"
) -> None:
    """Print ``rows`` as aligned columns; ``columns`` are ``(key, HEADER)`` pairs."""
    grid = [[cell(row.get(key)) for key, _ in columns] for row in rows]
    if not grid:
        print(empty)
        return
    headers = [header for _, header in columns]
    widths = [max(len(r[i]) for r in [headers, *grid]) for i in range(len(columns))]
    for line in [headers, *grid]:
        print("  ".join(text.ljust(w) for text, w in zip(line, widths, strict=True)).rstrip())


def print_fields(data: Mapping[str, Any], keys: Sequence[str] | None = None) -> None:
    """Print ``key: value`` lines, aligned."""
    keys = list(keys) if keys is not None else list(data)
    width = max((len(k) for k in keys), default=0)
    for key in keys:
        if key in data:
            value = data[key]
            text = json.dumps(value, ensure_ascii=False) if isinstance(value, dict) else cell(value)
            print(f"{key.ljust(width)}  {text}")


def fmt_ts(value: Any) -> str | None:
    """A Unix timestamp as local ``YYYY-MM-DD HH:MM:SS`` (None stays None)."""
    if value in (None, ""):
        return None
    try:
        return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(value)))
    except (TypeError, ValueError, OverflowError):
        return str(value)


class Progress:
    """A one-line progress bar on stderr, drawn only when stderr is a terminal."""

    def __init__(self, total: int, label: str, width: int = 30) -> None:
        self.total = max(total, 1)
        self.label = label
        self.width = width
        self.done = 0
        self.enabled = total > 1 and sys.stderr.isatty()

    def advance(self, n: int = 1) -> None:
        self.done += n
        if self.enabled:
            filled = int(self.width * self.done / self.total)
            bar = "#" * filled + "." * (self.width - filled)
            sys.stderr.write(f"\r{self.label} [{bar}] {self.done}/{self.total}")
            sys.stderr.flush()

    def close(self) -> None:
        if self.enabled:
            sys.stderr.write("\n")
            sys.stderr.flush()
