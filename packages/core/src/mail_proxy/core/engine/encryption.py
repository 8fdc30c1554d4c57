"""Encryption of stored secrets (SMTP passwords, tenant client_auth) with AES-256-GCM.

The key is 32 random bytes, written as base64. It comes from ``MAIL_PROXY_ENCRYPTION_KEY``,
else the file ``/run/secrets/encryption_key``, else the instance's ``encryption.key`` (created
by ``mail-proxy start``, mode 0600). A key that is malformed or that does not decrypt what the
database already holds stops startup: there is never a silent fallback to plaintext.

    python -c "from mail_proxy.core.engine.encryption import generate_key; print(generate_key())"
"""

from __future__ import annotations

import base64
import binascii
import os
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

TOKEN_PREFIX = "gcm1:"
DOCKER_SECRET_PATH = Path("/run/secrets/encryption_key")
KEY_FILE_NAME = "encryption.key"


class EncryptionError(Exception):
    """A key is malformed, missing where needed, or does not decrypt stored data."""


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
    """Encrypts and decrypts short secrets; tokens look like ``gcm1:<base64>``."""

    def __init__(self, key: bytes) -> None:
        self._aead = AESGCM(key)

    def encrypt(self, plaintext: str) -> str:
        nonce = os.urandom(12)
        sealed = self._aead.encrypt(nonce, plaintext.encode("utf-8"), None)
        return TOKEN_PREFIX + base64.b64encode(nonce + sealed).decode("ascii")

    def decrypt(self, token: str) -> str:
        if not token.startswith(TOKEN_PREFIX):
            raise EncryptionError("stored secret is not an encrypted token")
        try:
            raw = base64.b64decode(token[len(TOKEN_PREFIX) :], validate=True)
            return self._aead.decrypt(raw[:12], raw[12:], None).decode("utf-8")
        except (InvalidTag, binascii.Error, ValueError):
            raise EncryptionError(
                "stored secret does not decrypt with the configured encryption key"
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
