"""The plugin's own table, created and upgraded by its migration branch ``multitenancy``
(``migrations/versions``; revisions kept in ``alembic_version_multitenancy``).

``tenant_api_keys``: at most one key per tenant, stored as its SHA-256 hex digest (the
unique index is the lookup of every tenant-authenticated request), with its optional expiry
and the time it was issued. A tenant without a key has no row.
"""

from __future__ import annotations

import sqlalchemy as sa

from mail_proxy.core.contracts.extensions import NAMING_CONVENTION

metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)

tenant_api_keys = sa.Table(
    "tenant_api_keys",
    metadata,
    sa.Column("tenant_id", sa.String(128), primary_key=True),
    sa.Column("key_hash", sa.String(128), nullable=False, unique=True),
    sa.Column("expires_at", sa.Float),
    sa.Column("created_at", sa.Float, nullable=False),
)
