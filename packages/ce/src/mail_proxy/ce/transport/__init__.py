"""The Community Edition transports: ``smtp`` (pooled aiosmtplib) and ``file`` (.eml files).

Factories import their module when first called, so loading the plugin does not import
aiosmtplib.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mail_proxy.core.contracts.transport import Transport, TransportFactory
    from mail_proxy.core.engine.runtime import Runtime
    from mail_proxy.core.plugins.registry import Registry


def _smtp(runtime: Runtime) -> Transport:
    from .smtp import SmtpTransport

    return SmtpTransport(runtime)


def _file(runtime: Runtime) -> Transport:
    from .file import FileTransport

    return FileTransport(runtime)


def register(registry: Registry[TransportFactory], plugin: str) -> None:
    """Register the ``smtp`` and ``file`` transport factories."""
    registry.register("smtp", _smtp, plugin=plugin)
    registry.register("file", _file, plugin=plugin)
