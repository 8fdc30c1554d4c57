"""Output for people (aligned tables, key/value blocks, a progress bar on a terminal) and for
scripts (``--json``: the REST answer as the server sent it)."""

from __future__ import annotations

import json
import sys
import threading
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


def stderr_is_terminal() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


class Progress:
    """A one-line progress bar on stderr, drawn only when stderr is a terminal (never on a pipe
    or in a log file). ``total=None``: the total is unknown, the line counts what is done."""

    #: Redraw at most this often (seconds): many small steps must not cost a write each.
    REDRAW = 0.1

    def __init__(self, total: int | None, label: str, width: int = 30, unit: str = "") -> None:
        self.total = None if total is None else max(total, 1)
        self.label = label
        self.width = width
        self.unit = unit
        self.done = 0
        self.enabled = (total is None or total > 1) and stderr_is_terminal()
        self._drawn = 0.0

    def advance(self, n: int = 1) -> None:
        self.done += n
        if self.enabled and (
            time.monotonic() - self._drawn >= self.REDRAW or self.done == self.total
        ):
            self._draw()

    def _draw(self) -> None:
        self._drawn = time.monotonic()
        if self.total is None:
            line = f"\r{self.label} {self.done}{self.unit}"
        else:
            filled = int(self.width * min(self.done, self.total) / self.total)
            bar = "#" * filled + "." * (self.width - filled)
            line = f"\r{self.label} [{bar}] {self.done}/{self.total}{self.unit}"
        sys.stderr.write(line)
        sys.stderr.flush()

    def close(self) -> None:
        if self.enabled:
            self._draw()
            sys.stderr.write("\n")
            sys.stderr.flush()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Activity:
    """``with Activity("re-encrypting"):`` shows a spinner and the elapsed seconds on stderr
    while one long request runs whose progress the server does not report (a terminal only;
    nothing on a pipe). The line is left as ``label: done in Ns`` (or ``stopped``)."""

    FRAMES = "|/-\\"

    def __init__(self, label: str, interval: float = 0.2) -> None:
        self.label = label
        self.interval = interval
        self.enabled = stderr_is_terminal()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._started = 0.0

    def __enter__(self) -> Activity:
        self._started = time.monotonic()
        if self.enabled:
            self._thread = threading.Thread(target=self._spin, name="cli-activity", daemon=True)
            self._thread.start()
        return self

    def _spin(self) -> None:
        frame = 0
        while not self._stop.wait(self.interval if frame else 0):
            elapsed = time.monotonic() - self._started
            frame_char = self.FRAMES[frame % len(self.FRAMES)]
            sys.stderr.write(f"\r{self.label} {frame_char} {elapsed:.0f}s")
            sys.stderr.flush()
            frame += 1

    def __exit__(self, exc_type: object, *exc: object) -> None:
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join()
        outcome = "stopped" if exc_type is not None else "done"
        elapsed = time.monotonic() - self._started
        sys.stderr.write(f"\r{self.label}: {outcome} in {elapsed:.1f}s\n")
        sys.stderr.flush()
