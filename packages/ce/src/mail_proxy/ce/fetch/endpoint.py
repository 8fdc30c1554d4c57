"""``endpoint`` fetch mode: ask the client application for the file.

``POST {client_base_url}{client_attachment_path}`` (default path ``/mail-proxy/attachments``)
with ``{"storage_path": ...}`` and the tenant's ``client_auth`` (or the attachment's own
``auth`` when it has one); the body of a 2xx answer is the file. The tenant's URL is the
tenant's own input, so it goes through the address policy. A tenant without a URL uses the
operator's ``GMP_ATTACHMENT_BASE_URL`` (same path rule), which is trusted: no address policy,
only the scheme check; that shared endpoint also gets ``"tenant_id"`` in the body for every
tenant but ``default``, so it can keep tenants apart.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator
from typing import TYPE_CHECKING

from mail_proxy.ce.settings import FETCH
from mail_proxy.core.contracts.errors import ConfigError
from mail_proxy.core.contracts.fetch import Fetcher, FetchError, FetchRequest
from mail_proxy.core.contracts.model import DEFAULT_ATTACHMENT_PATH, DEFAULT_TENANT

from .httpclient import HttpFetchClient, auth_headers
from .netpolicy import AddressPolicy

if TYPE_CHECKING:
    from mail_proxy.core.contracts.model import Tenant
    from mail_proxy.core.engine.runtime import Runtime

MAX_STORAGE_PATH = 8192


def endpoint_url(tenant: Tenant, base_url: str | None) -> tuple[str, bool]:
    """``(url, trusted)`` for a tenant: its own URL (untrusted) or the operator's (trusted)."""
    path = tenant.client_attachment_path or DEFAULT_ATTACHMENT_PATH
    if not path.startswith("/"):
        path = "/" + path
    if tenant.client_base_url:
        return tenant.client_base_url.rstrip("/") + path, False
    if base_url:
        return base_url.rstrip("/") + path, True
    raise FetchError(
        f"endpoint fetch mode: tenant {tenant.id!r} has no client_base_url and "
        "GMP_ATTACHMENT_BASE_URL is not set"
    )


class EndpointFetcher(Fetcher):
    description = "POST to the client's attachment endpoint (tenant URL or GMP_ATTACHMENT_BASE_URL)"

    def __init__(self) -> None:
        self._checked: HttpFetchClient | None = None
        self._trusted = HttpFetchClient(None)

    def _client(self, runtime: Runtime, trusted: bool) -> HttpFetchClient:
        if trusted:
            return self._trusted
        if self._checked is None:
            try:
                self._checked = HttpFetchClient(AddressPolicy.from_settings(runtime.settings))
            except ConfigError as exc:
                raise FetchError(str(exc)) from None
        return self._checked

    def validate(self, storage_path: str, runtime: Runtime) -> str | None:
        if len(storage_path) > MAX_STORAGE_PATH:
            return f"storage_path longer than {MAX_STORAGE_PATH} characters"
        return None

    async def fetch(self, request: FetchRequest, runtime: Runtime) -> bytes:
        client, url, body, headers = self._prepare(request, runtime)
        return await client.fetch(
            "POST",
            url,
            json_body=body,
            headers=headers,
            max_bytes=request.max_bytes,
            timeout=request.timeout,
        )

    async def stream(self, request: FetchRequest, runtime: Runtime) -> AsyncGenerator[bytes, None]:
        client, url, body, headers = self._prepare(request, runtime)
        async with contextlib.aclosing(
            client.stream(
                "POST",
                url,
                json_body=body,
                headers=headers,
                max_bytes=request.max_bytes,
                timeout=request.timeout,
            )
        ) as chunks:
            async for chunk in chunks:
                yield chunk

    def _prepare(
        self, request: FetchRequest, runtime: Runtime
    ) -> tuple[HttpFetchClient, str, dict[str, str], dict[str, str]]:
        """The client, URL, JSON body and headers of one request."""
        url, trusted = endpoint_url(
            request.tenant, runtime.settings.section(FETCH).attachment_base_url
        )
        # The attachment's own auth when it has one, else the tenant's client_auth.
        headers = auth_headers(request.auth or request.tenant.client_auth)
        body = {"storage_path": request.storage_path}
        if trusted and request.tenant.id != DEFAULT_TENANT:
            # the operator's shared endpoint serves every tenant: say which one asks, so it
            # can refuse a tenant a file of another tenant
            body["tenant_id"] = request.tenant.id
        return self._client(runtime, trusted), url, body, headers

    async def close(self) -> None:
        await self._trusted.close()
        if self._checked is not None:
            await self._checked.close()
