"""Run the server process: for an instance directory, or configured by the environment only.

``python -m mail_proxy.core.cli.serve --instance-dir DIR`` is what ``mail-proxy start`` launches in
the background: settings come from ``DIR/config.toml`` and ``GMP_*`` variables, logs go to
``DIR/logs/mail-proxy.log`` and the pid to ``DIR/mail-proxy.pid`` (removed at exit).

:func:`serve_env` is ``mail-proxy serve``: the foreground entry for containers, configured by
``GMP_*`` variables alone (secrets may be files: ``GMP_X_FILE`` or ``/run/secrets/x``), logging
to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import logging.handlers
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mail_proxy.core.cli.home import CONFIG_FILE, LOG_DIR, LOG_FILE, PID_FILE
from mail_proxy.core.contracts.config import Settings, load_settings
from mail_proxy.core.contracts.errors import ConfigError

log = logging.getLogger("mail_proxy.serve")

#: Keys `mail-proxy start` writes and the CLI relies on to reach the server: the config file
#: wins over the environment for these, so a stray GMP_PORT cannot hide an instance.
PINNED_KEYS = ("instance_name", "host", "port", "api_token")
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
#: Where Docker and Compose mount secrets (read by :func:`secret_files`).
SECRETS_DIR = Path("/run/secrets")


def instance_settings(instance_dir: Path) -> Settings:
    """Settings of an instance: its config file, then the environment (except pinned keys)."""
    config = instance_dir / CONFIG_FILE
    file_only = load_settings(env={}, config_file=config)
    pinned = {key: getattr(file_only, key) for key in PINNED_KEYS}
    return load_settings(
        config_file=config, overrides={**pinned, "instance_dir": str(instance_dir)}
    )


def configure_logging(level: str, log_file: Path | None) -> None:
    handler: logging.Handler
    if log_file is None:
        handler = logging.StreamHandler(sys.stderr)
    else:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        handler = logging.handlers.RotatingFileHandler(
            log_file, maxBytes=10 * 1024 * 1024, backupCount=5, encoding="utf-8"
        )
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    # alembic lists its autogenerate plugins at INFO on every start: noise in a server log
    logging.getLogger("alembic.runtime.plugins").setLevel(max(logging.WARNING, root.level))


def run(settings: Settings) -> int:
    """Run the HTTP server until SIGTERM/SIGINT: 0 on a clean stop, 2 on a configuration
    error, 1 on any other failure."""
    from aiohttp.web_runner import GracefulExit

    from mail_proxy.core.engine.allocator import fix_mmap_threshold
    from mail_proxy.core.web.app import run_server

    fix_mmap_threshold()
    try:
        asyncio.run(run_server(settings))
    except (GracefulExit, KeyboardInterrupt):
        pass
    except ConfigError as exc:
        log.error("%s", exc)
        return 2
    except OSError as exc:
        log.error("cannot listen on %s:%s: %s", settings.host, settings.port, exc.strerror or exc)
        return 1
    except Exception:
        log.exception("the server stopped on an error")
        return 1
    log.info("stopped")
    return 0


def serve_instance(instance_dir: Path) -> int:
    """The background server of ``mail-proxy start``."""
    instance_dir = instance_dir.absolute()
    log_file = instance_dir / LOG_DIR / LOG_FILE
    configure_logging("INFO", log_file)
    try:
        settings = instance_settings(instance_dir)
    except ConfigError as exc:
        log.error("%s", exc)
        return 2
    configure_logging(settings.log_level, log_file)
    lock = _lock(instance_dir)
    if lock is None:
        log.error("another server of this instance is running (%s is locked)", instance_dir)
        return 1
    pid_file = instance_dir / PID_FILE
    _write_pid(pid_file)
    try:
        return run(settings)
    finally:
        with contextlib.suppress(OSError):
            if pid_file.read_text().strip() == str(os.getpid()):
                pid_file.unlink()
        os.close(lock)


def serve_env(*, require_key: bool = False, secrets_dir: Path = SECRETS_DIR) -> int:
    """``mail-proxy serve``: foreground, ``GMP_*`` environment only (values of secrets may come
    from files: :func:`secret_files`), logs on stderr. ``require_key``: refuse to start (exit
    2) without an encryption key, instead of starting unable to store secrets."""
    configure_logging("INFO", None)
    try:
        found = secret_files(os.environ, setting_variables(), secrets_dir)
        os.environ.update({name: value for name, (value, _) in found.items()})
        settings = load_settings()
        if require_key:
            check_key(settings)
    except ConfigError as exc:
        log.error("%s", exc)
        return 2
    configure_logging(settings.log_level, None)
    for name, (_, path) in sorted(found.items()):
        log.info("%s read from %s", name, path)
    return run(settings)


def setting_variables() -> dict[str, str]:
    """Every setting's variable (core and the installed plugins' sections) → setting name."""
    from mail_proxy.core.contracts.config import setting_fields
    from mail_proxy.core.plugins.loader import create_plugin_manager
    from mail_proxy.core.plugins.registry import Registry

    variables = {f.metadata["env"]: f.name for f in setting_fields()}
    disabled = [n.strip() for n in os.environ.get("GMP_DISABLED_PLUGINS", "").split(",")]
    sections: Registry[Any] = Registry("settings section")
    create_plugin_manager(disabled=[n for n in disabled if n]).fill(
        "register_settings", "sections", sections
    )
    for name in sections:
        variables.update(
            {f.metadata["env"]: f.name for f in setting_fields(sections.get(name).settings)}
        )
    return variables


def secret_files(
    env: Mapping[str, str], variables: Mapping[str, str], secrets_dir: Path = SECRETS_DIR
) -> dict[str, tuple[str, str]]:
    """Values of settings kept in files, as containers pass secrets: ``VARIABLE → (value,
    file)`` for the variables not set in ``env``.

    * ``GMP_API_TOKEN_FILE=/path`` (any variable + ``_FILE``, ``MAIL_PROXY_ENCRYPTION_KEY_FILE``
      included): the value of ``GMP_API_TOKEN`` is that file's content;
    * otherwise a file in ``secrets_dir`` (``/run/secrets``, where Docker and Compose mount
      secrets) named after the setting (``api_token``, ``database_url``,
      ``client_sync_secret``...) or after its variable (``GMP_API_TOKEN``).

    The encryption key's own file, ``/run/secrets/encryption_key``, is read by the encryption
    module itself (and shown as the key's source). One trailing newline is removed. A
    ``*_FILE`` variable naming a file that cannot be read is a :class:`ConfigError`.
    """
    found: dict[str, tuple[str, str]] = {}
    for variable, name in variables.items():
        if env.get(variable):
            continue
        pointer = env.get(variable + "_FILE")
        if pointer:
            try:
                found[variable] = (_read_secret(Path(pointer)), pointer)
            except OSError as exc:
                raise ConfigError(
                    variable + "_FILE", f"cannot read {pointer}: {exc.strerror or exc}"
                ) from None
            continue
        if name == "encryption_key":
            continue
        for candidate in (secrets_dir / name, secrets_dir / variable):
            try:
                found[variable] = (_read_secret(candidate), str(candidate))
                break
            except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
                continue
            except OSError as exc:
                raise ConfigError(variable, f"cannot read {candidate}: {exc.strerror}") from None
    return found


def _read_secret(path: Path) -> str:
    text = path.read_text(encoding="utf-8")
    return text[:-1] if text.endswith("\n") else text


def check_key(settings: Settings) -> None:
    """An encryption key must be configured (and readable): else :class:`ConfigError`."""
    from mail_proxy.core.engine.encryption import DOCKER_SECRET_PATH, EncryptionError, load_key

    try:
        found = load_key(settings.encryption_key, settings.instance_dir)
    except EncryptionError as exc:
        raise ConfigError("MAIL_PROXY_ENCRYPTION_KEY", str(exc)) from None
    if found is None:
        raise ConfigError(
            "MAIL_PROXY_ENCRYPTION_KEY",
            "no encryption key (required by --require-key): set MAIL_PROXY_ENCRYPTION_KEY "
            f"(or MAIL_PROXY_ENCRYPTION_KEY_FILE), or provide the file {DOCKER_SECRET_PATH}; "
            "`mail-proxy keygen` prints a new key",
        )


def _lock(instance_dir: Path) -> int | None:
    """Hold an exclusive lock on the instance for the life of the process (None: taken), so
    two servers of one instance never run at once, however they were started."""
    import fcntl

    fd = os.open(instance_dir / "mail-proxy.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


def _write_pid(path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(f"{os.getpid()}\n")
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mail_proxy.core.cli.serve")
    parser.add_argument("--instance-dir", type=Path, help="instance directory (else env only)")
    args = parser.parse_args(argv)
    if args.instance_dir is None:
        return serve_env()
    return serve_instance(args.instance_dir)


if __name__ == "__main__":
    sys.exit(main())
