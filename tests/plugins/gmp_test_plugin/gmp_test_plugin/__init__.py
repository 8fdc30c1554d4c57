"""A tiny third-party plugin (entry point ``gmp_test`` in the ``mail_proxy`` group).

Light to import, like every plugin module: the route handler and the CLI command are
imported only when the server builds its routes or the command runs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mail_proxy.core.plugins import hookimpl

if TYPE_CHECKING:
    from mail_proxy.core.contracts.commands import CommandRegistry
    from mail_proxy.core.contracts.routes import RouteTable

PLUGIN = "gmp_test"


@hookimpl
def plugin_info() -> dict[str, Any]:
    return {
        "description": "Test plugin: GET /hello-plugin and `mail-proxy hello`",
        "edition": "test",
    }


@hookimpl
def register_routes(routes: RouteTable) -> None:
    from .web import hello

    routes.add(
        "GET", "/hello-plugin", hello, scope="any", summary="Say hello (test plugin)", plugin=PLUGIN
    )


@hookimpl
def register_commands(commands: CommandRegistry) -> None:
    commands.add(
        "hello", "gmp_test_plugin.cli:hello", help="Say hello (test plugin).", plugin=PLUGIN
    )
