"""Attachments: the spec of one attachment, enqueue validation, fetching, the two-tier cache.

* :func:`parse_spec` turns one ``attachments`` entry of a message into an
  :class:`AttachmentSpec`: the fetch mode (explicit or inferred from ``storage_path``), the
  final filename (the ``{MD5:<hex>}`` marker removed with the separator before it) and the
  cache key (the marker, else ``content_md5``).
* :func:`validate_attachments` runs at enqueue and returns a stable rejection reason
  (``attachment 2: unknown fetch_mode 'foo'``) or None; it includes each fetcher's own
  ``validate`` (filesystem disabled, path outside the base, bad base64, refused URL...).
* :class:`AttachmentResolver` fetches the attachments of one message concurrently for the
  dispatcher, bounded by one semaphore shared by all messages, each fetch bounded by
  ``attachment_timeout`` and the size cap; it asks :class:`AttachmentCache` first.
* the two-tier cache itself (memory + disk, scoped by tenant, self-verifying entries) is
  :class:`~mail_proxy.core.engine.attachment_cache.AttachmentCache`. Concurrent fetches of the same
  ``(tenant, key)`` are merged into one.

MD5 keys: the marker accepts 1 to 32 hex digits (the FAQ's ``{MD5:a1b2c3d4e5f6}`` is a short
key), but only a full 32-digit value is used to verify content. ``content_md5`` must be 32
hex digits and fetched content that does not match it fails the message.

One resolver (and so one cache and one semaphore) exists per runtime: :func:`get_resolver`
creates it on first use and keeps it as ``runtime.attachments``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mail_proxy.core.contracts.fetch import FetchError, FetchRequest
from mail_proxy.core.engine.attachment_cache import AttachmentCache, CacheStats, md5_hex
from mail_proxy.core.engine.encryption import EncryptionError, attachment_auth_context
from mail_proxy.core.engine.mime import character_problem

if TYPE_CHECKING:
    from mail_proxy.core.contracts.model import Tenant
    from mail_proxy.core.engine.mime import Attachment
    from mail_proxy.core.engine.runtime import Runtime

__all__ = [
    "SEALED_AUTH",
    "AttachmentCache",
    "AttachmentError",
    "AttachmentResolver",
    "AttachmentSpec",
    "CacheStats",
    "check_auth",
    "get_resolver",
    "infer_mode",
    "parse_spec",
    "seal_auth",
    "split_marker",
    "unseal_auth",
    "validate_attachments",
]

log = logging.getLogger(__name__)

MAX_FILENAME = 255
_MARKER = re.compile(r"([_\-. ]?)\{MD5:([^{}]*)\}", re.IGNORECASE)
_KEY_HEX = re.compile(r"[0-9a-fA-F]{1,32}")
_MD5_HEX = re.compile(r"[0-9a-fA-F]{32}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_MIME_TYPE = re.compile(r"[A-Za-z0-9!#$&^_.+-]+/[A-Za-z0-9!#$&^_.+-]+")
AUTH_METHODS = ("none", "bearer", "basic")


class AttachmentError(ValueError):
    """An attachment entry is malformed; the text is a stable rejection reason."""


@dataclass(frozen=True)
class AttachmentSpec:
    """One attachment of a message, parsed."""

    #: Final filename (the ``{MD5:...}`` marker removed).
    filename: str
    storage_path: str
    fetch_mode: str
    mime_type: str | None = None
    #: Cache key (lower-case hex): the marker, else ``content_md5``; None = not cached.
    cache_key: str | None = None
    #: ``content_md5`` as given (lower-case): fetched content must match it.
    content_md5: str | None = None
    auth: dict[str, Any] | None = None
    #: True when ``fetch_mode`` was given rather than inferred.
    explicit_mode: bool = False

    @property
    def verify_md5(self) -> str | None:
        """The MD5 the content is checked against: ``content_md5`` or a full 32-digit key."""
        if self.content_md5:
            return self.content_md5
        if self.cache_key and len(self.cache_key) == 32:
            return self.cache_key
        return None


def infer_mode(storage_path: str) -> str:
    """The fetch mode for a ``storage_path`` when ``fetch_mode`` is omitted (API.md)."""
    lowered = storage_path[:8].lower()
    if storage_path.startswith("base64:"):
        return "base64"
    if lowered.startswith(("http://", "https://")):
        return "http_url"
    if storage_path.startswith("/"):
        return "filesystem"
    return "endpoint"


def split_marker(filename: str) -> tuple[str, str | None]:
    """``(final filename, key)``: ``report_{MD5:AB12}.pdf`` → ``("report.pdf", "ab12")``."""
    found = list(_MARKER.finditer(filename))
    if not found:
        return filename, None
    if len(found) > 1:
        raise AttachmentError("filename has more than one {MD5:...} marker")
    match = found[0]
    key = match.group(2)
    if not _KEY_HEX.fullmatch(key):
        raise AttachmentError("invalid {MD5:...} marker in filename (1 to 32 hex digits)")
    final = filename[: match.start()] + filename[match.end() :]
    if not final.strip():
        raise AttachmentError("filename is empty without its {MD5:...} marker")
    return final, key.lower()


def check_auth(auth: Any) -> str | None:
    """Why an ``auth`` object (``{"method": "none"|"bearer"|"basic", ...}``) is unusable."""
    if not isinstance(auth, dict):
        return "auth must be an object"
    method = auth.get("method", "none")
    if method not in AUTH_METHODS:
        return "auth method must be none, bearer or basic"
    if method == "bearer":
        token = auth.get("token")
        if not isinstance(token, str) or not token or _CONTROL.search(token):
            return "bearer auth needs a token (without control characters)"
    if method == "basic":
        user, password = auth.get("user"), auth.get("password", "")
        if not isinstance(user, str) or not user or ":" in user or _CONTROL.search(user):
            return "basic auth needs a user (without ':' or control characters)"
        if not isinstance(password, str) or _CONTROL.search(password):
            return "basic auth password must be a string without control characters"
    return None


def parse_spec(att: Any) -> AttachmentSpec:
    """Parse one ``attachments`` entry; raise :class:`AttachmentError` with a stable reason."""
    if not isinstance(att, dict):
        raise AttachmentError("must be an object")
    raw_name = att.get("filename")
    if not isinstance(raw_name, str) or not raw_name.strip():
        raise AttachmentError("missing filename")
    problem = character_problem(raw_name, "filename", tab=False)
    if problem is not None:  # a header injection attempt (it becomes Content-Disposition)
        raise AttachmentError(problem)
    filename, key = split_marker(raw_name)
    if len(filename) > MAX_FILENAME:
        raise AttachmentError(f"filename longer than {MAX_FILENAME} characters")
    storage_path = att.get("storage_path")
    if not isinstance(storage_path, str) or not storage_path:
        raise AttachmentError("missing storage_path")
    mode = att.get("fetch_mode")
    if mode is not None and (not isinstance(mode, str) or not mode):
        raise AttachmentError("fetch_mode must be a non-empty string")
    mime_type = att.get("mime_type")
    if mime_type is not None and (
        not isinstance(mime_type, str) or not _MIME_TYPE.fullmatch(mime_type)
    ):
        raise AttachmentError("invalid mime_type (expected type/subtype)")
    content_md5 = att.get("content_md5")
    if content_md5 in (None, ""):
        content_md5 = None
    elif not isinstance(content_md5, str) or not _MD5_HEX.fullmatch(content_md5):
        raise AttachmentError("invalid content_md5 (expected 32 hex digits)")
    else:
        content_md5 = content_md5.lower()
    if content_md5 and key and len(key) == 32 and key != content_md5:
        raise AttachmentError("{MD5:...} marker and content_md5 differ")
    auth = att.get("auth")
    if auth is not None:
        problem = check_auth(auth)
        if problem:
            raise AttachmentError(problem)
    return AttachmentSpec(
        filename=filename,
        storage_path=storage_path,
        fetch_mode=mode or infer_mode(storage_path),
        mime_type=mime_type or None,
        cache_key=key or content_md5,
        content_md5=content_md5,
        auth=dict(auth) if auth else None,
        explicit_mode=mode is not None,
    )


#: Key of the stored, encrypted form of an attachment's ``auth`` (see :func:`seal_auth`).
SEALED_AUTH = "auth_enc"


def seal_auth(atts: list[dict[str, Any]], runtime: Runtime, context: str) -> str | None:
    """Encrypt each attachment's credentials before the payload is stored (in place).

    An ``auth`` with a secret (``bearer``, ``basic``) is replaced by ``auth_enc``, encrypted
    with the instance key like account passwords, bound to its message (``context``:
    :func:`attachment_auth_context`), so the queue never holds it in clear;
    ``{"method": "none"}`` (no secret: "do not send the tenant's credentials") stays as is.
    Returns a rejection reason when a secret arrives and no encryption key is configured.
    """
    for number, att in enumerate(atts, start=1):
        auth = att.get("auth")
        if not auth or auth.get("method", "none") == "none":
            continue
        if runtime.cipher is None:
            return (
                f"attachment {number}: auth needs an encryption key on the server "
                "(MAIL_PROXY_ENCRYPTION_KEY)"
            )
        del att["auth"]
        att[SEALED_AUTH] = runtime.cipher.encrypt(json.dumps(auth), context)
    return None


def unseal_auth(att: dict[str, Any], runtime: Runtime, context: str) -> dict[str, Any]:
    """The stored attachment with its ``auth`` decrypted again (at fetch time); ``context``:
    its message's :func:`attachment_auth_context`."""
    sealed = att.get(SEALED_AUTH)
    if sealed is None:
        return att
    try:
        auth = json.loads(runtime.decrypt(sealed, context))
    except (EncryptionError, ValueError):
        raise AttachmentError(
            "its credentials cannot be decrypted (was the encryption key replaced without "
            "`mail-proxy rotate-key`?)"
        ) from None
    opened = {k: v for k, v in att.items() if k != SEALED_AUTH}
    opened["auth"] = auth
    return opened


def validate_attachments(atts: Any, runtime: Runtime) -> str | None:
    """Enqueue check of a message's attachments: a stable reason for the first bad one.

    Reasons read ``attachment <n>: <why>`` with ``n`` counted from 1.
    """
    if not isinstance(atts, list):
        return "attachments must be a list"
    for number, att in enumerate(atts, start=1):
        try:
            spec = parse_spec(att)
        except AttachmentError as exc:
            return f"attachment {number}: {exc}"
        if spec.fetch_mode not in runtime.fetchers:
            return f"attachment {number}: unknown fetch_mode {spec.fetch_mode!r}"
        fetcher = runtime.fetchers.get(spec.fetch_mode)
        try:
            problem = fetcher.validate(spec.storage_path, runtime)
        except Exception:
            log.exception("fetch mode %r: validate() failed", spec.fetch_mode)
            problem = f"fetch mode {spec.fetch_mode!r} could not check storage_path"
        if problem:
            return f"attachment {number}: {problem}"
    return None


#: Size assumed, before fetching, for an attachment whose size cannot be known up front
#: (endpoint and http_url modes, relative filesystem paths).
UNKNOWN_SIZE_GUESS = 1024 * 1024


def estimated_size(atts: list[dict[str, Any]]) -> int:
    """The attachments' total size as far as it is known without fetching (for the memory
    budget): base64 from its length, absolute filesystem paths from ``stat``, a guess
    otherwise. The budget is corrected once the real size is known."""
    total = 0
    for att in atts:
        try:
            spec = parse_spec(att)
        except AttachmentError:
            continue
        path = spec.storage_path
        if spec.fetch_mode == "base64":
            total += len(path.removeprefix("base64:")) * 3 // 4
        elif spec.fetch_mode == "filesystem" and os.path.isabs(path):
            try:
                total += os.stat(path).st_size  # metadata only: no read, no follow-up I/O
            except OSError:
                total += UNKNOWN_SIZE_GUESS
        else:
            total += UNKNOWN_SIZE_GUESS
    return total


class AttachmentResolver:
    """Fetches the attachments of messages for the dispatcher (one per runtime)."""

    def __init__(self, runtime: Runtime, cache: AttachmentCache | None = None) -> None:
        self.runtime = runtime
        self.cache = cache or AttachmentCache.from_settings(runtime.settings)
        # /metrics reads this cache's live counters and sizes (gmp_attachment_cache_*)
        runtime.metrics.attachment_cache = self.cache
        self._semaphore: asyncio.Semaphore | None = None
        self._inflight: dict[tuple[str, str], asyncio.Future[bytes | None]] = {}
        self._last_sweep = time.monotonic()
        #: Number of fetcher calls made (cache misses that reached a fetcher).

    @property
    def semaphore(self) -> asyncio.Semaphore:
        if self._semaphore is None:
            self._semaphore = asyncio.Semaphore(self.runtime.settings.max_concurrent_attachments)
        return self._semaphore

    async def resolve(
        self, tenant: Tenant, atts: list[dict[str, Any]], message_id: str
    ) -> list[Attachment]:
        """Fetch every attachment of message ``message_id``; the first failure fails them
        all."""
        from mail_proxy.core.engine.mime import Attachment

        specs = []
        place = attachment_auth_context(tenant.id, message_id)
        for number, att in enumerate(atts, start=1):
            try:
                specs.append(parse_spec(unseal_auth(att, self.runtime, place)))
            except AttachmentError as exc:
                raise FetchError(f"attachment {number}: {exc}") from None
        if len(specs) == 1:
            contents = [await self.content(tenant, specs[0])]
        else:
            contents = await _all_or_nothing([self.content(tenant, s) for s in specs])
        pairs = zip(specs, contents, strict=True)
        return [Attachment(s.filename, c, s.mime_type) for s, c in pairs]

    async def content(self, tenant: Tenant, spec: AttachmentSpec) -> bytes:
        """The bytes of one attachment: cache, a concurrent identical fetch, or a fetcher."""
        key = spec.cache_key
        if key is None:
            return await self._fetch(tenant, spec)
        slot = (tenant.id, key)
        pending = self._inflight.get(slot)
        if pending is not None:
            # Same tenant and key already being fetched: wait for it (a failed or unusable
            # result makes this attachment fetch on its own).
            shared = await asyncio.shield(pending)
            if shared is not None and (
                spec.content_md5 is None or await _md5(shared) == spec.content_md5
            ):
                return shared
            return await self._fetch_and_store(tenant, spec)
        future: asyncio.Future[bytes | None] = asyncio.get_running_loop().create_future()
        self._inflight[slot] = future
        data: bytes | None = None
        try:
            data = await self.cache.get(tenant.id, key, spec.verify_md5)
            if data is not None and len(data) > self.runtime.settings.attachment_max_bytes:
                data = None
            if data is None:
                data = await self._fetch_and_store(tenant, spec)
            return data
        finally:
            del self._inflight[slot]
            future.set_result(data)

    async def _fetch_and_store(self, tenant: Tenant, spec: AttachmentSpec) -> bytes:
        data = await self._fetch(tenant, spec)
        assert spec.cache_key is not None
        expected = spec.verify_md5
        # (a content_md5 was already checked by _fetch; only a marker is left to check)
        if expected not in (None, spec.content_md5) and await _md5(data) != expected:
            log.warning(
                "attachment %r: content does not match its {MD5:...} marker; not cached",
                spec.filename,
            )
        else:
            await self.cache.put(tenant.id, spec.cache_key, data)
        await self._maybe_sweep()
        return data

    async def _maybe_sweep(self) -> None:
        interval = max(1.0, min(self.cache.memory_ttl, self.cache.disk_ttl) / 2)
        now = time.monotonic()
        if now - self._last_sweep >= interval:
            self._last_sweep = now
            await self.cache.expire()

    async def _fetch(self, tenant: Tenant, spec: AttachmentSpec) -> bytes:
        settings = self.runtime.settings
        name = spec.filename
        try:
            fetcher = self.runtime.fetchers.get(spec.fetch_mode)
        except Exception:
            raise FetchError(
                f"attachment '{name}': unknown fetch_mode {spec.fetch_mode!r}"
            ) from None
        max_bytes = settings.attachment_max_bytes
        timeout = settings.attachment_timeout
        request = FetchRequest(
            tenant=tenant,
            storage_path=spec.storage_path,
            filename=name,
            auth=spec.auth,
            max_bytes=max_bytes,
            timeout=timeout,
        )
        async with self.semaphore:
            try:
                data = await asyncio.wait_for(fetcher.fetch(request, self.runtime), timeout)
            except FetchError as exc:
                raise FetchError(f"attachment '{name}': {exc}") from None
            except asyncio.TimeoutError:
                raise FetchError(f"attachment '{name}': timed out after {timeout:g}s") from None
            except Exception as exc:
                log.exception("fetch mode %r failed on attachment %r", spec.fetch_mode, name)
                raise FetchError(
                    f"attachment '{name}': fetch mode {spec.fetch_mode!r} failed "
                    f"({type(exc).__name__})"
                ) from None
        if not isinstance(data, bytes | bytearray | memoryview):
            raise FetchError(
                f"attachment '{name}': fetch mode {spec.fetch_mode!r} returned no bytes"
            )
        data = bytes(data)
        if len(data) > max_bytes:
            raise FetchError(
                f"attachment '{name}': attachment too large: {len(data)} bytes (limit {max_bytes})"
            )
        if spec.content_md5 is not None and await _md5(data) != spec.content_md5:
            raise FetchError(f"attachment '{name}': content does not match content_md5")
        return data


#: Content at least this large is hashed in a worker thread (hashlib releases the GIL):
#: ~1 ms of MD5 per MB would otherwise stall the event loop.
HASH_IN_THREAD_BYTES = 1 << 20


async def _md5(data: bytes) -> str:
    """``md5_hex(data)``, off the event loop for large content."""
    if len(data) >= HASH_IN_THREAD_BYTES:
        return await asyncio.to_thread(md5_hex, data)
    return md5_hex(data)


async def _all_or_nothing(coros: list[Any]) -> list[bytes]:
    """Run coroutines concurrently; on the first failure cancel the rest and raise it."""
    tasks = [asyncio.ensure_future(c) for c in coros]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
    finally:
        pending = [t for t in tasks if not t.done()]
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
    errors = [t.exception() for t in tasks if not t.cancelled()]
    for error in errors:
        if error is not None:
            raise error
    return [t.result() for t in tasks]


def get_resolver(runtime: Runtime) -> AttachmentResolver:
    """The runtime's resolver (created on first use, then kept by the runtime)."""
    return runtime.local(AttachmentResolver)
