"""What acknowledges a batch of delivery reports: the client's answer, as the FAQ says.

"Ensure your endpoint returns HTTP 200 with valid JSON": any 2xx answer whose body is valid
JSON acknowledges the batch, unless that JSON says ``"ok": false``. ``queued`` and
``next_sync_after`` keep their meaning without ``"ok": true``. A real aiohttp client app on
loopback answers exactly the bytes each test chooses; events are produced through the real
storage.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import pytest
from aiohttp import web

from mail_proxy.core.engine.reporter import find_reporter
from mail_proxy.core.testing.reports import plugins_with_tenant_tokens, record_outcome, wait_until
from mail_proxy.core.web.app import RUNTIME

FAR = 10**10


class RawReceiver:
    """A client app whose sync endpoint answers ``status`` with the raw ``body`` given."""

    def __init__(self) -> None:
        self.status = 200
        self.body: bytes = b"{}"
        self.content_type = "application/json"
        #: answers to give first, one per request carrying reports: (status, body)
        self.script: list[tuple[int, bytes]] = []
        #: answer empty heartbeats with {} (the tests about reports ignore them)
        self.heartbeats_plain = True
        #: the body of the answers not scripted (default: ``body``)
        self.body_of: Callable[[], bytes] = lambda: self.body
        self.requests: list[list[dict[str, Any]]] = []
        self._runner: web.AppRunner | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/mail-proxy/sync"

    async def __aenter__(self) -> RawReceiver:
        app = web.Application()
        app.router.add_post("/mail-proxy/sync", self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        assert site._server is not None
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.Response:
        data = json.loads(await request.read())
        items = list(data.get("delivery_report") or [])
        self.requests.append(items)
        if items and self.script:
            status, body = self.script.pop(0)
        elif items or not self.heartbeats_plain:
            status, body = self.status, self.body_of()
        else:
            status, body = 200, b"{}"
        return web.Response(status=status, body=body, content_type=self.content_type)

    def ids(self) -> list[str]:
        return [item["id"] for batch in self.requests for item in batch]


@pytest.fixture
def start_app(aiohttp_client_factory: Any, make_settings: Any) -> Callable[..., Any]:
    async def start(**overrides: Any) -> Any:
        overrides.setdefault("scheduler_active", False)
        client = await aiohttp_client_factory(
            make_settings(**overrides), plugins=plugins_with_tenant_tokens()
        )
        return client, client.app[RUNTIME]

    return start


async def backlog(rt: Any) -> int:
    return int((await rt.storage.report_backlog()).get("default", 0))


async def _is(value: Any, expected: Any) -> bool:
    return bool(await value == expected)


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (200, b"{}"),
        (200, b'{"received": 1}'),
        (200, b'{"ok": true}'),
        (202, b"[]"),
        (201, b"null"),
        (200, b'{"ok": "yes"}'),
    ],
    ids=["empty-object", "other-keys", "ok-true", "202-list", "201-null", "ok-not-boolean"],
)
async def test_any_2xx_with_valid_json_acknowledges_the_batch_once(
    start_app: Any, status: int, body: bytes
) -> None:
    async with RawReceiver() as rx:
        rx.status, rx.body = status, body
        _client, rt = await start_app(client_sync_url=rx.url, sync_interval=3600)
        await record_outcome(rt, "m1", "sent")
        await wait_until(lambda: _is(backlog(rt), 0), what="m1 acknowledged")
        rt.wake_reporter()
        await asyncio.sleep(0.5)
        assert rx.ids() == ["m1"]  # delivered once, never sent again
        reporter = find_reporter(rt)
        assert reporter is not None
        [entry] = [e for e in reporter.sync_status() if e["tenant_id"] == "default"]
        assert entry["failures"] == 0 and entry["last_error"] is None


@pytest.mark.parametrize(
    ("status", "body", "error"),
    [
        (200, b'{"ok": false, "error": "database busy"}', '"ok": false: database busy'),
        (200, b'{"ok": false}', '"ok": false'),
        (200, b"", "not JSON"),
        (200, b"<html>maintenance</html>", "not JSON"),
        (204, b"", "not JSON"),
        (500, b"{}", "HTTP 500"),
    ],
    ids=["ok-false-with-error", "ok-false", "empty-body", "html", "204-no-body", "500-json"],
)
async def test_ok_false_or_no_json_or_no_2xx_keeps_the_events_until_acknowledged(
    start_app: Any, status: int, body: bytes, error: str
) -> None:
    async with RawReceiver() as rx:
        rx.script = [(status, body)]  # the first answer refuses; then {} acknowledges
        _client, rt = await start_app(client_sync_url=rx.url, sync_interval=3600)
        await record_outcome(rt, "m1", "sent")
        reporter = find_reporter(rt)
        assert reporter is not None

        async def failed_once() -> bool:
            [entry] = [e for e in reporter.sync_status() if e["tenant_id"] == "default"]
            return bool(entry["last_error"]) or len(rx.ids()) >= 2

        await wait_until(failed_once, what="the first answer counted as a failure")
        if len(rx.ids()) == 1:
            [entry] = [e for e in reporter.sync_status() if e["tenant_id"] == "default"]
            assert error in entry["last_error"]
            assert await backlog(rt) == 1
        # sent again with backoff (about 1 s) and acknowledged by the next answer, {}
        await wait_until(lambda: _is(backlog(rt), 0), timeout=15, what="resent and acknowledged")
        assert rx.ids() == ["m1", "m1"]


async def test_queued_without_ok_still_asks_for_an_immediate_resync(start_app: Any) -> None:
    async with RawReceiver() as rx:
        rx.heartbeats_plain = False
        rx.status, rx.body = 200, b"{}"
        answers = iter([b'{"queued": 2}', b'{"queued": 1}'])
        rx.body_of = lambda: next(answers, b"{}")
        await start_app(client_sync_url=rx.url, sync_interval=3600)
        await wait_until(lambda: _true(len(rx.requests) >= 3), what="three syncs")
        await asyncio.sleep(0.4)
        assert len(rx.requests) == 3  # heartbeat every hour: the two extra calls were at once


async def test_next_sync_after_without_ok_holds_heartbeats(start_app: Any) -> None:
    async with RawReceiver() as rx:
        rx.heartbeats_plain = False
        answers = iter([json.dumps({"next_sync_after": FAR}).encode()])
        rx.body_of = lambda: next(answers, b"{}")
        _client, rt = await start_app(client_sync_url=rx.url, sync_interval=0.2)
        await wait_until(lambda: _true(len(rx.requests) >= 1), what="first sync")
        await asyncio.sleep(1.0)  # five heartbeat intervals
        assert len(rx.requests) == 1
        reporter = find_reporter(rt)
        assert reporter is not None
        [entry] = [e for e in reporter.sync_status() if e["tenant_id"] == "default"]
        assert entry["dnd"] is True and entry["dnd_until"] == FAR


async def _true(value: bool) -> bool:
    return value
