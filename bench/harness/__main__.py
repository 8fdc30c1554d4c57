"""``bench/run``: parse the options, run the chosen scenarios, write and print the results."""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

from .procs import REPO
from .report import (
    Results,
    checks,
    eprint,
    git_revision,
    machine,
    no_loss_misses,
    performance_misses,
    table,
)
from .scenarios import DEFAULT_PG_URL, ORDER, Bench, Options
from .service import setting_env


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bench/run",
        description="Benchmark genro-mail-proxy: start the service and an SMTP sink, drive the "
        "REST API, print one JSON line per scenario run and a table. See bench/README.md.",
    )
    parser.add_argument(
        "--scenarios",
        default="all",
        help=f"comma-separated, from: {','.join(ORDER)} (default: all)",
    )
    parser.add_argument(
        "--database-url",
        default=os.environ.get("GMP_BENCH_DATABASE_URL", DEFAULT_PG_URL),
        help="PostgreSQL server for the e2e-pg scenarios; each run uses its own schema "
        f"(default: $GMP_BENCH_DATABASE_URL or {DEFAULT_PG_URL})",
    )
    parser.add_argument("--runs", type=int, default=1, help="repeat each scenario N times")
    parser.add_argument(
        "--scale", type=float, default=1.0, help="multiply every size (0.05 to debug quickly)"
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="service setting for every scenario, e.g. max_concurrent_sends=128 or "
        "GMP_CLAIM_BATCH_SIZE=1000 (default: the product's defaults)",
    )
    parser.add_argument(
        "--profile",
        default="",
        metavar="SCENARIOS",
        help="comma-separated scenarios to profile with py-spy (flame graph + folded stacks "
        "in bench/results/)",
    )
    parser.add_argument(
        "--output",
        type=Path,
        help="results file (default: bench/results/<date>-<revision>.jsonl)",
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the temporary directories (logs, databases)"
    )
    args = parser.parse_args(argv)
    args.chosen = ORDER if args.scenarios == "all" else names(parser, args.scenarios)
    args.profiled = set(names(parser, args.profile)) if args.profile else set()
    if args.runs < 1 or args.scale <= 0:
        parser.error("--runs must be ≥ 1 and --scale > 0")
    return args


def names(parser: argparse.ArgumentParser, text: str) -> list[str]:
    chosen = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in chosen if n not in ORDER]
    if unknown:
        parser.error(f"unknown scenario(s) {', '.join(unknown)}; known: {', '.join(ORDER)}")
    # ratios need their reference first: run in the canonical order whatever the order given
    return [n for n in ORDER if n in chosen]


def settings_env(pairs: list[str]) -> dict[str, str]:
    env = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise SystemExit(f"bench: --set wants KEY=VALUE, got {pair!r}")
        env[setting_env(key.strip())] = value.strip()
    return env


async def run(args: argparse.Namespace) -> int:
    from mail_proxy.core.engine.encryption import generate_key

    revision = git_revision()
    results = Results(revision, args.output)
    workroot = Path(tempfile.mkdtemp(prefix="gmp-bench-"))
    opts = Options(
        scale=args.scale,
        pg_url=args.database_url,
        settings=settings_env(args.set),
        profile=args.profiled,
        workroot=workroot,
    )
    bench = Bench(opts, results, generate_key())
    eprint(f"bench: revision {revision}, scenarios {','.join(args.chosen)}, scale {args.scale}")
    try:
        for name in args.chosen:
            for index in range(args.runs):
                bench.current, bench.run_index = name, index
                eprint(f"== {name} (run {index + 1}/{args.runs})")
                record = {
                    "scenario": name,
                    "run": index + 1,
                    "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                    "revision": revision,
                    "machine": machine(),
                    "scale": args.scale,
                    "settings": opts.settings,
                }
                try:
                    measured = await bench.handlers[name]()
                except Exception as exc:
                    traceback.print_exc()
                    record["error"] = f"{type(exc).__name__}: {exc}"
                else:
                    record["params"] = measured.params
                    record["metrics"] = measured.metrics
                    record["checks"] = checks(name, measured.metrics)
                    if measured.profile:
                        record["profile"] = measured.profile
                results.add(record)
    finally:
        if args.keep:
            eprint(f"bench: kept {workroot}")
        else:
            shutil.rmtree(workroot, ignore_errors=True)
    print()
    print(table(results.records))
    path = results.path.resolve()
    print(f"\nresults: {path.relative_to(REPO) if path.is_relative_to(REPO) else path}")
    return exit_status(results.records)


def exit_status(records: list[dict[str, Any]]) -> int:
    """1 when a scenario failed or a no-loss target (lost, duplicated, errors == 0) was
    missed, each printed; performance targets that miss are reported but leave it at 0."""
    failed = [f"{r['scenario']} (run {r.get('run', '?')})" for r in records if r.get("error")]
    misses = no_loss_misses(records)
    for name in failed:
        print(f"FAILED: {name} did not complete")
    for miss in misses:
        print(f"FAILED: no-loss target missed: {miss}")
    slow = performance_misses(records)
    if slow:
        print(f"{slow} performance target(s) missed (informative, not a failure)")
    return 1 if failed or misses else 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        return asyncio.run(run(args))
    except KeyboardInterrupt:
        eprint("bench: interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
