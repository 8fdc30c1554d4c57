"""The HTTP side of the ``endpoint`` and ``http_url`` fetch modes.

One :class:`HttpFetchClient` owns one aiohttp session (created lazily inside the running loop,
closed by :meth:`close`). With an :class:`AddressPolicy` every hop is checked (scheme, literal
addresses) and host names are resolved through :class:`PolicyResolver`, so the socket goes to
a vetted address; without one (operator-configured URLs) only the scheme is checked.

Redirects are followed by hand (at most :data:`MAX_REDIRECTS`) so that each hop passes the
policy again, and credentials are dropped when a redirect leaves the original origin. The
body is read in chunks and reading stops as soon as it exceeds the size cap (``stream`` hands
the chunks over one by one). No cookies are kept (the session is shared by all tenants) and no
proxy is taken from the environment (a proxy would connect to addresses the policy never
saw).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
from collections.abc import AsyncGenerator, Iterator
from typing import Any

import aiohttp
from yarl import URL

from mail_proxy.core.contracts.fetch import FetchError
from mail_proxy.core.engine.attachments import check_auth

from .netpolicy import AddressPolicy, AddressRefused, PolicyResolver, check_scheme, refusal_of

MAX_REDIRECTS = 5
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
CHUNK = 64 * 1024


def auth_headers(auth: dict[str, Any] | None) -> dict[str, str]:
    """HTTP headers for a ``{"method": "none"|"bearer"|"basic", ...}`` auth dict.

    The dict was validated at enqueue (message auth) or at tenant update (client_auth); the
    same check (``check_auth``) runs again here, so an unusable one fails cleanly instead of
    sending a broken header.
    """
    if not auth:
        return {}
    problem = check_auth(auth)
    if problem:
        raise FetchError(problem)
    if auth.get("method") == "bearer":
        return {"Authorization": f"Bearer {auth['token']}"}
    if auth.get("method") == "basic":
        raw = base64.b64encode(f"{auth['user']}:{auth.get('password', '')}".encode())
        return {"Authorization": f"Basic {raw.decode('ascii')}"}
    return {}


def same_origin(a: URL, b: URL) -> bool:
    return (a.scheme, a.raw_host, a.explicit_port or a.port) == (
        b.scheme,
        b.raw_host,
        b.explicit_port or b.port,
    )


def shown(url: URL) -> str:
    """A URL for error messages: no credentials, no query string (it may hold tokens)."""
    return str(url.with_user(None).with_query(None).with_fragment(None))


class HttpFetchClient:
    """Fetches a URL into bytes under an optional address policy, a size cap and a timeout."""

    def __init__(self, policy: AddressPolicy | None) -> None:
        self.policy = policy
        self._session: aiohttp.ClientSession | None = None

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            resolver = PolicyResolver(self.policy) if self.policy is not None else None
            connector = aiohttp.TCPConnector(
                resolver=resolver,
                # With a policy every new connection resolves (and is vetted) again.
                use_dns_cache=self.policy is None,
                limit=100,
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                cookie_jar=aiohttp.DummyCookieJar(),
                trust_env=False,
                auto_decompress=True,
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None and not self._session.closed:
            await self._session.close()
        self._session = None

    def _check(self, url: URL | str) -> URL:
        try:
            if self.policy is not None:
                return self.policy.check_url(url)
            return check_scheme(url)
        except AddressRefused as exc:
            raise FetchError(str(exc)) from None

    async def fetch(
        self,
        method: str,
        url: str,
        *,
        max_bytes: int,
        timeout: float,
        json_body: Any = None,
        headers: dict[str, str] | None = None,
    ) -> bytes:
        """Return the body of the final 2xx answer; raise :class:`FetchError` otherwise."""
        client_timeout = aiohttp.ClientTimeout(total=timeout)
        resp, where = await self._final_response(
            method, url, json_body, headers, client_timeout, timeout
        )
        try:
            with _mapped_errors(where, timeout):
                return await read_capped(resp, max_bytes)
        finally:
            resp.release()

    async def stream(
        self,
        method: str,
        url: str,
        *,
        max_bytes: int,
        timeout: float,
        json_body: Any = None,
        headers: dict[str, str] | None = None,
    ) -> AsyncGenerator[bytes, None]:
        """Yield the body of the final 2xx answer in chunks, stopping with
        :class:`FetchError` beyond ``max_bytes``; ``timeout`` bounds the connection and each
        read (not the whole transfer)."""
        client_timeout = aiohttp.ClientTimeout(
            total=None, connect=timeout, sock_connect=timeout, sock_read=timeout
        )
        resp, where = await self._final_response(
            method, url, json_body, headers, client_timeout, timeout
        )
        try:
            declared = resp.content_length
            if declared is not None and declared > max_bytes:
                raise FetchError(f"attachment too large: {declared} bytes (limit {max_bytes})")
            total = 0
            with _mapped_errors(where, timeout):
                async for chunk in resp.content.iter_chunked(CHUNK):
                    total += len(chunk)
                    if total > max_bytes:
                        raise FetchError(f"attachment too large: more than {max_bytes} bytes")
                    yield chunk
        finally:
            resp.close()

    async def _final_response(
        self,
        method: str,
        url: str,
        json_body: Any,
        headers: dict[str, str] | None,
        client_timeout: aiohttp.ClientTimeout,
        timeout: float,
    ) -> tuple[aiohttp.ClientResponse, URL]:
        """Follow redirects (each hop checked); the final 2xx answer, its body not yet read
        (the caller releases it), and its URL."""
        current = self._check(url)
        origin = current
        send_headers = {"Accept-Encoding": "identity", **(headers or {})}
        session = self._get_session()
        for _hop in range(MAX_REDIRECTS + 1):
            with _mapped_errors(current, timeout):
                resp = await session.request(
                    method,
                    current,
                    json=json_body if method == "POST" else None,
                    headers=send_headers,
                    allow_redirects=False,
                    timeout=client_timeout,
                )
            if resp.status in REDIRECT_STATUSES:
                resp.release()
                location = resp.headers.get("Location")
                if not location:
                    raise FetchError(
                        f"HTTP {resp.status} redirect without Location from {shown(current)}"
                    )
                try:
                    target = current.join(URL(location))
                except ValueError:
                    raise FetchError("redirect to an invalid URL") from None
                current = self._check(target)
                if resp.status == 303 or (resp.status in (301, 302) and method == "POST"):
                    method, json_body = "GET", None
                if not same_origin(origin, current):
                    send_headers.pop("Authorization", None)
                continue
            if not 200 <= resp.status < 300:
                resp.release()
                raise FetchError(f"HTTP {resp.status} from {shown(current)}")
            return resp, current
        raise FetchError(f"too many redirects (more than {MAX_REDIRECTS})")


@contextlib.contextmanager
def _mapped_errors(current: URL, timeout: float) -> Iterator[None]:
    """Network errors of a request to ``current`` as :class:`FetchError` with a clear text."""
    try:
        yield
    except asyncio.TimeoutError:
        raise FetchError(f"timed out after {timeout:g}s fetching {shown(current)}") from None
    except aiohttp.ClientConnectorError as exc:
        refused = refusal_of(exc)
        if refused is not None:
            raise FetchError(str(refused)) from None
        reason = exc.os_error.strerror or type(exc.os_error).__name__
        raise FetchError(f"cannot connect to {shown(current)}: {reason}") from None
    except aiohttp.InvalidURL as exc:
        raise FetchError(f"invalid URL: {exc}") from None
    except aiohttp.ClientError as exc:
        detail = str(exc) or type(exc).__name__
        raise FetchError(f"HTTP request to {shown(current)} failed: {detail}") from None


async def read_capped(resp: aiohttp.ClientResponse, max_bytes: int) -> bytes:
    """Read the body, refusing (and stopping) as soon as it exceeds ``max_bytes``."""
    declared = resp.content_length
    if declared is not None and declared > max_bytes:
        raise FetchError(f"attachment too large: {declared} bytes (limit {max_bytes})")
    buf = bytearray()
    async for chunk in resp.content.iter_chunked(CHUNK):
        buf += chunk
        if len(buf) > max_bytes:
            raise FetchError(f"attachment too large: more than {max_bytes} bytes")
    return bytes(buf)
