"""The large-files plugin's tables: uploads, stores, secrets.

Revision ID: largefiles_0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "largefiles_0001"
down_revision = None
branch_labels = ("largefiles",)
depends_on = None


def upgrade() -> None:
    op.create_table(
        "largefiles_uploads",
        sa.Column("pk", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("file_id", sa.String(length=32), nullable=False),
        sa.Column("tenant_id", sa.String(length=128), nullable=False),
        sa.Column("message_id", sa.String(length=255), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("source", sa.String(length=64), nullable=False),
        sa.Column("storage_url", sa.String(length=2048), nullable=False),
        sa.Column("object_key", sa.String(length=2048), nullable=False),
        sa.Column("filename", sa.String(length=255), nullable=False),
        sa.Column("mime_type", sa.String(length=255), nullable=True),
        sa.Column("size", sa.BigInteger(), nullable=True),
        sa.Column("md5", sa.String(length=32), nullable=True),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("expires_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("pk", name=op.f("pk_largefiles_uploads")),
        sa.UniqueConstraint("file_id", name=op.f("uq_largefiles_uploads_file_id")),
        sa.UniqueConstraint(
            "tenant_id",
            "message_id",
            "position",
            "source",
            name=op.f("uq_largefiles_uploads_tenant_id_message_id_position_source"),
        ),
    )
    op.create_index("ix_largefiles_uploads_expires_at", "largefiles_uploads", ["expires_at"])
    op.create_table(
        "largefiles_stores",
        sa.Column("tenant_id", sa.String(length=128), nullable=False),
        sa.Column("url_hash", sa.String(length=64), nullable=False),
        sa.Column("storage_url", sa.String(length=2048), nullable=False),
        sa.Column("options_enc", sa.Text(), nullable=True),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "url_hash", name=op.f("pk_largefiles_stores")),
    )
    op.create_table(
        "largefiles_secrets",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("value_enc", sa.Text(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_largefiles_secrets")),
    )


def downgrade() -> None:
    op.drop_table("largefiles_secrets")
    op.drop_table("largefiles_stores")
    op.drop_index("ix_largefiles_uploads_expires_at", table_name="largefiles_uploads")
    op.drop_table("largefiles_uploads")
