"""The ``mail-proxy`` command line: an argv pre-parser in front of three cyclopts apps.

The grammar (docs/cli.md) has three levels, and plugins add commands to each through the
``register_commands`` hook (:class:`~mail_proxy.core.contracts.commands.CommandRegistry`)::

    mail-proxy COMMAND ...                   global    (start, stop, list, plugins, ...)
    mail-proxy NAME COMMAND ...              instance  (info, token, logs, tenants, ...)
    mail-proxy NAME [TENANT] COMMAND ...     tenant    (accounts, messages, send, ...)

cyclopts cannot parse a positional NAME in front of a sub-command, so :func:`dispatch` looks
at the first words: a global command runs at once; otherwise the first word is an instance
name, and the second is either a command (instance level, or tenant level with no tenant) or
a tenant id followed by a tenant-level command. The instance and tenant are bound in
:mod:`.target` and the rest of argv goes to that level's app.

Commands are registered by import path and imported only when they run: ``--help`` imports
no database driver, no SMTP/IMAP client and no aiohttp. This module must not import
``mail_proxy.ce`` (the Community Edition registers its commands like any other plugin).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from mail_proxy.core.cli.errors import CliError, UsageError
from mail_proxy.core.cli.home import Instance, check_name, read_context
from mail_proxy.core.cli.target import Target, bind
from mail_proxy.core.contracts.commands import CommandLevel, CommandRegistry

if TYPE_CHECKING:
    from cyclopts import App

HELP_FLAGS = ("-h", "--help")
GRAMMAR = (
    "mail-proxy COMMAND [ARGS]\n"
    "       mail-proxy NAME COMMAND [ARGS]\n"
    "       mail-proxy NAME [TENANT] COMMAND [ARGS]"
)
INSTANCE_GROUP = "Instance commands: mail-proxy NAME COMMAND"
TENANT_GROUP = "Tenant commands: mail-proxy NAME [TENANT] COMMAND"
#: What ``mail-proxy`` says when no installed plugin provides a command (core alone).
NO_COMMANDS = (
    "no commands installed: genro-mail-proxy-core is only the framework; add the Community "
    "Edition with: pip install genro-mail-proxy (or genro-mail-proxy-ce)"
)

_registry: CommandRegistry | None = None


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``mail-proxy`` script; returns the exit code (0, 1 or 2)."""
    from cyclopts import CycloptsError

    tokens = list(sys.argv[1:] if argv is None else argv)
    try:
        code = dispatch(tokens, load_commands())
        sys.stdout.flush()  # inside the try: a reader gone early is seen here, not at exit
        return code
    except BrokenPipeError:
        # `mail-proxy ... | head`: the reader has what it wanted; not an error.
        return _stdout_closed()
    except CliError as exc:
        return _fail(exc.message, exc.exit_code)
    except CycloptsError as exc:
        return _fail(" ".join(str(exc).split()), 2)
    except KeyboardInterrupt:
        return _fail("interrupted", 130)
    except Exception as exc:
        from mail_proxy.core.contracts.errors import ConfigError
        from mail_proxy.core.plugins.manager import PluginError

        if isinstance(exc, PluginError | ConfigError):
            return _fail(str(exc), 1)
        if os.environ.get("GMP_DEBUG"):
            raise
        return _fail(f"internal error: {type(exc).__name__}: {exc} (GMP_DEBUG=1 shows more)", 1)


def _fail(message: str, code: int) -> int:
    print(f"mail-proxy: error: {message}", file=sys.stderr)
    return code


def _stdout_closed() -> int:
    """Exit 0 quietly once the reader closed stdout: point stdout at /dev/null so the flush
    at interpreter exit does not fail again (and print "Exception ignored ...")."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass
    return 0


def load_commands() -> CommandRegistry:
    """Ask every enabled plugin (``GMP_DISABLED_PLUGINS`` honoured) for its commands."""
    global _registry
    from mail_proxy.core.plugins.loader import create_plugin_manager

    disabled = [n.strip() for n in os.environ.get("GMP_DISABLED_PLUGINS", "").split(",")]
    pm = create_plugin_manager(disabled=[n for n in disabled if n])
    registry = CommandRegistry()
    pm.register_commands(registry)
    _registry = registry
    return registry


def command_names(level: CommandLevel) -> set[str]:
    """Names of the commands at ``level`` (after :func:`main` loaded them)."""
    registry = _registry if _registry is not None else load_commands()
    return {spec.name for spec in registry.at(level)}


def dispatch(argv: list[str], registry: CommandRegistry) -> int:
    """Split ``argv`` into instance, tenant and command; run the command at its level."""
    glob, inst, ten = (
        {s.name for s in registry.at(level)} for level in ("global", "instance", "tenant")
    )
    if not registry.all():
        return _no_commands(argv)
    if not argv or argv[0].startswith("-") or argv[0] in glob:
        bind(None)
        return run(root_app(registry), argv)
    first = argv[0]
    if (first in inst or first in ten) and not Instance.named(first).exists:
        # `mail-proxy accounts list`: no instance named, use the `mail-proxy use` context
        context = read_context()
        if context is None:
            level, where = ("an instance", "") if first in inst else ("a tenant", "[TENANT] ")
            raise UsageError(
                f"{first!r} is {level} command: mail-proxy NAME {where}{first} ... "
                "(or choose a default instance with: mail-proxy use NAME[/TENANT])"
            )
        instance, tenant = context
        bind(Target(instance, tenant))
        return run(instance_app(registry, instance), argv)
    instance = check_name(first)
    rest = argv[1:]
    if not rest and not Instance.named(instance).exists:
        raise UsageError(
            f"{instance!r} is neither a command nor an instance (see: mail-proxy --help)"
        )
    if not rest or rest[0].startswith("-") or rest[0] in inst or rest[0] in ten:
        bind(Target(instance, None))
        return run(instance_app(registry, instance), rest)
    tenant, rest = rest[0], rest[1:]
    if not rest or (not rest[0].startswith("-") and rest[0] not in ten):
        raise UsageError(_unknown(instance, tenant, rest[0] if rest else None, inst))
    bind(Target(instance, check_name(tenant, "tenant")))
    return run(tenant_app(registry, instance, tenant), rest)


def _no_commands(argv: list[str]) -> int:
    """Core alone: say in one line which package to add; exit 1 unless asked for help or the
    version."""
    if argv[:1] == ["--version"]:
        print(_version())
        return 0
    if argv[:1] and argv[0] in HELP_FLAGS:
        print(f"mail-proxy: {NO_COMMANDS}")
        return 0
    raise CliError(NO_COMMANDS)


def _unknown(instance: str, tenant: str, command: str | None, inst: set[str]) -> str:
    if command is None:
        return (
            f"unknown command {tenant!r} (see: mail-proxy {instance} --help; for a tenant "
            f"give a command: mail-proxy {instance} {tenant} COMMAND)"
        )
    if command in inst:
        return f"{command!r} is an instance command: mail-proxy {instance} {command} ..."
    return f"unknown command {command!r} (see: mail-proxy {instance} {tenant} --help)"


def run(app: App, tokens: list[str]) -> int:
    """Run a cyclopts app; its return value is the exit code (None means 0)."""
    result = app(tokens)
    return result if isinstance(result, int) and not isinstance(result, bool) else 0


# -- the apps -------------------------------------------------------------------------------------
def _app(name: str, help: str, usage: str | None = None, **kwargs: Any) -> App:
    from cyclopts import App, Parameter

    return App(
        name=name,
        help=help,
        usage=usage,
        console=_console(),
        help_format="markdown",
        default_parameter=Parameter(negative=()),
        result_action="return_value",
        exit_on_error=False,
        print_error=False,
        **kwargs,
    )


def _console() -> Any:
    """The console cyclopts prints help with. Rich's own ends the process with exit 1 when
    stdout is closed early (``mail-proxy --help | head -1``); this one lets the
    BrokenPipeError reach :func:`main`, which ends quietly with exit 0."""
    from rich.console import Console

    class _Console(Console):
        def on_broken_pipe(self) -> None:
            self.quiet = True
            raise BrokenPipeError

    return _Console()


def _add(app: App, registry: CommandRegistry, level: CommandLevel, group: str | None) -> None:
    for spec in registry.at(level):
        if spec.name in app:
            # A plugin may name a global command and an instance/tenant command alike
            # (``mail-proxy tool parse`` and ``mail-proxy NAME tool status``): the root app
            # keeps the global one; dispatch() sends NAME-prefixed lines to the other.
            continue
        if group is None:
            app.command(spec.target, name=spec.name, help=spec.help)
        else:
            app.command(spec.target, name=spec.name, help=spec.help, group=group)


def root_app(registry: CommandRegistry) -> App:
    app = _app(
        "mail-proxy",
        "genro-mail-proxy: run and manage mail-proxy instances.\n\n"
        "Instances live in $GMP_HOME (default ~/.mail-proxy). TENANT defaults to the "
        "instance's own default; `mail-proxy use NAME[/TENANT]` saves defaults for both.",
        usage=f"Usage: {GRAMMAR}",
        version=_version,
    )
    _add(app, registry, "global", None)
    _add(app, registry, "instance", INSTANCE_GROUP)
    _add(app, registry, "tenant", TENANT_GROUP)
    return app


def instance_app(registry: CommandRegistry, instance: str) -> App:
    app = _app(
        f"mail-proxy {instance}",
        f"Commands for the instance {instance!r}.",
        usage=f"Usage: mail-proxy {instance} [TENANT] COMMAND [ARGS]",
        version_flags=[],
    )
    _add(app, registry, "instance", None)
    _add(app, registry, "tenant", TENANT_GROUP)
    return app


def tenant_app(registry: CommandRegistry, instance: str, tenant: str) -> App:
    app = _app(
        f"mail-proxy {instance} {tenant}",
        f"Commands for the tenant {tenant!r} of the instance {instance!r}.",
        usage=f"Usage: mail-proxy {instance} {tenant} COMMAND [ARGS]",
        version_flags=[],
    )
    _add(app, registry, "tenant", None)
    return app


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("genro-mail-proxy-core")
    except PackageNotFoundError:  # pragma: no cover
        return "unknown"


if __name__ == "__main__":
    sys.exit(main())
