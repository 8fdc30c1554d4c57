"""Request models of the Community Edition routes (pydantic).

These models validate the requests *and* generate ``/openapi.json`` (through the route
table), so the published schema is the one the server enforces.

``add-messages`` is special: one bad entry must not block the others, so its body model
declares ``messages`` as a list of :class:`Message` for the schema but skips validating the
items there; :mod:`mail_proxy.ce.api.validation` validates each entry with :class:`Message`
and turns failures into per-entry rejection reasons.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SkipValidation

from mail_proxy.core.contracts.model import PRIORITY_NAMES

PriorityName = Literal["immediate", "high", "medium", "low"]
#: 0 (immediate) .. 3 (low), or the name.
Priority = Annotated[int, Field(ge=0, le=3)] | PriorityName
Epoch = Annotated[float, Field(ge=0, allow_inf_nan=False)]
#: Tenant ids and account ids appear in URL paths: keep them to a safe alphabet.
IDENT_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._@+-]{0,127}$"
Ident = Annotated[str, Field(pattern=IDENT_PATTERN)]
Seconds = Annotated[float, Field(gt=0, le=86400 * 366, allow_inf_nan=False)]


def priority_value(value: int | str) -> int:
    """The numeric priority of a validated :data:`Priority`."""
    return value if isinstance(value, int) else PRIORITY_NAMES[value]


class _Strict(BaseModel):
    """JSON types exactly as documented (no ``"5"`` → 5), unknown fields refused."""

    model_config = ConfigDict(extra="forbid", strict=True, populate_by_name=True)


class Attachment(_Strict):
    """An attachment, fetched at send time by the fetcher named by ``fetch_mode``."""

    filename: str = Field(description="may carry a {MD5:<hex>} cache marker")
    storage_path: str
    fetch_mode: str | None = Field(
        None,
        description="base64, filesystem, endpoint, http_url or a plugin's mode; "
        "inferred from storage_path when omitted",
    )
    mime_type: str | None = None
    content_md5: str | None = None
    size: int | None = Field(
        None,
        ge=0,
        description="size in bytes, when the client knows it (plugins may act on it at "
        "enqueue, e.g. large-files)",
    )
    auth: dict[str, Any] | None = Field(
        None, description="per-attachment auth for endpoint/http_url"
    )


class Message(_Strict):
    """One entry of ``add-messages`` (API.md "Message")."""

    id: str = Field(min_length=1, max_length=255, description="client's id, unique per tenant")
    tenant_id: str | None = None
    account_id: str | None = Field(None, description="default: the tenant's default account")
    from_: str = Field(alias="from", description="RFC 5322 mailbox, display name allowed")
    to: list[str] | str = Field(description="list or comma-separated string, non-empty")
    cc: list[str] | str | None = None
    bcc: list[str] | str | None = None
    reply_to: str | None = None
    return_path: str | None = Field(None, description="envelope sender")
    subject: str
    body: str = ""
    content_type: Literal["plain", "html"] = "plain"
    body_html: str | None = None
    headers: dict[str, str] | None = None
    message_id: str | None = Field(None, description="'<local@domain>'; generated when omitted")
    priority: Priority | None = Field(None, description="default 2 or default_priority")
    deferred_ts: Epoch | None = Field(None, description="do not send before (epoch seconds)")
    batch_code: str | None = Field(None, min_length=1, max_length=128)
    attachments: list[Attachment] | None = None


class AddMessagesBody(_Strict):
    messages: list[SkipValidation[Message]]
    default_priority: Priority | None = None
    tenant_id: str | None = None


class TenantBody(_Strict):
    """A body that may only name the tenant (``run-now``)."""

    tenant_id: str | None = None


class SuspendBody(_Strict):
    tenant_id: str | None = None
    batch_code: str | None = Field(None, min_length=1, max_length=128)


class DeleteMessagesBody(_Strict):
    ids: list[str]
    tenant_id: str | None = None


class CleanupBody(_Strict):
    older_than_seconds: Annotated[float, Field(ge=0, allow_inf_nan=False)] | None = Field(
        None, description="default: the configured report retention (7 days)"
    )
    tenant_id: str | None = None


class AccountBody(_Strict):
    """API.md "Account", plus the transport plugin and its options. Other fields are the
    installed plugins' account fields (``register_account_fields``), checked by the route."""

    model_config = ConfigDict(extra="allow", strict=True, populate_by_name=True)

    id: Ident
    tenant_id: str | None = None
    transport: str = Field("smtp", description="smtp, file, or a plugin's transport")
    host: str = Field("", max_length=253, description="required for smtp")
    port: int = Field(587, ge=1, le=65535)
    user: str | None = Field(None, max_length=512)
    password: str | None = Field(
        None, max_length=4096, description="stored encrypted, never returned; omit to keep"
    )
    use_tls: bool | None = Field(None, description="implicit TLS (default: port 465)")
    starttls: bool | None = Field(
        None,
        description="true = STARTTLS required; false = not insisted on even after the server "
        "offered it; default: used when offered, then insisted on",
    )
    allow_plaintext_auth: bool = Field(
        False, description="allow AUTH over an unencrypted connection (trusted network only)"
    )
    timeout: Seconds = Field(30.0, description="seconds to wait for each SMTP reply")
    message_timeout: Seconds = Field(
        120.0, description="seconds one message's SMTP transaction may take in all"
    )
    max_connections: int = Field(
        10, ge=1, le=1000, description="SMTP connections open at once (per instance)"
    )
    batch_size: int | None = Field(None, ge=1)
    limit_per_minute: int | None = Field(None, ge=0)
    limit_per_hour: int | None = Field(None, ge=0)
    limit_per_day: int | None = Field(None, ge=0)
    limit_behavior: Literal["defer", "reject"] = "defer"
    default: bool = False
    options: dict[str, Any] = Field(
        default_factory=dict, description="transport options, e.g. {'directory': ...} for file"
    )


class InstanceUpdate(_Strict):
    """The instance settings that may change while the service runs (others: restart)."""

    name: str | None = Field(None, min_length=1, max_length=100, pattern=r"^[^\x00-\x1f\x7f]+$")
    send_loop_interval: Annotated[float, Field(gt=0, le=60, allow_inf_nan=False)] | None = None
    max_retries: Annotated[int, Field(ge=0, le=100)] | None = None
    retry_delays: (
        Annotated[
            list[Annotated[float, Field(ge=0, le=86400 * 7, allow_inf_nan=False)]],
            Field(min_length=1, max_length=50),
        ]
        | None
    ) = None
    sync_interval: Annotated[float, Field(gt=0, le=86400, allow_inf_nan=False)] | None = None
    scheduler_active: bool | None = None


# -- query strings (always strings on the wire: lax parsing) -----------------------------
class _Query(BaseModel):
    model_config = ConfigDict(extra="ignore")


class PageQuery(_Query):
    limit: int = Field(100, ge=1, le=1000)
    cursor: str | None = Field(None, description="next_cursor of the previous page")


class MessagesQuery(PageQuery):
    tenant_id: str | None = None
    status: Literal["pending", "scheduled", "deferred", "sending", "sent", "error"] | None = None
    batch_code: str | None = None
    account_id: str | None = None
    since: Epoch | None = Field(None, description="created at or after (epoch seconds)")
    until: Epoch | None = Field(None, description="created before (epoch seconds)")
    order: Literal["asc", "desc"] = Field(
        "asc", description="asc: oldest first (pk order); desc: newest first"
    )
    active_only: bool = False


class RequeueMessagesBody(_Strict):
    ids: list[str]
    tenant_id: str | None = None


class OverviewQuery(_Query):
    tenant_id: str | None = Field(
        None, description="admin: one tenant (default: every tenant); a tenant token: its own"
    )
    window: Annotated[int, Field(ge=60, le=86400)] = Field(
        3600, description="seconds of the recent counts (default: the last hour)"
    )


class TenantQuery(_Query):
    tenant_id: str | None = None


class CommandLogQuery(PageQuery):
    since: Epoch | None = Field(None, description="only entries at or after this time")


class ExportQuery(_Query):
    since: Epoch | None = None
