"""The service under test, started as a user would: ``.venv/bin/mail-proxy serve`` + GMP_* env.

Also the memory sampler (peak RSS by psutil, in a thread so it keeps its pace whatever the
orchestrator's event loop does) and the few admin calls the scenarios need.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from pathlib import Path
from typing import Any

import aiohttp
import psutil

from .procs import REPO, ProcessFailed, free_port, stop

ENTRY_POINT = REPO / ".venv" / "bin" / "mail-proxy"
TOKEN = "bench-admin-token"
#: Test-suite plugins installed in a developer's venv; a user's install has none of them.
TEST_PLUGINS = "gmp_test,vault,example"
MB = 1024 * 1024


def setting_env(key: str) -> str:
    """``max_concurrent_sends`` → ``GMP_MAX_CONCURRENT_SENDS`` (names already GMP_* pass);
    the core's settings and every installed plugin's settings sections."""
    from mail_proxy.core.contracts.config import setting_fields
    from mail_proxy.core.plugins.loader import create_plugin_manager
    from mail_proxy.core.plugins.registry import Registry

    if key.upper().startswith("GMP_") or key.upper().startswith("MAIL_PROXY_"):
        return key.upper()
    sections: Registry[Any] = Registry("settings section")
    create_plugin_manager().fill("register_settings", "sections", sections)
    declared = [
        *setting_fields(),
        *(f for _, s in sections.items() for f in setting_fields(s.settings)),
    ]
    for f in declared:
        if f.name == key:
            return str(f.metadata["env"])
    raise SystemExit(f"bench: unknown setting {key!r} in --set (see docs/configuration.md)")


class Service:
    """One ``mail-proxy serve`` process in its own work directory."""

    def __init__(
        self,
        workdir: Path,
        database_url: str,
        encryption_key: str,
        settings: dict[str, str] | None = None,
        name: str = "service",
    ) -> None:
        self.workdir = workdir
        self.name = name
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = workdir / f"{name}.log"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("GMP_")}
        self.env.update(
            {
                "GMP_API_TOKEN": TOKEN,
                "GMP_HOST": "127.0.0.1",
                "GMP_PORT": str(self.port),
                "GMP_DATABASE_URL": database_url,
                "GMP_INSTANCE_DIR": str(workdir),
                "GMP_INSTANCE_NAME": f"bench-{name}",
                "GMP_LOG_LEVEL": "WARNING",
                "GMP_DISABLED_PLUGINS": TEST_PLUGINS,
                "MAIL_PROXY_ENCRYPTION_KEY": encryption_key,
            }
        )
        self.env.update(settings or {})
        self.proc: asyncio.subprocess.Process | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    async def start(self, timeout: float = 60.0) -> None:
        """Start the process and wait until ``GET /health`` answers. The port was free when
        chosen; if another process took it meanwhile, start again on a new one."""
        for _attempt in range(3):
            if await self._start_once(timeout):
                return
            self._move_port()
        raise ProcessFailed(f"{self.name}: no free port after 3 attempts")

    async def _is_ours(self, session: aiohttp.ClientSession) -> bool:
        """The server on our port is this process (not another that took the port)."""
        async with session.get(f"{self.url}/status", headers={"X-API-Token": TOKEN}) as resp:
            data = await resp.json(content_type=None) if resp.status == 200 else {}
        if data.get("instance") == self.env["GMP_INSTANCE_NAME"]:
            return True
        await self.stop()
        return False

    def _move_port(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env["GMP_PORT"] = str(self.port)

    async def _start_once(self, timeout: float) -> bool:
        with self.log_path.open("wb") as log:
            self.proc = await asyncio.create_subprocess_exec(
                str(ENTRY_POINT),
                "serve",
                env=self.env,
                cwd=str(self.workdir),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=log,
            )
        deadline = time.monotonic() + timeout
        async with aiohttp.ClientSession() as session:
            while time.monotonic() < deadline:
                if self.proc.returncode is not None:
                    if "cannot listen" in self.log_tail():
                        return False
                    raise ProcessFailed(f"{self.name} exited at start:\n{self.log_tail()}")
                try:
                    async with session.get(f"{self.url}/health") as resp:
                        if resp.status == 200:
                            return await self._is_ours(session)
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.1)
        raise ProcessFailed(f"{self.name} did not answer /health in {timeout:.0f} s")

    async def stop(self) -> None:
        if self.proc is not None:
            await stop(self.proc)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def rss_mb(self) -> float:
        return psutil.Process(self.pid).memory_info().rss / MB


class Api:
    """The admin calls the scenarios make (account, status, activate)."""

    def __init__(self, session: aiohttp.ClientSession, url: str) -> None:
        self.session = session
        self.url = url
        self.headers = {"X-API-Token": TOKEN}

    async def call(self, method: str, path: str, body: Any = None) -> dict[str, Any]:
        async with self.session.request(
            method, self.url + path, json=body, headers=self.headers
        ) as resp:
            data: dict[str, Any] = await resp.json(content_type=None)
            if resp.status != 200 or not data.get("ok"):
                raise ProcessFailed(f"{method} {path} → {resp.status} {data}")
            return data

    async def add_account(
        self, smtp_port: int, account_id: str = "bench", default: bool = True, **fields: Any
    ) -> None:
        body = {"id": account_id, "host": "127.0.0.1", "port": smtp_port, "default": default}
        await self.call("POST", "/account", body | fields)

    async def status(self) -> dict[str, Any]:
        return await self.call("GET", "/status")

    async def loop_lag(self) -> dict[str, float]:
        """The service's ``gmp_event_loop_lag_seconds`` histogram: cumulative counts by upper
        bound (seconds; ``inf`` last). Take it before and after a load and pass both to
        :func:`lag_percentiles`."""
        async with self.session.get(self.url + "/metrics") as resp:
            text = await resp.text()
        buckets: dict[float, float] = {}
        for line in text.splitlines():
            if line.startswith("gmp_event_loop_lag_seconds_bucket{"):
                bound = line.split('le="', 1)[1].split('"', 1)[0]
                buckets[float(bound)] = float(line.rsplit(" ", 1)[1])
        return buckets

    async def activate(self) -> None:
        async with self.session.post(self.url + "/commands/activate", headers=self.headers) as resp:
            data = await resp.json(content_type=None)
            if resp.status != 200 or not data.get("scheduler_active"):
                raise ProcessFailed(f"activate → {resp.status} {data}")


def lag_percentiles(before: dict[float, float], after: dict[float, float]) -> dict[str, Any]:
    """The loop lag observed between two :meth:`Api.loop_lag` readings: samples, and the
    p50/p99/max as the upper bound (ms) of the histogram bucket each falls in (the service
    samples the loop every 50 ms; engine/loop_lag.py)."""
    counts = {b: after[b] - before.get(b, 0.0) for b in sorted(after)}
    total = counts.get(float("inf"), 0.0)
    out: dict[str, Any] = {"samples": int(total)}
    if not total:
        return out
    for name, q in (("p50", 0.50), ("p99", 0.99), ("max", 1.0)):
        bound = next(b for b, n in counts.items() if n >= q * total)
        out[name + "_ms_at_most"] = None if bound == float("inf") else round(bound * 1000, 1)
    return out


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds used so far by some processes (all their threads)."""
    total = 0.0
    for pid in pids:
        try:
            times = psutil.Process(pid).cpu_times()
        except psutil.Error:
            continue
        total += times.user + times.system
    return total


class CpuMeter:
    """CPU used by some processes between its creation and :meth:`ms_per` (noise-robust:
    other work on the machine slows a process down but does not add to its CPU time)."""

    def __init__(self, pids: list[int]) -> None:
        self.pids = pids
        self.start = cpu_seconds(pids)

    def seconds(self) -> float:
        return cpu_seconds(self.pids) - self.start

    def ms_per(self, count: int) -> float:
        return round(1000 * self.seconds() / max(1, count), 3)


class RssSampler:
    """Samples the RSS of some processes every ``interval`` seconds in a daemon thread."""

    def __init__(self, pids: list[int], interval: float = 0.05) -> None:
        self.procs = [psutil.Process(pid) for pid in pids]
        self.interval = interval
        self.peak_mb = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak_mb = max(self.peak_mb, self.current_mb())
            self._stop.wait(self.interval)

    def current_mb(self) -> float:
        """The largest RSS among the sampled processes (MB)."""
        values = [0.0]
        for proc in self.procs:
            try:
                values.append(proc.memory_info().rss / MB)
            except psutil.Error:
                pass
        return max(values)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak_mb = max(self.peak_mb, self.current_mb())
