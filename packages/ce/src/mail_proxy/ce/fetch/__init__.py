"""The four built-in fetch modes: ``base64``, ``filesystem``, ``endpoint``, ``http_url``.

:func:`register` is called by the Community Edition plugin's ``register_fetchers`` hook, once
per runtime, and builds fresh fetcher objects each time (their HTTP sessions belong to that
runtime's event loop).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mail_proxy.core.contracts.fetch import Fetcher
    from mail_proxy.core.plugins.registry import Registry


def register(registry: Registry[Fetcher], plugin: str) -> None:
    """Register the built-in fetchers under their mode names."""
    from .base64 import Base64Fetcher
    from .endpoint import EndpointFetcher
    from .filesystem import FilesystemFetcher
    from .http_url import HttpUrlFetcher

    registry.register("base64", Base64Fetcher(), plugin=plugin)
    registry.register("filesystem", FilesystemFetcher(), plugin=plugin)
    registry.register("endpoint", EndpointFetcher(), plugin=plugin)
    registry.register("http_url", HttpUrlFetcher(), plugin=plugin)
