"""What a plugin declares through the ``register_*`` hooks beyond engines: its settings, its
tables, its per-tenant configuration, its event types and its message steps, and the typed
event every plugin receives through ``on_event``.

These are plain declarations (dataclasses and a base class with no-op async methods): the
engine reads them; nothing here runs by itself. docs/plugins.md has a worked example of each.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from mail_proxy.core.contracts.model import Account, EventRecord, MessageRecord, Tenant
    from mail_proxy.core.engine.mime import Attachment
    from mail_proxy.core.engine.runtime import Runtime

#: The one constraint naming convention of every table, the core's and every plugin's
#: (``MetaData(naming_convention=NAMING_CONVENTION)``): migrations of different branches
#: never produce clashing or unnamed constraints.
NAMING_CONVENTION: dict[str, str] = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


@dataclass(frozen=True)
class SettingsSection:
    """A plugin's own settings: ``settings`` is a dataclass whose fields are declared with
    :func:`mail_proxy.core.contracts.config.setting` (default, ``GMP_*`` variable, doc line,
    parser). Values come from the defaults, then the instance config file (flat keys, or a
    ``[name]`` table), then the environment; a key no section declares is refused. Read them
    with ``runtime.settings.section(name)``."""

    name: str
    settings: type
    plugin: str = ""


@dataclass(frozen=True)
class MigrationBranch:
    """A plugin's tables: an alembic branch. ``versions_dir`` holds its revision scripts
    (the first one has ``down_revision = None`` and ``branch_labels = (name,)``);
    ``metadata`` describes its tables for autogenerate. Every installed branch is upgraded
    at startup; a plugin installed later gets its tables on the next start; uninstalling it
    leaves its tables untouched."""

    name: str
    versions_dir: str
    metadata: Any = None
    plugin: str = ""


@dataclass(frozen=True)
class TenantSetting:
    """A typed per-tenant configuration field owned by a plugin (e.g. ``"example_labels"``).

    ``model`` is a pydantic model that validates the value (a bad value is a 400 naming the
    field); ``secret_fields`` are encrypted at rest and never returned (``"<field>_set":
    true`` instead); ``admin_only`` values are set with the admin token only. Stored
    generically, one JSON value per tenant and field; shown and changed through the tenant
    routes, and through ``GET|PUT /instance/tenant-settings/{name}`` for the default tenant.

    ``check`` is an optional async check of a valid value before it is stored, for what a
    model cannot see (a remote storage that must answer): it gets the model instance (secrets
    in clear), the tenant id and the runtime, and refuses by raising
    :class:`~mail_proxy.core.contracts.errors.ApiError`.
    """

    name: str
    model: Any
    secret_fields: tuple[str, ...] = ()
    admin_only: bool = True
    doc: str = ""
    plugin: str = ""
    check: Callable[[Any, str, Runtime], Awaitable[None]] | None = None


@dataclass(frozen=True)
class AccountFields:
    """Fields a plugin adds to accounts (e.g. a mailbox an account reads receipts from: ``imap_*``).

    The names of ``model`` (a pydantic model) are accepted at the top level of an account
    body, validated together by the model, stored in the account's ``extra[name]`` (members
    in ``secret_fields`` sealed, never returned: ``"<member>_set": true`` instead) and shown
    by the account routes. Read them decrypted with
    ``runtime.local(PluginFields).account(account, name)``."""

    name: str
    model: Any
    secret_fields: tuple[str, ...] = ()
    doc: str = ""
    plugin: str = ""


@dataclass(frozen=True)
class EventType:
    """The report shape of one event type, declared by whoever records it.

    ``report`` returns the fields the delivery-report item carries beside ``id`` (e.g.
    ``{"sent_ts": ...}``); without it the item is ``{"id", "event", "event_ts",
    "description"}``. ``message_fields`` lists the fields the event type adds to
    ``GET /messages/{id}`` (computed by ``message_view`` from the message's events)."""

    name: str
    doc: str = ""
    report: Callable[[EventRecord], dict[str, Any]] | None = None
    message_view: Callable[[list[EventRecord]], dict[str, Any]] | None = None
    plugin: str = ""


@dataclass
class Event:
    """A committed event, as ``on_event`` receives it: delivery outcomes and the events a
    plugin recorded (``Runtime.record_events``) alike."""

    type: str
    tenant_id: str
    account_id: str | None
    message_pk: int | None
    message_id: str | None
    ts: float
    metadata: Mapping[str, Any] = field(default_factory=dict)


class EnqueueRejected(Exception):
    """Raised by a message step's ``at_enqueue`` to refuse one entry; the text is the
    rejection reason the client sees in ``rejected``."""


@dataclass
class EnqueueContext:
    """One entry being accepted: ``payload`` is the validated message (a step may change
    it), ``options`` the entry's ``account_id`` and the values of the steps' own
    ``message_fields``, ``warnings`` are returned to the client beside ``queued``."""

    tenant: Tenant
    message_id: str
    payload: dict[str, Any]
    runtime: Runtime
    options: Mapping[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


@dataclass
class DeliveryContext:
    """One delivery attempt. ``attachments`` is None before fetching, then the fetched
    attachments (a step may replace entries, e.g. with a link in the body); ``envelope``
    and ``email`` are set before sending: a step may change the envelope sender (VERP),
    the recipients, or the message. ``events`` are recorded with the outcome."""

    record: MessageRecord
    account: Account
    tenant: Tenant
    runtime: Runtime
    payload: dict[str, Any]
    attachments: list[Attachment] | None = None
    email: EmailMessage | None = None
    sender: str = ""
    recipients: list[str] = field(default_factory=list)
    events: list[tuple[str, str | None, dict[str, Any]]] = field(default_factory=list)

    def add_event(self, event_type: str, description: str | None = None, **metadata: Any) -> None:
        """Record ``event_type`` on the message with this attempt's outcome."""
        self.events.append((event_type, description, metadata))


class MessageStep:
    """Async steps around a message's life; override the ones you need.

    Steps run in registration order (by name). An exception other than the documented ones
    in a delivery step is a temporary failure of the attempt (retried, bounded); raise
    :class:`~mail_proxy.core.contracts.errors.MessageContentError` for a failure that
    only the message can cause (permanent at once).
    """

    name: str = ""
    #: Fields a client may add to a message for this step, by name → type (checked at enqueue
    #: with pydantic, e.g. ``{"ignore_suppression": bool}``); their values reach
    #: ``at_enqueue`` in ``ctx.options`` and are not stored unless the step puts them in the
    #: payload.
    message_fields: ClassVar[dict[str, Any]] = {}

    async def at_enqueue(self, ctx: EnqueueContext) -> None:
        """After validation, before the message is stored. Raise :class:`EnqueueRejected`
        to refuse it; append to ``ctx.warnings`` to warn."""

    async def before_fetch(self, ctx: DeliveryContext) -> None:
        """Before the attachments are fetched (``ctx.payload["attachments"]``)."""

    async def after_fetch(self, ctx: DeliveryContext) -> None:
        """After fetching: ``ctx.attachments`` holds each attachment's content and size."""

    async def before_send(self, ctx: DeliveryContext) -> None:
        """The MIME message and envelope are built: last changes before the transport."""
