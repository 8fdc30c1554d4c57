"""Download links: the storage's own signed URL where it can sign one, otherwise a link to
the proxy's ``GET /files/{token}``.

A token is ``<file id>.<expiry, epoch seconds>.<signature>``: the signature is an
HMAC-SHA256 of the first two parts under the instance's link secret, checked in constant
time. The secret is 32 random bytes made by the first instance that needs one, stored
sealed with the instance key in ``largefiles_secrets`` and shared by every instance of the
database; there is no built-in default, and without an encryption key no proxy links are
made at all. The file id is itself random (128 bits), so a link names one file only.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from typing import TYPE_CHECKING

from mail_proxy.core.contracts.errors import MessageContentError

from .records import Records, secret_place
from .settings import SECTION

if TYPE_CHECKING:
    from mail_proxy.core.engine.runtime import Runtime

    from .config import LargeFileConfig

SECRET_NAME = "link_signing"


class LinkKeyMissing(MessageContentError):
    """Proxy links need the instance encryption key (to keep the signing secret sealed)."""


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


class LinkSigner:
    """Signs and checks download tokens; one per runtime (``runtime.local(LinkSigner)``)."""

    def __init__(self, runtime: Runtime) -> None:
        self.rt = runtime
        self._key: bytes | None = None

    async def key(self) -> bytes:
        if self._key is None:
            if self.rt.cipher is None:
                raise LinkKeyMissing(
                    "large files: download links served by the proxy need an encryption key "
                    "(MAIL_PROXY_ENCRYPTION_KEY) to keep their signing secret"
                )
            sealed = await self.rt.local(Records).secret(
                SECRET_NAME,
                lambda: self.rt.encrypt(_b64(secrets.token_bytes(32)), secret_place(SECRET_NAME)),
            )
            self._key = self.rt.decrypt(sealed, secret_place(SECRET_NAME)).encode("ascii")
        return self._key

    def _mac(self, key: bytes, body: str) -> str:
        return _b64(hmac.new(key, body.encode("ascii"), hashlib.sha256).digest())

    async def token(self, file_id: str, expires_at: float) -> str:
        body = f"{file_id}.{int(expires_at)}"
        return f"{body}.{self._mac(await self.key(), body)}"

    async def check(self, token: str, now: float | None = None) -> str | None:
        """The file id of a genuine, unexpired token; None for anything else."""
        parts = token.split(".")
        if len(parts) != 3 or not parts[0].isalnum() or not parts[1].isdigit():
            return None
        if self.rt.cipher is None:
            return None
        body = f"{parts[0]}.{parts[1]}"
        expected = self._mac(await self.key(), body)
        if not hmac.compare_digest(expected.encode("ascii"), parts[2].encode("ascii", "replace")):
            return None
        if int(parts[1]) <= (time.time() if now is None else now):
            return None
        return parts[0]


def public_base(runtime: Runtime, config: LargeFileConfig) -> str:
    """Where the proxy's ``/files/{token}`` route is reached from outside."""
    if config.public_base_url:
        return config.public_base_url
    configured = runtime.settings.section(SECTION).large_files_public_url
    if configured:
        return str(configured).rstrip("/")
    host = runtime.settings.host
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{runtime.settings.port}"


async def proxy_link(
    runtime: Runtime, config: LargeFileConfig, file_id: str, expires_at: float
) -> str:
    token = await runtime.local(LinkSigner).token(file_id, expires_at)
    return f"{public_base(runtime, config)}/files/{token}"


def new_file_id() -> str:
    """128 random bits as 32 hex digits."""
    return secrets.token_hex(16)
