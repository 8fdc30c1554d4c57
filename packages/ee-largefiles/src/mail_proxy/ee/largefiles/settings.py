"""The ``large_files`` settings section: instance-wide knobs of the plugin (the per-tenant
configuration is the ``large_file_config`` tenant setting, :mod:`.config`)."""

from __future__ import annotations

from dataclasses import dataclass

from mail_proxy.core.contracts.config import parse_opt_str, positive, setting

SECTION = "large_files"


@dataclass
class LargeFilesSettings:
    """Read with ``runtime.settings.section("large_files")``."""

    large_files_max_mb: float = setting(
        2048.0,
        "GMP_LARGE_FILES_MAX_MB",
        "Large files: largest attachment offloaded to object storage (MB); a larger one fails "
        "the message.",
        positive(float),
    )
    large_files_public_url: str | None = setting(
        None,
        "GMP_LARGE_FILES_PUBLIC_URL",
        "Large files: public base URL of this service for download links it serves itself "
        "(GET /files/{token}) when a tenant sets no public_base_url (default: "
        "http://GMP_HOST:GMP_PORT).",
        parse_opt_str,
    )
    large_files_cleanup_interval: float = setting(
        3600.0,
        "GMP_LARGE_FILES_CLEANUP_INTERVAL",
        "Large files: seconds between two sweeps deleting expired files and their records.",
        positive(float),
    )
    large_files_cleanup_batch: int = setting(
        200,
        "GMP_LARGE_FILES_CLEANUP_BATCH",
        "Large files: expired files deleted per batch of a sweep.",
        positive(int),
    )
    large_files_probe_timeout: float = setting(
        20.0,
        "GMP_LARGE_FILES_PROBE_TIMEOUT",
        "Large files: seconds a storage check (write, read, delete a probe object) may take "
        "when a configuration is saved or tested.",
        positive(float),
    )
