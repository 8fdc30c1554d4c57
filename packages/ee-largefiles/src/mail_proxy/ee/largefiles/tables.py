"""The plugin's tables (migration branch ``largefiles``), on the service's database.

- ``largefiles_uploads``: one row per offloaded attachment (message, position, where it is,
  size, MD5, expiry). A retry of the same message finds its row and reuses the file;
- ``largefiles_stores``: per tenant and storage URL, the storage options (credentials)
  sealed with the instance key, so files can still be deleted after the tenant's
  configuration changed or the tenant was deleted;
- ``largefiles_secrets``: the instance secret that signs download tokens (sealed).
"""

from __future__ import annotations

import sqlalchemy as sa

from mail_proxy.core.contracts.extensions import NAMING_CONVENTION

metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)

uploads = sa.Table(
    "largefiles_uploads",
    metadata,
    sa.Column("pk", sa.Integer, primary_key=True, autoincrement=True),
    #: Random, unguessable id: in the object key and in download tokens.
    sa.Column("file_id", sa.String(32), nullable=False, unique=True),
    sa.Column("tenant_id", sa.String(128), nullable=False),
    #: The client's message id and the attachment's position in the message (from 0).
    sa.Column("message_id", sa.String(255), nullable=False),
    sa.Column("position", sa.Integer, nullable=False),
    #: SHA-256 of the attachment's storage_path and file name: a message replaced with
    #: another file at the same position does not reuse the old one.
    sa.Column("source", sa.String(64), nullable=False),
    sa.Column("storage_url", sa.String(2048), nullable=False),
    sa.Column("object_key", sa.String(2048), nullable=False),
    sa.Column("filename", sa.String(255), nullable=False),
    sa.Column("mime_type", sa.String(255), nullable=True),
    sa.Column("size", sa.BigInteger, nullable=True),
    sa.Column("md5", sa.String(32), nullable=True),
    #: ``uploading`` until the object is complete, then ``stored``.
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("expires_at", sa.Float, nullable=False),
    sa.UniqueConstraint("tenant_id", "message_id", "position", "source"),
    sa.Index("ix_largefiles_uploads_expires_at", "expires_at"),
)

stores = sa.Table(
    "largefiles_stores",
    metadata,
    sa.Column("tenant_id", sa.String(128), primary_key=True),
    #: SHA-256 of the storage URL (the URL itself may be longer than an index allows).
    sa.Column("url_hash", sa.String(64), primary_key=True),
    sa.Column("storage_url", sa.String(2048), nullable=False),
    sa.Column("options_enc", sa.Text, nullable=True),
    sa.Column("updated_at", sa.Float, nullable=False),
)

secrets = sa.Table(
    "largefiles_secrets",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("value_enc", sa.Text, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
)
