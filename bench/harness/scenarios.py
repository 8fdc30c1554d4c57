"""The scenarios: each starts what it needs, measures one thing, and returns its figures.

Sizes are the issue's, multiplied by ``--scale`` (small scales are for debugging the harness).
Every scenario gets a fresh sink, fresh service process(es) and a fresh database (a SQLite
file in a temporary directory, or its own PostgreSQL schema, dropped afterwards).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import aiohttp

from . import bounce, console, large_files, latency
from .procs import ProcessFailed, run_module
from .profile import Profiler, render, summarize
from .relay import RelayHandle
from .report import RESULTS_DIR, Results, eprint
from .service import Api, CpuMeter, RssSampler, Service, lag_percentiles, setting_env
from .sink import SinkHandle

ORDER = [
    "ceiling",
    "enqueue",
    "enqueue-suspended",
    "batch",
    "batch-suspended",
    "e2e",
    "e2e-pg",
    "e2e-pg-2",
    "backlog",
    "attachments",
    "large-files",
    "bounce",
    "e2e-latency",
    "e2e-many-accounts",
    "e2e-stalled-neighbour",
    "console-pg",
]
DEFAULT_PG_URL = "postgresql://postgres@127.0.0.1:5432/test"
STALL_S = 30.0
DUP_GRACE_S = 1.0
E2E_BODY = 1024


@dataclass
class Options:
    scale: float = 1.0
    pg_url: str = DEFAULT_PG_URL
    settings: dict[str, str] = field(default_factory=dict)
    profile: set[str] = field(default_factory=set)
    workroot: Path = Path("/tmp")


@dataclass
class Stack:
    """What a scenario runs against: a sink, the service instance(s), an admin client, and
    the latency relay in front of the sink when the scenario has one."""

    sink: SinkHandle
    services: list[Service]
    api: Api
    relay: RelayHandle | None = None

    @property
    def urls(self) -> list[str]:
        return [s.url for s in self.services]

    @property
    def pids(self) -> list[int]:
        return [s.pid for s in self.services]


@dataclass
class Measured:
    params: dict[str, Any]
    metrics: dict[str, Any]
    profile: dict[str, Any] | None = None


def with_schema(url: str, schema: str) -> str:
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query) if k != "schema"]
    query.append(("schema", schema))
    return urlunsplit(parts._replace(query=urlencode(query)))


def without_schema(url: str) -> str:
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query) if k != "schema"]
    return urlunsplit(parts._replace(query=urlencode(query)))


async def drop_schema(url: str, schema: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(without_schema(url), timeout=10)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()


async def check_postgres(url: str) -> None:
    import asyncpg

    try:
        conn = await asyncpg.connect(without_schema(url), timeout=5)
    except (OSError, asyncpg.PostgresError, asyncio.TimeoutError) as exc:
        raise ProcessFailed(f"PostgreSQL not reachable at {without_schema(url)}: {exc}") from None
    await conn.close()


class Bench:
    """Runs scenarios with shared options; ratios use this run's earlier results."""

    def __init__(self, opts: Options, results: Results, encryption_key: str) -> None:
        self.opts = opts
        self.results = results
        self.key = encryption_key
        self.run_index = 0
        self.handlers: dict[str, Callable[[], Awaitable[Measured]]] = {
            "ceiling": self.ceiling,
            "enqueue": self.enqueue,
            "enqueue-suspended": lambda: self.enqueue(dispatch=False),
            "batch": self.batch,
            "batch-suspended": lambda: self.batch(dispatch=False),
            "e2e": lambda: self.e2e("sqlite", 1),
            "e2e-pg": lambda: self.e2e("postgresql", 1),
            "e2e-pg-2": lambda: self.e2e("postgresql", 2),
            "backlog": self.backlog,
            "attachments": self.attachments,
            "large-files": lambda: large_files.run(self),  # large_files.py
            "bounce": lambda: bounce.run(self),  # the bounce plugin: bounce.py
            "e2e-latency": lambda: latency.e2e_latency(self),  # distant servers: latency.py
            "e2e-many-accounts": lambda: latency.e2e_many_accounts(self),
            "e2e-stalled-neighbour": lambda: latency.e2e_stalled_neighbour(self),
            # the console's messages page on 1,000,000 messages: console.py
            "console-pg": lambda: console.run(self),
        }
        self.current = ""

    def size(self, base: int) -> int:
        return max(1, round(base * self.opts.scale))

    def service_settings(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        merged = dict(self.opts.settings)
        for key, value in (extra or {}).items():
            merged.setdefault(setting_env(key), value)
        return merged

    # -- plumbing ---------------------------------------------------------------------------
    @contextlib.asynccontextmanager
    async def stack(
        self,
        database: str = "sqlite",
        instances: int = 1,
        settings: dict[str, str] | None = None,
        *,
        sink_delay: float = 0.0,
        rtt_ms: float = 0.0,
        accounts: list[dict[str, Any]] | None = None,
    ) -> AsyncIterator[Stack]:
        """Sink (taking ``sink_delay`` s to accept each message), a relay adding ``rtt_ms``
        per round trip if not 0, the service(s), and ``accounts`` (fields besides host and
        port; default: one ``bench`` account, the default one) pointing at the relay or the
        sink."""
        workdir = self.opts.workroot / f"{self.current}-{self.run_index}-{secrets.token_hex(3)}"
        workdir.mkdir(parents=True)
        schema = None
        if database == "sqlite":
            url = f"sqlite:///{workdir / 'bench.db'}"
        else:
            await check_postgres(self.opts.pg_url)
            schema = f"bench_{secrets.token_hex(4)}"
            url = with_schema(self.opts.pg_url, schema)
        sink = SinkHandle(sink_delay)
        relay = None
        services: list[Service] = []
        try:
            await sink.start()
            smtp_port = sink.smtp_port
            if rtt_ms:
                relay = RelayHandle(sink.smtp_port, rtt_ms)
                await relay.start()
                smtp_port = relay.port
            for n in range(instances):
                home = workdir / f"service{n + 1}"
                home.mkdir()
                env = self.service_settings(settings)
                svc = Service(home, url, self.key, env, f"service{n + 1}")
                services.append(svc)
                await svc.start()
            async with aiohttp.ClientSession() as session:
                api = Api(session, services[0].url)
                for fields in accounts or [{"account_id": "bench", "default": True}]:
                    await api.add_account(smtp_port, **fields)
                yield Stack(sink, services, api, relay)
        except BaseException:
            for svc in services:
                eprint(f"-- {svc.name} log tail:\n{svc.log_tail()}")
            raise
        finally:
            for svc in services:
                await svc.stop()
            if relay is not None:
                await relay.stop()
            await sink.stop()
            if schema is not None:
                await drop_schema(self.opts.pg_url, schema)

    @contextlib.asynccontextmanager
    async def profiled(self, pids: list[int], out: dict[str, Any]) -> AsyncIterator[None]:
        """Record a py-spy profile of ``pids`` around the block if this scenario asked for it."""
        if self.current not in self.opts.profile:
            yield
            return
        suffix = f"-run{self.run_index + 1}" if self.run_index else ""
        name = f"profile-{self.current}-{self.results.revision}{suffix}"
        profiler = Profiler(pids, RESULTS_DIR / name)
        await profiler.start()
        try:
            yield
        finally:
            folded = await profiler.stop()
            files, tops = [], []
            for path in folded:
                summary = summarize(path, seconds=profiler.seconds)
                eprint(f"-- profile {path.name}\n{render(summary)}")
                files.append(path.name)
                tops.append(
                    {
                        "loop_busy_pct": summary.get("loop_busy_pct"),
                        "own": summary["own"][:10],
                        "project": summary["project"][:10],
                    }
                )
            out.update({"files": files, "summary": tops})

    async def load(self, spec: dict[str, Any], timeout: float = 3600) -> dict[str, Any]:
        result = await run_module("harness.load", spec, timeout)
        failed = result.get("errors", 0) + result.get("warmup_errors", 0)
        if failed:
            eprint(f"   load: {failed} failed requests, first: {result['first_error']}")
        return result

    def batches_spec(self, stack: Stack, prefix: str, count: int, **extra: Any) -> dict[str, Any]:
        return {
            "mode": "batches",
            "urls": stack.urls,
            "token": stack.api.headers["X-API-Token"],
            "prefix": prefix,
            "start": 0,
            "count": count,
            "batch": 500,
            "clients": 4,
            "body_bytes": 200,
            **extra,
        }

    @staticmethod
    async def delivered(sink: SinkHandle, count: int, stall: float = STALL_S) -> dict[str, Any]:
        """Wait for ``count`` distinct ids at the sink, then a short grace for late copies."""
        await sink.wait(count, stall, timeout=120 + count / 20)
        await asyncio.sleep(DUP_GRACE_S)
        stats = await sink.stats()
        stats["lost"] = count - stats["unique"]
        return stats

    # -- scenarios ------------------------------------------------------------------------------
    async def ceiling(self) -> Measured:
        """The sink driven by a bare pooled SMTP client: the machine's limit for e2e."""
        from mail_proxy.core.contracts.config import load_settings
        from mail_proxy.core.contracts.model import Account

        count = self.size(10_000)
        # as many connections as the service uses for the bench account (its max_connections)
        default_connections = Account("t", "a", "h", 25).max_connections
        settings = load_settings(env=self.service_settings())
        connections = min(default_connections, settings.max_sends_per_account)
        sink = SinkHandle()
        await sink.start()
        try:
            spec = {
                "port": sink.smtp_port,
                "count": count,
                "connections": connections,
                "prefix": "ceil",
                "body_bytes": E2E_BODY,
            }
            sink_cpu = CpuMeter([sink.pid])
            result = await run_module("harness.ceiling", spec, timeout=600)
            stats = await self.delivered(sink, count)
            sink_ms = sink_cpu.ms_per(count)
        finally:
            await sink.stop()
        elapsed = (stats["last_ts"] or result["t_start"]) - result["t_start"]
        return Measured(
            {"messages": count, "connections": connections, "body_bytes": E2E_BODY},
            {
                "messages_per_s": round(stats["unique"] / elapsed, 1) if elapsed > 0 else 0.0,
                "elapsed_s": round(elapsed, 3),
                "errors": result["errors"],
                "lost": stats["lost"],
                "duplicated": stats["duplicated"],
                "client_cpu_ms_per_msg": round(1000 * result["cpu_s"] / count, 3),
                "sink_cpu_ms_per_msg": sink_ms,
            },
        )

    async def enqueue(self, dispatch: bool = True) -> Measured:
        """Single-message requests from 50 concurrent clients: latency and requests/s.

        With ``dispatch`` the service delivers what it accepts at the same time (as in
        production); without it (``GMP_SCHEDULER_ACTIVE=false``) only the intake path runs.
        """
        requests, clients, warmup = self.size(5_000), 50, self.size(250)
        profile: dict[str, Any] = {}
        async with self.stack(settings=_dispatch(dispatch)) as stack:
            spec = {
                "mode": "single",
                "urls": stack.urls,
                "token": stack.api.headers["X-API-Token"],
                "prefix": "enq",
                "requests": requests,
                "warmup": warmup,
                "clients": clients,
                "body_bytes": 200,
            }
            lag_before = await stack.api.loop_lag()
            async with self.profiled(stack.pids, profile):
                cpu = CpuMeter(stack.pids)
                result = await self.load(spec)
                cpu_ms = cpu.ms_per(requests + warmup)
            lag = lag_percentiles(lag_before, await stack.api.loop_lag())
            pending = (await stack.api.status())["pending_messages"]
        # requests_per_s and latency_ms cover the successful requests only (harness.load)
        metrics = {k: result[k] for k in ("requests_per_s", "latency_ms", "elapsed_s")}
        metrics.update(
            service_cpu_ms_per_request=cpu_ms,
            succeeded=result["succeeded"],
            # every failed request, the untimed warm-up included
            errors=result["errors"] + result["warmup_errors"],
            warmup_errors=result["warmup_errors"],
            rejected=result["rejected"],
            pending_after=pending,
            loop_lag=lag,
            load_avg_1m=round(os.getloadavg()[0], 2),
        )
        params = {
            "requests": requests,
            "clients": clients,
            "warmup": warmup,
            "body_bytes": 200,
            "dispatch": dispatch,
        }
        return Measured(params, metrics, profile or None)

    async def batch(self, dispatch: bool = True) -> Measured:
        """Batches of 500 messages as fast as accepted (dispatch on or off, as for enqueue)."""
        count = self.size(50_000)
        profile: dict[str, Any] = {}
        async with self.stack(settings=_dispatch(dispatch)) as stack:
            spec = self.batches_spec(stack, "bat", count)
            async with self.profiled(stack.pids, profile):
                cpu = CpuMeter(stack.pids)
                result = await self.load(spec)
                cpu_ms = cpu.ms_per(count)
        return Measured(
            {
                "messages": count,
                "batch": spec["batch"],
                "clients": spec["clients"],
                "dispatch": dispatch,
            },
            {
                "messages_per_s": result["messages_per_s"],
                "service_cpu_ms_per_msg": cpu_ms,
                "elapsed_s": result["elapsed_s"],
                "accepted": result["accepted"],
                "errors": result["errors"],
                "rejected": result["rejected"],
            },
            profile or None,
        )

    async def e2e(self, database: str, instances: int) -> Measured:
        """~1 KB messages enqueued in batches; time until the sink has them all."""
        count = self.size(10_000)
        profile: dict[str, Any] = {}
        async with self.stack(database, instances) as stack:
            spec = self.batches_spec(stack, "e2e", count, body_bytes=E2E_BODY, clients=2)
            async with self.profiled(stack.pids, profile):
                cpu, sink_cpu = CpuMeter(stack.pids), CpuMeter([stack.sink.pid])
                load = await self.load(spec)
                stats = await self.delivered(stack.sink, count)
                cpu_ms, sink_ms = cpu.ms_per(count), sink_cpu.ms_per(count)
            pending = (await stack.api.status())["pending_messages"]
        total = (stats["last_ts"] or load["t_end"]) - load["t_start"]
        metrics: dict[str, Any] = {
            "delivered_per_s": round(stats["unique"] / total, 1) if total > 0 else 0.0,
            "total_s": round(total, 3),
            "enqueue_s": load["elapsed_s"],
            "first_delivery_s": round((stats["first_ts"] or 0) - load["t_start"], 3),
            "lost": stats["lost"],
            "duplicated": stats["duplicated"],
            "pending_after": pending,
            "enqueue_errors": load["errors"],
            "service_cpu_ms_per_msg": cpu_ms,
            # messages per second of service CPU: the rate one full core would give
            "msgs_per_service_cpu_s": round(1000 / cpu_ms, 1) if cpu_ms else None,
            "sink_cpu_ms_per_msg": sink_ms,
        }
        ceiling = self.results.medians("ceiling", "messages_per_s")
        if ceiling:
            metrics["fraction_of_ceiling"] = round(metrics["delivered_per_s"] / ceiling, 3)
        if instances > 1:
            single = self.results.medians("e2e-pg", "delivered_per_s")
            if single:
                metrics["scaling_ratio"] = round(metrics["delivered_per_s"] / single, 3)
        params = {
            "messages": count,
            "database": database,
            "instances": instances,
            "batch": spec["batch"],
            "body_bytes": E2E_BODY,
        }
        return Measured(params, metrics, profile or None)

    async def backlog(self) -> Measured:
        """Queue 100,000 with dispatch suspended, then activate and drain: memory and time."""
        count = self.size(100_000)
        tenth = max(1, count // 10)
        profile: dict[str, Any] = {}
        async with self.stack(settings={"scheduler_active": "false"}) as stack:
            svc = stack.services[0]
            with RssSampler(stack.pids) as sampler:
                idle = svc.rss_mb()
                first = await self.load(self.batches_spec(stack, "bl", tenth))
                at_tenth = svc.rss_mb()
                rest = await self.load(self.batches_spec(stack, "bl", count - tenth, start=tenth))
                at_full = svc.rss_mb()
                fill_peak = sampler.peak_mb
                queued = (await stack.api.status())["pending_messages"]
                activated = time.time()
                async with self.profiled(stack.pids, profile):
                    cpu = CpuMeter(stack.pids)
                    await stack.api.activate()
                    stats = await self.delivered(stack.sink, count, stall=60)
                    cpu_ms = cpu.ms_per(count)
            pending = (await stack.api.status())["pending_messages"]
        drain = (stats["last_ts"] or activated) - activated
        fill_s = first["elapsed_s"] + rest["elapsed_s"]
        metrics = {
            "peak_rss_mb": round(sampler.peak_mb, 1),
            "fill_peak_rss_mb": round(fill_peak, 1),
            "idle_rss_mb": round(idle, 1),
            "rss_at_tenth_mb": round(at_tenth, 1),
            "rss_at_full_mb": round(at_full, 1),
            "queued": queued,
            "fill_s": round(fill_s, 3),
            "drain_s": round(drain, 3),
            "drain_per_s": round(stats["unique"] / drain, 1) if drain > 0 else 0.0,
            "drain_cpu_ms_per_msg": cpu_ms,
            "lost": stats["lost"],
            "duplicated": stats["duplicated"],
            "pending_after": pending,
            "enqueue_errors": first["errors"] + rest["errors"],
        }
        params = {"messages": count, "tenth": tenth, "sample_interval_s": sampler.interval}
        return Measured(params, metrics, profile or None)

    async def attachments(self) -> Measured:
        """Messages with a 20 MB file each (filesystem fetch): peak memory of the service."""
        count, size_mb = self.size(20), 20
        files_dir = self.opts.workroot / f"attachments-{secrets.token_hex(3)}"
        files_dir.mkdir(parents=True)
        try:
            paths = await asyncio.to_thread(write_files, files_dir, count, size_mb)
            attachments = [
                [{"filename": p.name, "storage_path": str(p), "fetch_mode": "filesystem"}]
                for p in paths
            ]
            settings = {"attachment_base_dirs": str(files_dir)}
            profile: dict[str, Any] = {}
            async with self.stack(settings=settings) as stack:
                with RssSampler(stack.pids) as sampler:
                    baseline = stack.services[0].rss_mb()
                    spec = self.batches_spec(
                        stack, "att", count, batch=count, clients=1, attachments=attachments
                    )
                    async with self.profiled(stack.pids, profile):
                        load = await self.load(spec)
                        stats = await self.delivered(stack.sink, count, stall=120)
                pending = (await stack.api.status())["pending_messages"]
        finally:
            await asyncio.to_thread(remove_files, files_dir)
        total = (stats["last_ts"] or load["t_end"]) - load["t_start"]
        metrics = {
            "peak_rss_mb": round(sampler.peak_mb, 1),
            "baseline_rss_mb": round(baseline, 1),
            "attachments_sum_mb": count * size_mb,
            "peak_rss_of_attachments_sum": round(sampler.peak_mb / (count * size_mb), 3),
            "delivered": stats["unique"],
            "total_s": round(total, 3),
            "lost": stats["lost"],
            "duplicated": stats["duplicated"],
            "pending_after": pending,
            "enqueue_errors": load["errors"],
        }
        params = {"messages": count, "attachment_mb": size_mb, "fetch_mode": "filesystem"}
        return Measured(params, metrics, profile or None)


def _dispatch(active: bool) -> dict[str, str] | None:
    return None if active else {"scheduler_active": "false"}


def write_files(directory: Path, count: int, size_mb: int) -> list[Path]:
    """``count`` distinct incompressible files of ``size_mb`` MB (no cache can share them)."""
    paths = []
    for n in range(count):
        path = directory / f"attachment-{n:03d}.bin"
        with path.open("wb") as out:
            for _ in range(size_mb):
                out.write(os.urandom(1024 * 1024))
        paths.append(path)
    return paths


def remove_files(directory: Path) -> None:
    for path in directory.iterdir():
        path.unlink()
    directory.rmdir()
