"""Encryption of stored secrets (SMTP passwords, tenant client_auth) with AES-256-GCM.

Every ciphertext is bound to where it is stored: its table, its column (or member) and its
row's key go in as AES-GCM associated data (:func:`secret_context`), so a token copied to
another row, column or tenant does not decrypt there (it is refused, never used). Tokens
look like ``gcm2:<base64 of nonce + ciphertext + tag>``. ``gcm1:`` tokens (written before
the binding, without associated data) are read only by the one-time upgrade that re-encrypts
them at startup (:meth:`Runtime.upgrade_secrets`); afterwards they are refused.

The key is 32 random bytes, written as base64. It comes from ``MAIL_PROXY_ENCRYPTION_KEY``,
else the file ``/run/secrets/encryption_key``, else the instance's ``encryption.key`` (created
by ``mail-proxy start``, mode 0600). A key that is malformed or that does not decrypt what the
database already holds stops startup: there is never a silent fallback to plaintext.

    python -c "from mail_proxy.core.engine.encryption import generate_key; print(generate_key())"
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from collections.abc import Callable
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

TOKEN_PREFIX = "gcm2:"
#: Tokens without associated data, accepted only by :meth:`Cipher.decrypt_legacy`.
LEGACY_PREFIX = "gcm1:"
DOCKER_SECRET_PATH = Path("/run/secrets/encryption_key")
KEY_FILE_NAME = "encryption.key"


class EncryptionError(Exception):
    """A key is malformed, missing where needed, or does not decrypt stored data."""


#: ``transform(token, context) -> token``: how key rotation and the upgrade rewrite a stored
#: secret; ``context`` is where it is stored (:func:`secret_context`).
SecretTransform = Callable[[str, str], str]


def secret_context(table: str, column: str, *key: object) -> str:
    """Where a secret is stored, as the associated data of its ciphertext: the table, the
    column (``"extra.<field>.<member>"`` for a member of a JSON column) and the row's key
    (tenant id first where the row has one). JSON, so no two places read alike."""
    return json.dumps([table, column, *(str(k) for k in key)], separators=(",", ":"))


def generate_key() -> str:
    """Return a new random key: base64 of 32 bytes."""
    return base64.b64encode(os.urandom(32)).decode("ascii")


def parse_key(text: str, source: str = "key") -> bytes:
    try:
        key = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise EncryptionError(f"{source}: not valid base64") from None
    if len(key) != 32:
        raise EncryptionError(f"{source}: must be 32 bytes once decoded, got {len(key)}")
    return key


class Cipher:
    """Encrypts and decrypts short secrets bound to their place (``context``)."""

    def __init__(self, key: bytes) -> None:
        self._aead = AESGCM(key)

    def encrypt(self, plaintext: str, context: str) -> str:
        nonce = os.urandom(12)
        sealed = self._aead.encrypt(nonce, plaintext.encode("utf-8"), context.encode("utf-8"))
        return TOKEN_PREFIX + base64.b64encode(nonce + sealed).decode("ascii")

    def decrypt(self, token: str, context: str) -> str:
        """The plaintext of a token written for ``context``; :class:`EncryptionError` for a
        token of another key, of another place, or of the unbound legacy format."""
        if token.startswith(LEGACY_PREFIX):
            raise EncryptionError(
                "stored secret is in the legacy format without its place bound (it should have "
                "been re-encrypted at startup: was it copied in from an old backup?)"
            )
        return self._open(token, TOKEN_PREFIX, context.encode("utf-8"))

    def decrypt_legacy(self, token: str) -> str:
        """The plaintext of a ``gcm1:`` token (no associated data): for the upgrade only."""
        return self._open(token, LEGACY_PREFIX, None)

    def _open(self, token: str, prefix: str, aad: bytes | None) -> str:
        if not token.startswith(prefix):
            raise EncryptionError("stored secret is not an encrypted token")
        try:
            raw = base64.b64decode(token[len(prefix) :], validate=True)
            return self._aead.decrypt(raw[:12], raw[12:], aad).decode("utf-8")
        except (InvalidTag, binascii.Error, ValueError):
            raise EncryptionError(
                "stored secret does not decrypt with the configured encryption key "
                "where it is stored (another key, or a value moved from another row)"
            ) from None


def load_key(env_value: str | None, instance_dir: str | None) -> tuple[bytes, str] | None:
    """Find the key: environment, Docker secret, instance key file. None when there is none.

    Returns ``(key, source)``; raises :class:`EncryptionError` for an unreadable or bad key.
    """
    if env_value:
        return parse_key(env_value, "MAIL_PROXY_ENCRYPTION_KEY"), "MAIL_PROXY_ENCRYPTION_KEY"
    candidates = [DOCKER_SECRET_PATH]
    if instance_dir:
        candidates.append(Path(instance_dir) / KEY_FILE_NAME)
    for path in candidates:
        if path.exists():
            try:
                text = path.read_text()
            except OSError as exc:
                raise EncryptionError(f"{path}: cannot read the key: {exc.strerror}") from None
            return parse_key(text, str(path)), str(path)
    return None


def write_key_file(instance_dir: str | Path, key: str | None = None) -> Path:
    """Create ``encryption.key`` (mode 0600) in the instance directory."""
    path = Path(instance_dir) / KEY_FILE_NAME
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write((key or generate_key()) + "\n")
    return path


# -- the places of the secrets core and CE keep -----------------------------------------------
def account_password_context(tenant_id: str, account_id: str) -> str:
    return secret_context("accounts", "password_enc", tenant_id, account_id)


def tenant_secret_context(column: str, tenant_id: str) -> str:
    """``column``: ``client_auth_enc`` or ``sync_secret_enc``."""
    return secret_context("tenants", column, tenant_id)


def attachment_auth_context(tenant_id: str, message_id: str) -> str:
    """An attachment's credentials sealed in its message's payload."""
    return secret_context("messages", "payload.attachments.auth_enc", tenant_id, message_id)
