"""Plugins' per-tenant settings in one generic table, and an index to find a message by the
Message-ID the proxy generated.

``tenants.large_file_config`` (a plugin's setting that had a column of its own) moves into
``tenant_settings`` under the same name.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "tenant_settings",
        sa.Column("tenant_id", sa.String(length=128), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("value", sa.JSON(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "name"),
    )
    op.execute(
        "INSERT INTO tenant_settings (tenant_id, name, value, updated_at) "
        "SELECT id, 'large_file_config', large_file_config, updated_at FROM tenants "
        "WHERE large_file_config IS NOT NULL"
    )
    with op.batch_alter_table("tenants") as batch_op:
        batch_op.drop_column("large_file_config")
    with op.batch_alter_table("messages") as batch_op:
        batch_op.create_index("ix_messages_message_id", ["message_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("messages") as batch_op:
        batch_op.drop_index("ix_messages_message_id")
    with op.batch_alter_table("tenants") as batch_op:
        batch_op.add_column(sa.Column("large_file_config", sa.JSON(), nullable=True))
    op.drop_table("tenant_settings")
