"""The instance and tenant a command acts on, as named on the command line.

``mail-proxy NAME [TENANT] COMMAND ...``: the argv pre-parser in :mod:`mail_proxy.core.cli.main`
binds NAME and TENANT here before running COMMAND; instance- and tenant-level commands read
them with :func:`current` (they are not cyclopts parameters, so every command gets them the
same way, whichever plugin defines it).
"""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING

from mail_proxy.core.cli.errors import UsageError
from mail_proxy.core.cli.home import Instance

if TYPE_CHECKING:
    from mail_proxy.core.cli.rest import Client


@dataclass(frozen=True)
class Target:
    instance: str
    #: None when the command line named no tenant: the server's default applies
    #: (``default``, or for run-now/suspend/activate the whole instance).
    tenant: str | None = None

    def instance_dir(self) -> Instance:
        return Instance.named(self.instance)

    def client(self) -> Client:
        """A REST client for the running instance (exit 1 when it is not running)."""
        from mail_proxy.core.cli.rest import Client

        return Client.for_instance(self.instance_dir().require())

    def tenant_query(self) -> dict[str, str]:
        return {"tenant_id": self.tenant} if self.tenant else {}


_current: ContextVar[Target | None] = ContextVar("gmp_cli_target", default=None)


def bind(target: Target | None) -> None:
    _current.set(target)


def current() -> Target:
    target = _current.get()
    if target is None:
        raise UsageError("this command needs an instance: mail-proxy NAME [TENANT] COMMAND ...")
    return target
