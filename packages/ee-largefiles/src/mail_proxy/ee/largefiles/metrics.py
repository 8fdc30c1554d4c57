"""The plugin's Prometheus series, on the service's own registry (``runtime.metrics``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from prometheus_client import Counter

if TYPE_CHECKING:
    from mail_proxy.core.engine.runtime import Runtime


class LargeFileMetrics:
    """``gmp_large_files_{uploaded,bytes,downloads,expired}_total`` by tenant; one per runtime
    (``runtime.local(LargeFileMetrics)``), created when the plugin's service starts so the
    series are listed from the first scrape."""

    def __init__(self, runtime: Runtime) -> None:
        registry = runtime.metrics.registry
        labels = ("tenant_id",)
        self.uploaded = Counter(
            "gmp_large_files_uploaded",
            "Attachments offloaded to object storage.",
            labels,
            registry=registry,
        )
        self.bytes = Counter(
            "gmp_large_files_bytes",
            "Bytes of attachments offloaded to object storage.",
            labels,
            registry=registry,
        )
        self.downloads = Counter(
            "gmp_large_files_downloads",
            "Offloaded files served by GET /files/{token} (storage-signed links not counted).",
            labels,
            registry=registry,
        )
        self.expired = Counter(
            "gmp_large_files_expired",
            "Offloaded files deleted after their expiry (or with their tenant).",
            labels,
            registry=registry,
        )
