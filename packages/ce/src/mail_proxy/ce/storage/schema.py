"""The tables of the service. Changes here need a new migration in ``migrations/versions``
(a test compares the migrated database with this metadata)."""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

ACTIVE = ("pending", "scheduled", "deferred", "sending")

tenants = sa.Table(
    "tenants",
    metadata,
    sa.Column("id", sa.String(128), primary_key=True),
    sa.Column("name", sa.String(255)),
    sa.Column("active", sa.Boolean, nullable=False, server_default=sa.true()),
    sa.Column("client_base_url", sa.Text),
    sa.Column("client_sync_path", sa.Text),
    sa.Column("client_attachment_path", sa.Text),
    sa.Column("client_auth_enc", sa.Text),
    sa.Column("rate_limits", sa.JSON),
    sa.Column("sync_secret_enc", sa.Text),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
)

# Plugins' per-tenant configuration (``register_tenant_settings``): one JSON value per tenant
# and setting name; secret members are stored as ``{"$enc": token}``.
tenant_settings = sa.Table(
    "tenant_settings",
    metadata,
    sa.Column("tenant_id", sa.String(128), primary_key=True),
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("value", sa.JSON, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
)

accounts = sa.Table(
    "accounts",
    metadata,
    sa.Column("pk", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("tenant_id", sa.String(128), nullable=False),
    sa.Column("id", sa.String(128), nullable=False),
    sa.Column("host", sa.String(255), nullable=False),
    sa.Column("port", sa.Integer, nullable=False),
    sa.Column("user", sa.String(255)),
    sa.Column("password_enc", sa.Text),
    sa.Column("use_tls", sa.Boolean),
    sa.Column("starttls", sa.Boolean),
    sa.Column("timeout", sa.Float, nullable=False),
    sa.Column("message_timeout", sa.Float, nullable=False, server_default="120"),
    sa.Column("max_connections", sa.Integer, nullable=False, server_default="10"),
    sa.Column("allow_plaintext_auth", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("batch_size", sa.Integer),
    sa.Column("limit_per_minute", sa.Integer),
    sa.Column("limit_per_hour", sa.Integer),
    sa.Column("limit_per_day", sa.Integer),
    sa.Column("limit_behavior", sa.String(16), nullable=False),
    sa.Column("is_default", sa.Boolean, nullable=False),
    sa.Column("transport", sa.String(64), nullable=False),
    sa.Column("options", sa.JSON),
    sa.Column("extra", sa.JSON),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
    sa.UniqueConstraint("tenant_id", "id", name="uq_accounts_tenant_id"),
)

messages = sa.Table(
    "messages",
    metadata,
    sa.Column(
        "pk",
        sa.BigInteger().with_variant(sa.Integer, "sqlite"),
        primary_key=True,
        autoincrement=True,
    ),
    sa.Column("tenant_id", sa.String(128), nullable=False),
    sa.Column("id", sa.String(255), nullable=False),
    sa.Column("account_id", sa.String(128), nullable=False),
    sa.Column("priority", sa.SmallInteger, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("batch_code", sa.String(255)),
    sa.Column("payload", sa.JSON, nullable=False),
    sa.Column("message_id", sa.String(998), nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("deferred_ts", sa.Float),
    sa.Column("sent_ts", sa.Float),
    sa.Column("error_ts", sa.Float),
    sa.Column("error", sa.Text),
    sa.Column("smtp_code", sa.Integer),
    # Every recipient's state after the latest attempt that tried it (RecipientOutcome).
    sa.Column("recipients", sa.JSON),
    # Retaken after a lease expired mid-send: attempts from then on may be duplicates.
    sa.Column("uncertain", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("claim_token", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("claimed_by", sa.String(255)),
    sa.Column("lease_until", sa.Float),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
    sa.UniqueConstraint("tenant_id", "id", name="uq_messages_tenant_id"),
)
# The claim scan: active messages in (priority, pk) order.
sa.Index(
    "ix_messages_ready",
    messages.c.priority,
    messages.c.pk,
    sqlite_where=messages.c.status.in_(ACTIVE),
    postgresql_where=messages.c.status.in_(ACTIVE),
)
sa.Index("ix_messages_tenant_pk", messages.c.tenant_id, messages.c.pk)
# The filters of GET /messages (the console's messages page): each walks its index in pk
# order from the cursor, so a page deep in a million rows costs what the first one does.
sa.Index("ix_messages_tenant_status_pk", messages.c.tenant_id, messages.c.status, messages.c.pk)
sa.Index(
    "ix_messages_tenant_account_pk", messages.c.tenant_id, messages.c.account_id, messages.c.pk
)
sa.Index(
    "ix_messages_tenant_batch_pk",
    messages.c.tenant_id,
    messages.c.batch_code,
    messages.c.pk,
    sqlite_where=messages.c.batch_code.is_not(None),
    postgresql_where=messages.c.batch_code.is_not(None),
)
sa.Index("ix_messages_tenant_created", messages.c.tenant_id, messages.c.created_at, messages.c.pk)
# Finding a message by the Message-ID the proxy generated (bounces, receipts quote it).
sa.Index("ix_messages_message_id", messages.c.message_id)
# Retention scan of finished rows. Partial, so that the claim query (active rows) is never
# tempted to use it instead of ix_messages_ready.
FINISHED = ("sent", "error")
sa.Index(
    "ix_messages_finished",
    messages.c.updated_at,
    sqlite_where=messages.c.status.in_(FINISHED),
    postgresql_where=messages.c.status.in_(FINISHED),
)

events = sa.Table(
    "events",
    metadata,
    sa.Column(
        "pk",
        sa.BigInteger().with_variant(sa.Integer, "sqlite"),
        primary_key=True,
        autoincrement=True,
    ),
    sa.Column("tenant_id", sa.String(128), nullable=False),
    sa.Column("message_pk", sa.BigInteger),
    sa.Column("message_id", sa.String(255)),
    sa.Column("event_type", sa.String(32), nullable=False),
    sa.Column("event_ts", sa.Float, nullable=False),
    sa.Column("description", sa.Text),
    sa.Column("metadata", sa.JSON),
    sa.Column("reportable", sa.Boolean, nullable=False),
    sa.Column("reported_ts", sa.Float),
)
sa.Index("ix_events_message", events.c.message_pk, events.c.pk)
# The overview's "last hour" counts.
sa.Index("ix_events_ts", events.c.event_ts)
# The outbox scan: reportable events not yet acknowledged, per tenant, in order.
sa.Index(
    "ix_events_outbox",
    events.c.tenant_id,
    events.c.pk,
    sqlite_where=sa.and_(events.c.reportable, events.c.reported_ts.is_(None)),
    postgresql_where=sa.and_(events.c.reportable, events.c.reported_ts.is_(None)),
)

suspensions = sa.Table(
    "suspensions",
    metadata,
    sa.Column("tenant_id", sa.String(128), primary_key=True),
    sa.Column("batch_code", sa.String(255), primary_key=True),
    sa.Column("created_at", sa.Float, nullable=False),
)

send_log = sa.Table(
    "send_log",
    metadata,
    sa.Column(
        "pk",
        sa.BigInteger().with_variant(sa.Integer, "sqlite"),
        primary_key=True,
        autoincrement=True,
    ),
    sa.Column("bucket", sa.String(300), nullable=False),
    sa.Column("ts", sa.Float, nullable=False),
)
sa.Index("ix_send_log_bucket_ts", send_log.c.bucket, send_log.c.ts)

command_log = sa.Table(
    "command_log",
    metadata,
    sa.Column(
        "pk",
        sa.BigInteger().with_variant(sa.Integer, "sqlite"),
        primary_key=True,
        autoincrement=True,
    ),
    sa.Column("ts", sa.Float, nullable=False),
    sa.Column("principal", sa.String(160), nullable=False),
    sa.Column("tenant_id", sa.String(128)),
    sa.Column("method", sa.String(8), nullable=False),
    sa.Column("path", sa.Text, nullable=False),
    sa.Column("status", sa.Integer, nullable=False),
    sa.Column("summary", sa.JSON),
)
sa.Index("ix_command_log_ts", command_log.c.ts)

instance_settings = sa.Table(
    "instance_settings",
    metadata,
    sa.Column("key", sa.String(128), primary_key=True),
    sa.Column("value", sa.JSON),
)

sync_state = sa.Table(
    "sync_state",
    metadata,
    sa.Column("tenant_id", sa.String(128), primary_key=True),
    sa.Column("last_sync_ts", sa.Float),
    sa.Column("last_success_ts", sa.Float),
    sa.Column("next_due_ts", sa.Float),
    sa.Column("dnd_until", sa.Float),
    sa.Column("failures", sa.Integer, nullable=False, server_default="0"),
    sa.Column("last_error", sa.Text),
    # Which instance is pushing this tenant's reports, until when (see claim_report_sync).
    sa.Column("owner", sa.String(255)),
    sa.Column("lease_until", sa.Float),
)
