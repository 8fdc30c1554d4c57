"""The aiohttp application: factory, authentication and scope, errors, OpenAPI.

Every route comes from a plugin's ``register_routes`` as a
:class:`~mail_proxy.core.contracts.routes.RouteSpec`. :func:`_guard` wraps each handler once and does,
in this order and in this one place: authenticate the token, enforce the route's scope, bind
the request to a tenant, check the content type, parse and validate the JSON body and the
query string, call the handler, and write the audit entry. Errors of any kind become the JSON
shape of API.md; a traceback never reaches a client.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import re
import time
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web
from pydantic import BaseModel, ValidationError

from mail_proxy.core.contracts.config import Settings
from mail_proxy.core.contracts.errors import ApiError, ConfigError, StorageUnavailable
from mail_proxy.core.contracts.model import ADMIN, DEFAULT_TENANT, CommandLogEntry, Principal
from mail_proxy.core.contracts.routes import RouteSpec, RouteTable
from mail_proxy.core.engine.runtime import Runtime
from mail_proxy.core.plugins.loader import create_plugin_manager
from mail_proxy.core.plugins.manager import PluginManager

log = logging.getLogger(__name__)

RUNTIME = web.AppKey("runtime", Runtime)
ROUTES = web.AppKey("routes", RouteTable)

PRINCIPAL = web.RequestKey("principal", Principal)
TENANT_ID = web.RequestKey("tenant_id", str)
#: Whether the request named its tenant (path, ``?tenant_id=`` or body) or got the default.
TENANT_NAMED = web.RequestKey("tenant_named", bool)
BODY = web.RequestKey("body", object)
QUERY = web.RequestKey("query", object)
#: Handlers put a short, secret-free summary of what they changed here for the command log.
AUDIT_SUMMARY = web.RequestKey("audit_summary", dict)

STATE_CHANGING = {"POST", "PUT", "PATCH", "DELETE"}


# -- helpers for handlers ----------------------------------------------------------------
def runtime_of(request: web.Request) -> Runtime:
    return request.app[RUNTIME]


def principal_of(request: web.Request) -> Principal:
    principal: Principal = request[PRINCIPAL]
    return principal


def tenant_of(request: web.Request) -> str:
    """The tenant this request is bound to (tenant-scoped routes)."""
    tenant_id: str = request[TENANT_ID]
    return tenant_id


def tenant_named(request: web.Request) -> bool:
    """True when a tenant-scoped request named its tenant (an admin request that did not
    acts on the default tenant, or on every tenant where the route says so)."""
    return bool(request.get(TENANT_NAMED))


def body_of(request: web.Request) -> Any:
    return request.get(BODY)


def query_of(request: web.Request) -> Any:
    return request.get(QUERY)


def ok(payload: dict[str, Any] | None = None, status: int = 200) -> web.Response:
    data = {"ok": True, **(payload or {})}
    return web.json_response(data, status=status, dumps=_dumps)


def _dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def error_response(err: ApiError) -> web.Response:
    return web.json_response(err.payload(), status=err.status, dumps=_dumps)


# -- the guard around every handler ---------------------------------------------------------
def _guard(spec: RouteSpec):  # type: ignore[no-untyped-def]
    async def guarded(request: web.Request) -> web.StreamResponse:
        rt = request.app[RUNTIME]
        if spec.scope != "public":
            request[PRINCIPAL] = await _authenticate(request, rt)
        status = 500
        try:
            response = await _checked_call(request, spec, rt)
            status = response.status
            return response
        except ApiError as exc:
            status = exc.status
            raise
        finally:
            # Every state-changing call of an authenticated caller is audited, refused ones
            # (403, 400, 409, ...) included.
            if spec.scope != "public" and request.method in STATE_CHANGING:
                _audit(request, rt, status)

    guarded.__name__ = getattr(spec.handler, "__name__", "handler")
    return guarded


async def _checked_call(request: web.Request, spec: RouteSpec, rt: Runtime) -> web.StreamResponse:
    """Scope, query, body and tenant checks, then the handler."""
    if spec.scope == "admin" and not request[PRINCIPAL].is_admin:
        raise ApiError(403, "admin_only", "this route needs the admin token")
    if spec.query is not None:
        request[QUERY] = _validate(spec.query, dict(request.query), "query")
    if spec.body is not None and request.method in STATE_CHANGING:
        request[BODY] = _validate(spec.body, await _read_json(request), "body")
    if spec.scope == "tenant":
        request[TENANT_ID] = await _bind_tenant(request, spec, rt)
    return await spec.handler(request)


async def _authenticate(request: web.Request, rt: Runtime) -> Principal:
    token = request.headers.get("X-API-Token", "")
    if not token:
        if rt.settings.insecure and not rt.settings.api_token:
            return ADMIN
        raise ApiError(401, "missing_token", "send your token in the X-API-Token header")
    principal = await rt.authenticate(request, token)
    if principal is None:
        raise ApiError(401, "invalid_token", "the X-API-Token is not valid")
    return principal


async def _bind_tenant(request: web.Request, spec: RouteSpec, rt: Runtime) -> str:
    """Decide which tenant a tenant-scoped request acts on, and refuse foreign tenants."""
    principal = principal_of(request)
    named: str | None = None
    if spec.tenant_param:
        named = request.match_info.get(spec.tenant_param)
    if named is None:
        named = request.query.get("tenant_id") or None
    body = request.get(BODY)
    if named is None and body is not None:
        value = (
            getattr(body, "tenant_id", None)
            if not isinstance(body, dict)
            else body.get("tenant_id")
        )
        named = value if isinstance(value, str) and value else None
    request[TENANT_NAMED] = named is not None
    if not principal.is_admin:
        if named is not None and named != principal.tenant_id:
            raise ApiError(403, "tenant_scope", "this token belongs to another tenant")
        return str(principal.tenant_id)
    tenant_id = named or DEFAULT_TENANT
    if tenant_id != DEFAULT_TENANT and await rt.storage.get_tenant(tenant_id) is None:
        raise ApiError(404, "tenant_not_found", f"no tenant {tenant_id!r}")
    return tenant_id


async def _read_json(request: web.Request) -> Any:
    if not request.body_exists:  # no body at all (`curl -X POST` with no data): no fields
        return {}
    ctype = request.content_type
    if ctype != "application/json":
        raise ApiError(
            415,
            "unsupported_media_type",
            f"send JSON with Content-Type: application/json (got {ctype or 'none'})",
        )
    raw = await request.read()  # bounded by client_max_size (413 beyond)
    if not raw.strip():
        return {}
    try:
        data = json.loads(raw, parse_float=_json_number)
    except (ValueError, RecursionError) as exc:
        msg = (
            "JSON nested too deeply"
            if isinstance(exc, RecursionError)
            else f"malformed JSON: {exc}"
        )
        raise ApiError(400, "malformed_json", msg) from None
    if _MAYBE_SURROGATE.search(raw) and _has_lone_surrogate(data):
        raise ApiError(
            400,
            "invalid_unicode",
            "a string holds a lone UTF-16 surrogate (U+D800 to U+DFFF, e.g. \\ud800 without "
            "its pair): not a character, it can be neither stored nor sent",
        )
    return data


def _json_number(text: str) -> float | int:
    """A JSON number with a fraction or an exponent: an integer when its value is one (``2.0``,
    ``1e3``), as JSON Schema counts it (``"type": "integer"`` accepts ``2.0``); the strict
    validation of integer fields would refuse it otherwise."""
    value = float(text)
    if value.is_integer() and abs(value) <= 2**53:
        return int(value)
    return value


#: What a lone surrogate can come from: a ``\uD800``-``\uDFFF`` escape, or the (invalid)
#: UTF-8 form of one, which ``json.loads`` lets through (it decodes with ``surrogatepass``).
#: Valid pairs match too; only then is the parsed body walked.
_MAYBE_SURROGATE = re.compile(rb"\\u[dD][89a-fA-F]|\xed[\xa0-\xbf]")
_SURROGATE = re.compile("[\ud800-\udfff]")


def _has_lone_surrogate(value: Any) -> bool:
    """True when a string of ``value`` (keys included) holds a surrogate code point: pairs
    were combined by the JSON parser, so any left is alone."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if _SURROGATE.search(item):
                return True
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def _validate(model: type[BaseModel], data: Any, where: str) -> BaseModel:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        details = [
            {"field": ".".join(str(p) for p in e["loc"]) or where, "message": e["msg"]}
            for e in exc.errors(include_url=False, include_input=False)
        ]
        first = details[0] if details else {"field": where, "message": "invalid"}
        raise ApiError(
            400,
            "validation_error",
            f"invalid {where}: {first['field']}: {first['message']}",
            details=details,
        ) from None


def _audit(request: web.Request, rt: Runtime, status: int) -> None:
    principal: Principal | None = request.get(PRINCIPAL)
    entry = CommandLogEntry(
        pk=0,
        ts=time.time(),
        principal=(principal.kind if principal else "anonymous")
        + (f":{principal.tenant_id}" if principal and principal.tenant_id else ""),
        tenant_id=request.get(TENANT_ID),
        method=request.method,
        path=request.path,
        status=status,
        summary=request.get(AUDIT_SUMMARY, {}),
    )
    audit = request.app.get(AUDIT)
    if audit is not None:
        audit.add(entry)


class AuditWriter:
    """Buffers command-log entries and writes them in batches off the request path."""

    def __init__(self, rt: Runtime, interval: float = 0.05) -> None:
        self.rt = rt
        #: how long entries are gathered after the first one before they are written
        self.interval = interval
        self._buffer: list[CommandLogEntry] = []
        self._added = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        #: Serialises flushes: once flush() returns, every entry added before is committed
        #: (GET /command-log flushes first and must not overtake a background write).
        self._lock = asyncio.Lock()

    def add(self, entry: CommandLogEntry) -> None:
        self._buffer.append(entry)
        self._added.set()

    async def flush(self) -> None:
        async with self._lock:
            entries, self._buffer = self._buffer, []
            if entries:
                await self.rt.storage.log_commands(entries)

    async def _loop(self) -> None:
        while True:  # idle: asleep until an entry arrives
            await self._added.wait()
            await asyncio.sleep(self.interval)
            self._added.clear()
            try:
                await self.flush()
            except Exception:
                log.exception("command log flush failed")

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="audit")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        with contextlib.suppress(Exception):
            await self.flush()


AUDIT = web.AppKey("audit", AuditWriter)


# -- the error middleware -----------------------------------------------------------------
@web.middleware
async def error_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as exc:
        return error_response(exc)
    except web.HTTPRequestEntityTooLarge:
        limit = request.app[RUNTIME].settings.max_request_bytes
        return error_response(
            ApiError(413, "payload_too_large", f"request body larger than {limit} bytes")
        )
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status, "http_error")
        response = error_response(ApiError(exc.status, code, exc.reason))
        if "Allow" in exc.headers:  # a 405 says which methods the path has (RFC 9110)
            response.headers["Allow"] = exc.headers["Allow"]
        return response
    except StorageUnavailable as exc:
        return _database_unavailable(exc)
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        storage = request.app[RUNTIME].storage
        if storage is not None and storage.is_unavailable(exc):  # e.g. a plugin's own query
            return _database_unavailable(exc)
        log.exception("unhandled error on %s %s", request.method, request.path)
        return error_response(
            ApiError(500, "internal_error", "internal error (see the server log)")
        )


def _database_unavailable(exc: BaseException) -> web.Response:
    """503 ``database_unavailable``: the database cannot be reached; the client retries later."""
    log.warning("database unavailable: %s", (str(exc) or type(exc).__name__).splitlines()[0])
    return error_response(
        ApiError(503, "database_unavailable", "the database is unavailable, retry later")
    )


# -- the application factory --------------------------------------------------------------------
#: Shortest admin token the server starts with (``mail-proxy start`` generates 43 characters).
MIN_ADMIN_TOKEN_LENGTH = 16


def create_app(settings: Settings, plugins: PluginManager | None = None) -> web.Application:
    """Build the aiohttp application for ``settings``. Storage opens at startup."""
    if not settings.api_token and not settings.insecure:
        raise ConfigError(
            "GMP_API_TOKEN",
            "no admin token configured: set GMP_API_TOKEN (or run with GMP_INSECURE=1 "
            "for local experiments only)",
        )
    if settings.api_token and len(settings.api_token) < MIN_ADMIN_TOKEN_LENGTH:
        raise ConfigError(
            "GMP_API_TOKEN",
            f"the admin token has {len(settings.api_token)} characters, at least "
            f"{MIN_ADMIN_TOKEN_LENGTH} are required (e.g. python -c 'import secrets; "
            "print(secrets.token_urlsafe(32))')",
        )
    if not settings.api_token:
        log.warning("GMP_INSECURE=1: the API accepts requests WITHOUT a token")
    plugins = plugins or create_plugin_manager(disabled=settings.disabled_plugins)
    rt = Runtime.create(settings, plugins)
    routes = RouteTable()
    _core_routes(routes)
    plugins.register_routes(routes)

    app = web.Application(
        client_max_size=settings.max_request_bytes, middlewares=[error_middleware]
    )
    app[RUNTIME] = rt
    app[ROUTES] = routes
    for spec in routes:
        app.router.add_route(spec.method, spec.path, _guard(spec))

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        await rt.start()
        audit = AuditWriter(rt)
        app[AUDIT] = audit
        audit.start()
        try:
            yield
        finally:
            await audit.stop()
            await rt.stop()

    app.cleanup_ctx.append(lifecycle)
    return app


def _core_routes(routes: RouteTable) -> None:
    from mail_proxy.core.web import openapi

    async def health(request: web.Request) -> web.Response:
        return ok()

    async def metrics(request: web.Request) -> web.Response:
        rt = runtime_of(request)
        with contextlib.suppress(Exception):
            # one grouped query over the active rows (gmp_queue_messages, gmp_pending_messages,
            # gmp_oldest_pending_age_seconds); due scheduled rows count as pending by the
            # shared clock, the one deferrals and schedules are written on
            now = rt.clock.now()
            rt.metrics.set_queue(await rt.storage.active_queue(now), now)
        return web.Response(body=rt.metrics.render(), content_type="text/plain", charset="utf-8")

    # The route table is fixed once the app runs: build the document and the page once
    # (rebuilding every pydantic schema cost ~9 ms of event-loop time per request).
    built: dict[str, Any] = {}

    async def openapi_json(request: web.Request) -> web.Response:
        if "json" not in built:
            built["json"] = json.dumps(openapi.document(request.app[ROUTES]))
        return web.Response(text=built["json"], content_type="application/json")

    async def docs(request: web.Request) -> web.Response:
        if "html" not in built:
            built["html"] = openapi.html(request.app[ROUTES])
        return web.Response(text=built["html"], content_type="text/html")

    routes.add(
        "GET",
        "/health",
        health,
        scope="public",
        summary="Liveness (no database access)",
        plugin="core",
    )
    routes.add(
        "GET", "/metrics", metrics, scope="public", summary="Prometheus metrics", plugin="core"
    )
    routes.add(
        "GET",
        "/openapi.json",
        openapi_json,
        scope="public",
        summary="OpenAPI 3 document",
        plugin="core",
    )
    routes.add("GET", "/docs", docs, scope="public", summary="API reference page", plugin="core")


def freeze_startup_objects() -> None:
    """Take what startup built out of the garbage collector's full passes.

    Modules, pydantic models and their validators, the SQLAlchemy metadata, the route table:
    some 120,000 objects that live as long as the process. Each full (generation 2) collection
    walked all of them, holding the event loop 35-55 ms a few times a second under load, and
    every request in flight waited that long (the API's p99). Collected once here, then
    frozen (:func:`gc.freeze`), they are no longer walked; objects made afterwards are
    collected as usual. Called by the server process only, once it listens (not by
    :func:`create_app`, which tests call many times in one process).
    """
    gc.collect()
    gc.freeze()


async def run_server(settings: Settings, *, ready_message: bool = True) -> None:
    """Run the HTTP server until cancelled (SIGINT/SIGTERM via asyncio.run)."""
    app = create_app(settings)
    runner = web.AppRunner(app, access_log=None, handle_signals=True)
    await runner.setup()
    site = web.TCPSite(runner, settings.host, settings.port, backlog=1024)
    await site.start()
    freeze_startup_objects()
    if ready_message:
        log.info(
            "genro-mail-proxy %s listening on http://%s:%s",
            settings.instance_name,
            settings.host,
            settings.port,
        )
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()
