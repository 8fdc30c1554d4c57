"""Per-account SMTP connection settings: ``max_connections``, ``message_timeout`` and
``allow_plaintext_auth``.

Existing accounts get the defaults: 10 connections, 120 s per message, and no AUTH over an
unencrypted connection (an account that relied on it must now say so explicitly).

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("accounts") as batch_op:
        batch_op.add_column(
            sa.Column("message_timeout", sa.Float(), nullable=False, server_default="120")
        )
        batch_op.add_column(
            sa.Column("max_connections", sa.Integer(), nullable=False, server_default="10")
        )
        batch_op.add_column(
            sa.Column(
                "allow_plaintext_auth", sa.Boolean(), nullable=False, server_default=sa.false()
            )
        )


def downgrade() -> None:
    with op.batch_alter_table("accounts") as batch_op:
        batch_op.drop_column("allow_plaintext_auth")
        batch_op.drop_column("max_connections")
        batch_op.drop_column("message_timeout")
