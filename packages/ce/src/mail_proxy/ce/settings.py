"""The Community Edition's settings sections (``register_settings``): the SMTP transport, the
attachment fetch modes and the HTTP report sink. Same names and ``GMP_*`` variables as
always; read them with ``runtime.settings.section(SMTP)`` (or ``FETCH``, ``REPORT_SINK``).
"""

from __future__ import annotations

from dataclasses import dataclass

from mail_proxy.core.contracts.config import (
    parse_opt_str,
    parse_str_list,
    positive,
    setting,
)

SMTP = "smtp"
FETCH = "fetch"
REPORT_SINK = "report_sink"


@dataclass
class SmtpSettings:
    """The SMTP transport's connection pool."""

    smtp_idle_timeout: float = setting(
        60.0,
        "GMP_SMTP_IDLE_TIMEOUT",
        "Pooled SMTP connections idle longer are closed.",
        positive(float),
    )
    smtp_connect_timeout: float = setting(
        15.0,
        "GMP_SMTP_CONNECT_TIMEOUT",
        "SMTP connect + greeting + TLS + AUTH timeout.",
        positive(float),
    )
    smtp_max_connections: int = setting(
        200,
        "GMP_SMTP_MAX_CONNECTIONS",
        "Hard cap on the SMTP connections this instance keeps open, all accounts together "
        "(each account's max_connections is capped by it too).",
        positive(int),
    )


@dataclass
class FetchSettings:
    """Where the attachment fetch modes may read from."""

    attachment_base_url: str | None = setting(
        None,
        "GMP_ATTACHMENT_BASE_URL",
        "Endpoint base URL when the tenant has none (trusted).",
        parse_opt_str,
    )
    attachment_base_dirs: list[str] = setting(
        None,
        "GMP_ATTACHMENT_BASE_DIRS",
        "':'-separated directories the filesystem fetch mode may read (empty = mode disabled).",
        parse_str_list(":"),
        factory=list,
    )
    fetch_allow_networks: list[str] = setting(
        None,
        "GMP_FETCH_ALLOW_NETWORKS",
        "Comma-separated CIDRs that message/tenant URLs may reach despite the address policy.",
        parse_str_list(","),
        factory=list,
    )


@dataclass
class ReportSinkSettings:
    """The instance-wide delivery-report endpoint, for tenants without their own."""

    client_sync_url: str | None = setting(
        None,
        "GMP_CLIENT_SYNC_URL",
        "Global delivery-report URL for tenants without their own.",
        parse_opt_str,
    )
    client_sync_user: str | None = setting(
        None, "GMP_CLIENT_SYNC_USER", "Basic-auth user for GMP_CLIENT_SYNC_URL.", parse_opt_str
    )
    client_sync_password: str | None = setting(
        None,
        "GMP_CLIENT_SYNC_PASSWORD",
        "Basic-auth password for GMP_CLIENT_SYNC_URL.",
        parse_opt_str,
    )
    client_sync_token: str | None = setting(
        None, "GMP_CLIENT_SYNC_TOKEN", "Bearer token for GMP_CLIENT_SYNC_URL.", parse_opt_str
    )
    client_sync_secret: str | None = setting(
        None,
        "GMP_CLIENT_SYNC_SECRET",
        "Signing secret for reports sent to GMP_CLIENT_SYNC_URL.",
        parse_opt_str,
    )
