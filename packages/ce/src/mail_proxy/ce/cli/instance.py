"""One instance: ``use``, ``NAME info``, ``NAME url``, ``NAME token``, ``NAME logs``."""

from __future__ import annotations

import secrets
import sys
import time
from pathlib import Path
from typing import Annotated, Any

from cyclopts import Parameter

from mail_proxy.core.cli.errors import CliError
from mail_proxy.core.cli.home import Instance, check_name, read_context, write_context
from mail_proxy.core.cli.output import print_fields, print_json
from mail_proxy.core.cli.rest import Client
from mail_proxy.core.cli.target import current

HIDDEN_CONFIG = {
    "api_token",
    "encryption_key",
    "client_sync_password",
    "client_sync_token",
    "client_sync_secret",
}


def use(context: str | None = None, /, *, clear: bool = False) -> int:
    """Save a default instance (and tenant) so commands can omit them; explicit names win.

    Parameters
    ----------
    context
        NAME or NAME/TENANT. Without it, print the current default.
    clear
        Forget the default.
    """
    if clear:
        write_context(None)
        print("default cleared")
        return 0
    if context is None:
        saved = read_context()
        print(
            "(no default: set one with mail-proxy use NAME[/TENANT])"
            if saved is None
            else "/".join(p for p in saved if p)
        )
        return 0
    name, _, tenant = context.partition("/")
    Instance.named(name).require()
    write_context(name, check_name(tenant, "tenant") if tenant else None)
    print(f"default: {context}")
    return 0


def info(*, json: bool = False) -> int:
    """Show the instance: directory, state, URL and, when running, its /status.

    Parameters
    ----------
    json
        Print JSON: the local facts plus "status" (the GET /status answer, or null).
    """
    inst = current().instance_dir().require()
    pid = inst.running_pid()
    config = {k: v for k, v in inst.config().items() if k not in HIDDEN_CONFIG}
    data: dict[str, Any] = {
        "name": inst.name,
        "dir": str(inst.dir),
        "state": "running" if pid else "stopped",
        "pid": pid,
        "url": inst.url,
        "config": config,
        "status": None,
    }
    if pid is not None:
        data["status"] = Client(inst.url, inst.token, name=inst.name, timeout=10).get("/status")
    if json:
        print_json(data)
        return 0
    print_fields(data, ["name", "dir", "state", "pid", "url"])
    status = data["status"] or {}
    print_fields(status, ["version", "scheduler_active", "pending_messages", "database"])
    if status.get("plugins"):
        names = [p.get("name", p) if isinstance(p, dict) else p for p in status["plugins"]]
        print_fields({"plugins": names})
    return 0


def url() -> int:
    """Print the URL of the instance's REST API (for scripts: URL=$(mail-proxy NAME url))."""
    print(current().instance_dir().require().url)
    return 0


def token(*, regenerate: bool = False) -> int:
    """Print the admin token (X-API-Token) of the instance.

    Parameters
    ----------
    regenerate
        Replace it with a new one (a running instance is restarted so the old one stops
        working at once).
    """
    inst = current().instance_dir().require()
    if not regenerate:
        print(inst.token)
        return 0
    from .instances import launch, terminate

    config = inst.config()
    config["api_token"] = secrets.token_urlsafe(32)
    pid = inst.running_pid()
    if pid is not None:
        terminate(inst, pid, 10.0)
    inst.write_config(config)
    if pid is not None:
        launch(inst, 30.0)
        print(f"restarted {inst.name!r} with the new token", file=sys.stderr)
    print(config["api_token"])
    return 0


def logs(
    *,
    lines: Annotated[int, Parameter(name=["--lines", "-n"])] = 50,
    follow: Annotated[bool, Parameter(name=["--follow", "-f"])] = False,
) -> int:
    """Print the end of the server log (logs/mail-proxy.log).

    Parameters
    ----------
    lines
        How many lines from the end.
    follow
        Keep printing new lines until Ctrl-C.
    """
    inst = current().instance_dir().require()
    path = inst.log_path
    if not path.exists():
        raise CliError(f"no log yet at {path}")
    for line in tail(path, lines):
        print(line)
    if follow:
        try:
            _follow(path)
        except KeyboardInterrupt:
            pass
    return 0


def tail(path: Path, count: int, chunk: int = 64 * 1024) -> list[str]:
    """The last ``count`` lines of ``path``, reading backwards (bounded memory)."""
    if count <= 0:
        return []
    with open(path, "rb") as fh:
        end = fh.seek(0, 2)
        data = b""
        while end > 0 and data.count(b"\n") <= count:
            step = min(chunk, end)
            end -= step
            fh.seek(end)
            data = fh.read(step) + data
    return data.decode(errors="replace").splitlines()[-count:]


def _follow(path: Path) -> None:
    with open(path, "rb") as fh:
        fh.seek(0, 2)
        while True:
            line = fh.readline()
            if line:
                sys.stdout.write(line.decode(errors="replace"))
                sys.stdout.flush()
            else:
                if path.exists() and path.stat().st_size < fh.tell():
                    fh.seek(0)  # rotated or truncated
                time.sleep(0.25)
