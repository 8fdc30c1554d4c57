"""Signing of delivery-report requests (the Standard Webhooks header convention).

Every report request carries three headers:

* ``webhook-id``: a unique id of the request (the same when the very same batch is resent,
  so a client can recognise a retry of something it already processed);
* ``webhook-timestamp``: integer Unix seconds when the request was signed;
* ``webhook-signature``: ``v1,<base64 of HMAC-SHA256(key, "<id>.<timestamp>.<body>")>``.

The key is derived from the tenant's secret: a secret written ``whsec_<base64>`` (the form
Standard Webhooks libraries generate) means the decoded bytes; any other secret is used as its
raw UTF-8 bytes. A client verifies by recomputing the HMAC over the exact body bytes it
received, comparing in constant time, and refusing timestamps too far from its clock (replay).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time
from collections.abc import Mapping

WHSEC_PREFIX = "whsec_"
#: Default replay window of :func:`verify` (seconds either side of the receiver's clock).
DEFAULT_TOLERANCE = 300


class SignatureError(ValueError):
    """A request's signature headers are missing, stale or do not match."""


def signing_key(secret: str) -> bytes:
    """The HMAC key for ``secret`` (``whsec_<base64>`` → decoded bytes, else UTF-8 bytes).

    Raises ``ValueError`` for a ``whsec_`` secret that is not valid base64 or is empty.
    """
    if secret.startswith(WHSEC_PREFIX):
        raw = secret[len(WHSEC_PREFIX) :]
        try:
            key = base64.b64decode(raw + "=" * (-len(raw) % 4), validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("a 'whsec_' secret must be followed by base64") from None
        if not key:
            raise ValueError("a 'whsec_' secret must not be empty")
        return key
    if not secret:
        raise ValueError("the signing secret is empty")
    return secret.encode("utf-8")


def signature(key: bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    """``v1,<base64 HMAC-SHA256>`` of ``<msg_id>.<timestamp>.<body>``."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(key, signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode("ascii")


def sign_headers(
    secret: str | None, msg_id: str, body: bytes, timestamp: int | None = None
) -> dict[str, str]:
    """The three ``webhook-*`` headers for a request (no signature when ``secret`` is None)."""
    ts = int(time.time()) if timestamp is None else int(timestamp)
    headers = {"webhook-id": msg_id, "webhook-timestamp": str(ts)}
    if secret:
        headers["webhook-signature"] = signature(signing_key(secret), msg_id, ts, body)
    return headers


def verify(
    secret: str,
    headers: Mapping[str, str],
    body: bytes,
    *,
    tolerance: float = DEFAULT_TOLERANCE,
    now: float | None = None,
) -> None:
    """Check a signed request; raise :class:`SignatureError` when it is not authentic.

    ``headers`` must be case-insensitive or use lower-case names (aiohttp's and most
    frameworks' header mappings are). Several space-separated signatures are accepted (key
    rotation): one match is enough.
    """
    msg_id = headers.get("webhook-id")
    stamp = headers.get("webhook-timestamp")
    sent = headers.get("webhook-signature")
    if not msg_id or not stamp or not sent:
        raise SignatureError("missing webhook-id, webhook-timestamp or webhook-signature")
    try:
        ts = int(stamp)
    except ValueError:
        raise SignatureError("webhook-timestamp is not an integer") from None
    current = time.time() if now is None else now
    if abs(current - ts) > tolerance:
        raise SignatureError("webhook-timestamp is outside the tolerance window")
    expected = signature(signing_key(secret), msg_id, ts, body).split(",", 1)[1]
    for candidate in sent.split():
        version, _, value = candidate.partition(",")
        if version == "v1" and hmac.compare_digest(value.encode(), expected.encode()):
            return
    raise SignatureError("no matching signature")
