"""initial schema

Revision ID: 0001
Revises: (none)
Create Date: 2026-11-29 18:39:46.005741
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = ("ce",)
depends_on = None


def upgrade() -> None:
    op.create_table(
        "accounts",
        sa.Column("pk", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("tenant_id", sa.String(length=128), nullable=False),
        sa.Column("id", sa.String(length=128), nullable=False),
        sa.Column("host", sa.String(length=255), nullable=False),
        sa.Column("port", sa.Integer(), nullable=False),
        sa.Column("user", sa.String(length=255), nullable=True),
        sa.Column("password_enc", sa.Text(), nullable=True),
        sa.Column("use_tls", sa.Boolean(), nullable=True),
        sa.Column("starttls", sa.Boolean(), nullable=True),
        sa.Column("timeout", sa.Float(), nullable=False),
        sa.Column("batch_size", sa.Integer(), nullable=True),
        sa.Column("limit_per_minute", sa.Integer(), nullable=True),
        sa.Column("limit_per_hour", sa.Integer(), nullable=True),
        sa.Column("limit_per_day", sa.Integer(), nullable=True),
        sa.Column("limit_behavior", sa.String(length=16), nullable=False),
        sa.Column("is_default", sa.Boolean(), nullable=False),
        sa.Column("transport", sa.String(length=64), nullable=False),
        sa.Column("options", sa.JSON(), nullable=True),
        sa.Column("extra", sa.JSON(), nullable=True),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("pk"),
        sa.UniqueConstraint("tenant_id", "id", name="uq_accounts_tenant_id"),
    )
    op.create_table(
        "command_log",
        sa.Column(
            "pk",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("ts", sa.Float(), nullable=False),
        sa.Column("principal", sa.String(length=160), nullable=False),
        sa.Column("tenant_id", sa.String(length=128), nullable=True),
        sa.Column("method", sa.String(length=8), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("status", sa.Integer(), nullable=False),
        sa.Column("summary", sa.JSON(), nullable=True),
        sa.PrimaryKeyConstraint("pk"),
    )
    with op.batch_alter_table("command_log", schema=None) as batch_op:
        batch_op.create_index("ix_command_log_ts", ["ts"], unique=False)

    op.create_table(
        "events",
        sa.Column(
            "pk",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("tenant_id", sa.String(length=128), nullable=False),
        sa.Column("message_pk", sa.BigInteger(), nullable=True),
        sa.Column("message_id", sa.String(length=255), nullable=True),
        sa.Column("event_type", sa.String(length=32), nullable=False),
        sa.Column("event_ts", sa.Float(), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("metadata", sa.JSON(), nullable=True),
        sa.Column("reportable", sa.Boolean(), nullable=False),
        sa.Column("reported_ts", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("pk"),
    )
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.create_index("ix_events_message", ["message_pk", "pk"], unique=False)
        batch_op.create_index(
            "ix_events_outbox",
            ["tenant_id", "pk"],
            unique=False,
            sqlite_where=sa.text("reportable AND reported_ts IS NULL"),
            postgresql_where=sa.text("reportable AND reported_ts IS NULL"),
        )

    op.create_table(
        "instance_settings",
        sa.Column("key", sa.String(length=128), nullable=False),
        sa.Column("value", sa.JSON(), nullable=True),
        sa.PrimaryKeyConstraint("key"),
    )
    op.create_table(
        "messages",
        sa.Column(
            "pk",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("tenant_id", sa.String(length=128), nullable=False),
        sa.Column("id", sa.String(length=255), nullable=False),
        sa.Column("account_id", sa.String(length=128), nullable=False),
        sa.Column("priority", sa.SmallInteger(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("batch_code", sa.String(length=255), nullable=True),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("message_id", sa.String(length=998), nullable=False),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("deferred_ts", sa.Float(), nullable=True),
        sa.Column("sent_ts", sa.Float(), nullable=True),
        sa.Column("error_ts", sa.Float(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("smtp_code", sa.Integer(), nullable=True),
        sa.Column("delivered_rcpts", sa.JSON(), nullable=True),
        sa.Column("claim_token", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("claimed_by", sa.String(length=255), nullable=True),
        sa.Column("lease_until", sa.Float(), nullable=True),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("pk"),
        sa.UniqueConstraint("tenant_id", "id", name="uq_messages_tenant_id"),
    )
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.create_index(
            "ix_messages_ready",
            ["priority", "pk"],
            unique=False,
            sqlite_where=sa.text("status IN ('pending', 'scheduled', 'deferred', 'sending')"),
            postgresql_where=sa.text("status IN ('pending', 'scheduled', 'deferred', 'sending')"),
        )
        batch_op.create_index("ix_messages_status", ["status", "updated_at"], unique=False)
        batch_op.create_index("ix_messages_tenant_pk", ["tenant_id", "pk"], unique=False)

    op.create_table(
        "send_log",
        sa.Column(
            "pk",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("bucket", sa.String(length=300), nullable=False),
        sa.Column("ts", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("pk"),
    )
    with op.batch_alter_table("send_log", schema=None) as batch_op:
        batch_op.create_index("ix_send_log_bucket_ts", ["bucket", "ts"], unique=False)

    op.create_table(
        "suspensions",
        sa.Column("tenant_id", sa.String(length=128), nullable=False),
        sa.Column("batch_code", sa.String(length=255), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "batch_code"),
    )
    op.create_table(
        "sync_state",
        sa.Column("tenant_id", sa.String(length=128), nullable=False),
        sa.Column("last_sync_ts", sa.Float(), nullable=True),
        sa.Column("last_success_ts", sa.Float(), nullable=True),
        sa.Column("next_due_ts", sa.Float(), nullable=True),
        sa.Column("dnd_until", sa.Float(), nullable=True),
        sa.Column("failures", sa.Integer(), server_default="0", nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("tenant_id"),
    )
    op.create_table(
        "tenants",
        sa.Column("id", sa.String(length=128), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=True),
        sa.Column("active", sa.Boolean(), server_default=sa.true(), nullable=False),
        sa.Column("client_base_url", sa.Text(), nullable=True),
        sa.Column("client_sync_path", sa.Text(), nullable=True),
        sa.Column("client_attachment_path", sa.Text(), nullable=True),
        sa.Column("client_auth_enc", sa.Text(), nullable=True),
        sa.Column("rate_limits", sa.JSON(), nullable=True),
        sa.Column("large_file_config", sa.JSON(), nullable=True),
        sa.Column("api_key_hash", sa.String(length=128), nullable=True),
        sa.Column("api_key_expires_at", sa.Float(), nullable=True),
        sa.Column("sync_secret_enc", sa.Text(), nullable=True),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("api_key_hash"),
    )


def downgrade() -> None:
    op.drop_table("tenants")
    op.drop_table("sync_state")
    op.drop_table("suspensions")
    with op.batch_alter_table("send_log", schema=None) as batch_op:
        batch_op.drop_index("ix_send_log_bucket_ts")

    op.drop_table("send_log")
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.drop_index("ix_messages_tenant_pk")
        batch_op.drop_index("ix_messages_status")
        batch_op.drop_index(
            "ix_messages_ready",
            sqlite_where=sa.text("status IN ('pending', 'scheduled', 'deferred', 'sending')"),
            postgresql_where=sa.text("status IN ('pending', 'scheduled', 'deferred', 'sending')"),
        )

    op.drop_table("messages")
    op.drop_table("instance_settings")
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.drop_index(
            "ix_events_outbox",
            sqlite_where=sa.text("reportable AND reported_ts IS NULL"),
            postgresql_where=sa.text("reportable AND reported_ts IS NULL"),
        )
        batch_op.drop_index("ix_events_message")

    op.drop_table("events")
    with op.batch_alter_table("command_log", schema=None) as batch_op:
        batch_op.drop_index("ix_command_log_ts")

    op.drop_table("command_log")
    op.drop_table("accounts")
