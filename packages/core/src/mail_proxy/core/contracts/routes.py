"""The route table plugins fill through ``register_routes``.

Each route declares its *scope* so authentication and tenant binding are enforced in one
place (the middleware in :mod:`mail_proxy.core.web.app`), never per handler:

- ``public``: no token (``/health``, ``/metrics``, ``/openapi.json``, ``/docs``);
- ``any``: any valid token;
- ``tenant``: admin or tenant token; the request is bound to one tenant (the token's, or for
  the admin the one named in the query/body/path, default ``default``);
- ``admin``: admin token only (a tenant token gets 403).

Routes also carry the pydantic models of their body and query so ``/openapi.json`` is
generated from the same models that validate requests.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

from aiohttp import web
from pydantic import BaseModel

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Scope = Literal["public", "any", "tenant", "admin"]


@dataclass
class RouteSpec:
    method: str
    path: str
    handler: Handler
    scope: Scope
    summary: str
    body: type[BaseModel] | None = None
    query: type[BaseModel] | None = None
    #: Name of the path parameter that names a tenant (``/tenant/{id}``), if any.
    tenant_param: str | None = None
    plugin: str = "?"
    #: Raw (non-JSON) body accepted, e.g. an uploaded file.
    raw_body: bool = False
    #: The status of a successful answer (``201`` for a route that creates something).
    success: int = 200


class RouteTable:
    """Collects :class:`RouteSpec` from every plugin; refuses a method+path twice."""

    def __init__(self) -> None:
        self._routes: dict[tuple[str, str], RouteSpec] = {}

    def add(
        self,
        method: str,
        path: str,
        handler: Handler,
        *,
        scope: Scope,
        summary: str,
        body: type[BaseModel] | None = None,
        query: type[BaseModel] | None = None,
        tenant_param: str | None = None,
        plugin: str = "?",
        raw_body: bool = False,
        success: int = 200,
    ) -> None:
        key = (method.upper(), path)
        if key in self._routes:
            raise ValueError(
                f"route {method.upper()} {path} registered twice "
                f"(by {self._routes[key].plugin!r} and {plugin!r})"
            )
        self._routes[key] = RouteSpec(
            method.upper(),
            path,
            handler,
            scope,
            summary,
            body,
            query,
            tenant_param,
            plugin,
            raw_body,
            success,
        )

    def route(self, method: str, path: str, **kwargs: Any) -> Callable[[Handler], Handler]:
        """Decorator form of :meth:`add`."""

        def deco(handler: Handler) -> Handler:
            self.add(method, path, handler, **kwargs)
            return handler

        return deco

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self._routes.values())

    def __len__(self) -> int:
        return len(self._routes)
