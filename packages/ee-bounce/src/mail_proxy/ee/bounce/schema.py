"""The bounce plugin's tables (its own alembic branch, ``migrations/versions``).

- ``bounce_mailbox_state``: per mailbox, UIDVALIDITY, last UID and the polling lease (the
  core IMAP kit's table, :func:`~mail_proxy.core.imap.state.mailbox_state_table`);
- ``bounce_seen``: every bounce read, by mailbox and bounce identity (its own Message-ID, or
  a digest): a message read again is not parsed again; purged after the retention period;
- ``bounce_suppressions``: per tenant, the addresses new messages may not be sent to;
- ``bounce_secrets``: the instance secret of the VERP tokens, sealed with the instance key.

Plain SQL types only: the same statements run on SQLite and PostgreSQL.
"""

from __future__ import annotations

import sqlalchemy as sa

from mail_proxy.core.contracts.extensions import NAMING_CONVENTION
from mail_proxy.core.imap.state import mailbox_state_table

metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)

mailbox_state = mailbox_state_table(metadata, "bounce_mailbox_state")

seen = sa.Table(
    "bounce_seen",
    metadata,
    sa.Column("mailbox_key", sa.String(255), primary_key=True),
    sa.Column("bounce_key", sa.String(255), primary_key=True),
    sa.Column("seen_at", sa.Float, nullable=False, index=True),
    #: ``recorded``, ``duplicate``, ``not_bounce``, or the rejection (``unmatched``, ...).
    sa.Column("outcome", sa.String(32), nullable=False),
    sa.Column("tenant_id", sa.String(128), nullable=True),
    sa.Column("message_id", sa.String(255), nullable=True),
)

suppressions = sa.Table(
    "bounce_suppressions",
    metadata,
    sa.Column("tenant_id", sa.String(128), primary_key=True),
    sa.Column("address", sa.String(320), primary_key=True),
    #: ``user_unknown``, ``host_unknown``, ``has_moved`` (from a bounce) or ``manual``.
    sa.Column("reason", sa.String(32), nullable=False),
    sa.Column("code", sa.String(16), nullable=True),
    #: ``bounce`` or ``manual``.
    sa.Column("source", sa.String(16), nullable=False),
    sa.Column("note", sa.Text, nullable=True),
    #: The client id of the message whose bounce suppressed the address.
    sa.Column("message_id", sa.String(255), nullable=True),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
)

secrets = sa.Table(
    "bounce_secrets",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
)
