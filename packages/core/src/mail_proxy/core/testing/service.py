"""Run the real service (``mail-proxy serve``) in its own process for tests and benchmarks.

``free_port`` is re-exported here for the tests that start a service and a server.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp

from mail_proxy.core.testing.net import free_port

BIN = Path(sys.executable).parent / "mail-proxy"


class ServiceProcess:
    """One ``mail-proxy serve`` process configured through ``GMP_*`` variables."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.port = free_port()
        self.env = {**os.environ, **env, "GMP_PORT": str(self.port), "GMP_HOST": "127.0.0.1"}
        self.token = self.env["GMP_API_TOKEN"]
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def headers(self) -> dict[str, str]:
        return {"X-API-Token": self.token}

    async def start(self, timeout: float = 20.0) -> ServiceProcess:
        """Start the process and wait until it answers. A port taken between ``free_port``
        and the bind (another test's process, under xdist) means a new port and a new try."""
        for _ in range(3):
            start = self.log_path.stat().st_size if self.log_path.exists() else 0
            with self.log_path.open("ab") as log:  # the child keeps its own descriptor
                self.proc = subprocess.Popen(
                    [str(BIN), "serve"], env=self.env, stdout=log, stderr=log
                )
            if await self._ready(timeout):
                return self
            text = self.log_path.read_text(errors="replace")[start:]
            if "address already in use" not in text.lower():
                raise RuntimeError(f"service exited: {text[-2000:]}")
            self.port = free_port()
            self.env["GMP_PORT"] = str(self.port)
        raise RuntimeError("service: no free port after 3 tries")

    async def _ready(self, timeout: float) -> bool:
        """True once this process answers; False if it exited. ``/health`` alone is not
        enough: another process may hold the port; ``GET /instance`` names our pid."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        async with aiohttp.ClientSession() as session:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    return False
                try:
                    async with session.get(self.url + "/health") as resp:
                        healthy = resp.status == 200
                    if healthy and await self._is_ours(session):
                        return True
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.1)
        raise RuntimeError(f"service did not answer /health: {self.log_path.read_text()[-2000:]}")

    async def _is_ours(self, session: aiohttp.ClientSession) -> bool:
        async with session.get(self.url + "/instance", headers=self.headers) as resp:
            if resp.status != 200:
                return False  # another server, or another service with another token
            data = await resp.json()
        pid = str(data.get("instance", {}).get("instance_id", "")).split(":")[1:2]
        return pid == [str(self.proc.pid if self.proc else "")]

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()

    async def call(self, method: str, path: str, **kwargs: Any) -> Any:
        async with aiohttp.ClientSession() as session:
            async with session.request(
                method, self.url + path, headers=self.headers, **kwargs
            ) as resp:
                data = await resp.json()
                assert resp.status == 200, (resp.status, data)
                return data
