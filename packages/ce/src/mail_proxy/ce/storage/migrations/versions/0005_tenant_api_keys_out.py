"""Tenant API keys leave ``tenants``: they belong to the multitenancy plugin, which keeps them
in its own table (its migration branch ``multitenancy``).

This branch is upgraded before the plugins' branches at startup, so dropping the columns here
would lose the keys before the plugin could copy them. When any tenant has a key, the keys
are first moved to the holding table ``tenant_api_keys_legacy``, which belongs to no one: the
multitenancy plugin's first revision adopts its rows and drops it (in the same startup when
the plugin is installed, or on the first start after it is installed). Without any key, no
holding table is created.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

HOLDING = "tenant_api_keys_legacy"


def upgrade() -> None:
    bind = op.get_bind()
    with_keys = bind.scalar(sa.text("SELECT COUNT(*) FROM tenants WHERE api_key_hash IS NOT NULL"))
    if with_keys:
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
            "SELECT id, api_key_hash, api_key_expires_at, updated_at FROM tenants "
            "WHERE api_key_hash IS NOT NULL"
        )
    with op.batch_alter_table("tenants") as batch_op:
        batch_op.drop_column("api_key_expires_at")
        batch_op.drop_column("api_key_hash")


def downgrade() -> None:
    """The columns come back; keys still in the holding table (the plugin never adopted them)
    are put back too. Keys the plugin adopted stay in its table."""
    with op.batch_alter_table("tenants") as batch_op:
        batch_op.add_column(sa.Column("api_key_hash", sa.String(length=128), nullable=True))
        batch_op.add_column(sa.Column("api_key_expires_at", sa.Float(), nullable=True))
        batch_op.create_unique_constraint("uq_tenants_api_key_hash", ["api_key_hash"])
    bind = op.get_bind()
    if HOLDING in sa.inspect(bind).get_table_names():
        op.execute(
            f"UPDATE tenants SET api_key_hash = (SELECT key_hash FROM {HOLDING} "
            f"WHERE {HOLDING}.tenant_id = tenants.id), api_key_expires_at = (SELECT expires_at "
            f"FROM {HOLDING} WHERE {HOLDING}.tenant_id = tenants.id)"
        )
        op.drop_table(HOLDING)
