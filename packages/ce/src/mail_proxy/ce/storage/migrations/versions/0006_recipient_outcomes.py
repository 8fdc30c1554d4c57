"""Per-recipient outcomes and the ``uncertain`` flag on messages.

``messages.delivered_rcpts`` (the addresses accepted on an earlier attempt) becomes
``messages.recipients``: every tried recipient with its state (``sent``, ``error``,
``deferred``), SMTP code and reply. Stored addresses become ``sent`` entries. The column is
renamed in place (``ALTER TABLE ... RENAME COLUMN``, SQLite 3.25+ and PostgreSQL), so the
table is not rebuilt.

``messages.uncertain`` is set when a message is claimed again after its lease expired while
it was being sent (the instance died or stalled): it may have been delivered already.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import json
from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def _rewrite(old: str, new: str, convert: Any) -> None:
    """Rewrite the non-null JSON values of ``messages.<old>`` into ``messages.<new>``."""
    bind = op.get_bind()
    rows = bind.execute(sa.text(f"SELECT pk, {old} FROM messages WHERE {old} IS NOT NULL")).all()
    column = sa.table("messages", sa.column("pk"), sa.column(new, sa.JSON))
    for pk, value in rows:
        if isinstance(value, str):  # SQLite hands JSON back as text here
            value = json.loads(value)
        bind.execute(column.update().where(column.c.pk == pk).values({new: convert(value or [])}))


def upgrade() -> None:
    op.execute("ALTER TABLE messages RENAME COLUMN delivered_rcpts TO recipients")
    _rewrite(
        "recipients",
        "recipients",
        lambda addresses: [
            {"address": a, "status": "sent", "code": None, "reply": None} for a in addresses
        ],
    )
    op.add_column(
        "messages",
        sa.Column("uncertain", sa.Boolean(), server_default=sa.false(), nullable=False),
    )


def downgrade() -> None:
    with op.batch_alter_table("messages") as batch_op:
        batch_op.drop_column("uncertain")
    op.execute("ALTER TABLE messages RENAME COLUMN recipients TO delivered_rcpts")
    _rewrite(
        "delivered_rcpts",
        "delivered_rcpts",
        lambda entries: [e["address"] for e in entries if e.get("status") == "sent"],
    )
