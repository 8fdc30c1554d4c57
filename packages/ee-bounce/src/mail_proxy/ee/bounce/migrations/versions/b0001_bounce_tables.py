"""The bounce plugin's first tables: mailbox state, bounces seen, suppressions, secrets.

Revision ID: b0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "b0001"
down_revision = None
branch_labels = ("bounce",)
depends_on = None


def upgrade() -> None:
    op.create_table(
        "bounce_mailbox_state",
        sa.Column("mailbox_key", sa.String(length=255), nullable=False),
        sa.Column("uidvalidity", sa.BigInteger(), nullable=True),
        sa.Column("last_uid", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("lease_owner", sa.String(length=255), nullable=True),
        sa.Column("lease_until", sa.Float(), nullable=True),
        sa.Column("updated_at", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("mailbox_key", name="pk_bounce_mailbox_state"),
    )
    op.create_table(
        "bounce_seen",
        sa.Column("mailbox_key", sa.String(length=255), nullable=False),
        sa.Column("bounce_key", sa.String(length=255), nullable=False),
        sa.Column("seen_at", sa.Float(), nullable=False),
        sa.Column("outcome", sa.String(length=32), nullable=False),
        sa.Column("tenant_id", sa.String(length=128), nullable=True),
        sa.Column("message_id", sa.String(length=255), nullable=True),
        sa.PrimaryKeyConstraint("mailbox_key", "bounce_key", name="pk_bounce_seen"),
    )
    op.create_index("ix_bounce_seen_seen_at", "bounce_seen", ["seen_at"])
    op.create_table(
        "bounce_suppressions",
        sa.Column("tenant_id", sa.String(length=128), nullable=False),
        sa.Column("address", sa.String(length=320), nullable=False),
        sa.Column("reason", sa.String(length=32), nullable=False),
        sa.Column("code", sa.String(length=16), nullable=True),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("message_id", sa.String(length=255), nullable=True),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "address", name="pk_bounce_suppressions"),
    )
    op.create_table(
        "bounce_secrets",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_bounce_secrets"),
    )


def downgrade() -> None:
    op.drop_table("bounce_secrets")
    op.drop_table("bounce_suppressions")
    op.drop_index("ix_bounce_seen_seen_at", table_name="bounce_seen")
    op.drop_table("bounce_seen")
    op.drop_table("bounce_mailbox_state")
