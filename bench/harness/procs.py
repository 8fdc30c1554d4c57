"""Child processes of the harness: start with the harness on PYTHONPATH, stop them for sure."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import sys
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent.parent
REPO = BENCH_DIR.parent
PYTHON = sys.executable


class ProcessFailed(RuntimeError):
    """A child process exited badly or did not answer in time."""


def harness_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for a child: ours, with ``bench/`` on PYTHONPATH."""
    env = dict(os.environ)
    path = env.get("PYTHONPATH")
    env["PYTHONPATH"] = str(BENCH_DIR) + (os.pathsep + path if path else "")
    env.update(extra or {})
    return env


def free_port(host: str = "127.0.0.1") -> int:
    """An ephemeral port that was free a moment ago (for servers that need a port number)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


async def spawn_module(module: str, *args: str, **kwargs: Any) -> asyncio.subprocess.Process:
    """Start ``python -m module args`` with stdout piped (for its JSON lines)."""
    return await asyncio.create_subprocess_exec(
        PYTHON,
        "-m",
        module,
        *args,
        stdout=asyncio.subprocess.PIPE,
        env=harness_env(),
        cwd=str(BENCH_DIR),
        **kwargs,
    )


async def read_json_line(proc: asyncio.subprocess.Process, timeout: float) -> dict[str, Any]:
    """The next JSON line a child prints on stdout."""
    assert proc.stdout is not None
    try:
        line = await asyncio.wait_for(proc.stdout.readline(), timeout)
    except asyncio.TimeoutError:
        raise ProcessFailed(f"pid {proc.pid}: no answer within {timeout:.0f} s") from None
    if not line:
        code = await proc.wait()
        raise ProcessFailed(f"pid {proc.pid} exited with code {code} before answering")
    result: dict[str, Any] = json.loads(line)
    return result


async def run_module(module: str, spec: dict[str, Any], timeout: float) -> dict[str, Any]:
    """Run a child that takes a JSON spec as argument and prints one JSON result line."""
    proc = await spawn_module(module, json.dumps(spec))
    try:
        result = await read_json_line(proc, timeout)
        await asyncio.wait_for(proc.wait(), 30)
        return result
    finally:
        await stop(proc)


async def stop(proc: asyncio.subprocess.Process, grace: float = 15.0) -> int | None:
    """SIGTERM, then SIGKILL after ``grace`` seconds; returns the exit code."""
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), grace)
        except asyncio.TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
    return proc.returncode
