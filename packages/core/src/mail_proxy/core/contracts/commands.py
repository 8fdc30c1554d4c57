"""CLI commands contributed by plugins through ``register_commands``.

Commands are registered by *import path* and loaded only when they run, so
``mail-proxy --help`` stays fast and imports no database, SMTP or IMAP library.

The grammar of the CLI has three levels (see docs/cli.md):

- ``global``: ``mail-proxy NAME-OF-COMMAND ...`` (``start``, ``list``, ``plugins``);
- ``instance``: ``mail-proxy INSTANCE NAME-OF-COMMAND ...`` (``info``, ``token``, ``tenants``);
- ``tenant``: ``mail-proxy INSTANCE [TENANT] NAME-OF-COMMAND ...`` (``accounts``, ``send``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

CommandLevel = Literal["global", "instance", "tenant"]


@dataclass(frozen=True)
class CommandSpec:
    name: str
    #: ``"package.module:attribute"`` of a cyclopts ``App`` or a function.
    target: str
    help: str
    level: CommandLevel
    plugin: str


class CommandRegistry:
    def __init__(self) -> None:
        self._specs: dict[tuple[CommandLevel, str], CommandSpec] = {}

    def add(
        self,
        name: str,
        target: str,
        *,
        help: str,
        level: CommandLevel = "global",
        plugin: str = "?",
    ) -> None:
        if ":" not in target:
            raise ValueError(f"command {name!r}: target must be 'module:attribute', got {target!r}")
        key = (level, name)
        if key in self._specs:
            raise ValueError(
                f"{level} command {name!r} registered twice "
                f"(by {self._specs[key].plugin!r} and {plugin!r})"
            )
        self._specs[key] = CommandSpec(name, target, help, level, plugin)

    def at(self, level: CommandLevel) -> list[CommandSpec]:
        return [s for (lvl, _), s in sorted(self._specs.items()) if lvl == level]

    def all(self) -> list[CommandSpec]:
        return list(self._specs.values())
