"""Alembic environment: runs on the connection handed over by :mod:`..engine`.

Migrations run programmatically at startup (``SqlStorage.start``), once per branch: the
Community Edition's (version table ``alembic_version``) and each plugin's (its own
``alembic_version_<name>``, its own metadata); the connection, the version table and the
metadata come in ``config.attributes``. Offline (SQL script) mode is not supported.
"""

from __future__ import annotations

from alembic import context

from mail_proxy.ce.storage.schema import metadata

connection = context.config.attributes.get("connection")
if connection is None:  # pragma: no cover - only for `alembic revision --autogenerate`
    import sqlalchemy as sa

    url = context.config.get_main_option("sqlalchemy.url") or "sqlite://"
    connection = sa.create_engine(url).connect()

context.configure(
    connection=connection,
    target_metadata=context.config.attributes.get("metadata") or metadata,
    version_table=context.config.attributes.get("version_table", "alembic_version"),
    render_as_batch=True,
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
