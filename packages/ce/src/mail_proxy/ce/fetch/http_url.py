"""``http_url`` fetch mode: GET the URL given in the message.

Every URL goes through the address policy (see :mod:`.netpolicy`), including each redirect
hop. Credentials: the attachment's own ``auth`` if it has one; otherwise the tenant's
``client_auth``, but only when the URL has the same origin as the tenant's
``client_base_url`` (a tenant's credentials are never sent to a third-party host named in a
message). Credentials are dropped when a redirect leaves the origin.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator
from typing import TYPE_CHECKING

from yarl import URL

from mail_proxy.core.contracts.errors import ConfigError
from mail_proxy.core.contracts.fetch import Fetcher, FetchError, FetchRequest

from .httpclient import HttpFetchClient, auth_headers, same_origin
from .netpolicy import AddressPolicy, AddressRefused

if TYPE_CHECKING:
    from mail_proxy.core.engine.runtime import Runtime

MAX_URL = 8192


class HttpUrlFetcher(Fetcher):
    description = "GET an http(s) URL (address policy applies)"

    def __init__(self) -> None:
        self._client: HttpFetchClient | None = None

    def _policy(self, runtime: Runtime) -> AddressPolicy:
        return self._get_client(runtime).policy  # type: ignore[return-value]

    def _get_client(self, runtime: Runtime) -> HttpFetchClient:
        if self._client is None:
            self._client = HttpFetchClient(AddressPolicy.from_settings(runtime.settings))
        return self._client

    def validate(self, storage_path: str, runtime: Runtime) -> str | None:
        if len(storage_path) > MAX_URL:
            return f"URL longer than {MAX_URL} characters"
        try:
            url = self._policy(runtime).check_url(storage_path)
        except (AddressRefused, ConfigError) as exc:
            return str(exc)
        if url.user is not None or url.password is not None:
            return "credentials in the URL are not accepted (use the attachment's auth)"
        return None

    async def fetch(self, request: FetchRequest, runtime: Runtime) -> bytes:
        client, headers = self._prepare(request, runtime)
        return await client.fetch(
            "GET",
            request.storage_path,
            headers=headers,
            max_bytes=request.max_bytes,
            timeout=request.timeout,
        )

    async def stream(self, request: FetchRequest, runtime: Runtime) -> AsyncGenerator[bytes, None]:
        client, headers = self._prepare(request, runtime)
        async with contextlib.aclosing(
            client.stream(
                "GET",
                request.storage_path,
                headers=headers,
                max_bytes=request.max_bytes,
                timeout=request.timeout,
            )
        ) as chunks:
            async for chunk in chunks:
                yield chunk

    def _prepare(
        self, request: FetchRequest, runtime: Runtime
    ) -> tuple[HttpFetchClient, dict[str, str]]:
        """The client and the credentials headers of one request."""
        try:
            client = self._get_client(runtime)
        except ConfigError as exc:
            raise FetchError(str(exc)) from None
        if request.auth:
            headers = auth_headers(request.auth)
        else:
            headers = {}
            base = request.tenant.client_base_url
            if base and request.tenant.client_auth:
                try:
                    if same_origin(URL(base), URL(request.storage_path)):
                        headers = auth_headers(request.tenant.client_auth)
                except ValueError:
                    pass
        return client, headers

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
