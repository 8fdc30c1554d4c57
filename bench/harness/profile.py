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

    async def stop(self) -> list[Path]:
        """Stop recording (SIGINT makes py-spy write its file) and return the folded files."""
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


def frame_name(frame: str) -> str:
    """``send (mail_proxy/ce/smtp.py:120)`` → ``send (mail_proxy/ce/smtp.py)``."""
    return _LINE.sub(")", frame.strip())


def summarize(folded: Path, top: int = 20) -> dict[str, Any]:
    """Per-thread sample counts and the top frames by own (self) and total (inclusive) time."""
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    threads: Counter[str] = Counter()
    samples = 0
    for line in folded.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [frame_name(f) for f in stack.split(";")]
        if frames and frames[0].startswith("thread ("):
            threads[frames[0]] += count
            frames = frames[1:]
        if frames and frames[0].startswith("process "):
            frames = frames[1:]
        if not frames:
            continue
        samples += count
        own[frames[-1]] += count
        for name in set(frames):
            total[name] += count

    def pct(counter: Counter[str]) -> list[tuple[str, float]]:
        return [(name, round(100 * n / samples, 1)) for name, n in counter.most_common(top)]

    return {
        "samples": samples,
        "seconds_of_cpu": round(samples / RATE, 1),
        "threads": {name: n for name, n in threads.most_common()},
        "own": pct(own),
        "total": pct(total),
    }


def render(summary: dict[str, Any]) -> str:
    lines = [f"samples: {summary['samples']} (~{summary['seconds_of_cpu']} s of Python CPU)"]
    for name, n in summary["threads"].items():
        lines.append(f"  {name}: {n}")
    for title, key in (("own time", "own"), ("total time", "total")):
        lines.append(f"top by {title}:")
        lines += [f"  {p:5.1f}%  {name}" for name, p in summary[key]]
    return "\n".join(lines)


def main() -> int:
    for arg in sys.argv[1:]:
        print(f"== {arg}")
        print(render(summarize(Path(arg), top=30)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
