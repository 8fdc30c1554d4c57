"""Instance lifecycle: ``start``, ``stop``, ``restart``, ``list``.

``start NAME`` creates ``$GMP_HOME/NAME/`` on first use (config with a generated admin token,
encryption key, logs), launches ``python -m mail_proxy.core.cli.serve --instance-dir DIR`` in its
own session with output to ``logs/console.log``, and returns once ``/health`` answers.
``stop`` sends SIGTERM, then SIGKILL after ``--timeout``.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.request

from mail_proxy.core.cli.errors import CliError, UsageError
from mail_proxy.core.cli.home import (
    FIRST_PORT,
    SERVER_MODULE,
    Instance,
    all_instances,
    choose_port,
    is_server_process,
    port_is_free,
)
from mail_proxy.core.cli.output import print_json, print_table

POLL = 0.05


def start(
    name: str, /, *, port: int | None = None, host: str | None = None, timeout: float = 30.0
) -> int:
    """Create the instance on first use and start its server in the background.

    Parameters
    ----------
    name
        Instance name (a directory under $GMP_HOME).
    port
        HTTP port; remembered in the config. Default: the first free port from 8000.
    host
        Listen address; remembered in the config. Default: 127.0.0.1.
    timeout
        Seconds to wait for the server to answer /health.
    """
    from mail_proxy.core.cli.main import command_names

    if name in command_names("global"):
        raise UsageError(f"{name!r} is a command name and cannot name an instance")
    inst = Instance.named(name)
    if not inst.exists:
        token = create(inst, port, host)
        print(f"Created instance {name!r} in {inst.dir}")
        print(f"Admin token (keep it secret; `mail-proxy {name} token` shows it again):")
        print(f"  {token}")
    pid = inst.running_pid()
    if pid is not None:
        if port is not None and port != inst.port:
            raise CliError(f"{name!r} is running on port {inst.port}: use restart --port {port}")
        print(f"{name!r} is already running at {inst.url} (pid {pid})")
        return 0
    update_address(inst, port, host)
    pid = launch(inst, timeout)
    print(f"{name!r} is running at {inst.url} (pid {pid})")
    print(f"Admin token: mail-proxy {name} token")
    return 0


def stop(name: str, /, *, timeout: float = 10.0) -> int:
    """Stop a running instance (SIGTERM, then SIGKILL after the timeout).

    Parameters
    ----------
    name
        Instance name.
    timeout
        Seconds to wait for a clean stop before killing the server.
    """
    inst = Instance.named(name).require()
    pid = inst.running_pid()
    if pid is None:
        print(f"{name!r} is not running")
        return 0
    terminate(inst, pid, timeout)
    print(f"stopped {name!r} (pid {pid})")
    return 0


def restart(
    name: str, /, *, port: int | None = None, host: str | None = None, timeout: float = 30.0
) -> int:
    """Stop the instance if it runs, then start it (optionally on a new port or address).

    Parameters
    ----------
    name
        Instance name.
    port
        New HTTP port (remembered).
    host
        New listen address (remembered).
    timeout
        Seconds to wait for the stop and for /health after the start.
    """
    inst = Instance.named(name).require()
    pid = inst.running_pid()
    if pid is not None:
        terminate(inst, pid, timeout)
        print(f"stopped {name!r} (pid {pid})")
    return start(name, port=port, host=host, timeout=timeout)


def list_instances(*, json: bool = False) -> int:
    """List the instances in $GMP_HOME with state, port, pid and URL.

    Parameters
    ----------
    json
        Print JSON: {"instances": [{"name", "state", "port", "pid", "url", "dir"}]}.
    """
    rows = []
    for inst in all_instances():
        pid = inst.running_pid()
        state = "stopped"
        if pid is not None:
            state = "running" if healthy(inst.url, 1.0) else "unresponsive"
        rows.append(
            {
                "name": inst.name,
                "state": state,
                "port": inst.port,
                "pid": pid,
                "url": inst.url,
                "dir": str(inst.dir),
            }
        )
    if json:
        print_json({"instances": rows})
    else:
        cols = [
            ("name", "NAME"),
            ("state", "STATE"),
            ("port", "PORT"),
            ("pid", "PID"),
            ("url", "URL"),
        ]
        print_table(rows, cols, empty="(no instances: create one with mail-proxy start NAME)")
    return 0


# -- helpers (also used by `token --regenerate`) ---------------------------------------------------
def create(inst: Instance, port: int | None, host: str | None) -> str:
    """Make the instance directory: config (0600) with a new admin token, key, logs."""
    from mail_proxy.core.engine.encryption import write_key_file

    host = host or "127.0.0.1"
    if port is None:
        taken = {other.port for other in all_instances()}
        port = choose_port(host, taken, FIRST_PORT)
    token = secrets.token_urlsafe(32)
    inst.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    (inst.dir / "logs").mkdir(exist_ok=True)
    if not (inst.dir / "encryption.key").exists():
        write_key_file(inst.dir)
    inst.write_config({"instance_name": inst.name, "host": host, "port": port, "api_token": token})
    return token


def update_address(inst: Instance, port: int | None, host: str | None) -> None:
    config = inst.config()
    changed = {k: v for k, v in (("port", port), ("host", host)) if v is not None}
    if any(config.get(k) != v for k, v in changed.items()):
        inst.write_config({**config, **changed})


def launch(inst: Instance, timeout: float) -> int:
    """Start the server process detached; return its pid once ``/health`` answers."""
    host, port = inst.host, inst.port
    if not port_is_free(host, port):
        raise CliError(
            f"port {port} on {host} is in use: pick another with "
            f"mail-proxy start {inst.name} --port PORT"
        )
    inst.console_path.parent.mkdir(parents=True, exist_ok=True)
    log_offset = _size(inst.log_path)
    with open(inst.console_path, "wb") as console:
        proc = subprocess.Popen(
            [sys.executable, "-m", SERVER_MODULE, "--instance-dir", str(inst.dir)],
            stdin=subprocess.DEVNULL,
            stdout=console,
            stderr=subprocess.STDOUT,
            cwd=inst.dir,
            start_new_session=True,
            close_fds=True,
        )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise CliError(f"{inst.name!r} failed to start: {last_error(inst, log_offset)}")
        if _pid_file_is(inst, proc.pid) and healthy(inst.url, 1.0):
            return proc.pid
        time.sleep(POLL)
    proc.kill()
    proc.wait(5)
    raise CliError(
        f"{inst.name!r} did not answer /health within {timeout:g}s (see mail-proxy "
        f"{inst.name} logs)"
    )


def terminate(inst: Instance, pid: int, timeout: float) -> None:
    """SIGTERM, wait up to ``timeout``, then SIGKILL; remove the pid file."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    if not _wait_gone(inst, pid, timeout):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        if not _wait_gone(inst, pid, 5.0):
            raise CliError(f"process {pid} of {inst.name!r} did not stop")
    with contextlib.suppress(FileNotFoundError):
        inst.pid_path.unlink()


def healthy(url: str, timeout: float) -> bool:
    try:
        with urllib.request.urlopen(url + "/health", timeout=timeout) as resp:
            return bool(resp.status == 200)
    except (OSError, ValueError):
        return False


def last_error(inst: Instance, log_offset: int) -> str:
    """The last error the server wrote since ``log_offset`` (log file, else console)."""
    for path, offset in ((inst.log_path, log_offset), (inst.console_path, 0)):
        try:
            with open(path, "rb") as fh:
                fh.seek(offset if _size(path) >= offset else 0)
                text = fh.read(1024 * 1024).decode(errors="replace")
        except OSError:
            continue
        lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
        if lines:
            errors = [ln for ln in lines if " ERROR " in ln or "Error" in ln]
            return (errors or lines)[-1] + f" (see {path})"
    return f"no output (see {inst.console_path.parent})"


def _size(path: os.PathLike[str]) -> int:
    try:
        return os.stat(path).st_size
    except OSError:
        return 0


def _pid_file_is(inst: Instance, pid: int) -> bool:
    try:
        return inst.pid_path.read_text().strip() == str(pid)
    except OSError:
        return False


def _wait_gone(inst: Instance, pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not is_server_process(pid, inst.dir):
            return True
        time.sleep(POLL)
    return not is_server_process(pid, inst.dir)
