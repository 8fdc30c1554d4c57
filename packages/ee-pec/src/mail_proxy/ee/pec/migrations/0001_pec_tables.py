"""The PEC plugin's tables: mailbox state, sent PEC messages, handled receipts.

Revision ID: pec_0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "pec_0001"
down_revision = None
branch_labels = ("pec",)
depends_on = None


def upgrade() -> None:
    op.create_table(
        "pec_mailboxes",
        sa.Column("mailbox_key", sa.String(length=255), nullable=False),
        sa.Column("uidvalidity", sa.BigInteger(), nullable=True),
        sa.Column("last_uid", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("lease_owner", sa.String(length=255), nullable=True),
        sa.Column("lease_until", sa.Float(), nullable=True),
        sa.Column("updated_at", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("mailbox_key", name=op.f("pk_pec_mailboxes")),
    )
    op.create_table(
        "pec_messages",
        sa.Column("tenant_id", sa.String(length=128), nullable=False),
        sa.Column("msg_id", sa.String(length=255), nullable=False),
        sa.Column("message_pk", sa.BigInteger(), nullable=False),
        sa.Column("account_id", sa.String(length=255), nullable=False),
        sa.Column("message_id", sa.Text(), nullable=False),
        sa.Column("recipients", sa.JSON(), nullable=False),
        sa.Column("attempt_ts", sa.Float(), nullable=False),
        sa.Column("check_after", sa.Float(), nullable=False),
        sa.Column("acceptance_ts", sa.Float(), nullable=True),
        sa.Column("delivery_ts", sa.Float(), nullable=True),
        sa.Column("timeout_ts", sa.Float(), nullable=True),
        sa.Column("closed", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "msg_id", name=op.f("pk_pec_messages")),
    )
    op.create_index("ix_pec_messages_check_after", "pec_messages", ["check_after"])
    op.create_index("ix_pec_messages_account", "pec_messages", ["tenant_id", "account_id"])
    op.create_table(
        "pec_receipts",
        sa.Column("receipt_key", sa.String(length=64), nullable=False),
        sa.Column("tenant_id", sa.String(length=128), nullable=False),
        sa.Column("account_id", sa.String(length=255), nullable=False),
        sa.Column("kind", sa.String(length=64), nullable=True),
        sa.Column("reference", sa.Text(), nullable=True),
        sa.Column("msg_id", sa.String(length=255), nullable=True),
        sa.Column("outcome", sa.String(length=32), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("receipt_key", name=op.f("pk_pec_receipts")),
    )
    op.create_index("ix_pec_receipts_created_at", "pec_receipts", ["created_at"])


def downgrade() -> None:
    op.drop_index("ix_pec_receipts_created_at", table_name="pec_receipts")
    op.drop_table("pec_receipts")
    op.drop_index("ix_pec_messages_account", table_name="pec_messages")
    op.drop_index("ix_pec_messages_check_after", table_name="pec_messages")
    op.drop_table("pec_messages")
    op.drop_table("pec_mailboxes")
