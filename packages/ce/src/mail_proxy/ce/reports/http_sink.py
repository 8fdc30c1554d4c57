"""The built-in ``http`` report sink: POST the delivery reports to the client's sync URL.

Target, per tenant:

* the tenant's own ``client_base_url`` + ``client_sync_path`` (default ``/mail-proxy/sync``),
  authenticated with the tenant's ``client_auth`` and signed with the tenant's
  ``sync_secret``. The URL is the tenant's input, so it passes the address policy of the
  fetchers (:mod:`mail_proxy.ce.fetch.netpolicy`: no loopback/private/metadata addresses
  unless ``GMP_FETCH_ALLOW_NETWORKS`` allows them, checked on the very addresses connected);
* otherwise the operator's ``GMP_CLIENT_SYNC_URL`` (trusted, used as is), authenticated with
  ``GMP_CLIENT_SYNC_TOKEN`` (bearer) or ``GMP_CLIENT_SYNC_USER``/``PASSWORD`` (basic) and
  signed with ``GMP_CLIENT_SYNC_SECRET``. This shared URL may receive several tenants'
  reports, so for every tenant but ``default`` the body also carries ``"tenant_id"``.

The body is ``{"delivery_report": [...]}``; a 2xx answer whose body is valid JSON
acknowledges the batch, unless that JSON is an object saying ``"ok": false`` (so ``{}``,
``{"ok": true}`` and ``{"received": 3}`` all acknowledge; an empty or non-JSON body does not).
``queued`` and ``next_sync_after`` are read from an acknowledging object. Redirects are not followed (a 3xx is a
failure: a report must not be re-posted to a place nobody configured). Answers are read up to
:data:`MAX_ANSWER_BYTES`. One aiohttp session per kind of target is kept for the life of the
runtime; no cookies, no proxy from the environment.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import aiohttp
from yarl import URL

from mail_proxy.ce.settings import REPORT_SINK
from mail_proxy.core import __version__
from mail_proxy.core.contracts.errors import ConfigError
from mail_proxy.core.contracts.fetch import FetchError
from mail_proxy.core.contracts.model import DEFAULT_SYNC_PATH, DEFAULT_TENANT
from mail_proxy.core.contracts.reports import ReportSink, SinkAnswer

from ..fetch.httpclient import auth_headers, shown
from ..fetch.netpolicy import AddressPolicy, AddressRefused, PolicyResolver, refusal_of
from .signing import sign_headers

if TYPE_CHECKING:
    from mail_proxy.core.contracts.model import Tenant
    from mail_proxy.core.engine.runtime import Runtime

log = logging.getLogger(__name__)

#: Largest client answer read; the answer is a small JSON object.
MAX_ANSWER_BYTES = 64 * 1024
USER_AGENT = f"genro-mail-proxy/{__version__}"


@dataclass
class SyncTarget:
    """Where and how one tenant's reports are posted."""

    url: str
    #: Operator-configured URL: no address policy.
    trusted: bool
    headers: dict[str, str]
    secret: str | None


def sync_target(tenant: Tenant, runtime: Runtime) -> SyncTarget | None:
    """The target of ``tenant``'s reports, or None when neither URL is configured.

    Raises ``ValueError`` for unusable credentials (an invalid ``client_auth``).
    """
    s = runtime.settings.section(REPORT_SINK)
    if tenant.client_base_url:
        path = tenant.client_sync_path or DEFAULT_SYNC_PATH
        if not path.startswith("/"):
            path = "/" + path
        try:
            headers = auth_headers(tenant.client_auth)
        except FetchError as exc:
            raise ValueError(f"client_auth: {exc}") from None
        return SyncTarget(
            tenant.client_base_url.rstrip("/") + path, False, headers, tenant.sync_secret
        )
    if s.client_sync_url:
        if s.client_sync_token:
            auth: dict[str, Any] | None = {"method": "bearer", "token": s.client_sync_token}
        elif s.client_sync_user:
            auth = {
                "method": "basic",
                "user": s.client_sync_user,
                "password": s.client_sync_password or "",
            }
        else:
            auth = None
        try:
            headers = auth_headers(auth)
        except FetchError as exc:
            raise ValueError(f"GMP_CLIENT_SYNC_*: {exc}") from None
        return SyncTarget(s.client_sync_url, True, headers, s.client_sync_secret)
    return None


def request_id(tenant_id: str, body: bytes, empty: bool) -> str:
    """The ``webhook-id``: stable for a resend of the same batch, unique for heartbeats."""
    if empty:
        return "hb_" + uuid.uuid4().hex
    digest = hashlib.sha256(tenant_id.encode() + b"\0" + body).hexdigest()
    return "rpt_" + digest[:32]


def parse_answer(status: int, raw: bytes) -> SinkAnswer:
    """Turn the client's HTTP answer into a :class:`SinkAnswer`."""
    if not 200 <= status < 300:
        return SinkAnswer(False, error=f"HTTP {status}")
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError):
        return SinkAnswer(False, error=f"HTTP {status} with an answer that is not JSON")
    if not isinstance(data, dict):
        return SinkAnswer(True)  # valid JSON that is not an object: acknowledged, no hints
    if data.get("ok") is False:
        said = data.get("error")
        detail = f": {str(said)[:200]}" if isinstance(said, str) and said else ""
        return SinkAnswer(False, error=f'HTTP {status} with "ok": false{detail}')
    queued = data.get("queued")
    if isinstance(queued, bool) or not isinstance(queued, int) or queued < 0:
        queued = 0
    after = data.get("next_sync_after")
    if isinstance(after, bool) or not isinstance(after, int | float) or after != after:
        after = None
    return SinkAnswer(True, queued=queued, next_sync_after=float(after) if after else None)


class HttpSyncSink(ReportSink):
    """POSTs report batches (and empty heartbeats) to the client's sync endpoint."""

    def __init__(self) -> None:
        self._trusted: aiohttp.ClientSession | None = None
        self._checked: aiohttp.ClientSession | None = None
        self._policy: AddressPolicy | None = None
        self._warned_unsigned: set[str] = set()

    def configured_for(self, tenant: Tenant, runtime: Runtime) -> bool:
        return bool(tenant.client_base_url or runtime.settings.section(REPORT_SINK).client_sync_url)

    def describe(self, tenant: Tenant, runtime: Runtime) -> str | None:
        """The URL reports go to (without credentials or query), for status pages."""
        try:
            target = sync_target(tenant, runtime)
        except ValueError:
            return None
        return shown(URL(target.url)) if target is not None else None

    # -- sessions ---------------------------------------------------------------------------
    def _session(self, runtime: Runtime, trusted: bool) -> aiohttp.ClientSession:
        current = self._trusted if trusted else self._checked
        if current is not None and not current.closed:
            return current
        resolver = None
        if not trusted:
            if self._policy is None:
                self._policy = AddressPolicy.from_settings(runtime.settings)
            resolver = PolicyResolver(self._policy)
        connector = aiohttp.TCPConnector(resolver=resolver, use_dns_cache=trusted, limit=100)
        session = aiohttp.ClientSession(
            connector=connector, cookie_jar=aiohttp.DummyCookieJar(), trust_env=False
        )
        if trusted:
            self._trusted = session
        else:
            self._checked = session
        return session

    async def close(self) -> None:
        for session in (self._trusted, self._checked):
            if session is not None and not session.closed:
                await session.close()
        self._trusted = self._checked = None

    # -- delivery ---------------------------------------------------------------------------
    async def deliver(
        self, tenant: Tenant, items: list[dict[str, Any]], runtime: Runtime
    ) -> SinkAnswer:
        try:
            target = sync_target(tenant, runtime)
        except ValueError as exc:
            return SinkAnswer(False, error=str(exc))
        if target is None:
            return SinkAnswer(False, error="no sync URL configured")
        payload: dict[str, Any] = {"delivery_report": items}
        if target.trusted and tenant.id != DEFAULT_TENANT:
            # the operator's shared URL receives every tenant's reports: say whose they are
            # (two tenants may use the same message ids)
            payload["tenant_id"] = tenant.id
        body = json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()
        if not target.secret and tenant.id not in self._warned_unsigned:
            self._warned_unsigned.add(tenant.id)
            log.warning(
                "delivery reports of tenant %r are sent UNSIGNED (no sync secret configured)",
                tenant.id,
            )
        try:
            signed = sign_headers(target.secret, request_id(tenant.id, body, not items), body)
        except ValueError as exc:
            return SinkAnswer(False, error=f"invalid sync secret: {exc}")
        headers = {
            **target.headers,
            **signed,
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
        }
        url = URL(target.url)
        try:
            if not target.trusted:
                if self._policy is None:
                    self._policy = AddressPolicy.from_settings(runtime.settings)
                url = self._policy.check_url(url)
            session = self._session(runtime, target.trusted)
        except (AddressRefused, ConfigError) as exc:
            return SinkAnswer(False, error=str(exc))
        timeout = aiohttp.ClientTimeout(total=runtime.settings.sync_timeout)
        where = shown(url)
        try:
            async with session.post(
                url, data=body, headers=headers, allow_redirects=False, timeout=timeout
            ) as resp:
                if 300 <= resp.status < 400:
                    return SinkAnswer(False, error=f"HTTP {resp.status} redirect (not followed)")
                raw = await _read_capped(resp)
                if raw is None:
                    return SinkAnswer(False, error=f"answer larger than {MAX_ANSWER_BYTES} bytes")
                return parse_answer(resp.status, raw)
        except asyncio.TimeoutError:
            return SinkAnswer(
                False, error=f"timed out after {runtime.settings.sync_timeout:g}s ({where})"
            )
        except aiohttp.ClientConnectorError as exc:
            refused = refusal_of(exc)
            if refused is not None:
                return SinkAnswer(False, error=str(refused))
            reason = exc.os_error.strerror or type(exc.os_error).__name__
            return SinkAnswer(False, error=f"cannot connect to {where}: {reason}")
        except aiohttp.ClientError as exc:
            return SinkAnswer(False, error=f"request to {where} failed: {type(exc).__name__}")


async def _read_capped(resp: aiohttp.ClientResponse) -> bytes | None:
    """The answer body, or None as soon as it grows past :data:`MAX_ANSWER_BYTES`."""
    buf = bytearray()
    async for chunk in resp.content.iter_chunked(16 * 1024):
        buf += chunk
        if len(buf) > MAX_ANSWER_BYTES:
            return None
    return bytes(buf)
