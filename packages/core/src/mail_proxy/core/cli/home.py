"""Where instances live: ``GMP_HOME`` (default ``~/.mail-proxy``), one directory per instance.

An instance directory holds ``config.toml`` (Settings keys, mode 0600: it contains the admin
token), ``encryption.key``, ``mail_proxy.db``, ``mail-proxy.pid`` while the server runs, and
``logs/``. This module only reads and writes those files; starting and stopping the server
is the job of the ``start``/``stop`` commands.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mail_proxy.core.cli.errors import CliError, UsageError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

HOME_ENV = "GMP_HOME"
CONFIG_FILE = "config.toml"
PID_FILE = "mail-proxy.pid"
LOG_DIR = "logs"
LOG_FILE = "mail-proxy.log"
CONSOLE_FILE = "console.log"
CONTEXT_FILE = "context"
FIRST_PORT = 8000
SERVER_MODULE = "mail_proxy.core.cli.serve"

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")


def gmp_home() -> Path:
    """The directory holding all instances: ``$GMP_HOME`` or ``~/.mail-proxy``."""
    return Path(os.environ.get(HOME_ENV) or "~/.mail-proxy").expanduser().absolute()


def check_name(name: str, what: str = "instance") -> str:
    """Refuse names that are not safe as a directory name (exit 2)."""
    if not _NAME.match(name):
        raise UsageError(
            f"invalid {what} name {name!r}: use letters, digits, '.', '_' or '-' "
            "(up to 63 characters, not starting with a symbol)"
        )
    return name


def warn(message: str) -> None:
    """A one-line note on stderr that does not change the exit code."""
    print(f"mail-proxy: {message}", file=sys.stderr)


@dataclass
class Instance:
    """One instance directory and the files in it."""

    name: str
    dir: Path

    @classmethod
    def named(cls, name: str) -> Instance:
        return cls(check_name(name), gmp_home() / name)

    # -- paths -------------------------------------------------------------------------------
    @property
    def config_path(self) -> Path:
        return self.dir / CONFIG_FILE

    @property
    def pid_path(self) -> Path:
        return self.dir / PID_FILE

    @property
    def log_path(self) -> Path:
        return self.dir / LOG_DIR / LOG_FILE

    @property
    def console_path(self) -> Path:
        return self.dir / LOG_DIR / CONSOLE_FILE

    @property
    def exists(self) -> bool:
        return self.config_path.is_file()

    def require(self) -> Instance:
        """This instance, or exit 1 when it was never created."""
        if not self.exists:
            raise CliError(
                f"no instance {self.name!r} in {self.dir.parent} "
                f"(create it with: mail-proxy start {self.name})"
            )
        return self

    # -- config ------------------------------------------------------------------------------
    def config(self) -> dict[str, Any]:
        try:
            return tomllib.loads(self.config_path.read_text())
        except FileNotFoundError:
            self.require()
            raise
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise CliError(f"cannot read {self.config_path}: {exc}") from None

    def write_config(self, data: dict[str, Any]) -> None:
        """Write ``config.toml`` atomically with mode 0600 (it holds the admin token)."""
        lines = [
            "# genro-mail-proxy instance settings (keys: see docs/configuration.md).",
            "# Written by `mail-proxy`; GMP_* environment variables override other keys.",
        ]
        lines += [f"{k} = {_toml_value(v)}" for k, v in data.items() if v is not None]
        write_private(self.config_path, "\n".join(lines) + "\n")

    @property
    def port(self) -> int:
        return int(self.config().get("port", FIRST_PORT))

    @property
    def host(self) -> str:
        return str(self.config().get("host", "127.0.0.1"))

    @property
    def url(self) -> str:
        cfg = self.config()
        return base_url(str(cfg.get("host", "127.0.0.1")), int(cfg.get("port", FIRST_PORT)))

    @property
    def token(self) -> str:
        token = self.config().get("api_token")
        if not token:
            raise CliError(f"instance {self.name!r} has no api_token in {self.config_path}")
        return str(token)

    # -- process -----------------------------------------------------------------------------
    def running_pid(self) -> int | None:
        """The pid of this instance's server, or None. A stale pid file is removed."""
        try:
            text = self.pid_path.read_text().strip()
        except FileNotFoundError:
            return None
        pid = int(text) if text.isdigit() else 0
        if pid > 0 and is_server_process(pid, self.dir):
            return pid
        with contextlib.suppress(FileNotFoundError):
            self.pid_path.unlink()
        warn(f"removed the stale pid file of {self.name!r} (process {text or '?'} is gone)")
        return None


def base_url(host: str, port: int) -> str:
    """The URL a client on this machine uses (a wildcard listen address means loopback)."""
    if host in ("0.0.0.0", "", "*"):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}"


def is_server_process(pid: int, instance_dir: Path) -> bool:
    """True when ``pid`` is alive and (where /proc says) is this instance's server."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return False  # someone else's process: the pid was reused
    cmdline = Path(f"/proc/{pid}/cmdline")
    if not Path("/proc/self/cmdline").exists():
        return True  # no /proc (macOS): trust the signal check
    try:
        args = cmdline.read_bytes().split(b"\0")
    except OSError:
        return False
    # a zombie has an empty command line; a reused pid runs something else
    return SERVER_MODULE.encode() in args and str(instance_dir).encode() in args


def all_instances() -> list[Instance]:
    home = gmp_home()
    if not home.is_dir():
        return []
    found = [Instance(p.name, p) for p in sorted(home.iterdir()) if (p / CONFIG_FILE).is_file()]
    return [i for i in found if _NAME.match(i.name)]


def port_is_free(host: str, port: int) -> bool:
    """True when a server could listen on ``host:port`` now (same options as aiohttp)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def choose_port(host: str, taken: set[int], first: int = FIRST_PORT) -> int:
    """The first port from ``first`` up that no instance claims and nothing listens on."""
    for port in range(first, 65536):
        if port not in taken and port_is_free(host, port):
            return port
    raise CliError(f"no free port from {first} up on {host}")


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically, readable only by its owner."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.replace(tmp, path)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return json.dumps(str(value), ensure_ascii=False)  # a JSON string is a TOML basic string


# -- the `mail-proxy use` context --------------------------------------------------------------
def read_context() -> tuple[str, str | None] | None:
    """The ``(instance, tenant)`` saved by ``mail-proxy use``, if any."""
    try:
        text = (gmp_home() / CONTEXT_FILE).read_text().strip()
    except FileNotFoundError:
        return None
    if not text:
        return None
    name, _, tenant = text.partition("/")
    return name, tenant or None


def write_context(instance: str | None, tenant: str | None = None) -> None:
    path = gmp_home() / CONTEXT_FILE
    if instance is None:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(instance + (f"/{tenant}" if tenant else "") + "\n")
