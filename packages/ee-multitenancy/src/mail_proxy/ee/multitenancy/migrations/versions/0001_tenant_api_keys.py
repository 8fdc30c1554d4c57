"""The tenants' API keys in the plugin's own table ``tenant_api_keys``.

Keys issued before the plugin had a table lived in two columns of the Community Edition's
``tenants`` table. Its revision 0005 drops those columns and, when any tenant had a key,
first moves the keys to the holding table ``tenant_api_keys_legacy`` (the Community Edition's
branch is upgraded before the plugins', so the columns are already gone here). This revision
adopts those keys, unchanged (same hash, same expiry: every tenant keeps working with the key
it has), and drops the holding table.

Revision ID: multitenancy_0001
Revises: (first revision of the branch)
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "multitenancy_0001"
down_revision = None
branch_labels = ("multitenancy",)
depends_on = None

HOLDING = "tenant_api_keys_legacy"


def upgrade() -> None:
    op.create_table(
        "tenant_api_keys",
        sa.Column("tenant_id", sa.String(length=128), nullable=False),
        sa.Column("key_hash", sa.String(length=128), nullable=False),
        sa.Column("expires_at", sa.Float(), nullable=True),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", name="pk_tenant_api_keys"),
        sa.UniqueConstraint("key_hash", name="uq_tenant_api_keys_key_hash"),
    )
    if HOLDING in sa.inspect(op.get_bind()).get_table_names():
        op.execute(
            "INSERT INTO tenant_api_keys (tenant_id, key_hash, expires_at, created_at) "
            f"SELECT tenant_id, key_hash, expires_at, moved_at FROM {HOLDING}"
        )
        op.drop_table(HOLDING)


def downgrade() -> None:
    """The keys go back to the holding table (the Community Edition's downgrade of its
    revision 0005 puts them back in ``tenants``)."""
    op.create_table(
        HOLDING,
        sa.Column("tenant_id", sa.String(length=128), nullable=False),
        sa.Column("key_hash", sa.String(length=128), nullable=False),
        sa.Column("expires_at", sa.Float(), nullable=True),
        sa.Column("moved_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", name=f"pk_{HOLDING}"),
    )
    op.execute(
        f"INSERT INTO {HOLDING} (tenant_id, key_hash, expires_at, moved_at) "
        "SELECT tenant_id, key_hash, expires_at, created_at FROM tenant_api_keys"
    )
    op.drop_table("tenant_api_keys")
