"""``base64`` fetch mode: the content travels inside the message itself.

The ``base64:`` prefix is optional when the mode is explicit. Decoding is strict (only the
standard alphabet and correct padding; ASCII whitespace such as MIME line breaks is removed
first) and the decoded size is capped by ``attachment_max_mb``: an oversized payload is refused
from its length alone, before anything is decoded.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import re
from typing import TYPE_CHECKING

from mail_proxy.core.contracts.fetch import Fetcher, FetchError, FetchRequest

if TYPE_CHECKING:
    from mail_proxy.core.engine.runtime import Runtime

PREFIX = "base64:"
_WHITESPACE = re.compile(r"[ \t\r\n]+")
#: Content at least this long is decoded in a worker thread, off the event loop.
DECODE_IN_THREAD_CHARS = 1 << 20


def decode(storage_path: str, max_bytes: int) -> bytes:
    """Decode ``storage_path`` (with or without the prefix); ``ValueError`` says why not."""
    text = storage_path[len(PREFIX) :] if storage_path.startswith(PREFIX) else storage_path
    if any(c in text for c in " \t\r\n"):  # (four C scans; the regex alone costs far more)
        text = _WHITESPACE.sub("", text)
    if len(text) // 4 * 3 > max_bytes + 2:
        raise ValueError(f"base64 content too large (limit {max_bytes} bytes)")
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("invalid base64 content") from None
    if len(data) > max_bytes:
        raise ValueError(f"base64 content too large: {len(data)} bytes (limit {max_bytes})")
    return data


class Base64Fetcher(Fetcher):
    description = "content inline in the message, base64-encoded"

    def validate(self, storage_path: str, runtime: Runtime) -> str | None:
        try:
            decode(storage_path, runtime.settings.attachment_max_bytes)
        except ValueError as exc:
            return str(exc)
        return None

    async def fetch(self, request: FetchRequest, runtime: Runtime) -> bytes:
        try:
            if len(request.storage_path) < DECODE_IN_THREAD_CHARS:
                return decode(request.storage_path, request.max_bytes)
            return await asyncio.to_thread(decode, request.storage_path, request.max_bytes)
        except ValueError as exc:
            raise FetchError(str(exc)) from None
