"""A real client application for delivery-report tests: an aiohttp server on 127.0.0.1.

It answers ``POST /mail-proxy/sync`` (any path, in fact) like the application the proxy
reports to, records every request (headers, exact body bytes, parsed JSON, the answer it
gave) and can be told how to misbehave::

    async with ReportClient() as client:
        settings = make_settings(client_sync_url=client.url)
        client.mode = "500"          # or "ok", "not_ok", "not_json", "hang"
        client.answers.append({"queued": 2})  # extra fields of the next ok answers
        await client.wait_items(3)   # items of accepted requests

``hang`` blocks the handler until :meth:`release` (or :meth:`stop`), so the proxy's
request times out on its side. ``on_request`` (an async callable) runs inside the handler
before the answer is written, e.g. to submit messages to the proxy from the sync handler.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from mail_proxy.core.contracts.model import Principal
from mail_proxy.core.plugins import hookimpl


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    data: Any
    #: True when the answer was a 2xx with ok: true (set once answered).
    accepted: bool = False
    answered: dict[str, Any] = field(default_factory=dict)
    at: float = field(default_factory=time.time)

    @property
    def items(self) -> list[dict[str, Any]]:
        report = self.data.get("delivery_report") if isinstance(self.data, dict) else None
        return list(report or [])


class ReportClient:
    def __init__(self, path: str = "/mail-proxy/sync") -> None:
        self.path = path
        self.mode = "ok"
        self.answers: list[dict[str, Any]] = []
        self.requests: list[Received] = []
        self.on_request: Callable[[Received], Awaitable[None]] | None = None
        self.in_flight = 0
        self._changed = asyncio.Condition()
        self._release = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self.port = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return self.base_url + self.path

    async def start(self) -> ReportClient:
        app = web.Application()
        app.router.add_route("POST", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port)
        await site.start()
        server = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
        return self

    async def stop(self) -> None:
        self._release.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> ReportClient:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def release(self) -> None:
        """Let hanging handlers return (their answer reaches a proxy that gave up)."""
        self._release.set()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        try:
            data = json.loads(raw)
        except ValueError:
            data = None
        headers = {k.lower(): v for k, v in request.headers.items()}
        rec = Received(request.path, headers, raw, data)
        self.in_flight += 1
        self.requests.append(rec)
        await self._notify()
        try:
            if self.on_request is not None:
                await self.on_request(rec)
            mode = self.mode
            if mode == "hang":
                self._release.clear()
                await self._release.wait()
                return web.Response(status=504)
            if mode == "500":
                resp: web.StreamResponse = web.json_response({"ok": False}, status=500)
            elif mode == "not_ok":
                resp = web.json_response({"ok": False, "error": "busy"})
            elif mode == "not_json":
                resp = web.Response(text="<html>maintenance</html>", content_type="text/html")
            else:
                answer = {"ok": True, **(self.answers.pop(0) if self.answers else {})}
                rec.accepted = True
                rec.answered = answer
                resp = web.json_response(answer)
            return resp
        finally:
            self.in_flight -= 1
            await self._notify()

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    # -- what arrived ----------------------------------------------------------------------
    def accepted_items(self) -> list[dict[str, Any]]:
        return [item for r in self.requests if r.accepted for item in r.items]

    def all_items(self) -> list[dict[str, Any]]:
        return [item for r in self.requests for item in r.items]

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 10.0) -> None:
        async def wait() -> None:
            async with self._changed:
                await self._changed.wait_for(predicate)

        try:
            await asyncio.wait_for(wait(), timeout)
        except asyncio.TimeoutError:
            raise AssertionError(
                f"condition not met in {timeout}s; requests: "
                f"{[(r.accepted, r.items) for r in self.requests][-10:]}"
            ) from None

    async def wait_items(self, count: int, timeout: float = 10.0) -> list[dict[str, Any]]:
        """Wait until accepted requests carried ``count`` items; return them."""
        await self.wait_for(lambda: len(self.accepted_items()) >= count, timeout)
        return self.accepted_items()

    async def wait_requests(self, count: int, timeout: float = 10.0) -> list[Received]:
        await self.wait_for(lambda: len(self.requests) >= count, timeout)
        return self.requests


# -- helpers for reporter tests --------------------------------------------------------------
TENANT_TOKEN = "tenant-default-token-0123456789"


class TenantTokens:
    """A test plugin issuing tenant tokens, as the multitenancy plugin would:
    :data:`TENANT_TOKEN` for ``default`` and ``tenant-token:<id>`` for any tenant."""

    @hookimpl
    def authenticate(self, request: Any, token: str, runtime: Any) -> Principal | None:
        if token == TENANT_TOKEN:
            return Principal("tenant", "default")
        if token.startswith("tenant-token:"):
            return Principal("tenant", token.split(":", 1)[1])
        return None


def plugins_with_tenant_tokens() -> Any:
    from mail_proxy.core.plugins.loader import create_plugin_manager

    return create_plugin_manager(extra_plugins=[("test-tenant-tokens", TenantTokens())])


async def wait_until(
    check: Callable[[], Awaitable[bool]], timeout: float = 10.0, what: str = "condition"
) -> None:
    """Poll the async ``check`` until it is true (bounded)."""
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached in {timeout}s")
        await asyncio.sleep(0.02)


async def record_outcome(
    rt: Any,
    msg_id: str,
    kind: str,
    *,
    tenant_id: str = "default",
    ts: float | None = None,
    enqueue: bool = True,
    wake: bool = True,
    **fields: Any,
) -> int:
    """Give message ``msg_id`` one outcome through the real storage (enqueue, claim, record).

    Returns the message pk. The dispatcher of ``rt`` must not be running
    (``scheduler_active=False``), or it would claim the message first.
    """
    from mail_proxy.core.contracts.model import NewMessage, Outcome

    now = time.time()
    storage = rt.storage
    if enqueue:
        msg = NewMessage(tenant_id, msg_id, "acc", 2, {"subject": msg_id}, f"<{msg_id}@test>")
        result = await storage.enqueue([msg], now)
        assert result.queued == 1, result
    claimed = await storage.claim_messages(rt.instance_id, now + 86400 * 365, 1000, 60.0, 1000)
    mine = [r for r in claimed if r.id == msg_id and r.tenant_id == tenant_id]
    assert mine, f"{msg_id} not claimable"
    others = [r for r in claimed if r not in mine]
    outcomes = [Outcome(mine[0].pk, mine[0].claim_token or 0, kind, ts or now, **fields)]  # type: ignore[arg-type]
    outcomes += [Outcome(r.pk, r.claim_token or 0, "released", now) for r in others]
    applied = await storage.record_outcomes(outcomes)
    assert mine[0].pk in applied
    if wake:
        rt.wake_reporter()
    return int(mine[0].pk)
