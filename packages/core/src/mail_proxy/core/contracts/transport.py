"""The transport interface: how a built MIME message leaves the service.

A transport plugin registers a :class:`TransportFactory` under a name (``smtp``, ``file``);
each account names its transport (default ``smtp``). The factory builds one
:class:`Transport` per service; it keeps whatever per-account state it needs (the SMTP
connection pool) and is closed at shutdown.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from mail_proxy.core.contracts.model import Account
    from mail_proxy.core.engine.runtime import Runtime


@dataclass
class SendResult:
    """What a transport did with one message.

    ``accepted`` are recipients the server took (250); ``temp_failed`` and ``perm_failed``
    map refused recipients to ``(code, text)``. A transport raises :class:`TransportError` for
    failures of the whole message instead.
    """

    accepted: list[str] = field(default_factory=list)
    temp_failed: dict[str, tuple[int, str]] = field(default_factory=dict)
    perm_failed: dict[str, tuple[int, str]] = field(default_factory=dict)
    #: The server's final reply to DATA (e.g. ``250 2.0.0 queued as ...``).
    response: str = ""


class TransportError(Exception):
    """A failed attempt. ``permanent`` decides between retry (False) and final error (True)."""

    def __init__(self, message: str, *, permanent: bool, code: int | None = None) -> None:
        super().__init__(message)
        self.permanent = permanent
        self.code = code


class Transport(abc.ABC):
    """Delivers messages for accounts. Must be safe for concurrent ``send`` calls."""

    #: True when this transport acts on the server's own machine (writes files, runs local
    #: programs): only the admin token may create or change its accounts, never a tenant.
    operator_only: bool = False

    @abc.abstractmethod
    async def send(
        self,
        account: Account,
        message: EmailMessage,
        sender: str,
        recipients: list[str],
    ) -> SendResult:
        """Send ``message`` with envelope ``sender`` to ``recipients`` through ``account``."""

    async def close(self) -> None:
        """Release pooled resources (called once at shutdown)."""


class TransportFactory(Protocol):
    def __call__(self, runtime: Runtime) -> Transport: ...
