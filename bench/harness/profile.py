"""Sampling profiles of the service during a scenario (py-spy), and their summary.

``bench/run --profile e2e`` attaches ``py-spy record`` to the service process(es) for the
scenario's measured part and writes, in bench/results/: ``profile-<scenario>-<rev>.svg`` (a
flame graph) and ``.txt`` (folded stacks), then prints the top functions by own and by total
time. ``python -m harness.profile FILE.txt`` summarises a folded file again.

Percentages are of the samples taken while a thread ran Python code (py-spy leaves idle
threads out), per thread: the event loop's thread and the database driver's threads are
shown apart, since only one of them can hold the GIL at a time.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import signal
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from .procs import REPO

PY_SPY = REPO / ".venv" / "bin" / "py-spy"
RATE = 100
_LINE = re.compile(r":\d+\)$")


def py_spy() -> str:
    path = str(PY_SPY) if PY_SPY.exists() else shutil.which("py-spy")
    if not path:
        raise SystemExit("bench: --profile needs py-spy: .venv/bin/pip install py-spy")
    return path


class Profiler:
    """py-spy recorders attached to some pids (one flame graph and one folded file each)."""

    def __init__(self, pids: list[int], base: Path) -> None:
        self.pids = pids
        self.base = base
        self.procs: list[asyncio.subprocess.Process] = []
        self.outputs: list[Path] = []
        self.seconds = 0.0

    async def start(self) -> None:
        exe = py_spy()
        for n, pid in enumerate(self.pids):
            suffix = "" if len(self.pids) == 1 else f"-{n + 1}"
            for fmt, ext in (("flamegraph", "svg"), ("raw", "txt")):
                out = self.base.with_name(f"{self.base.name}{suffix}.{ext}")
                proc = await asyncio.create_subprocess_exec(
                    exe,
                    "record",
                    "--pid",
                    str(pid),
                    "--rate",
                    str(RATE),
                    "--nonblocking",
                    "--threads",
                    "--format",
                    fmt,
                    "--output",
                    str(out),
                    stdout=asyncio.subprocess.DEVNULL,
                    stderr=asyncio.subprocess.DEVNULL,
                )
                self.procs.append(proc)
                self.outputs.append(out)
        await asyncio.sleep(0.5)  # let py-spy attach before the measured part starts
        self._started = time.monotonic()

    async def stop(self) -> list[Path]:
        """Stop recording (SIGINT makes py-spy write its file) and return the folded files."""
        self.seconds = time.monotonic() - self._started
        for proc in self.procs:
            if proc.returncode is None:
                proc.send_signal(signal.SIGINT)
        for proc in self.procs:
            try:
                await asyncio.wait_for(proc.wait(), 60)
            except asyncio.TimeoutError:
                proc.kill()
                await proc.wait()
        return [p for p in self.outputs if p.suffix == ".txt" and p.exists()]


#: Leaf frames where a thread waits (py-spy's idle detection misses them under load).
IDLE_LEAVES = (
    "EpollSelector.select (selectors.py",
    "_connection_worker_thread (aiosqlite/core.py:59)",  # tx.get(): waiting for work
    "_worker (concurrent/futures/thread.py",
    "Condition.wait (threading.py",
    "Event.wait (threading.py",
)
#: A leaf whose real work is in C code py-spy does not show: name what it is.
NATIVE_LEAVES = {
    "_connection_worker_thread (aiosqlite/core.py:63)": "[sqlite3 C: execute/commit/fsync]",
}


def frame_name(frame: str) -> str:
    """``send (mail_proxy/ce/smtp.py:120)`` → ``send (mail_proxy/ce/smtp.py)``."""
    return _LINE.sub(")", frame.strip())


def _stacks(folded: Path) -> list[tuple[str, list[str], int]]:
    """(thread name, frames root → leaf with line numbers, count) for each folded line."""
    out = []
    for line in folded.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        frames = stack.split(";")
        thread = "?"
        if frames and frames[0].startswith("thread ("):
            thread = frames.pop(0).split(": ", 1)[-1]
            thread = "MainThread" if thread == "MainThread" else re.sub(r"-\d+", "", thread)
        out.append((thread, frames, int(count_text)))
    return out


def summarize(folded: Path, top: int = 20, seconds: float | None = None) -> dict[str, Any]:
    """Where the busy samples went.

    * ``threads``: busy and idle samples per thread kind (the event loop is ``MainThread``);
    * ``loop_busy_pct``: the event loop's busy samples as a share of the recording time
      (near 100 % = the loop is saturated: Python CPU is the limit);
    * ``own``: leaf frames by share of all busy samples (where the CPU goes);
    * ``project``: genro-mail-proxy frames (``core/``, ``ce/``) by inclusive share
      (which of our functions the busy time is spent under).
    """
    own: Counter[str] = Counter()
    project: Counter[str] = Counter()
    busy: Counter[str] = Counter()
    idle: Counter[str] = Counter()
    for thread, frames, count in _stacks(folded):
        leaf = frames[-1].strip() if frames else ""
        if not frames or leaf.startswith(IDLE_LEAVES):
            idle[thread] += count
            continue
        busy[thread] += count
        own[NATIVE_LEAVES.get(leaf, frame_name(leaf))] += count
        names = {frame_name(f) for f in frames}
        for name in names:
            if "(core/" in name or "(ce/" in name or "(ee/" in name:
                if not name.startswith(("serve", "run (core/", "main (core/", "dispatch (core/")):
                    project[name] += count
    total = sum(busy.values()) or 1

    def pct(counter: Counter[str]) -> list[tuple[str, float]]:
        return [(name, round(100 * n / total, 1)) for name, n in counter.most_common(top)]

    result: dict[str, Any] = {
        "busy_samples": sum(busy.values()),
        "threads": {t: {"busy": busy[t], "idle": idle[t]} for t in sorted(set(busy) | set(idle))},
        "own": pct(own),
        "project": pct(project),
    }
    if seconds:
        result["seconds"] = round(seconds, 1)
        result["loop_busy_pct"] = round(100 * busy["MainThread"] / (seconds * RATE), 1)
    return result


def render(summary: dict[str, Any]) -> str:
    head = f"busy samples: {summary['busy_samples']} at {RATE} Hz"
    if "loop_busy_pct" in summary:
        head += (
            f" over {summary['seconds']} s; event loop busy {summary['loop_busy_pct']}% of the time"
        )
    lines = [head]
    for name, n in summary["threads"].items():
        lines.append(f"  {name}: busy {n['busy']}, idle {n['idle']}")
    for title, key in (("own time (leaf)", "own"), ("total time, our code", "project")):
        lines.append(f"top by {title}, % of busy samples:")
        lines += [f"  {p:5.1f}%  {name}" for name, p in summary[key]]
    return "\n".join(lines)


def main() -> int:
    for arg in sys.argv[1:]:
        print(f"== {arg}")
        print(render(summarize(Path(arg), top=30)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
