"""The fetch-mode interface: where attachment bytes come from.

A fetcher plugin registers a :class:`Fetcher` under its mode name (``base64``, ``filesystem``,
``endpoint``, ``http_url``, or a third party's own). ``validate`` runs at enqueue so a bad
attachment rejects the message up front; ``fetch`` runs at send time.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mail_proxy.core.contracts.model import Tenant
    from mail_proxy.core.engine.runtime import Runtime


class FetchError(Exception):
    """An attachment could not be fetched; the message fails with this text."""


@dataclass
class FetchRequest:
    """One attachment to fetch, with the context a fetcher may need."""

    tenant: Tenant
    storage_path: str
    filename: str
    auth: dict[str, Any] | None = None
    #: Largest accepted size in bytes (fetchers must stop reading beyond it).
    max_bytes: int = 0
    timeout: float = 30.0


class Fetcher(abc.ABC):
    """Fetches attachment content for one fetch mode."""

    #: Human description shown by ``mail-proxy plugins``.
    description: str = ""

    def validate(self, storage_path: str, runtime: Runtime) -> str | None:
        """Check a ``storage_path`` at enqueue; return a rejection reason or None."""
        return None

    @abc.abstractmethod
    async def fetch(self, request: FetchRequest, runtime: Runtime) -> bytes:
        """Return the attachment bytes or raise :class:`FetchError`."""

    async def close(self) -> None:
        """Release what the fetcher holds (HTTP sessions); called by ``Runtime.stop``."""
        return None
