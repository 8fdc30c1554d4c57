"""The Community Edition's ``mail-proxy`` commands, registered like any plugin's.

:func:`register` only names import paths: nothing below is imported until a command runs.
Modules: ``instances`` (start/stop/restart/list), ``instance`` (use/info/token/logs),
``rotate`` (rotate-key), ``audit`` (command-log), ``tools`` (serve/keygen/plugins), ``accounts``, ``messages``,
``send`` (with ``eml``, the RFC 5322 → message conversion) and ``control``
(run-now/suspend/activate).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mail_proxy.core.contracts.commands import CommandLevel, CommandRegistry

_PKG = "mail_proxy.ce.cli"

#: (level, name, "module:attribute", help)
COMMANDS: list[tuple[CommandLevel, str, str, str]] = [
    ("global", "start", "instances:start", "Create (first time) and start an instance."),
    ("global", "stop", "instances:stop", "Stop a running instance."),
    ("global", "restart", "instances:restart", "Stop and start an instance."),
    ("global", "list", "instances:list_instances", "List instances: state, port, pid, URL."),
    ("global", "use", "instance:use", "Set the default instance (and tenant) for commands."),
    ("global", "serve", "tools:serve", "Run a server in the foreground from GMP_* variables."),
    ("global", "keygen", "tools:keygen", "Print a new encryption key."),
    ("global", "plugins", "tools:plugins", "List the installed plugins and what they add."),
    ("instance", "info", "instance:info", "Show the instance: directory, URL, status."),
    ("instance", "url", "instance:url", "Print the URL of the instance's REST API."),
    ("instance", "token", "instance:token", "Print (or regenerate) the admin token."),
    ("instance", "logs", "instance:logs", "Print (or follow) the server log."),
    ("instance", "rotate-key", "rotate:rotate_key", "Re-encrypt stored secrets with a new key."),
    ("instance", "command-log", "audit:app", "Audit trail of API changes: list, export."),
    ("tenant", "accounts", "accounts:app", "SMTP accounts: list, add, delete."),
    ("tenant", "messages", "messages:app", "Messages: list, show, delete, purge."),
    ("tenant", "send", "send:send", "Queue .eml files (RFC 5322) for delivery."),
    ("tenant", "run-now", "control:run_now", "Wake dispatch and delivery reports now."),
    ("tenant", "suspend", "control:suspend", "Stop dispatching (instance, tenant or batch)."),
    ("tenant", "activate", "control:activate", "Resume dispatching (instance, tenant or batch)."),
]


def register(commands: CommandRegistry, plugin: str) -> None:
    for level, name, target, help in COMMANDS:
        commands.add(name, f"{_PKG}.{target}", help=help, level=level, plugin=plugin)
