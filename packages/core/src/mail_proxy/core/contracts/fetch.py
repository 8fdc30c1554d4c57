"""The fetch-mode interface: where attachment bytes come from.

A fetcher plugin registers a :class:`Fetcher` under its mode name (``base64``, ``filesystem``,
``endpoint``, ``http_url``, or a third party's own). ``validate`` runs at enqueue so a bad
attachment rejects the message up front; ``fetch`` runs at send time. ``stream`` hands the
content over in chunks, for callers that pass a file on without holding it (a message step
that uploads attachments to object storage, say); by default it yields ``fetch``'s bytes
as one chunk, so every fetcher supports it.
"""

from __future__ import annotations

import abc
from collections.abc import AsyncGenerator
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
    #: Seconds for the whole fetch; for :meth:`Fetcher.stream`, for each chunk.
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

    async def stream(self, request: FetchRequest, runtime: Runtime) -> AsyncGenerator[bytes, None]:
        """Yield the attachment in chunks, raising :class:`FetchError` as ``fetch`` would
        (beyond ``request.max_bytes`` included). The default yields what :meth:`fetch`
        returns, in one chunk: override it where the source can be read progressively, so
        that a large file never sits whole in memory."""
        yield await self.fetch(request, runtime)

    async def close(self) -> None:
        """Release what the fetcher holds (HTTP sessions); called by ``Runtime.stop``."""
        return None
