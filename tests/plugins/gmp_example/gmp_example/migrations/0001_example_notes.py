"""The example plugin's table.

Revision ID: example_0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "example_0001"
down_revision = None
branch_labels = ("example",)
depends_on = None


def upgrade() -> None:
    op.create_table(
        "example_notes",
        sa.Column("pk", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("tenant_id", sa.String(length=128), nullable=False),
        sa.Column("message_id", sa.String(length=255), nullable=False),
        sa.Column("note", sa.Text(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("pk", name=op.f("pk_example_notes")),
    )
    op.create_index("ix_example_notes_tenant_message", "example_notes", ["tenant_id", "message_id"])


def downgrade() -> None:
    op.drop_index("ix_example_notes_tenant_message", table_name="example_notes")
    op.drop_table("example_notes")
