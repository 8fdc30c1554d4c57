"""Results: the machine and revision of a run, the targets, JSON lines and a readable table."""

from __future__ import annotations

import json
import operator
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from .procs import BENCH_DIR, REPO

RESULTS_DIR = BENCH_DIR / "results"


#: Metrics whose targets (``== 0``) say that nothing was lost, duplicated or refused: a miss
#: makes ``bench/run`` exit 1. The other targets are performance bars, reported only.
NO_LOSS_METRICS = frozenset({"lost", "duplicated", "errors", "enqueue_errors", "rejected"})


@dataclass(frozen=True)
class Target:
    """A bar from the issue "Benchmark suite and the performance bar"."""

    metric: str
    op: str
    bound: float
    #: the scenario the metric is computed from (a ratio to its median in the same run)
    needs: str | None = None

    @property
    def kind(self) -> str:
        return "no-loss" if self.metric in NO_LOSS_METRICS else "performance"

    def check(self, metrics: dict[str, Any]) -> dict[str, Any]:
        """The verdict: ``ok`` is true or false, or None when the metric is missing (with a
        ``note`` saying why) — a target is never dropped silently."""
        value = lookup(metrics, self.metric)
        result: dict[str, Any] = {
            "target": f"{self.metric} {self.op} {self.bound:g}",
            "value": value,
            "ok": None,
            "kind": self.kind,
        }
        if value is None:
            result["note"] = f"needs {self.needs} in the same run" if self.needs else "not measured"
        else:
            compare: Callable[[Any, Any], bool] = OPS[self.op]
            result["ok"] = bool(compare(value, self.bound))
        return result


OPS: dict[str, Callable[[Any, Any], bool]] = {
    "<=": operator.le,
    ">=": operator.ge,
    ">": operator.gt,
    "==": operator.eq,
}
_NO_LOSS = [Target("lost", "==", 0), Target("duplicated", "==", 0)]
#: every request of the load generator answered 200 and nothing in it was rejected
_NO_ERRORS = [Target("errors", "==", 0), Target("rejected", "==", 0)]
#: every enqueue request of a delivery scenario answered 200
_NO_ENQUEUE_ERRORS = [Target("enqueue_errors", "==", 0)]
TARGETS: dict[str, list[Target]] = {
    "enqueue": [
        Target("latency_ms.p99", "<=", 25),
        Target("requests_per_s", ">=", 2000),
        *_NO_ERRORS,
    ],
    "enqueue-suspended": [
        Target("latency_ms.p99", "<=", 25),
        Target("requests_per_s", ">=", 2000),
        *_NO_ERRORS,
    ],
    "batch": [Target("messages_per_s", ">=", 20000), *_NO_ERRORS],
    "batch-suspended": [Target("messages_per_s", ">=", 20000), *_NO_ERRORS],
    "e2e": [
        Target("delivered_per_s", ">=", 1000),
        Target("fraction_of_ceiling", ">=", 0.70, needs="ceiling"),
        *_NO_ENQUEUE_ERRORS,
        *_NO_LOSS,
    ],
    "e2e-pg": [*_NO_ENQUEUE_ERRORS, *_NO_LOSS],
    "e2e-pg-2": [Target("scaling_ratio", ">", 1, needs="e2e-pg"), *_NO_ENQUEUE_ERRORS, *_NO_LOSS],
    "backlog": [Target("peak_rss_mb", "<=", 250), *_NO_ENQUEUE_ERRORS, *_NO_LOSS],
    # the reference: a ceiling that lost messages would make every ratio to it too easy
    "ceiling": [Target("errors", "==", 0), *_NO_LOSS],
    # "well under the sum of the attachments": at most half of it
    "attachments": [
        Target("peak_rss_of_attachments_sum", "<=", 0.5),
        *_NO_ENQUEUE_ERRORS,
        *_NO_LOSS,
    ],
    # the large-files plugin rewriting a 200 MB attachment: streamed, never held whole
    "large-files": [
        Target("peak_above_resting_mb", "<=", 150),
        Target("stored_exact", "==", True),
        *_NO_ENQUEUE_ERRORS,
        *_NO_LOSS,
    ],
    "bounce": [Target("bounces_per_s", ">=", 500), *_NO_LOSS],
    # distant servers: the figures are ratios to the ideal rate (latency.py); no bar yet
    "e2e-latency": [*_NO_ENQUEUE_ERRORS, *_NO_LOSS],
    "e2e-many-accounts": [*_NO_ENQUEUE_ERRORS, *_NO_LOSS],
    "e2e-stalled-neighbour": [*_NO_ENQUEUE_ERRORS, *_NO_LOSS],
    # issue 19: every call of the console's messages page under 300 ms with 1,000,000
    # messages, and no plan reading the messages table sequentially
    "console-pg": [Target("max_page_ms", "<=", 300), Target("seq_scans", "==", 0)],
}

#: The figures the table shows for each scenario (the JSON line has them all).
HEADLINE: dict[str, list[str]] = {
    "enqueue": [
        "requests_per_s",
        "latency_ms.p50",
        "latency_ms.p90",
        "latency_ms.p99",
        "latency_ms.max",
        "service_cpu_ms_per_request",
    ],
    "batch": ["messages_per_s", "service_cpu_ms_per_msg"],
    "e2e": [
        "delivered_per_s",
        "fraction_of_ceiling",
        "msgs_per_service_cpu_s",
        "lost",
        "duplicated",
    ],
    "e2e-pg": [
        "delivered_per_s",
        "fraction_of_ceiling",
        "msgs_per_service_cpu_s",
        "lost",
        "duplicated",
    ],
    "e2e-pg-2": [
        "delivered_per_s",
        "scaling_ratio",
        "msgs_per_service_cpu_s",
        "lost",
        "duplicated",
    ],
    "backlog": [
        "peak_rss_mb",
        "rss_at_tenth_mb",
        "rss_at_full_mb",
        "drain_s",
        "drain_per_s",
        "drain_cpu_ms_per_msg",
        "lost",
    ],
    "ceiling": ["messages_per_s", "client_cpu_ms_per_msg", "sink_cpu_ms_per_msg"],
    "large-files": [
        "peak_above_resting_mb",
        "peak_rss_mb",
        "resting_rss_mb",
        "attachment_mb",
        "offload_s",
        "stored_exact",
    ],
    "bounce": [
        "bounces_per_s",
        "service_cpu_ms_per_bounce",
        "baseline_rss_mb",
        "peak_rss_mb",
        "lost",
        "duplicated",
    ],
    "attachments": [
        "peak_rss_mb",
        "baseline_rss_mb",
        "attachments_sum_mb",
        "peak_rss_of_attachments_sum",
        "delivered",
        "lost",
    ],
    "e2e-latency": [
        "c10.delivered_per_s",
        "c10.ideal_per_s",
        "c10.of_ideal",
        "c50.delivered_per_s",
        "c50.ideal_per_s",
        "c50.of_ideal",
        "c10.writes_per_msg",
        "lost",
    ],
    "e2e-many-accounts": [
        "delivered_per_s",
        "ideal_per_s",
        "of_ideal",
        "writes_per_msg",
        "service_cpu_ms_per_msg",
        "lost",
    ],
    "e2e-stalled-neighbour": [
        "alone.delivered_per_s",
        "beside_stalled.delivered_per_s",
        "ratio",
        "alone.of_ideal",
        "lost",
    ],
    "console-pg": [
        "page_ms.first",
        "page_ms.status",
        "page_ms.date",
        "page_ms.deep",
        "page_ms.deep_status",
        "max_page_ms",
        "seq_scans",
    ],
}


def lookup(metrics: dict[str, Any], dotted: str) -> Any:
    value: Any = metrics
    for part in dotted.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def checks(scenario: str, metrics: dict[str, Any]) -> list[dict[str, Any]]:
    return [t.check(metrics) for t in TARGETS.get(scenario, [])]


def no_loss_misses(records: list[dict[str, Any]]) -> list[str]:
    """The no-loss checks (lost, duplicated, errors == 0) that did not pass, one line each.

    A no-loss check that could not be made (``ok`` None) counts as missed: nothing proved
    that nothing was lost.
    """
    misses = []
    for r in records:
        for c in r.get("checks", []):
            if c.get("kind") == "no-loss" and c.get("ok") is not True:
                why = c.get("note") or f"value {_fmt(c.get('value'))}"
                misses.append(f"{r['scenario']} (run {r.get('run', '?')}): {c['target']}, {why}")
    return misses


def performance_misses(records: list[dict[str, Any]]) -> int:
    """How many performance checks missed (informative: they do not fail the run)."""
    return sum(
        1
        for r in records
        for c in r.get("checks", [])
        if c.get("kind") != "no-loss" and c.get("ok") is False
    )


def git_revision() -> str:
    """``git rev-parse --short HEAD``, plus ``-dirty`` when tracked or new files changed
    (bench results excepted)."""

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=False)
        return done.stdout.strip()

    rev = git("rev-parse", "--short", "HEAD") or "unknown"
    if git("status", "--porcelain", "--", ".", ":(exclude)bench/results"):
        rev += "-dirty"
    return rev


def machine() -> dict[str, Any]:
    cpu_model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cores": os.cpu_count(),
        "physical_cores": psutil.cpu_count(logical=False),
        "cpu": cpu_model,
        "memory_gb": round(psutil.virtual_memory().total / 1024**3, 1),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "load_avg_1m": round(os.getloadavg()[0], 2),
    }


class Results:
    """Appends one JSON line per scenario run to ``bench/results/<date>-<rev>.jsonl``."""

    def __init__(self, revision: str, path: Path | None = None) -> None:
        self.revision = revision
        day = time.strftime("%Y-%m-%d", time.gmtime())
        self.path = path or RESULTS_DIR / f"{day}-{revision}.jsonl"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.records: list[dict[str, Any]] = []

    def add(self, record: dict[str, Any]) -> None:
        self.records.append(record)
        line = json.dumps(record, sort_keys=False)
        with self.path.open("a", encoding="utf-8") as out:
            out.write(line + "\n")
        print(line, flush=True)

    def medians(self, scenario: str, metric: str) -> float | None:
        """The median of a metric over this run's successful records of a scenario."""
        values = [
            lookup(r["metrics"], metric)
            for r in self.records
            if r["scenario"] == scenario and r.get("error") is None
        ]
        numbers = [v for v in values if isinstance(v, int | float)]
        return statistics.median(numbers) if numbers else None


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.3f}" if abs(value) < 10 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return "-" if value is None else str(value)


def _verdict(check: dict[str, Any]) -> str:
    if check["ok"] is None:
        return f"n/a({check['target']}: {check.get('note', 'not measured')})"
    return f"{'ok' if check['ok'] else 'MISS'}({check['target']})"


def table(records: list[dict[str, Any]]) -> str:
    """A plain-text table: one row per scenario run, its headline figures and targets."""
    rows = [("scenario", "figures", "targets")]
    for r in records:
        if r.get("error"):
            rows.append((r["scenario"], f"ERROR: {r['error'][:70]}", ""))
            continue
        figures = ", ".join(
            f"{name.replace('latency_ms.', '')}={_fmt(lookup(r['metrics'], name))}"
            for name in HEADLINE.get(r["scenario"].removesuffix("-suspended"), [])
            if lookup(r["metrics"], name) is not None
        )
        verdicts = " ".join(_verdict(c) for c in r.get("checks", []))
        rows.append((r["scenario"], figures, verdicts))
    width = [max(len(row[i]) for row in rows) for i in range(2)]
    lines = [f"{a:<{width[0]}}  {b:<{width[1]}}  {c}".rstrip() for a, b, c in rows]
    lines.insert(1, "-" * min(120, max(len(line) for line in lines)))
    return "\n".join(lines)


def eprint(*args: Any) -> None:
    """Progress messages go to stderr; stdout carries the JSON lines."""
    print(*args, file=sys.stderr, flush=True)
