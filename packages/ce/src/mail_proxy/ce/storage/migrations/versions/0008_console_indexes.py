"""Indexes for the filters of ``GET /messages`` and the overview's recent counts.

The operator console lists messages by tenant filtered by status, account, batch or creation
date, newest first, a page at a time (keyset on ``pk``). Each filter gets an index led by
``tenant_id`` so a page is read in index order from the cursor instead of scanning the table
(PostgreSQL with 1,000,000 messages: bench scenario ``console-pg``); a creation-time window is
paged in ``(created_at, pk)`` order on ``ix_messages_tenant_created``. ``ix_events_ts`` serves the
overview's "sent / error / deferred in the last hour".

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

HAS_BATCH = "batch_code IS NOT NULL"


def upgrade() -> None:
    with op.batch_alter_table("messages") as batch_op:
        batch_op.create_index("ix_messages_tenant_status_pk", ["tenant_id", "status", "pk"])
        batch_op.create_index("ix_messages_tenant_account_pk", ["tenant_id", "account_id", "pk"])
        batch_op.create_index(
            "ix_messages_tenant_batch_pk",
            ["tenant_id", "batch_code", "pk"],
            sqlite_where=sa.text(HAS_BATCH),
            postgresql_where=sa.text(HAS_BATCH),
        )
        batch_op.create_index("ix_messages_tenant_created", ["tenant_id", "created_at", "pk"])
    with op.batch_alter_table("events") as batch_op:
        batch_op.create_index("ix_events_ts", ["event_ts"])


def downgrade() -> None:
    with op.batch_alter_table("events") as batch_op:
        batch_op.drop_index("ix_events_ts")
    with op.batch_alter_table("messages") as batch_op:
        batch_op.drop_index("ix_messages_tenant_created")
        batch_op.drop_index("ix_messages_tenant_batch_pk")
        batch_op.drop_index("ix_messages_tenant_account_pk")
        batch_op.drop_index("ix_messages_tenant_status_pk")
