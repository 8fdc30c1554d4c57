"""The domain model shared by the engine, the storage backends and the plugins.

Plain dataclasses: request validation lives in the API models (pydantic), these are what the
rest of the code passes around once input has been accepted.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

DEFAULT_TENANT = "default"
#: Appended to a tenant's ``client_base_url`` when its ``client_sync_path`` (delivery reports)
#: or ``client_attachment_path`` (``endpoint`` attachments) is not set.
DEFAULT_SYNC_PATH = "/mail-proxy/sync"
DEFAULT_ATTACHMENT_PATH = "/mail-proxy/attachments"

#: Message states stored in the database. ``scheduled`` is a pending message whose
#: ``deferred_ts`` lies in the future; ``deferred`` waits for a retry or a rate-limit window.
MessageStatus = Literal["pending", "scheduled", "deferred", "sending", "sent", "error"]
PRIORITY_NAMES = {"immediate": 0, "high": 1, "medium": 2, "low": 3}


@dataclass(frozen=True)
class Principal:
    """Who is calling: the admin (all tenants) or one tenant."""

    kind: Literal["admin", "tenant"]
    tenant_id: str | None = None

    @property
    def is_admin(self) -> bool:
        return self.kind == "admin"


ADMIN = Principal("admin")


@dataclass
class Tenant:
    id: str
    name: str | None = None
    active: bool = True
    client_base_url: str | None = None
    client_sync_path: str | None = None
    client_attachment_path: str | None = None
    #: Decrypted ``{"method": "none"|"bearer"|"basic", ...}``; never returned by the API.
    client_auth: dict[str, Any] | None = None
    rate_limits: dict[str, Any] | None = None
    #: Secret for signing delivery reports (decrypted); never returned except at creation.
    sync_secret: str | None = None
    created_at: float = 0.0
    updated_at: float = 0.0


@dataclass
class Account:
    """An SMTP (or other transport) account owned by one tenant."""

    tenant_id: str
    id: str
    host: str = ""
    port: int = 587
    user: str | None = None
    #: The password as stored: an encrypted token, decrypted only by the transport.
    password_enc: str | None = None
    use_tls: bool | None = None
    starttls: bool | None = None
    #: Seconds to wait for each SMTP reply.
    timeout: float = 30.0
    #: Seconds one message's whole SMTP transaction may take (MAIL to the final reply).
    message_timeout: float = 120.0
    #: Most SMTP connections open at once for this account (per instance; also capped by
    #: ``GMP_SMTP_MAX_CONNECTIONS``).
    max_connections: int = 10
    #: Allow AUTH over an unencrypted connection (a relay on a trusted network only).
    allow_plaintext_auth: bool = False
    batch_size: int | None = None
    limit_per_minute: int | None = None
    limit_per_hour: int | None = None
    limit_per_day: int | None = None
    limit_behavior: Literal["defer", "reject"] = "defer"
    default: bool = False
    #: Name of the transport plugin (``smtp``, ``file``, ...).
    transport: str = "smtp"
    #: Transport-specific settings (the ``file`` transport's ``directory``, ...).
    options: dict[str, Any] = field(default_factory=dict)
    #: Plugin-owned extra settings (``register_account_fields``), stored as JSON.
    extra: dict[str, Any] = field(default_factory=dict)
    created_at: float = 0.0
    updated_at: float = 0.0

    @property
    def has_rate_limit(self) -> bool:
        return any((self.limit_per_minute, self.limit_per_hour, self.limit_per_day))


@dataclass
class NewMessage:
    """A validated message ready to be inserted by ``Storage.enqueue``."""

    tenant_id: str
    id: str
    account_id: str
    priority: int
    payload: dict[str, Any]
    message_id: str
    batch_code: str | None = None
    deferred_ts: float | None = None


#: A recipient's state: accepted (``sent``), refused for good (``error``) or to be retried.
RecipientStatus = Literal["sent", "error", "deferred"]


@dataclass
class RecipientOutcome:
    """What the server answered for one recipient (``code``/``reply``: its SMTP reply, or the
    reason the whole attempt failed)."""

    address: str
    status: RecipientStatus
    code: int | None = None
    reply: str | None = None

    def public(self) -> dict[str, Any]:
        return {
            "address": self.address,
            "status": self.status,
            "code": self.code,
            "reply": self.reply,
        }

    @classmethod
    def from_json(cls, value: Any) -> RecipientOutcome:
        """From its stored form (a dict, or a bare address: accepted)."""
        if isinstance(value, str):
            return cls(value, "sent")
        return cls(value["address"], value["status"], value.get("code"), value.get("reply"))


@dataclass
class MessageRecord:
    """One row of the queue as the storage returns it."""

    pk: int
    tenant_id: str
    id: str
    account_id: str
    priority: int
    status: str
    payload: dict[str, Any]
    message_id: str
    batch_code: str | None = None
    attempts: int = 0
    deferred_ts: float | None = None
    sent_ts: float | None = None
    error_ts: float | None = None
    error: str | None = None
    smtp_code: int | None = None
    created_at: float = 0.0
    #: What the server answered for each recipient on the latest attempt that included it.
    #: ``sent`` and ``error`` recipients are never sent again; ``deferred`` ones are retried.
    recipients: list[RecipientOutcome] = field(default_factory=list)
    #: The message was claimed again after a lease expired while it was being sent (the
    #: instance died or stalled): it may have been delivered already, so the attempts from
    #: then on may be duplicates. Reported as ``uncertain: true``.
    uncertain: bool = False
    #: Fencing token of the current claim: an outcome is applied only if it still matches.
    claim_token: int | None = None
    lease_until: float | None = None

    @property
    def delivered_rcpts(self) -> list[str]:
        """Recipients the server accepted on an earlier attempt."""
        return [r.address for r in self.recipients if r.status == "sent"]

    def public(self) -> dict[str, Any]:
        """The list fields of ``GET /messages`` (API.md)."""
        return {
            "pk": self.pk,
            "id": self.id,
            "tenant_id": self.tenant_id,
            "account_id": self.account_id,
            "priority": self.priority,
            "batch_code": self.batch_code,
            "status": self.status,
            "attempts": self.attempts,
            "deferred_ts": self.deferred_ts,
            "sent_ts": self.sent_ts,
            "error_ts": self.error_ts,
            "error": self.error,
            "created_at": self.created_at,
        }


@dataclass
class Outcome:
    """The result of one delivery attempt, applied by ``Storage.record_outcomes``.

    ``kind`` is the new state: ``sent``, ``deferred`` (retry or rate limit at ``deferred_ts``),
    ``error`` (final), or ``released`` (give the claim back untouched, e.g. on shutdown;
    ``metadata["uncertain"]`` when the transport had the message: it is flagged uncertain).
    The state change and its event are written in one transaction, fenced by
    ``claim_token`` so a stale instance cannot overwrite a newer attempt.
    """

    pk: int
    claim_token: int
    kind: Literal["sent", "deferred", "error", "released"]
    ts: float
    error: str | None = None
    smtp_code: int | None = None
    deferred_ts: float | None = None
    deferred_reason: str | None = None
    #: Every recipient's state after this attempt; ``None`` leaves the stored list unchanged.
    recipients: list[RecipientOutcome] | None = None
    count_attempt: bool = True
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass
class EventRecord:
    """One entry of the durable event outbox."""

    pk: int
    tenant_id: str
    message_pk: int | None
    message_id: str | None
    event_type: str
    event_ts: float
    description: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    reported_ts: float | None = None

    def public(self) -> dict[str, Any]:
        return {
            "event_type": self.event_type,
            "event_ts": self.event_ts,
            "description": self.description,
            "metadata": self.metadata,
        }


@dataclass(frozen=True)
class MessageRef:
    """Where a message is, found by the Message-ID the proxy generated for it."""

    pk: int
    tenant_id: str
    id: str
    account_id: str
    status: str
    message_id: str


@dataclass
class NewEvent:
    """An event a plugin's service records on a message (``Runtime.record_events``)."""

    tenant_id: str
    message_id: str
    event_type: str
    event_ts: float
    description: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass
class CommandLogEntry:
    pk: int
    ts: float
    principal: str
    tenant_id: str | None
    method: str
    path: str
    status: int
    summary: dict[str, Any] = field(default_factory=dict)

    def public(self) -> dict[str, Any]:
        return {
            "pk": self.pk,
            "ts": self.ts,
            "principal": self.principal,
            "tenant_id": self.tenant_id,
            "method": self.method,
            "path": self.path,
            "status": self.status,
            "summary": self.summary,
        }


@dataclass
class SyncState:
    """Per-tenant delivery-report sync bookkeeping."""

    tenant_id: str
    last_sync_ts: float | None = None
    last_success_ts: float | None = None
    next_due_ts: float | None = None
    dnd_until: float | None = None
    failures: int = 0
    last_error: str | None = None
