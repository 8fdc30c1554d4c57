"""Delivery reports in the Community Edition: the ``http`` sink and the pull API.

:func:`register` is called by the CE plugin's ``register_report_sinks`` hook once per
runtime and builds a fresh sink (its HTTP sessions belong to that runtime's event loop). The
pull routes (``GET /reports``, ``POST /reports/ack``) live in :mod:`.routes`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mail_proxy.core.contracts.reports import ReportSink
    from mail_proxy.core.plugins.registry import Registry


def register(registry: Registry[ReportSink], plugin: str) -> None:
    """Register the built-in ``http`` sink (POST to the client's sync URL)."""
    from .http_sink import HttpSyncSink

    registry.register("http", HttpSyncSink(), plugin=plugin)
