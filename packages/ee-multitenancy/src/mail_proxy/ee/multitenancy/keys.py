"""Tenant API keys and report-signing secrets: generation, hashing, comparison.

A tenant key is ``secrets.token_urlsafe(32)``: 43 url-safe characters carrying 256 random
bits. It is shown once and stored only as its SHA-256 hex digest. A plain (unsalted, fast)
hash is the right tool for high-entropy random keys: there is no dictionary to try, so key
stretching would only slow every request down. The digest is also the lookup key in the
database, and the stored and computed digests are compared with :func:`hmac.compare_digest`.

Standard library only: :func:`looks_like_key` runs for every authenticated request.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets

KEY_BYTES = 32
KEY_LENGTH = 43  # len(secrets.token_urlsafe(32))
# = ce.reports.signing.WHSEC_PREFIX, not imported: the plugin module must stay light
SYNC_SECRET_PREFIX = "whsec_"
_KEY_SHAPE = re.compile(rf"[A-Za-z0-9_-]{{{KEY_LENGTH}}}")


def new_api_key() -> str:
    """A new tenant API key (43 url-safe characters)."""
    return secrets.token_urlsafe(KEY_BYTES)


def hash_key(key: str) -> str:
    """The stored form of a key: SHA-256, hex."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def looks_like_key(token: str) -> bool:
    """True when ``token`` has the shape of a tenant key (cheap check before any lookup)."""
    return _KEY_SHAPE.fullmatch(token) is not None


def same_hash(stored: str | None, computed: str) -> bool:
    """Constant-time comparison of two key digests."""
    return stored is not None and hmac.compare_digest(stored.encode(), computed.encode())


def new_sync_secret() -> str:
    """A new report-signing secret in the Standard Webhooks form: ``whsec_`` + base64(32 B)."""
    return SYNC_SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode("ascii")
