"""Run the real ``mail-proxy`` console script in subprocesses, each test with its own GMP_HOME.

``Cli(home)("start", "srv", "--port", "0")`` → :class:`Result` (exit code, stdout, stderr).
The environment is the test process's minus every ``GMP_*`` / ``MAIL_PROXY_*`` variable, so
the outer shell cannot change what the CLI does. :meth:`Cli.cleanup` stops every server
started under the home (SIGTERM, then SIGKILL), whatever state the test left.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MAIL_PROXY = str(Path(sys.executable).parent / "mail-proxy")
HEAVY_MODULES = ("sqlalchemy", "aiosqlite", "asyncpg", "aiosmtplib", "aioimaplib")


def clean_env(home: Path, **extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("GMP_", "MAIL_PROXY_")) and k != "PYTHONWARNINGS"
    }
    env["GMP_HOME"] = str(home)
    env.update(extra)
    return env


@dataclass
class Result:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)

    def __str__(self) -> str:
        return f"exit {self.code}\n--- stdout\n{self.out}\n--- stderr\n{self.err}"


class Cli:
    def __init__(self, home: Path, **env: str) -> None:
        self.home = home
        self.env = clean_env(home, **env)

    def __call__(self, *args: str, stdin: str | None = None, timeout: float = 60) -> Result:
        proc = subprocess.run(
            [MAIL_PROXY, *args],
            input=stdin,
            stdin=None if stdin is not None else subprocess.DEVNULL,
            capture_output=True,
            text=True,
            env=self.env,
            timeout=timeout,
        )
        return Result(proc.returncode, proc.stdout, proc.stderr)

    def ok(self, *args: str, **kwargs: Any) -> Result:
        result = self(*args, **kwargs)
        assert result.code == 0, f"mail-proxy {' '.join(args)}\n{result}"
        return result

    def config(self, name: str) -> dict[str, Any]:
        if sys.version_info >= (3, 11):
            import tomllib
        else:  # pragma: no cover
            import tomli as tomllib

        return tomllib.loads((self.home / name / "config.toml").read_text())

    def token(self, name: str) -> str:
        return str(self.config(name)["api_token"])

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.config(name)['port']}"

    def pid(self, name: str) -> int | None:
        path = self.home / name / "mail-proxy.pid"
        return int(path.read_text()) if path.exists() else None

    def cleanup(self) -> None:
        """Stop every server under the home, SIGKILL after a few seconds."""
        pids = []
        for pid_file in self.home.glob("*/mail-proxy.pid"):
            with contextlib.suppress(ValueError, OSError):
                pid = int(pid_file.read_text())
                os.kill(pid, signal.SIGTERM)
                pids.append(pid)
        deadline = time.monotonic() + 5
        for pid in pids:
            while time.monotonic() < deadline and _alive(pid):
                time.sleep(0.05)
            if _alive(pid):
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    try:  # a zombie is gone for our purposes
        return Path(f"/proc/{pid}/cmdline").read_bytes() != b""
    except OSError:
        return True


def http(
    method: str, url: str, token: str | None = None, body: Any = None, timeout: float = 10
) -> tuple[int, Any]:
    """One real HTTP request; returns ``(status, decoded JSON or text)``."""
    headers = {"X-API-Token": token} if token else {}
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    req = urllib.request.Request(url, data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            status, raw = resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw.decode(errors="replace")


def run_in_pty(
    argv: list[str], env: dict[str, str], answers: list[tuple[str, str]], timeout: float = 30
) -> tuple[int, str]:
    """Run ``argv`` with a pseudo-terminal as its controlling terminal; when the output
    shows each prompt in ``answers`` (in order), type the answer. Returns (exit, output)."""
    import fcntl
    import termios

    master, slave = os.openpty()

    def make_controlling_tty() -> None:
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    proc = subprocess.Popen(
        argv,
        stdin=slave,
        stdout=slave,
        stderr=slave,
        env=env,
        start_new_session=True,
        preexec_fn=make_controlling_tty,
        close_fds=True,
    )
    os.close(slave)
    output = b""
    pending = list(answers)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.1)
            if ready:
                try:
                    chunk = os.read(master, 4096)
                except OSError:  # EIO: the child closed the terminal
                    break
                if not chunk:
                    break
                output += chunk
            if pending and pending[0][0].encode() in output.rsplit(b"\n", 1)[-1]:
                os.write(master, pending.pop(0)[1].encode() + b"\n")
                output += b"\n"  # keep later prompts on their own line for matching
            if proc.poll() is not None and not ready:
                break
        else:
            proc.kill()
            raise AssertionError(f"timed out; output so far:\n{output.decode(errors='replace')}")
        return proc.wait(10), output.decode(errors="replace")
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
